"""Read cached parquet parts into one Arrow table, and from there into pandas.

:func:`read_parts` reads every part of a batch (in parallel, each part on one thread),
decodes Spark's INT96 timestamps exactly (see :mod:`cai_frames._int96`) and merges the
parts into one table. Parts written by one job nearly always share a schema; then the
merge is a zero-copy concatenation. When they differ (schema drift between runs) the
widest type wins, column by column:

- a column missing from some parts is null-filled there;
- integers and floats widen (int32 with int64 gives int64, float32 with float64 float64);
- a null-typed column takes the other parts' type;
- struct fields are matched by name, recursively (also inside lists and maps), so order
  differences and fields missing from some parts are harmless;
- timestamps take the finest unit that still holds every value of every part (pyarrow
  alone would pick nanoseconds and fail on a year-9999 date), and parts disagreeing on
  the time zone are all read as UTC, which is how parquet stores them.

pyarrow's permissive schema unification and by-name struct casting do most of this; the
timestamp rules are the part written here. When schemas differ, the merged schema is
also made nullable throughout (except map keys), since a field absent from one part is
null in its rows.

:func:`to_pandas` converts with :class:`pandas.ArrowDtype`, which keeps every column in
Arrow memory: nested lists stay Arrow lists instead of millions of Python dicts, and
timestamps beyond 2262 keep their value.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cai_frames import _int96
from cai_frames.errors import PartReadError, SchemaError
from cai_frames.xdm import PART_ROWS_KEY, tidy_columns_needed, tidy_table

__all__ = [
    "load_table",
    "merge_tables",
    "read_parts",
    "footer_schemas",
    "int96_paths",
    "never_null_paths",
    "read_schema",
    "unify_footers",
    "tidy_columns_needed",
    "tidy_table",
    "to_pandas",
]

logger = logging.getLogger(__name__)

# One step of a path into a nested type: ("f", name) for a struct field, ("l", "") for
# list items, ("k", "") / ("v", "") for map keys and values.
Step = tuple[str, str]
TypePath = tuple[Step, ...]

_UNITS = ("ns", "us", "ms", "s")
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_INT64_MAX = 2**63 - 1
_INT96_KEY = b"cai_frames.int96"
_NEVER_NULL_KEY = b"cai_frames.never_null"


def load_table(
    paths: Sequence[Path | str], *, columns: Sequence[str] | None = None, raw: bool = False
) -> pa.Table:
    """Read parts as tidy scores (the default) or as the records were written.

    Args:
        paths: The parts, in order.
        columns: Tidy column names (or, with ``raw=True``, physical columns); ``None``
            means all. Only what they need is read from disk.
        raw: Return the merged records as written instead of tidy scores.

    Raises:
        PartReadError: A part is not readable parquet.
        SchemaError: The parts hold no Customer AI scores (with ``raw=False``), clash in
            their types, or a column name is unknown.
    """
    if not paths:
        raise SchemaError("no parquet parts to load: the batch lists no parts.")
    if raw:
        return read_parts(paths, columns=columns)
    needed = tidy_columns_needed(read_schema(paths), columns)
    return tidy_table(read_parts(paths, columns=needed), columns)


def read_parts(paths: Sequence[Path | str], *, columns: Sequence[str] | None = None) -> pa.Table:
    """Read parquet parts into one table with a schema every part fits.

    Args:
        paths: The parts, in the order their rows should come.
        columns: Columns to read; ``None`` reads all. Top-level names, or dotted paths
            through structs (``"_acmecorp.CustomerAI.churn.score"``), which keep the
            struct nesting and read only those leaves from disk. A column some parts
            lack is null-filled in their rows.

    Returns:
        The parts' rows in order, INT96 timestamps decoded to ``timestamp[us, UTC]``,
        types merged as the module docstring describes.

    Raises:
        PartReadError: A part is not readable parquet (the message names it).
        SchemaError: A column has clashing types across parts (say int in one, string in
            another), or a requested column exists in no part.
    """
    files = [Path(p) for p in paths]
    wanted = None if columns is None else list(dict.fromkeys(columns))
    tables = _map_parts(lambda path: _read_part(path, wanted), files)
    if wanted is not None:
        _check_found(wanted, tables, files)
    table = merge_tables(tables, files)
    if wanted is not None:
        order = list(dict.fromkeys(name.split(".")[0] for name in wanted))
        table = table.select([name for name in order if name in table.schema.names])
    # Tidy output orders instances within each part, so remember where parts end.
    metadata = dict(table.schema.metadata or {})
    metadata[PART_ROWS_KEY] = json.dumps([t.num_rows for t in tables]).encode()
    return table.replace_schema_metadata(metadata)


def read_schema(paths: Sequence[Path | str]) -> pa.Schema:
    """The schema :func:`read_parts` would give for ``paths``, from their footers only.

    Raises:
        PartReadError: A part is not readable parquet.
        SchemaError: A column has clashing types across parts.
    """
    files = [Path(p) for p in paths]
    return unify_footers([_int96_as_utc(schema) for schema in footer_schemas(files)], files)


def footer_schemas(paths: Sequence[Path | str]) -> list[pa.Schema]:
    """Each part's Arrow schema as its footer gives it (INT96 shows as naive nanoseconds).

    Raises:
        PartReadError: A part is not readable parquet.
    """
    return _map_parts(_footer_schema, [Path(p) for p in paths])


def unify_footers(schemas: Sequence[pa.Schema], sources: Sequence[Path]) -> pa.Schema:
    """The merged schema of parts with these schemas (see the module docstring).

    Timestamp units are merged from the schemas alone here, without the values check
    :func:`merge_tables` makes.

    Raises:
        SchemaError: A column has clashing types across parts.
    """
    if not schemas:
        return pa.schema([])
    if all(schema.equals(schemas[0]) for schema in schemas[1:]):
        return schemas[0]
    return _relax(_unify(schemas, sources))


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Convert with Arrow-backed dtypes everywhere (``pd.ArrowDtype``).

    Each column keeps its Arrow buffers (no copy into numpy or Python objects), so the
    frame costs about what the table does, nested columns stay Arrow, and timestamps
    outside pandas' nanosecond range (years before 1677 or after 2262) keep their value.
    """
    frame: pd.DataFrame = table.to_pandas(types_mapper=pd.ArrowDtype)
    return frame


def merge_tables(tables: Sequence[pa.Table], sources: Sequence[Path] | None = None) -> pa.Table:
    """Concatenate tables whose schemas may differ into one with the widest types.

    Args:
        tables: The tables, in row order.
        sources: Where each came from, only to name them in errors.

    Raises:
        SchemaError: A column has clashing types across the tables.
    """
    if not tables:
        return pa.table({})
    names = list(sources) if sources is not None else [Path(f"#{i}") for i in range(len(tables))]
    first = tables[0].schema
    if all(table.schema.equals(first) for table in tables[1:]):
        return pa.concat_tables(tables)
    schemas = [table.schema for table in tables]
    target = _relax(_fit_timestamps(_unify(schemas, names), tables))
    logger.debug("parts differ in schema; merging %d of them into %s", len(tables), target)
    return pa.concat_tables([_conform(table, target) for table in tables])


def _map_parts(read: Any, files: list[Path]) -> list[Any]:
    # Parts are ~16 MB each: one part per thread keeps every core busy with little
    # coordination, and pyarrow releases the GIL while decoding.
    if len(files) <= 1:
        return [read(path) for path in files]
    workers = min(len(files), os.cpu_count() or 4)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cai-frames-read") as pool:
        return list(pool.map(read, files))


def _open(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise _unreadable(path, error) from error


def _unreadable(path: Path, error: BaseException) -> PartReadError:
    return PartReadError(
        f"{path} is not a readable parquet part ({error}). Run `cai-frames cache verify "
        "--repair` to remove the broken parts (and only those); the next load fetches them "
        "again."
    )


def _footer_schema(path: Path) -> pa.Schema:
    part = _open(path)
    schema = part.schema_arrow
    int96 = [part.metadata.schema.column(i).path for i in _int96.int96_columns(part.metadata)]
    recorded = {_INT96_KEY: json.dumps(int96), _NEVER_NULL_KEY: json.dumps(_never_null(part))}
    return schema.with_metadata({**(schema.metadata or {}), **recorded})


def _never_null(part: pq.ParquetFile) -> list[str]:
    """Leaf columns whose statistics show no null in any row group (none without stats)."""
    meta = part.metadata
    if meta.num_row_groups == 0:
        return []
    found = []
    for index in range(meta.num_columns):
        stats = [meta.row_group(g).column(index).statistics for g in range(meta.num_row_groups)]
        if all(s is not None and s.has_null_count and s.null_count == 0 for s in stats):
            found.append(meta.schema.column(index).path)
    return found


def _int96_as_utc(schema: pa.Schema) -> pa.Schema:
    """The footer schema with INT96 leaves typed as :func:`read_parts` returns them."""
    for column in int96_paths(schema):
        names = column.split(".")
        if _int96.has_leaf(schema, names):
            schema = _set_schema_type(schema, tuple(("f", n) for n in names), _int96.UTC_MICROS)
    return schema


def never_null_paths(schema: pa.Schema) -> set[str]:
    """Dotted leaf paths a :func:`footer_schemas` schema records as holding no null.

    A leaf with no null also proves every struct above it non-null in every row, which
    lets a query skip a null check that would otherwise read whole structs.
    """
    paths: list[str] = json.loads((schema.metadata or {}).get(_NEVER_NULL_KEY, b"[]"))
    return set(paths)


def int96_paths(schema: pa.Schema) -> list[str]:
    """The dotted paths of INT96 leaves recorded in a :func:`footer_schemas` schema."""
    paths: list[str] = json.loads((schema.metadata or {}).get(_INT96_KEY, b"[]"))
    return paths


def _read_part(path: Path, columns: list[str] | None) -> pa.Table:
    part = _open(path)
    selected = columns if columns is None else [c for c in columns if _has_path(part, c)]
    try:
        table = part.read(columns=selected, use_threads=False)
    except (pa.ArrowException, OSError) as error:
        raise _unreadable(path, error) from error
    if _int96.int96_columns(part.metadata):
        table = _int96.fix_int96_columns(table, path, part.metadata)
    return table


def _has_path(part: pq.ParquetFile, column: str) -> bool:
    names = column.split(".")
    return _int96.has_leaf(part.schema_arrow, names)


def _check_found(columns: list[str], tables: list[pa.Table], files: list[Path]) -> None:
    present = {name for table in tables for name in table.schema.names}
    missing = [c for c in columns if c.split(".")[0] not in present]
    if missing and files:
        held = sorted({name for schema in footer_schemas(files) for name in schema.names})
        raise SchemaError(
            f"column(s) {missing} are in none of the {len(files)} parts; the parts hold "
            f"{held}. Pick names from that list."
        )


def _unify(schemas: Sequence[pa.Schema], names: Sequence[Path]) -> pa.Schema:
    # Strip time zones first: pyarrow refuses to merge "UTC" with naive or "+00:00",
    # and _fit_timestamps puts the right zone back per column.
    stripped = [_map_timestamps(schema, lambda t: pa.timestamp(t.unit)) for schema in schemas]
    try:
        merged = pa.unify_schemas(stripped, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as error:
        raise _clash(stripped, names, error) from error
    leaves = [dict(_timestamp_leaves(schema)) for schema in schemas]
    for path, kind in list(_timestamp_leaves(merged)):
        zones = {own[path].tz for own in leaves if path in own}
        zone = zones.pop() if len(zones) == 1 else "UTC"
        merged = _set_schema_type(merged, path, pa.timestamp(kind.unit, zone))
    return merged


def _clash(schemas: list[pa.Schema], names: Sequence[Path], error: Exception) -> SchemaError:
    for index in range(1, len(schemas)):
        try:
            pa.unify_schemas(schemas[: index + 1], promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            return SchemaError(
                f"{names[index]} does not fit the parts before it ({names[0]} first): "
                f"{error}. These parts come from incompatible schemas; load them separately."
            )
    return SchemaError(f"the parts' schemas cannot be merged: {error}")


def _fit_timestamps(target: pa.Schema, tables: Sequence[pa.Table]) -> pa.Schema:
    for path, kind in list(_timestamp_leaves(target)):
        owners = []
        for table in tables:
            leaves = dict(_timestamp_leaves(table.schema))
            if path in leaves:
                owners.append((table, leaves[path].unit))
        units = sorted({unit for _, unit in owners}, key=_UNITS.index)
        unit = next((u for u in units if _all_fit(owners, path, u)), units[-1])
        if unit != kind.unit:
            logger.debug("timestamp %s kept in %s so every value fits", _show(path), unit)
            target = _set_schema_type(target, path, pa.timestamp(unit, kind.tz))
    return target


def _all_fit(owners: list[tuple[pa.Table, str]], path: TypePath, unit: str) -> bool:
    for table, own in owners:
        factor = _PER_SECOND[unit] // _PER_SECOND[own]
        if factor <= 1:
            continue
        values = _leaf_values(table.column(path[0][1]), path[1:])
        bounds = pc.min_max(values.cast(pa.int64()))
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        if low is not None and max(abs(low), abs(high)) > _INT64_MAX // factor:
            return False
    return True


def _leaf_values(column: pa.ChunkedArray, steps: TypePath) -> pa.ChunkedArray:
    chunks = []
    for chunk in column.chunks:
        for kind, name in steps:
            if kind == "f":
                chunk = pc.struct_field(chunk, [name])
            else:
                chunk = chunk.flatten()
                chunk = chunk.field(0 if kind == "k" else 1) if kind in "kv" else chunk
        chunks.append(chunk)
    return pa.chunked_array(chunks, _type_at(column.type, steps))


def _conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    columns = []
    for field in target:
        if field.name not in table.schema.names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        if column.type.equals(field.type):
            columns.append(column)
        else:
            columns.append(column.cast(field.type, safe=not _coarsens(column.type, field.type)))
    return pa.Table.from_arrays(columns, schema=target)


def _coarsens(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether casting truncates some timestamp below its own unit (a wider range needed)."""
    wanted = dict(_type_timestamps(target, ()))
    return any(
        path in wanted and _UNITS.index(kind.unit) < _UNITS.index(wanted[path].unit)
        for path, kind in _type_timestamps(source, ())
    )


def _timestamp_leaves(schema: pa.Schema) -> Iterator[tuple[TypePath, pa.TimestampType]]:
    for field in schema:
        yield from _type_timestamps(field.type, (("f", field.name),))


def _type_timestamps(
    kind: pa.DataType, path: TypePath
) -> Iterator[tuple[TypePath, pa.TimestampType]]:
    if pa.types.is_timestamp(kind):
        yield path, kind
    elif pa.types.is_struct(kind):
        for field in kind:
            yield from _type_timestamps(field.type, (*path, ("f", field.name)))
    elif pa.types.is_map(kind):
        yield from _type_timestamps(kind.key_type, (*path, ("k", "")))
        yield from _type_timestamps(kind.item_type, (*path, ("v", "")))
    elif _is_list(kind):
        yield from _type_timestamps(kind.value_type, (*path, ("l", "")))


def _is_list(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    )


def _type_at(kind: pa.DataType, steps: TypePath) -> pa.DataType:
    for step, name in steps:
        if step == "f":
            kind = kind.field(name).type
        elif step == "k":
            kind = kind.key_type
        elif step == "v":
            kind = kind.item_type
        else:
            kind = kind.value_type
    return kind


def _map_timestamps(schema: pa.Schema, change: Any) -> pa.Schema:
    for path, kind in list(_timestamp_leaves(schema)):
        schema = _set_schema_type(schema, path, change(kind))
    return schema


def _set_schema_type(schema: pa.Schema, path: TypePath, new: pa.DataType) -> pa.Schema:
    index = schema.get_field_index(path[0][1])
    field = schema.field(index)
    return schema.set(index, field.with_type(_set_type(field.type, path[1:], new)))


def _set_type(kind: pa.DataType, steps: TypePath, new: pa.DataType) -> pa.DataType:
    if not steps:
        return new
    (step, name), rest = steps[0], steps[1:]
    if step == "f":
        fields = [f.with_type(_set_type(f.type, rest, new)) if f.name == name else f for f in kind]
        return pa.struct(fields)
    if step in "kv":
        key, item = kind.key_field, kind.item_field
        if step == "k":
            key = key.with_type(_set_type(key.type, rest, new))
        else:
            item = item.with_type(_set_type(item.type, rest, new))
        return pa.map_(key, item, kind.keys_sorted)
    return _rebuild_list(kind, kind.value_field.with_type(_set_type(kind.value_type, rest, new)))


def _rebuild_list(kind: pa.DataType, item: pa.Field) -> pa.DataType:
    if pa.types.is_large_list(kind):
        return pa.large_list(item)
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(item, kind.list_size)
    return pa.list_(item)


def _relax(schema: pa.Schema) -> pa.Schema:
    """Make every field nullable (map keys excepted): merged parts may lack any of them."""
    return pa.schema([_relax_field(f) for f in schema], metadata=schema.metadata)


def _relax_field(field: pa.Field) -> pa.Field:
    return field.with_type(_relax_type(field.type)).with_nullable(True)


def _relax_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_struct(kind):
        return pa.struct([_relax_field(f) for f in kind])
    if pa.types.is_map(kind):
        return pa.map_(kind.key_field, _relax_field(kind.item_field), kind.keys_sorted)
    if _is_list(kind):
        return _rebuild_list(kind, _relax_field(kind.value_field))
    return kind


def _show(path: TypePath) -> str:
    return ".".join(name or f"<{step}>" for step, name in path)
