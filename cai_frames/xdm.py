"""Find the Customer AI scores inside an XDM record by its structure, and tidy them.

A score record nests its scores as ``_<tenant>.CustomerAI.<instance>.<field>``, where the
tenant namespace and the instance names differ for every organisation and app, and the
field spelling is not documented (``scoreDate`` and ``score_date`` both occur). So
nothing here is looked up by a fixed name except ``CustomerAI`` and ``identityMap``:

- the tenant is a top-level struct whose name starts with ``_`` and that holds a
  ``CustomerAI`` struct;
- every struct inside ``CustomerAI`` is an instance;
- score fields match case-insensitively, ignoring underscores (``percentile`` also
  accepts ``percentileScore``); a field an instance lacks becomes a typed null column.

:func:`tidy_table` turns the records into one row per (record, instance) with flat
columns, entirely with Arrow compute and numpy over whole columns: no per-row Python.
Row order: parts in order, then instances in name order within each part, then records
in file order. Part boundaries come from the ``cai_frames.part_rows`` schema metadata
that :func:`cai_frames.load.read_parts` writes; without it the table counts as one part.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from cai_frames.errors import ConfigurationError, SchemaError

logger = logging.getLogger(__name__)

PART_ROWS_KEY = b"cai_frames.part_rows"
UTC_MICROS = pa.timestamp("us", tz="UTC")
FACTOR_TYPE = pa.list_(
    pa.struct([("code", pa.string()), ("value", pa.string()), ("importance", pa.string())])
)
TIDY_TYPES = {
    "profile_id": pa.string(),
    "profile_namespace": pa.string(),
    "instance": pa.string(),
    "score": pa.int32(),
    "probability": pa.float64(),
    "percentile": pa.int32(),
    "propensity_type": pa.string(),
    "score_date": UTC_MICROS,
    "influential_factors": FACTOR_TYPE,
}
TIDY_COLUMNS = tuple(TIDY_TYPES)
IDENTITY_COLUMNS = ("profile_id", "profile_namespace")
SCORE_COLUMNS = TIDY_COLUMNS[3:]
_ALIASES = {
    "score": ("score",),
    "probability": ("probability",),
    "percentile": ("percentile", "percentilescore"),
    "propensity_type": ("propensitytype",),
    "score_date": ("scoredate",),
    "influential_factors": ("influentialfactors",),
}


def normalize(name: str) -> str:
    """The spelling-free form names are compared in: lower case, no underscores."""
    return name.replace("_", "").lower()


@dataclass(frozen=True)
class ScoreLayout:
    """Where the scores sit in a record schema.

    Attributes:
        tenant: The tenant struct's column name, e.g. ``_acmecorp``.
        customer_ai: The ``CustomerAI`` field's name as spelled in the data.
        instances: Instance names, sorted.
        fields: For each instance, tidy column name to physical field name (only the
            fields the instance has).
        identity_map: The identity map column's name, or None when there is none.
    """

    tenant: str
    customer_ai: str
    instances: tuple[str, ...]
    fields: dict[str, dict[str, str]]
    identity_map: str | None

    def path(self, instance: str, column: str | None = None) -> str:
        """The dotted path of an instance, or of one of its score fields."""
        parts = [self.tenant, self.customer_ai, instance]
        if column is not None:
            parts.append(self.fields[instance][column])
        return ".".join(parts)


def find_layout(schema: pa.Schema) -> ScoreLayout:
    """Locate the tenant struct, its Customer AI instances and their score fields.

    Raises:
        SchemaError: No top-level ``_``-struct holds a ``CustomerAI`` struct with at
            least one instance struct.
    """
    for field in schema:
        found = _customer_ai(field)
        if found is None:
            continue
        instances = sorted(f.name for f in found.type if pa.types.is_struct(f.type))
        if not instances:
            continue
        fields = {name: _score_fields(found.type.field(name).type) for name in instances}
        identity = next((f.name for f in schema if normalize(f.name) == "identitymap"), None)
        return ScoreLayout(field.name, found.name, tuple(instances), fields, identity)
    raise SchemaError(_not_found_message(schema))


def _customer_ai(field: pa.Field) -> pa.Field | None:
    if not (field.name.startswith("_") and pa.types.is_struct(field.type)):
        return None
    return next(
        (f for f in field.type if normalize(f.name) == "customerai" and pa.types.is_struct(f.type)),
        None,
    )


def _score_fields(instance: pa.StructType) -> dict[str, str]:
    by_spelling = {normalize(f.name): f.name for f in reversed(list(instance))}
    found = {}
    for column, aliases in _ALIASES.items():
        name = next((by_spelling[a] for a in aliases if a in by_spelling), None)
        if name is not None:
            found[column] = name
    return found


def _not_found_message(schema: pa.Schema) -> str:
    shown = ", ".join(f"{f.name} ({_kind(f.type)})" for f in schema) or "no columns"
    tenants = [
        f"{f.name}: {{{', '.join(c.name for c in f.type)}}}"
        for f in schema
        if f.name.startswith("_") and pa.types.is_struct(f.type)
    ]
    inside = f"; the _-prefixed structs hold {'; '.join(tenants)}" if tenants else ""
    return (
        "no Customer AI scores found: expected a top-level struct named _<tenant> holding a "
        f"CustomerAI struct with one struct per instance, but the columns are {shown}{inside}. "
        "Is this a Customer AI score dataset? Pass raw=True to load the records as written."
    )


def _kind(kind: pa.DataType) -> str:
    if pa.types.is_struct(kind):
        return "struct"
    if pa.types.is_map(kind):
        return "map"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return "list"
    return str(kind)


def column_list(columns: str | Sequence[str] | None) -> list[str] | None:
    """The ``columns`` argument of a loading function as a list of names.

    One string is one column name (``"score"`` is ``["score"]``, never its letters).

    Raises:
        ConfigurationError: ``columns`` is an empty list.
    """
    if columns is None:
        return None
    names = [columns] if isinstance(columns, str) else list(columns)
    if not names:
        raise ConfigurationError("columns is empty; leave it out to load every column.")
    return names


def resolve_columns(layout: ScoreLayout, columns: str | Sequence[str] | None) -> list[str]:
    """The tidy columns to build, in output order; ``instance`` only with several instances.

    One string is one column name, as in :func:`column_list`.

    Raises:
        SchemaError: A name is not a tidy column.
    """
    if isinstance(columns, str):
        columns = [columns]
    if columns is None:
        several = len(layout.instances) > 1
        return [c for c in TIDY_COLUMNS if c != "instance" or several]
    unknown = [c for c in columns if c not in TIDY_TYPES]
    if unknown:
        raise SchemaError(
            f"unknown tidy column(s) {unknown}; the tidy columns are {list(TIDY_COLUMNS)} "
            "(pass raw=True to pick physical columns instead)."
        )
    return [c for c in TIDY_COLUMNS if c in columns]


def tidy_columns_needed(schema: pa.Schema, columns: Sequence[str] | None = None) -> list[str]:
    """The physical columns :func:`tidy_table` needs for the tidy ``columns``.

    Score fields come back as dotted leaf paths (``"_acmecorp.CustomerAI.churn.score"``),
    which :func:`cai_frames.load.read_parts` reads without the rest of the tenant struct.

    Args:
        schema: The records' schema (e.g. from :func:`cai_frames.load.read_schema`).
        columns: Tidy column names; ``None`` means all of them.

    Raises:
        SchemaError: No Customer AI scores in ``schema``, or an unknown column name.
    """
    layout = find_layout(schema)
    wanted = resolve_columns(layout, columns)
    needed = []
    if layout.identity_map is not None and set(wanted) & set(IDENTITY_COLUMNS):
        needed.append(layout.identity_map)
    for instance in layout.instances:
        present = [c for c in SCORE_COLUMNS if c in layout.fields[instance]]
        chosen = [c for c in present if c in wanted] or present[:1]
        needed.extend(layout.path(instance, c) for c in chosen)
        if not chosen:
            needed.append(layout.path(instance))
    if any("." in name for name in _names(schema, layout)):
        # A dot inside a name would split the path in the wrong place: read whole structs.
        needed = list(dict.fromkeys(name.split(".")[0] for name in needed))
    return needed


def _names(schema: pa.Schema, layout: ScoreLayout) -> Iterable[str]:
    yield layout.tenant
    yield layout.customer_ai
    for instance in layout.instances:
        yield instance
        yield from layout.fields[instance].values()


def tidy_table(table: pa.Table, columns: Sequence[str] | None = None) -> pa.Table:
    """Reshape score records into tidy rows: one per (record, non-null instance).

    Args:
        table: Records as :func:`cai_frames.load.read_parts` gives them (a projection to
            :func:`tidy_columns_needed` is enough).
        columns: Tidy columns to build; ``None`` builds them all (``instance`` only when
            there are several instances).

    Returns:
        A table of the tidy columns in :data:`TIDY_COLUMNS` order. Types are those of
        the data, widened across instances; a field no instance has is a typed null.

    Raises:
        SchemaError: No Customer AI scores in ``table``, or an unknown column name.
    """
    layout = find_layout(table.schema)
    wanted = resolve_columns(layout, columns)
    identity = _identity_columns(table, layout, wanted)
    per_instance = [
        _instance_table(table, layout, name, wanted, identity) for name in layout.instances
    ]
    per_instance = _same_schema(per_instance)
    pieces = []
    for start, length in _part_ranges(table):
        for instance_table, valid in per_instance:
            piece = instance_table.slice(start, length)
            keep = valid.slice(start, length)
            pieces.append(piece if pc.all(keep).as_py() else piece.filter(keep))
    schema = per_instance[0][0].schema
    return pa.concat_tables(pieces) if pieces else schema.empty_table()


def _part_ranges(table: pa.Table) -> list[tuple[int, int]]:
    metadata = table.schema.metadata or {}
    rows = json.loads(metadata[PART_ROWS_KEY]) if PART_ROWS_KEY in metadata else None
    if rows is None or sum(rows) != table.num_rows:
        return [(0, table.num_rows)]
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).tolist()
    return [(start, length) for start, length in zip(starts, rows, strict=True) if length]


def _instance_table(
    table: pa.Table,
    layout: ScoreLayout,
    instance: str,
    wanted: list[str],
    identity: dict[str, pa.ChunkedArray],
) -> tuple[pa.Table, pa.ChunkedArray]:
    record = _struct_path(table.column(layout.tenant), [layout.customer_ai, instance])
    fields = layout.fields[instance]
    columns: dict[str, pa.ChunkedArray | pa.Array] = {}
    for name in wanted:
        if name in identity:
            columns[name] = identity[name]
        elif name == "instance":
            columns[name] = pa.repeat(pa.scalar(instance, pa.string()), table.num_rows)
        elif name in fields:
            columns[name] = _struct_path(record, [fields[name]])
        else:
            columns[name] = pa.nulls(table.num_rows, TIDY_TYPES[name])
    valid = pa.chunked_array([chunk.is_valid() for chunk in record.chunks], pa.bool_())
    return pa.table(columns), valid


def _struct_path(column: pa.ChunkedArray, names: list[str]) -> pa.ChunkedArray:
    # struct_field ANDs in every parent's validity, so a null instance gives null fields.
    chunks = [pc.struct_field(chunk, names) for chunk in column.chunks]
    kind = column.type
    for name in names:
        kind = kind.field(name).type
    return pa.chunked_array(chunks, kind)


def _same_schema(
    tables: list[tuple[pa.Table, pa.ChunkedArray]],
) -> list[tuple[pa.Table, pa.ChunkedArray]]:
    """Give every instance's table one schema: widest types, null columns typed."""
    schemas = [table.schema for table, _ in tables]
    target = pa.unify_schemas(schemas, promote_options="permissive")
    fields = [f.with_type(TIDY_TYPES[f.name]) if pa.types.is_null(f.type) else f for f in target]
    target = pa.schema([f.with_nullable(True) for f in fields])
    return [(t if t.schema.equals(target) else t.cast(target), v) for t, v in tables]


def _identity_columns(
    table: pa.Table, layout: ScoreLayout, wanted: list[str]
) -> dict[str, pa.ChunkedArray]:
    if not set(wanted) & set(IDENTITY_COLUMNS):
        return {}
    column = layout.identity_map
    if column is None or not pa.types.is_map(table.schema.field(column).type):
        logger.warning("no identityMap column: profile_id and profile_namespace are null")
        nulls = pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
        return {name: nulls for name in IDENTITY_COLUMNS if name in wanted}
    chunks = table.column(column).chunks
    # numpy's searches and Arrow's take release the GIL: chunks run in parallel.
    with ThreadPoolExecutor(max_workers=min(len(chunks), os.cpu_count() or 4) or 1) as pool:
        picked = list(pool.map(primary_identity, chunks))
    found = {
        "profile_id": pa.chunked_array([ids for ids, _ in picked], pa.string()),
        "profile_namespace": pa.chunked_array([names for _, names in picked], pa.string()),
    }
    return {name: found[name] for name in IDENTITY_COLUMNS if name in wanted}


def primary_identity(identity_map: pa.MapArray) -> tuple[pa.Array, pa.Array]:
    """Each record's primary identity: its id and its namespace.

    The primary identity is the first with ``primary`` true; a record with none falls
    back to its first identity in map order; a record with no identity gets nulls.

    A record's identities are one contiguous run of the flattened identity structs, so
    both choices come from running counts over those structs: how many qualifying
    positions come before a record's run, and whether its run holds one. The work is
    linear in the identities, with no search per record.

    Args:
        identity_map: ``map<namespace, list<struct<id, ..., primary>>>``, one per record.

    Returns:
        The ids and the namespaces, as string arrays as long as ``identity_map``.
    """
    entries = identity_map.values
    lists = entries.field(1)
    identities = lists.values
    row_offsets = np.asarray(identity_map.offsets)
    first, last = int(row_offsets[0]), int(row_offsets[-1])
    list_offsets = np.asarray(lists.offsets)[first : last + 1]
    span_start = list_offsets[row_offsets[:-1] - first]
    span_end = np.where(_valid(identity_map), list_offsets[row_offsets[1:] - first], span_start)
    base = int(list_offsets[0])
    usable = _valid(identities)[base : int(list_offsets[-1])]
    if lists.null_count:
        usable = usable & np.repeat(_valid(lists)[first:last], np.diff(list_offsets))
    primary = usable & _primary_flags(identities)[base : int(list_offsets[-1])]
    chosen = _first_in_span(primary, span_start - base, span_end - base)
    fallback = _first_in_span(usable, span_start - base, span_end - base)
    chosen = np.where(chosen >= 0, chosen, fallback)
    missing = chosen < 0
    position = np.where(missing, 0, chosen) + base
    entry = _entry_of(list_offsets - base, position - base) + first
    id_field = _field_named(identities.type, "id")
    mask = missing if missing.any() else None
    ids = identities.field(id_field).take(pa.array(position, mask=mask))
    namespaces = entries.field(0).take(pa.array(entry, mask=mask))
    return ids.cast(pa.string()), namespaces.cast(pa.string())


def _first_in_span(
    flags: npt.NDArray[np.bool_], start: npt.NDArray[np.int64], end: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Per span ``[start, end)``, the first index where ``flags`` is true, else -1."""
    before = np.concatenate(([0], np.cumsum(flags, dtype=np.int64)))
    hits_before = before[start]
    inside = before[end] > hits_before
    result: npt.NDArray[np.int64] = np.full(len(start), -1, dtype=np.int64)
    result[inside] = np.flatnonzero(flags)[hits_before[inside]]
    return result


def _entry_of(
    offsets: npt.NDArray[np.int64], positions: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """For each position, the last ``i`` with ``offsets[i] <= position`` (offsets sorted).

    A running count of the offsets at or below each position gives it without a search.
    """
    at_or_below = np.cumsum(np.bincount(offsets, minlength=int(offsets[-1]) + 1))
    found: npt.NDArray[np.int64] = at_or_below[np.minimum(positions, len(at_or_below) - 1)] - 1
    return found


def _valid(array: pa.Array) -> npt.NDArray[np.bool_]:
    if array.null_count == 0:
        return np.ones(len(array), dtype=np.bool_)
    return np.asarray(array.is_valid())


def _primary_flags(identities: pa.StructArray) -> npt.NDArray[np.bool_]:
    try:
        name = _field_named(identities.type, "primary")
    except SchemaError:
        return np.zeros(len(identities), dtype=np.bool_)
    flags = identities.field(name)
    return np.asarray(pc.fill_null(flags.cast(pa.bool_()), False))


def _field_named(kind: pa.StructType, wanted: str) -> str:
    for field in kind:
        if normalize(field.name) == wanted:
            return str(field.name)
    raise SchemaError(f"identity struct {kind} has no {wanted!r} field")
