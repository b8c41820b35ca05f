"""Real Spark and parquet-mr files from apache/parquet-testing, against the README values."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from _shared import SHARED_DIR

from cai_frames import load
from cai_frames.errors import PartReadError

FOLDER = SHARED_DIR / "parquet-testing"
DATA = FOLDER / "data"

pytestmark = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"parquet-testing files not found at {FOLDER}"
)

NESTED = [
    [[["a", "b"], ["c"]], [None, ["d"]]],
    [[["a", "b"], ["c", "d"]], [None, ["e"]]],
    [[["a", "b"], ["c", "d"], ["e"]], [None, ["f"]]],
]


def test_read_parts_int96_from_spark_exact_micros() -> None:
    table = load.read_parts([DATA / "int96_from_spark.parquet"])

    assert table.schema.field("a").type == pa.timestamp("us", tz="UTC")
    assert table.column("a").cast(pa.int64()).to_pylist() == [
        1704141296123456,
        1704070800000000,
        253402225200000000,
        1735599600000000,
        None,
        9089380393200000000,
    ]


def test_read_parts_nested_lists_same_through_pandas_and_duckdb() -> None:
    path = DATA / "nested_lists.snappy.parquet"

    frame = load.to_pandas(load.read_parts([path]))

    assert frame["a"].tolist() == NESTED
    assert frame["b"].tolist() == [1, 1, 1]
    rows = duckdb.sql(f"SELECT a, b FROM read_parquet('{path}')").fetchall()
    assert rows == [(value, 1) for value in NESTED]


def test_read_parts_null_list_one_empty_list() -> None:
    table = load.read_parts([DATA / "null_list.parquet"])

    assert table.column("emptylist").to_pylist() == [[]]
    assert load.to_pandas(table)["emptylist"].tolist() == [[]]


def test_read_parts_nulls_struct_eight_null_fields() -> None:
    table = load.read_parts([DATA / "nulls.snappy.parquet"])

    assert table.column("b_struct").to_pylist() == [{"b_c_int": None}] * 8


def test_read_parts_repeated_no_annotation_counts_rows_from_data() -> None:
    table = load.read_parts([DATA / "repeated_no_annotation.parquet"])

    assert table.num_rows == 6
    assert table.column("id").to_pylist() == [1, 2, 3, 4, 5, 6]
    phones = table.column("phoneNumbers").to_pylist()
    assert phones[:3] == [None, None, {"phone": []}]
    assert phones[5] == {
        "phone": [
            {"number": 1111111111, "kind": "home"},
            {"number": 2222222222, "kind": None},
            {"number": 3333333333, "kind": "mobile"},
        ]
    }


def test_read_parts_every_data_file_together_reads() -> None:
    paths = sorted(DATA.glob("*.parquet"))

    tables = [load.read_parts([path]) for path in paths]

    assert [t.num_rows for t in tables] == [6, 3, 1, 8, 6]


def test_read_parts_parquet_1481_rejected_naming_file() -> None:
    path = FOLDER / "bad_data" / "PARQUET-1481.parquet"

    with pytest.raises(PartReadError, match="PARQUET-1481.parquet is not a readable parquet"):
        load.read_parts([path])
