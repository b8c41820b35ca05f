"""The DuckDB view gives the same rows as tidy_table, drift and INT96 included."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cai_frames import load, sql, xdm
from cai_frames.errors import SchemaError
from tests.test_xdm import _instance_type, _records

UTC_US = pa.timestamp("us", tz="UTC")


def _view_rows(paths: list[Path], **options: object) -> pa.Table:
    con = duckdb.connect()
    # A non-UTC session catches any naive timestamp read in the local zone.
    con.execute("SET TimeZone = 'America/New_York'")
    sql.create_view(con, "scores", paths, **options)  # type: ignore[arg-type]
    return con.sql("SELECT * FROM scores").to_arrow_table()


def _sorted_plain(table: pa.Table) -> list[dict[str, object]]:
    if "score_date" in table.schema.names:
        index = table.schema.get_field_index("score_date")
        table = table.set_column(index, "score_date", table.column("score_date").cast(pa.int64()))
    keys = [k for k in ("profile_id", "instance", "score") if k in table.schema.names]
    rows = table.to_pylist()
    return sorted(rows, key=lambda row: tuple(str(row[k]) for k in keys))


def _write(path: Path, table: pa.Table, **options: object) -> Path:
    pq.write_table(table, path, **options)  # type: ignore[arg-type]
    return path


def test_view_one_instance_equals_tidy_table(tmp_path: Path) -> None:
    paths = [_write(tmp_path / "part-0.parquet", _records({"churn": _instance_type()}))]

    view = _view_rows(paths)

    tidy = load.load_table(paths)
    assert view.schema.names == tidy.schema.names
    assert _sorted_plain(view) == _sorted_plain(tidy)


def test_view_several_instances_equals_tidy_table(tmp_path: Path) -> None:
    kinds = {"upsell": _instance_type(), "churn": _instance_type()}
    present = {
        "churn": [True, False, True, True, False],
        "upsell": [False, True, True, False, True],
    }
    records = _records(kinds, present)
    paths = [
        _write(tmp_path / "part-0.parquet", records.slice(0, 2)),
        _write(tmp_path / "part-1.parquet", records.slice(2)),
    ]

    view = _view_rows(paths)

    tidy = load.load_table(paths)
    assert view.schema.names == list(xdm.TIDY_COLUMNS)
    assert view.num_rows == 6
    assert _sorted_plain(view) == _sorted_plain(tidy)


def test_view_drifted_parts_equals_tidy_table(tmp_path: Path) -> None:
    base = _records({"churn": _instance_type()})
    reordered = pa.struct(list(reversed(list(_instance_type()))))
    swapped = _records({"churn": reordered}).drop_columns(["timestamp"])
    wide = pa.struct(
        [f.with_type(pa.int64()) if f.name == "score" else f for f in _instance_type()]
    )
    widened = _records({"churn": wide}).append_column("personID", pa.nulls(5))
    paths = [
        _write(tmp_path / "part-0.parquet", base),
        _write(tmp_path / "part-1.parquet", swapped),
        _write(tmp_path / "part-2.parquet", widened),
    ]

    view = _view_rows(paths)

    tidy = load.load_table(paths)
    assert tidy.schema.field("score").type == pa.int64()
    assert view.num_rows == tidy.num_rows == 15
    assert _sorted_plain(view) == _sorted_plain(tidy)


def test_view_int96_parts_beside_micros_parts_keep_utc_values(tmp_path: Path) -> None:
    records = _records({"churn": _instance_type()})
    paths = [
        _write(tmp_path / "part-0.parquet", records.slice(0, 2)),
        _write(tmp_path / "part-1.parquet", records.slice(2), use_deprecated_int96_timestamps=True),
    ]

    view = _view_rows(paths)

    tidy = load.load_table(paths)
    assert _sorted_plain(view) == _sorted_plain(tidy)


def test_view_columns_selects_only_those(tmp_path: Path) -> None:
    paths = [_write(tmp_path / "part-0.parquet", _records({"churn": _instance_type()}))]

    query = sql.view_sql(paths, columns=["score", "profile_id"])

    rows = duckdb.sql(query).to_arrow_table()
    assert rows.schema.names == ["profile_id", "score"]
    assert _sorted_plain(rows) == _sorted_plain(
        load.load_table(paths, columns=["profile_id", "score"])
    )


def test_view_raw_selects_records_as_written(tmp_path: Path) -> None:
    records = _records({"churn": _instance_type()})
    paths = [_write(tmp_path / "part-0.parquet", records)]

    view = _view_rows(paths, raw=True)

    assert view.schema.names == records.schema.names
    assert view.column("_id").to_pylist() == records.column("_id").to_pylist()


def test_create_view_quotes_paths_and_name(tmp_path: Path) -> None:
    folder = tmp_path / "it's a [dir]"
    folder.mkdir()
    paths = [_write(folder / "part 'q'.parquet", _records({"churn": _instance_type()}))]
    con = duckdb.connect()

    sql.create_view(con, 'my "scores"', paths)

    assert con.sql('SELECT count(*) FROM "my ""scores"""').fetchall() == [(5,)]


@pytest.mark.parametrize("name", ["", "  "], ids=["empty", "blank"])
def test_create_view_blank_name_refused_nothing_created(tmp_path: Path, name: str) -> None:
    paths = [_write(tmp_path / "part-0.parquet", _records({"churn": _instance_type()}))]
    con = duckdb.connect()

    with pytest.raises(ValueError, match=re.escape(f"the view name {name!r} is blank")):
        sql.create_view(con, name, paths)
    assert con.sql("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchall() == [(0,)]


def test_create_view_reads_footers_not_data(tmp_path: Path) -> None:
    path = _write(tmp_path / "part-0.parquet", _records({"churn": _instance_type()}))
    schema = load.read_schema([path])
    # Wreck the data pages but keep the footer: creating the view must still work,
    # which shows it never scans the data; a query then fails.
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    data[4 : len(data) - footer] = b"\xff" * (len(data) - footer - 4)
    path.write_bytes(bytes(data))
    con = duckdb.connect()

    sql.create_view(con, "scores", [path], schema=schema)

    with pytest.raises(duckdb.Error):
        con.sql("SELECT sum(score) FROM scores").fetchall()


def test_view_sql_instance_never_null_skips_the_struct_check(tmp_path: Path) -> None:
    paths = [_write(tmp_path / "part-0.parquet", _records({"churn": _instance_type()}))]

    query = sql.view_sql(paths)

    assert "\nWHERE " not in query
    assert _view_rows(paths).num_rows == 5


def test_view_sql_instance_null_in_one_part_keeps_the_struct_check(tmp_path: Path) -> None:
    whole = _records({"churn": _instance_type()})
    gaps = _records({"churn": _instance_type()}, {"churn": [True, False, True, False, True]})
    paths = [
        _write(tmp_path / "part-0.parquet", whole),
        _write(tmp_path / "part-1.parquet", gaps),
    ]

    query = sql.view_sql(paths)

    assert query.count("\nWHERE ") == 1
    # 5 records in the first part, and the 3 of 5 whose instance is present in the second.
    assert _view_rows(paths).num_rows == 8


def test_view_sql_null_score_proves_presence_through_another_field(tmp_path: Path) -> None:
    records = _records({"churn": _instance_type()}).to_pylist()
    records[1]["_acmecorp"]["CustomerAI"]["churn"]["score"] = None
    table = pa.Table.from_pylist(records, schema=_records({"churn": _instance_type()}).schema)
    paths = [_write(tmp_path / "part-0.parquet", table)]

    view = _view_rows(paths)

    # probability has no null, which proves every instance present: no check, and the
    # row whose score is null is kept, as tidy_table keeps it.
    assert "\nWHERE " not in sql.view_sql(paths)
    assert sorted(view.column("score").to_pylist(), key=str) == [0, 20, 30, 40, None]
    assert load.load_table(paths).column("score").null_count == 1


def test_footer_schemas_record_leaves_without_nulls(tmp_path: Path) -> None:
    gaps = _records({"churn": _instance_type()}, {"churn": [True, False, True, True, True]})
    path = _write(tmp_path / "part-0.parquet", gaps)

    (footer,) = load.footer_schemas([path])

    never_null = load.never_null_paths(footer)
    assert "_id" in never_null
    assert "_acmecorp.CustomerAI.churn.score" not in never_null


def test_footer_schemas_without_statistics_prove_nothing(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "part-0.parquet",
        _records({"churn": _instance_type()}),
        write_statistics=False,
    )

    (footer,) = load.footer_schemas([path])

    assert load.never_null_paths(footer) == set()
    assert "\nWHERE " in sql.view_sql([path])


def test_view_sql_no_customer_ai_raises(tmp_path: Path) -> None:
    paths = [_write(tmp_path / "part-0.parquet", pa.table({"a": [1]}))]

    with pytest.raises(SchemaError, match="no Customer AI scores found"):
        sql.view_sql(paths)


def test_quote_identifier_doubles_quotes() -> None:
    assert sql.quote_identifier('a"b') == '"a""b"'
    assert sql.quote_literal("it's") == "'it''s'"
