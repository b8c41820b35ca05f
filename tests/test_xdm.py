"""Finding scores by structure, and the tidy reshaping, against hand-written records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cai_frames import load, xdm
from cai_frames.errors import SchemaError

UTC_US = pa.timestamp("us", tz="UTC")
IDENTITY = pa.struct(
    [("id", pa.string()), ("authenticatedState", pa.string()), ("primary", pa.bool_())]
)
IDENTITY_MAP = pa.map_(pa.string(), pa.list_(IDENTITY))
FACTORS = xdm.FACTOR_TYPE
DAY = 1_726_000_000_000_000


def _identity(id_: str, primary: bool | None) -> dict[str, Any]:
    return {"id": id_, "authenticatedState": "ambiguous", "primary": primary}


# Primary not first; no primary at all (falls back to the first namespace's first id);
# an empty map; a null map; a null identity list before the primary one.
IDENTITY_ROWS: list[Any] = [
    [
        ("Email", [_identity("a@x", False)]),
        ("ECID", [_identity("e1", None), _identity("e2", True)]),
    ],
    [
        ("Phone", [_identity("555", False), _identity("556", None)]),
        ("ECID", [_identity("e3", False)]),
    ],
    [],
    None,
    [("Email", None), ("CRM", [_identity("c9", True)])],
]
EXPECTED_IDS = [("e2", "ECID"), ("555", "Phone"), (None, None), (None, None), ("c9", "CRM")]


def _instance_type(names: dict[str, str] | None = None) -> pa.StructType:
    names = names or {}
    fields = [
        (names.get("score", "score"), pa.int32()),
        (names.get("probability", "probability"), pa.float64()),
        (names.get("percentile", "percentile"), pa.int32()),
        (names.get("propensity_type", "propensityType"), pa.string()),
        (names.get("score_date", "scoreDate"), UTC_US),
        (names.get("influential_factors", "influentialFactors"), FACTORS),
    ]
    return pa.struct(fields)


def _instance(i: int, kind: pa.StructType) -> dict[str, Any]:
    values = {
        "score": i * 10,
        "probability": i / 10,
        "percentile": i + 1,
        "percentilescore": i + 1,
        "propensitytype": "CHURN",
        "scoredate": DAY + i,
        "influentialfactors": [{"code": f"c{i}", "value": str(i), "importance": "high"}],
    }
    return {field.name: values[xdm.normalize(field.name)] for field in kind}


def _records(
    instances: dict[str, pa.StructType],
    present: dict[str, list[bool]] | None = None,
    tenant: str = "_acmecorp",
    rows: int = 5,
) -> pa.Table:
    present = present or {}
    customer_ai = pa.struct([(name, kind) for name, kind in instances.items()])
    values = []
    for i in range(rows):
        record = {
            name: _instance(i, kind) if present.get(name, [True] * rows)[i] else None
            for name, kind in instances.items()
        }
        values.append({"CustomerAI": record})
    return pa.table(
        {
            "_id": [f"r{i}" for i in range(rows)],
            "identityMap": pa.array(IDENTITY_ROWS[:rows], IDENTITY_MAP),
            "timestamp": pa.array([DAY] * rows, UTC_US),
            tenant: pa.array(values, pa.struct([("CustomerAI", customer_ai)])),
        }
    )


def _expected(i: int, instance: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "profile_id": EXPECTED_IDS[i][0],
        "profile_namespace": EXPECTED_IDS[i][1],
    }
    if instance is not None:
        row["instance"] = instance
    row.update(
        score=i * 10,
        probability=i / 10,
        percentile=i + 1,
        propensity_type="CHURN",
        score_date=DAY + i,
        influential_factors=[{"code": f"c{i}", "value": str(i), "importance": "high"}],
    )
    return row


def _plain(table: pa.Table) -> list[dict[str, Any]]:
    return table.set_column(
        table.schema.get_field_index("score_date"),
        "score_date",
        table.column("score_date").cast(pa.int64()),
    ).to_pylist()


def test_tidy_table_one_instance_columns_and_identities() -> None:
    tidy = xdm.tidy_table(_records({"churn_q3": _instance_type()}))

    assert tidy.schema.names == [c for c in xdm.TIDY_COLUMNS if c != "instance"]
    assert _plain(tidy) == [_expected(i) for i in range(5)]
    assert tidy.schema.field("score_date").type == UTC_US
    assert tidy.schema.field("influential_factors").type == FACTORS


def test_tidy_table_several_instances_long_format_skips_null_instances(tmp_path: Path) -> None:
    kinds = {"conversion": _instance_type(), "churn": _instance_type()}
    present = {
        "churn": [True, False, True, True, False],
        "conversion": [False, True, True, False, True],
    }
    records = _records(kinds, present)
    paths = [tmp_path / "part-0.parquet", tmp_path / "part-1.parquet"]
    pq.write_table(records.slice(0, 3), paths[0])
    pq.write_table(records.slice(3), paths[1])

    tidy = xdm.tidy_table(load.read_parts(paths))

    # Part by part, instances in name order, records in file order.
    order = [
        (0, "churn"),
        (2, "churn"),
        (1, "conversion"),
        (2, "conversion"),
        (3, "churn"),
        (4, "conversion"),
    ]
    assert tidy.schema.names == list(xdm.TIDY_COLUMNS)
    assert _plain(tidy) == [_expected(i, name) for i, name in order]


def test_tidy_table_without_part_metadata_counts_one_part() -> None:
    kinds = {"b": _instance_type(), "a": _instance_type()}

    tidy = xdm.tidy_table(_records(kinds, rows=2))

    assert tidy.column("instance").to_pylist() == ["a", "a", "b", "b"]


def test_tidy_table_missing_fields_null_filled_typed() -> None:
    partial = pa.struct([("score", pa.int64()), ("scoreDate", UTC_US)])
    records = _records({"full": _instance_type(), "partial": partial}, rows=2)

    tidy = xdm.tidy_table(records)

    assert tidy.schema.field("score").type == pa.int64()
    assert tidy.schema.field("probability").type == pa.float64()
    assert tidy.column("probability").to_pylist() == [0.0, 0.1, None, None]
    assert tidy.column("score").to_pylist() == [0, 10, 0, 10]


def test_tidy_table_field_missing_from_every_instance_gets_contract_type() -> None:
    records = _records({"only": pa.struct([("score", pa.int32())])}, rows=2)

    tidy = xdm.tidy_table(records)

    assert tidy.schema.field("influential_factors").type == FACTORS
    assert tidy.schema.field("score_date").type == UTC_US
    assert tidy.column("influential_factors").null_count == 2


def test_tidy_table_snake_case_fields_and_other_tenant_found() -> None:
    names = {
        "propensity_type": "propensity_type",
        "score_date": "score_date",
        "influential_factors": "Influential_Factors",
        "percentile": "percentileScore",
        "score": "Score",
    }
    records = _records({"upsell": _instance_type(names)}, tenant="_globex", rows=3)

    tidy = xdm.tidy_table(records)

    assert _plain(tidy) == [_expected(i) for i in range(3)]


def test_tidy_table_no_customer_ai_raises_with_found_columns() -> None:
    table = pa.table({"_id": ["a"], "_acmecorp": pa.array([{"loyalty": {"tier": "gold"}}])})

    with pytest.raises(
        SchemaError, match=r"_id \(string\), _acmecorp \(struct\).*loyalty.*raw=True"
    ):
        xdm.tidy_table(table)


def test_tidy_table_unknown_column_lists_valid_ones() -> None:
    with pytest.raises(SchemaError, match=r"unknown tidy column\(s\) \['scores'\].*'profile_id'"):
        xdm.tidy_table(_records({"churn": _instance_type()}), columns=["scores"])


def test_tidy_columns_needed_reads_only_needed_leaves() -> None:
    schema = _records({"b": _instance_type(), "a": _instance_type()}).schema

    needed = xdm.tidy_columns_needed(schema, ["profile_id", "score"])

    assert needed == ["identityMap", "_acmecorp.CustomerAI.a.score", "_acmecorp.CustomerAI.b.score"]


def test_tidy_columns_needed_no_score_field_keeps_one_leaf_per_instance() -> None:
    schema = _records({"churn": _instance_type()}).schema

    assert xdm.tidy_columns_needed(schema, ["profile_namespace"]) == [
        "identityMap",
        "_acmecorp.CustomerAI.churn.score",
    ]


def test_load_table_columns_projection_equals_full_tidy(tmp_path: Path) -> None:
    kinds = {"churn": _instance_type(), "upsell": _instance_type()}
    records = _records(kinds, {"upsell": [False, True, True, False, True]})
    path = tmp_path / "part-0.parquet"
    pq.write_table(records, path)

    projected = load.load_table([path], columns=["score", "profile_id"])

    full = load.load_table([path])
    assert projected.schema.names == ["profile_id", "score"]
    assert projected.to_pylist() == full.select(["profile_id", "score"]).to_pylist()


def test_primary_identity_sliced_map_uses_its_own_rows() -> None:
    identity_map = pa.array(IDENTITY_ROWS, IDENTITY_MAP).slice(1, 4)

    ids, namespaces = xdm.primary_identity(identity_map)

    assert list(zip(ids.to_pylist(), namespaces.to_pylist(), strict=True)) == EXPECTED_IDS[1:]


def test_to_pandas_tidy_is_arrow_backed_with_arrow_lists() -> None:
    frame = load.to_pandas(xdm.tidy_table(_records({"churn": _instance_type()})))

    assert all(isinstance(dtype, pd.ArrowDtype) for dtype in frame.dtypes)
    assert frame["influential_factors"].dtype == pd.ArrowDtype(FACTORS)
    assert frame["influential_factors"].array._pa_array.num_chunks >= 1
