"""read_parts and to_pandas: merging drifted parts, projection, bad files, dtypes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cai_frames import load
from cai_frames.errors import PartReadError, SchemaError
from cai_frames.xdm import PART_ROWS_KEY

UTC_US = pa.timestamp("us", tz="UTC")
YEAR_9999_US = 253402225200000000


def _parts(tmp_path: Path, *tables: pa.Table) -> list[Path]:
    paths = []
    for index, table in enumerate(tables):
        path = tmp_path / f"part-{index:05d}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    return paths


def test_read_parts_same_schema_rows_in_part_order(tmp_path: Path) -> None:
    paths = _parts(tmp_path, pa.table({"a": [1, 2]}), pa.table({"a": [3]}), pa.table({"a": [4]}))

    table = load.read_parts([paths[2], paths[0], paths[1]])

    assert table.column("a").to_pylist() == [4, 1, 2, 3]
    assert json.loads(table.schema.metadata[PART_ROWS_KEY]) == [1, 2, 1]


def test_merge_tables_same_schema_shares_buffers() -> None:
    first, second = pa.table({"a": [1, 2]}), pa.table({"a": [3]})

    merged = load.merge_tables([first, second])

    assert merged.column("a").chunk(0).buffers()[1].address == (
        first.column("a").chunk(0).buffers()[1].address
    )
    assert merged.column("a").chunk(1).buffers()[1].address == (
        second.column("a").chunk(0).buffers()[1].address
    )


def test_read_parts_same_schema_keeps_schema_uncast(tmp_path: Path) -> None:
    schema = pa.schema(
        [pa.field("a", pa.int32(), nullable=False), ("s", pa.struct([("x", pa.int8())]))]
    )
    one = pa.table({"a": [1], "s": [{"x": 1}]}, schema=schema)
    paths = _parts(tmp_path, one, one)

    assert load.read_parts(paths).schema.equals(schema)


@pytest.mark.parametrize(
    ("first", "second", "kind", "values"),
    [
        (pa.array([1], pa.int32()), pa.array([2], pa.int64()), pa.int64(), [1, 2]),
        (pa.array([1.5], pa.float32()), pa.array([2.25]), pa.float64(), [1.5, 2.25]),
        (pa.nulls(1), pa.array(["x"]), pa.string(), [None, "x"]),
        (
            pa.array([1], pa.timestamp("ms", tz="UTC")),
            pa.array([2], UTC_US),
            UTC_US,
            [1000, 2],
        ),
        (
            pa.array([1], pa.timestamp("ns", tz="UTC")),
            pa.array([YEAR_9999_US], UTC_US),
            UTC_US,
            [0, YEAR_9999_US],
        ),
        (
            pa.array([1], pa.timestamp("ns", tz="UTC")),
            pa.array([2], UTC_US),
            pa.timestamp("ns", tz="UTC"),
            [1, 2000],
        ),
        (pa.array([5], pa.timestamp("us")), pa.array([6], UTC_US), UTC_US, [5, 6]),
        (pa.array([5], pa.timestamp("us", "+01:00")), pa.array([6], UTC_US), UTC_US, [5, 6]),
    ],
    ids=[
        "int32-int64",
        "float32-float64",
        "null-string",
        "ms-us",
        "ns-with-year-9999-us",
        "ns-us-fit",
        "naive-utc",
        "offset-utc",
    ],
)
def test_read_parts_drifted_leaf_type_widens(
    tmp_path: Path, first: pa.Array, second: pa.Array, kind: pa.DataType, values: list[object]
) -> None:
    paths = _parts(tmp_path, pa.table({"a": first}), pa.table({"a": second}))

    table = load.read_parts(paths)

    assert table.schema.field("a").type == kind
    column = table.column("a")
    got = column.cast(pa.int64()) if pa.types.is_timestamp(kind) else column
    assert got.to_pylist() == values


def test_read_parts_column_missing_from_part_null_filled(tmp_path: Path) -> None:
    schema = pa.schema([pa.field("a", pa.int64(), nullable=False)])
    paths = _parts(
        tmp_path, pa.table({"a": [1]}, schema=schema), pa.table({"b": ["x", "y"], "a": [2, 3]})
    )

    table = load.read_parts(paths)

    assert table.schema.names == ["a", "b"]
    assert table.to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": "x"}, {"a": 3, "b": "y"}]
    assert table.schema.field("a").nullable


def test_read_parts_struct_fields_reordered_and_missing_unify_by_name(tmp_path: Path) -> None:
    first = pa.table({"s": pa.array([{"x": 1, "y": "a"}])})
    second = pa.table({"s": pa.array([{"y": "b", "x": 2}])})
    third = pa.table({"s": pa.array([{"x": 3}])})
    paths = _parts(tmp_path, first, second, third)

    table = load.read_parts(paths)

    assert table.schema.field("s").type == pa.struct([("x", pa.int64()), ("y", pa.string())])
    assert table.column("s").to_pylist() == [
        {"x": 1, "y": "a"},
        {"x": 2, "y": "b"},
        {"x": 3, "y": None},
    ]


def test_read_parts_structs_inside_list_and_map_unify_by_name(tmp_path: Path) -> None:
    xy = pa.struct([("x", pa.int32()), ("y", pa.string())])
    yx = pa.struct([("y", pa.string()), ("x", pa.int64())])
    first = pa.table(
        {
            "l": pa.array([[{"x": 1, "y": "a"}]], pa.list_(xy)),
            "m": pa.array([[("k", {"x": 1, "y": "a"})]], pa.map_(pa.string(), xy)),
        }
    )
    second = pa.table(
        {
            "l": pa.array([[{"y": "b", "x": 2}]], pa.list_(yx)),
            "m": pa.array([[("j", {"y": "b", "x": 2})]], pa.map_(pa.string(), yx)),
        }
    )
    paths = _parts(tmp_path, first, second)

    table = load.read_parts(paths)

    item = table.schema.field("l").type.value_type
    assert [(f.name, f.type) for f in item] == [("x", pa.int64()), ("y", pa.string())]
    assert table.column("l").to_pylist() == [[{"x": 1, "y": "a"}], [{"x": 2, "y": "b"}]]
    assert table.column("m").to_pylist() == [
        [("k", {"x": 1, "y": "a"})],
        [("j", {"x": 2, "y": "b"})],
    ]


def test_read_parts_every_drift_together_merges(tmp_path: Path) -> None:
    first = pa.table(
        {
            "id": ["a"],
            "n": pa.array([1], pa.int32()),
            "s": pa.array(
                [{"x": 1.5, "t": 1}],
                pa.struct([("x", pa.float32()), ("t", pa.timestamp("ms", "UTC"))]),
            ),
            "z": pa.nulls(1),
        }
    )
    second = pa.table(
        {
            "s": pa.array(
                [{"t": YEAR_9999_US, "w": True}], pa.struct([("t", UTC_US), ("w", pa.bool_())])
            ),
            "n": pa.array([2], pa.int64()),
            "z": pa.array([[1]]),
        }
    )
    paths = _parts(tmp_path, first, second)

    table = load.read_parts(paths)

    assert table.schema.names == ["id", "n", "s", "z"]
    assert table.schema.field("n").type == pa.int64()
    assert table.schema.field("s").type == pa.struct(
        [("x", pa.float32()), ("t", UTC_US), ("w", pa.bool_())]
    )
    assert table.schema.field("z").type == pa.list_(pa.int64())
    plain = table.column("s").cast(
        pa.struct([("x", pa.float64()), ("t", pa.int64()), ("w", pa.bool_())])
    )
    assert plain.to_pylist() == [
        {"x": 1.5, "t": 1000, "w": None},
        {"x": None, "t": YEAR_9999_US, "w": True},
    ]
    assert table.column("id").to_pylist() == ["a", None]
    assert table.column("z").to_pylist() == [None, [1]]


def test_read_parts_clashing_types_name_the_part(tmp_path: Path) -> None:
    paths = _parts(tmp_path, pa.table({"a": [1]}), pa.table({"a": [2]}), pa.table({"a": ["x"]}))

    with pytest.raises(SchemaError, match="part-00002.parquet does not fit"):
        load.read_parts(paths)


def test_read_parts_columns_reads_only_those(tmp_path: Path) -> None:
    # The INT96-in-a-list column cannot be decoded: reading it would raise, so success
    # shows it was never read.
    table = pa.table({"a": [1], "b": ["x"], "bad": pa.array([[1]], pa.list_(UTC_US))})
    path = tmp_path / "p.parquet"
    pq.write_table(table, path, use_deprecated_int96_timestamps=True)

    result = load.read_parts([path], columns=["b", "a"])

    assert result.schema.names == ["b", "a"]
    assert result.to_pylist() == [{"b": "x", "a": 1}]


def test_read_parts_dotted_column_keeps_struct_nesting(tmp_path: Path) -> None:
    kind = pa.struct([("c", pa.struct([("x", pa.int64()), ("y", pa.string())]))])
    paths = _parts(tmp_path, pa.table({"s": pa.array([{"c": {"x": 1, "y": "a"}}, None], kind)}))

    result = load.read_parts(paths, columns=["s.c.y"])

    assert result.schema.field("s").type == pa.struct([("c", pa.struct([("y", pa.string())]))])
    assert result.column("s").to_pylist() == [{"c": {"y": "a"}}, None]


def test_read_parts_column_in_some_parts_null_filled_in_others(tmp_path: Path) -> None:
    paths = _parts(tmp_path, pa.table({"a": [1]}), pa.table({"a": [2], "b": ["x"]}))

    result = load.read_parts(paths, columns=["b"])

    assert result.column("b").to_pylist() == [None, "x"]


def test_read_parts_column_in_no_part_raises_with_names(tmp_path: Path) -> None:
    paths = _parts(tmp_path, pa.table({"a": [1]}))

    with pytest.raises(SchemaError, match=r"\['nope'\] are in none of the 1 parts.*\['a'\]"):
        load.read_parts(paths, columns=["nope"])


def test_read_parts_not_parquet_names_the_file(tmp_path: Path) -> None:
    good = _parts(tmp_path, pa.table({"a": [1]}))[0]
    bad = tmp_path / "part-broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all PAR1")

    with pytest.raises(PartReadError, match="part-broken.parquet is not a readable parquet"):
        load.read_parts([good, bad])


def test_read_schema_drifted_footers_match_read_parts(tmp_path: Path) -> None:
    paths = _parts(
        tmp_path,
        pa.table({"a": pa.array([1], pa.int32()), "s": pa.array([{"x": 1}])}),
        pa.table({"s": pa.array([{"y": "b", "x": 2}]), "a": pa.array([2], pa.int64())}),
    )

    assert load.read_schema(paths).equals(load.read_parts(paths).schema)


def test_to_pandas_every_column_arrow_backed(tmp_path: Path) -> None:
    factors = pa.list_(pa.struct([("code", pa.string()), ("importance", pa.string())]))
    table = pa.table(
        {
            "n": pa.array([1, None], pa.int32()),
            "t": pa.array([YEAR_9999_US, 9089380393200000000], UTC_US),
            "f": pa.array([[{"code": "a", "importance": "low"}], []], factors),
        }
    )

    frame = load.to_pandas(table)

    assert all(isinstance(dtype, pd.ArrowDtype) for dtype in frame.dtypes)
    assert frame["f"].dtype == pd.ArrowDtype(factors)
    assert frame["t"].dtype == pd.ArrowDtype(UTC_US)
    assert pa.array(frame["t"]).cast(pa.int64()).to_pylist() == [YEAR_9999_US, 9089380393200000000]
    assert frame["n"].isna().tolist() == [False, True]


def test_load_table_no_parts_raises() -> None:
    with pytest.raises(SchemaError, match="no parquet parts to load"):
        load.load_table([])
