"""INT96 decoding: hand-built encodings, and files pyarrow writes in every layout."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cai_frames import _int96
from cai_frames.errors import SchemaError
from cai_frames.load import read_parts

UTC_US = pa.timestamp("us", tz="UTC")
# 2024-01-01T20:34:56.123456Z, null, 9999-12-31T03:00:00Z (past pyarrow's ns range),
# 0001-01-01T00:00:00Z, the epoch, 1969-12-31T23:59:59.999999Z.
VALUES = [1704141296123456, None, 253402225200000000, -62135596800000000, 0, -1]


def _int96_bytes(day: int, nanos: int) -> bytes:
    return struct.pack("<qi", nanos, day)


def test_int96_to_micros_plain_values_match_formula() -> None:
    raw = _int96_bytes(2440588, 0) + _int96_bytes(2460311, 74096123456789)

    micros = _int96.int96_to_micros(raw, 2)

    assert micros.tolist() == [0, (2460311 - 2440588) * 86_400_000_000 + 74096123456]


def test_int96_to_micros_wrapped_spark_value_is_exact() -> None:
    # How Spark stores a year-290000 value: wrapped day, negative nanoseconds (the raw
    # bytes of the last value of parquet-testing's int96_from_spark.parquet).
    raw = _int96_bytes(-105862232, -32509551616000)

    assert _int96.int96_to_micros(raw, 1).tolist() == [9089380393200000000]


def test_decode_rle_hybrid_rle_and_bit_packed_runs_decode() -> None:
    # RLE run: header 5 << 1 (five values), value 3 in one byte; then one bit-packed
    # group of eight 2-bit values 0,1,2,3,0,1,2,3 (header (1 << 1) | 1).
    data = bytes([10, 3, 3, 0b11100100, 0b11100100])

    values = _int96.decode_rle_hybrid(data, 2, 13)

    assert values.tolist() == [3] * 5 + [0, 1, 2, 3, 0, 1, 2, 3]


def test_decode_rle_hybrid_bit_width_zero_gives_zeros() -> None:
    assert _int96.decode_rle_hybrid(b"", 0, 4).tolist() == [0, 0, 0, 0]


def _write(path: Path, table: pa.Table, **options: Any) -> Path:
    pq.write_table(table, path, use_deprecated_int96_timestamps=True, **options)
    return path


@pytest.mark.parametrize("dictionary", [True, False], ids=["dictionary", "plain"])
@pytest.mark.parametrize("page_version", ["1.0", "2.0"], ids=["v1", "v2"])
@pytest.mark.parametrize("codec", ["snappy", "gzip", "zstd", "lz4", "none"])
def test_read_parts_int96_file_gives_exact_micros(
    tmp_path: Path, dictionary: bool, page_version: str, codec: str
) -> None:
    values = VALUES * 50
    table = pa.table({"t": pa.array(values, UTC_US), "n": list(range(len(values)))})
    path = _write(
        tmp_path / "p.parquet",
        table,
        use_dictionary=dictionary,
        data_page_version=page_version,
        compression=codec,
        row_group_size=70,
        data_page_size=256,
    )
    assert pq.ParquetFile(path).metadata.num_row_groups > 1

    result = read_parts([path])

    assert result.schema.field("t").type == UTC_US
    assert result.column("t").cast(pa.int64()).to_pylist() == values
    assert result.column("n").to_pylist() == list(range(len(values)))


def test_read_parts_int96_required_column_decodes(tmp_path: Path) -> None:
    schema = pa.schema([pa.field("t", UTC_US, nullable=False)])
    values = [v for v in VALUES if v is not None]
    path = _write(tmp_path / "p.parquet", pa.table({"t": pa.array(values, UTC_US)}, schema=schema))

    assert read_parts([path]).column("t").cast(pa.int64()).to_pylist() == values


def test_read_parts_int96_inside_struct_keeps_struct_nulls(tmp_path: Path) -> None:
    rows = [
        {"a": {"b": {"t": VALUES[0], "x": 1}}},
        {"a": None},
        {"a": {"b": None}},
        {"a": {"b": {"t": None, "x": 4}}},
        {"a": {"b": {"t": VALUES[2], "x": 5}}},
    ]
    kind = pa.struct([("b", pa.struct([("t", UTC_US), ("x", pa.int64())]))])
    table = pa.table({"a": pa.array([r["a"] for r in rows], kind)})
    path = _write(tmp_path / "p.parquet", table, row_group_size=2)

    result = read_parts([path])

    assert result.schema.field("a").type == kind
    assert result.column("a").cast(_as_int(kind)).to_pylist() == [r["a"] for r in rows]


def _as_int(kind: pa.DataType) -> pa.DataType:
    return pa.struct([("b", pa.struct([("t", pa.int64()), ("x", pa.int64())]))])


def test_read_parts_int96_projection_of_other_leaf_skips_decoding(tmp_path: Path) -> None:
    kind = pa.struct([("t", UTC_US), ("x", pa.int64())])
    table = pa.table({"a": pa.array([{"t": VALUES[2], "x": 7}], kind)})
    path = _write(tmp_path / "p.parquet", table)

    result = read_parts([path], columns=["a.x"])

    assert result.column("a").to_pylist() == [{"x": 7}]


def test_read_parts_int96_in_list_raises_not_supported(tmp_path: Path) -> None:
    table = pa.table({"l": pa.array([[VALUES[0]]], pa.list_(UTC_US))})
    path = _write(tmp_path / "p.parquet", table)

    with pytest.raises(SchemaError, match="inside a list or map, which is not supported"):
        read_parts([path])


def test_int96_columns_file_without_int96_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"t": pa.array(VALUES, UTC_US)}), path)

    assert _int96.int96_columns(pq.ParquetFile(path).metadata) == []


def test_read_parts_int96_large_column_matches_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    values = rng.integers(-(2**62), 2**62, 20_000) // 1000 * 1000 // 1000
    mask = rng.random(20_000) < 0.1
    column = pa.array(values, UTC_US, mask=mask)
    path = _write(tmp_path / "p.parquet", pa.table({"t": column}), row_group_size=6_000)

    result = read_parts([path]).column("t").cast(pa.int64())

    assert result.to_pylist() == pa.array(values, pa.int64(), mask=mask).to_pylist()
