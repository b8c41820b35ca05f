"""Exact decoding of Spark's INT96 timestamps.

Spark writes timestamps as INT96 by default: 8 bytes of nanoseconds within the day, then
4 bytes of Julian day, both little-endian. pyarrow converts them through int64
nanoseconds, which only spans the years 1677 to 2262, and silently wraps anything
outside (even with ``coerce_int96_timestamp_unit="us"`` a year-290000 value comes back
as another date); DuckDB refuses such files outright. Score dates of 9999-12-31 are a
common "never" sentinel, so this module reads the INT96 column chunks itself: it walks
the pages with a minimal Thrift compact-protocol decoder, decompresses them with
:class:`pyarrow.Codec`, decodes definition levels and PLAIN or dictionary-encoded
values with numpy, and computes exact microseconds.

:func:`fix_int96_columns` then puts those values into the table pyarrow read (which
already has the right nulls and nesting) as ``timestamp[us, tz=UTC]``.

Supported: INT96 leaves at top level or inside structs (no repeated ancestor), data page
v1 and v2, every codec pyarrow ships. INT96 inside a list or map is refused with a
:class:`~cai_frames.errors.SchemaError`: nothing seen in score data needs it and it
would need repetition levels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from cai_frames.errors import SchemaError

logger = logging.getLogger(__name__)

JULIAN_EPOCH_DAY = 2440588
MICROS_PER_DAY = 86_400_000_000
UTC_MICROS = pa.timestamp("us", tz="UTC")

_INT96 = np.dtype([("nanos", "<i8"), ("day", "<i4")])

_PAGE_DATA, _PAGE_INDEX, _PAGE_DICTIONARY, _PAGE_DATA_V2 = 0, 1, 2, 3
_ENC_PLAIN, _ENC_PLAIN_DICTIONARY, _ENC_RLE_DICTIONARY = 0, 2, 8

_CODECS = {
    "SNAPPY": "snappy",
    "GZIP": "gzip",
    "ZSTD": "zstd",
    "BROTLI": "brotli",
    "LZ4_RAW": "lz4_raw",
}

Int64s = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


class _Compact:
    """Just enough of Thrift's compact protocol to read parquet page headers."""

    def __init__(self, data: bytes | memoryview, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def varint(self) -> int:
        result = shift = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def struct(self) -> dict[int, object]:
        """Read a struct as ``{field id: value}``; unknown fields are read and kept."""
        fields: dict[int, object] = {}
        last = 0
        while True:
            header = self.data[self.pos]
            self.pos += 1
            if header == 0:
                return fields
            delta, kind = header >> 4, header & 0x0F
            last = last + delta if delta else self.zigzag()
            fields[last] = self.value(kind)

    def value(self, kind: int, in_list: bool = False) -> object:
        if kind in (1, 2):
            if in_list:
                self.pos += 1
                return self.data[self.pos - 1] == 1
            return kind == 1
        if kind == 3:
            self.pos += 1
            return int.from_bytes(self.data[self.pos - 1 : self.pos], "little", signed=True)
        if kind in (4, 5, 6):
            return self.zigzag()
        if kind == 7:
            self.pos += 8
            return None
        if kind == 8:
            size = self.varint()
            self.pos += size
            return bytes(self.data[self.pos - size : self.pos])
        if kind in (9, 10):
            return self._list()
        if kind == 11:
            return self._map()
        if kind == 12:
            return self.struct()
        raise ValueError(f"unknown Thrift compact type {kind}")

    def _list(self) -> list[object]:
        header = self.data[self.pos]
        self.pos += 1
        size = header >> 4
        if size == 15:
            size = self.varint()
        return [self.value(header & 0x0F, in_list=True) for _ in range(size)]

    def _map(self) -> dict[object, object]:
        size = self.varint()
        if not size:
            return {}
        kinds = self.data[self.pos]
        self.pos += 1
        items = (
            (self.value(kinds >> 4, True), self.value(kinds & 0x0F, True)) for _ in range(size)
        )
        return dict(items)


def decode_rle_hybrid(data: bytes | memoryview, bit_width: int, count: int) -> Int64s:
    """Decode ``count`` values of parquet's RLE / bit-packed hybrid encoding.

    Only the run headers are read one by one; the values of all runs are then built
    with two numpy operations (one unpack of every bit-packed byte, one repeat of every
    RLE value), so random nulls, which make runs of a few values, stay cheap.
    """
    if bit_width == 0:
        return np.zeros(count, dtype=np.int64)
    value_bytes = (bit_width + 7) // 8
    packed_runs: list[bytes | memoryview] = []
    repeated: list[int] = []
    lengths: list[int] = []
    is_packed: list[bool] = []
    pos = got = 0
    while got < count:
        header, pos = _varint(data, pos)
        if header & 1:
            size = (header >> 1) * bit_width
            packed_runs.append(data[pos : pos + size])
            pos += size
            length = (header >> 1) * 8
        else:
            repeated.append(int.from_bytes(data[pos : pos + value_bytes], "little"))
            pos += value_bytes
            length = header >> 1
        lengths.append(length)
        is_packed.append(bool(header & 1))
        got += length
    return _assemble_runs(packed_runs, repeated, lengths, is_packed, bit_width)[:count]


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _assemble_runs(
    packed_runs: list[bytes | memoryview],
    repeated: list[int],
    lengths: list[int],
    is_packed: list[bool],
    bit_width: int,
) -> Int64s:
    unpacked = _unpack_bits(b"".join(packed_runs), bit_width) if packed_runs else None
    run_lengths = np.array(lengths, dtype=np.int64)
    run_packed = np.array(is_packed, dtype=np.bool_)
    rle = np.repeat(np.array(repeated, dtype=np.int64), run_lengths[~run_packed])
    if unpacked is None:
        return rle
    if not repeated:
        return unpacked
    values = np.empty(int(run_lengths.sum()), dtype=np.int64)
    from_packed = np.repeat(run_packed, run_lengths)
    values[from_packed] = unpacked
    values[~from_packed] = rle
    return values


def _unpack_bits(chunk: bytes | memoryview, bit_width: int) -> Int64s:
    bits = np.unpackbits(np.frombuffer(chunk, dtype=np.uint8), bitorder="little")
    weights = np.left_shift(np.int64(1), np.arange(bit_width, dtype=np.int64))
    result: Int64s = bits.reshape(-1, bit_width).astype(np.int64) @ weights
    return result


def int96_to_micros(raw: bytes | memoryview, count: int) -> Int64s:
    """Microseconds since the epoch of ``count`` PLAIN INT96 values, as Spark reads them.

    Spark computes ``(day - 2440588) * 86_400_000_000 + nanos / 1000`` in Java ``long``
    arithmetic (wrapping, division truncating toward zero) both when it writes and when it
    reads, so values beyond the int64 nanosecond range (year 290000 in
    ``int96_from_spark.parquet``) are stored with a wrapped day and negative nanoseconds.
    The same wrapping int64 arithmetic here gives back exactly the microseconds Spark
    wrote; for every in-range value it equals the plain formula.
    """
    values = np.frombuffer(raw, dtype=_INT96, count=count)
    days = values["day"].astype(np.int64) - JULIAN_EPOCH_DAY
    nanos = values["nanos"]
    micros = (nanos - np.fmod(nanos, 1000)) // 1000
    result: Int64s = days * MICROS_PER_DAY + micros
    return result


def _decompress(codec: str, data: bytes | memoryview, size: int) -> bytes | memoryview:
    if codec == "UNCOMPRESSED" or size == 0:
        return data
    if codec == "LZ4":
        return _decompress_hadoop_lz4(data, size)
    if codec not in _CODECS:
        raise SchemaError(f"INT96 column compressed with {codec}, which cannot be decoded here.")
    out = pa.Codec(_CODECS[codec]).decompress(data, decompressed_size=size)
    return memoryview(out)


def _decompress_hadoop_lz4(data: bytes | memoryview, size: int) -> bytes | memoryview:
    """Parquet's old LZ4 is Hadoop-framed by Java writers and raw by older C++ ones."""
    codec = pa.Codec("lz4_raw")
    if len(data) >= 8 and int.from_bytes(data[:4], "big") == size:
        framed = int.from_bytes(data[4:8], "big")
        if framed == len(data) - 8:
            return memoryview(codec.decompress(data[8:], decompressed_size=size))
    return memoryview(codec.decompress(data, decompressed_size=size))


class _ChunkDecoder:
    """Decodes one INT96 column chunk into exact microseconds and validity."""

    def __init__(self, column: pq.ColumnChunkMetaData, max_definition: int) -> None:
        self.codec = column.compression
        self.max_definition = max_definition
        self.def_width = max_definition.bit_length()
        self.dictionary: Int64s | None = None
        self.values: list[Int64s] = []
        self.valid: list[Bools] = []

    def page(self, header: dict[int, object], body: memoryview) -> None:
        kind = header[1]
        size = _as_int(header[2])
        if kind == _PAGE_DICTIONARY:
            count = _as_int(_field(header, 7)[1])
            self.dictionary = int96_to_micros(_decompress(self.codec, body, size), count)
        elif kind == _PAGE_DATA:
            self._data_v1(_field(header, 5), _decompress(self.codec, body, size))
        elif kind == _PAGE_DATA_V2:
            self._data_v2(_field(header, 8), body, size)

    def _data_v1(self, fields: dict[int, object], data: bytes | memoryview) -> None:
        count = _as_int(fields[1])
        if self.max_definition == 0:
            self._values(np.ones(count, dtype=np.bool_), _as_int(fields[2]), data)
            return
        length = int.from_bytes(data[:4], "little")
        levels = decode_rle_hybrid(data[4 : 4 + length], self.def_width, count)
        self._values(levels == self.max_definition, _as_int(fields[2]), data[4 + length :])

    def _data_v2(self, fields: dict[int, object], body: memoryview, size: int) -> None:
        count = _as_int(fields[1])
        levels_size = _as_int(fields[5]) + _as_int(fields.get(6, 0))
        levels = decode_rle_hybrid(body[:levels_size], self.def_width, count)
        data: bytes | memoryview = body[levels_size:]
        if fields.get(7, True):
            data = _decompress(self.codec, data, size - levels_size)
        self._values(levels == self.max_definition, _as_int(fields[4]), data)

    def _values(self, valid: Bools, encoding: int, data: bytes | memoryview) -> None:
        present = int(valid.sum())
        if encoding == _ENC_PLAIN:
            decoded = int96_to_micros(data, present)
        elif encoding in (_ENC_PLAIN_DICTIONARY, _ENC_RLE_DICTIONARY):
            if self.dictionary is None:
                raise SchemaError("INT96 data page refers to a dictionary the chunk lacks.")
            indices = decode_rle_hybrid(data[1:], data[0], present)
            decoded = self.dictionary[indices]
        else:
            raise SchemaError(f"INT96 values in parquet encoding {encoding} are not supported.")
        full = np.zeros(len(valid), dtype=np.int64)
        full[valid] = decoded
        self.values.append(full)
        self.valid.append(valid)


def _as_int(value: object) -> int:
    assert isinstance(value, int)
    return value


def _field(header: dict[int, object], field_id: int) -> dict[int, object]:
    value = header[field_id]
    assert isinstance(value, dict)
    return value


def _read_chunk(handle: object, column: pq.ColumnChunkMetaData, max_def: int) -> _ChunkDecoder:
    start = column.data_page_offset
    if column.has_dictionary_page and 0 < column.dictionary_page_offset < start:
        start = column.dictionary_page_offset
    handle.seek(start)  # type: ignore[attr-defined]
    data = memoryview(handle.read(column.total_compressed_size))  # type: ignore[attr-defined]
    decoder = _ChunkDecoder(column, max_def)
    seen = pos = 0
    while seen < column.num_values and pos < len(data):
        reader = _Compact(data, pos)
        header = reader.struct()
        end = reader.pos + _as_int(header[3])
        decoder.page(header, data[reader.pos : end])
        pos = end
        seen = sum(len(v) for v in decoder.valid)
    return decoder


def int96_columns(metadata: pq.FileMetaData) -> list[int]:
    """Indices of the file's INT96 leaf columns (empty for nearly every file)."""
    schema = metadata.schema
    return [i for i in range(len(schema)) if schema.column(i).physical_type == "INT96"]


def decode_column(path: Path, metadata: pq.FileMetaData, index: int) -> pa.Array:
    """Read leaf column ``index`` of every row group as exact ``timestamp[us, UTC]``.

    Raises:
        SchemaError: The leaf sits inside a list or map, or uses an unknown encoding.
    """
    leaf = metadata.schema.column(index)
    if leaf.max_repetition_level > 0:
        raise SchemaError(
            f"{path}: INT96 column {leaf.path!r} sits inside a list or map, which is not "
            "supported; rewrite the file with TIMESTAMP_MICROS timestamps "
            "(Spark: spark.sql.parquet.outputTimestampType=TIMESTAMP_MICROS)."
        )
    values: list[Int64s] = []
    valid: list[Bools] = []
    with open(path, "rb") as handle:
        for group in range(metadata.num_row_groups):
            chunk = metadata.row_group(group).column(index)
            decoder = _read_chunk(handle, chunk, leaf.max_definition_level)
            values.extend(decoder.values)
            valid.extend(decoder.valid)
    if not values:
        return pa.array([], UTC_MICROS)
    return _timestamp_array(np.concatenate(values), np.concatenate(valid))


def _timestamp_array(values: Int64s, valid: Bools) -> pa.Array:
    nulls = len(valid) - int(valid.sum())
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    buffers = [bitmap, pa.py_buffer(values)]
    return pa.Array.from_buffers(UTC_MICROS, len(values), buffers, null_count=nulls)


def fix_int96_columns(table: pa.Table, path: Path, metadata: pq.FileMetaData) -> pa.Table:
    """Replace every INT96 leaf present in ``table`` by its exact decoded values.

    Args:
        table: The table pyarrow read from ``path`` (possibly a projection of it).
        path: The parquet file.
        metadata: Its footer.

    Returns:
        ``table`` with those leaves as ``timestamp[us, tz=UTC]``, nulls kept.
    """
    for index in int96_columns(metadata):
        names = metadata.schema.column(index).path.split(".")
        repeated = metadata.schema.column(index).max_repetition_level > 0
        if not has_leaf(table.schema, names) and not (repeated and names[0] in table.schema.names):
            continue
        exact = decode_column(path, metadata, index)
        position = table.schema.get_field_index(names[0])
        column = table.column(position)
        chunks = [_replace_leaf(chunk, names[1:], part) for chunk, part in _align(column, exact)]
        field = table.schema.field(position)
        new_type = chunks[0].type if chunks else UTC_MICROS
        table = table.set_column(
            position, field.with_type(new_type), pa.chunked_array(chunks, new_type)
        )
        logger.debug("decoded INT96 column %s of %s exactly", ".".join(names), path)
    return table


def has_leaf(schema: pa.Schema, names: Sequence[str]) -> bool:
    """Whether ``schema`` has a field at ``names``, reached through structs only."""
    if schema.get_field_index(names[0]) < 0:
        return False
    kind = schema.field(names[0]).type
    for name in names[1:]:
        if not pa.types.is_struct(kind) or kind.get_field_index(name) < 0:
            return False
        kind = kind.field(name).type
    return True


def _align(column: pa.ChunkedArray, exact: pa.Array) -> Iterator[tuple[pa.Array, pa.Array]]:
    if len(column) != len(exact):
        raise SchemaError(
            f"INT96 decoding found {len(exact)} values where pyarrow read {len(column)} rows."
        )
    offset = 0
    for chunk in column.chunks:
        yield chunk, exact.slice(offset, len(chunk))
        offset += len(chunk)


def _replace_leaf(array: pa.Array, names: list[str], leaf: pa.Array) -> pa.Array:
    if not names:
        return leaf
    fields = list(array.type)
    children = [array.field(i) for i in range(len(fields))]
    index = array.type.get_field_index(names[0])
    children[index] = _replace_leaf(children[index], names[1:], leaf)
    fields[index] = fields[index].with_type(children[index].type)
    mask = array.is_null() if array.null_count else None
    return pa.StructArray.from_arrays(children, fields=fields, mask=mask)
