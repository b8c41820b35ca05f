"""DuckDB views over cached parts, with the same tidy columns as :func:`load_scores`.

:func:`view_sql` writes one ``SELECT`` over ``read_parquet([...], union_by_name = true)``
that reshapes the records the way :func:`cai_frames.xdm.tidy_table` does, using DuckDB's
list and map functions for the primary identity and one ``UNION ALL`` branch per
instance. A view stores only that query: creating it reads the parts' footers (to bind
the columns), never their data, and each query reads only the columns it uses.

DuckDB's ``union_by_name`` already merges what drifts between parts the way
:func:`cai_frames.load.read_parts` does (missing columns, int32 with int64, struct
fields by name, null-typed columns). One thing it gets wrong: Spark's INT96 timestamps
come out of DuckDB as naive ``TIMESTAMP`` (UTC wall-clock time), and where one file has
a naive timestamp and another a UTC one, ``union_by_name`` converts the naive values
through the session's ``TimeZone``, shifting them by its offset. So the tidy view reads
parts with naive timestamps in their own ``read_parquet`` and marks those values as UTC
explicitly (``timezone('UTC', ...)``).

Known limits, both from DuckDB itself:

- ``raw=True`` is a plain ``read_parquet`` over all parts: naive timestamps stay naive,
  and mixing INT96 and microsecond parts in one raw view shifts the INT96 values by the
  session time zone (``SET TimeZone = 'UTC'`` avoids it).
- DuckDB refuses INT96 values outside its own range ("Int96 timestamp is out of range"),
  such as a year-290000 date; :func:`cai_frames.load.read_parts` reads those exactly.

Rows come in no particular order, as SQL promises none; add ``ORDER BY`` when it matters.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from cai_frames import load, xdm
from cai_frames.errors import SchemaError

logger = logging.getLogger(__name__)

_DUCKDB_TYPES = {
    "profile_id": "VARCHAR",
    "profile_namespace": "VARCHAR",
    "score": "INTEGER",
    "probability": "DOUBLE",
    "percentile": "INTEGER",
    "propensity_type": "VARCHAR",
    "score_date": "TIMESTAMPTZ",
    "influential_factors": "STRUCT(code VARCHAR, value VARCHAR, importance VARCHAR)[]",
}
_IDENTITY = "__cai_identity"


def quote_identifier(name: str) -> str:
    """A DuckDB identifier for ``name``, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A DuckDB string literal for ``text``."""
    return "'" + text.replace("'", "''") + "'"


def view_sql(
    paths: Sequence[Path | str],
    *,
    schema: pa.Schema | None = None,
    raw: bool = False,
    columns: Sequence[str] | None = None,
) -> str:
    """A DuckDB ``SELECT`` giving the parts' tidy scores, or their raw records.

    Args:
        paths: The parts.
        schema: Their merged schema, as :func:`cai_frames.load.read_schema` gives it;
            read from the footers when None.
        raw: Select the records as written (``SELECT *``) instead of tidy scores.
        columns: Tidy columns to select (all by default, ``instance`` only with several
            instances); ignored with ``raw=True``.

    Raises:
        SchemaError: No Customer AI scores in the parts, or an unknown column name.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise SchemaError("no parts to build a view over: the batch has no parquet parts.")
    if raw:
        return f"SELECT * FROM {_read_parquet(files)}"
    footers = load.footer_schemas(files)
    merged = schema if schema is not None else load.unify_footers(footers, files)
    layout = xdm.find_layout(merged)
    wanted = xdm.resolve_columns(layout, columns)
    branches = []
    for group, naive in _groups(files, footers):
        group_footers = [footers[i] for i in group]
        group_schema = load.unify_footers(group_footers, [files[i] for i in group])
        source = _source(group_schema, [files[i] for i in group], wanted)
        for instance in layout.instances:
            select = _instance_select(group_schema, instance, wanted, naive)
            if select is None:
                continue
            branch = f"{select}\nFROM {source}"
            if not _never_null(group_footers, instance):
                branch += f"\nWHERE {_instance_ref(layout, instance)} IS NOT NULL"
            branches.append(branch)
    return "\nUNION ALL\n".join(branches)


def create_view(
    con: duckdb.DuckDBPyConnection,
    name: str,
    paths: Sequence[Path | str],
    *,
    schema: pa.Schema | None = None,
    raw: bool = False,
) -> None:
    """Create (or replace) view ``name`` on ``con`` over the parts.

    Args:
        con: The DuckDB connection.
        name: The view's name: any characters but not blank (it is quoted).
        paths: The parts.
        schema: Their merged schema; read from the footers when None.
        raw: Expose the records as written instead of tidy scores.

    Raises:
        ValueError: ``name`` is empty or blank.
        SchemaError: No Customer AI scores in the parts (with ``raw=False``).
    """
    if not name.strip():
        raise ValueError(f"the view name {name!r} is blank; pass a name such as 'scores'")
    query = view_sql(paths, schema=schema, raw=raw)
    con.execute(f"CREATE OR REPLACE VIEW {quote_identifier(name)} AS\n{query}")
    logger.debug("created view %s over %d parts", name, len(paths))


def _read_parquet(files: Sequence[Path]) -> str:
    listed = ", ".join(quote_literal(str(path)) for path in files)
    return f"read_parquet([{listed}], union_by_name = true)"


def _groups(files: list[Path], footers: list[pa.Schema]) -> list[tuple[list[int], bool]]:
    """Parts split by whether their score dates are naive (INT96 or not UTC-adjusted)."""
    split: dict[bool, list[int]] = {}
    for index, footer in enumerate(footers):
        split.setdefault(_has_naive_dates(footer), []).append(index)
    return [(indices, naive) for naive, indices in sorted(split.items())]


def _never_null(footers: list[pa.Schema], instance: str) -> bool:
    """Whether every part's statistics prove the instance present in all its rows.

    Then the branch needs no ``IS NOT NULL`` test on the instance struct, a test for
    which DuckDB reads every field of the struct, influential factors included: several
    times the work of a query on two scores.
    """
    for footer in footers:
        try:
            layout = xdm.find_layout(footer)
        except SchemaError:
            return False
        if instance not in layout.instances:
            return False
        fields = layout.fields[instance]
        names = [layout.tenant, layout.customer_ai, instance, *fields.values()]
        if any("." in name for name in names):
            return False
        scalars = {layout.path(instance, c) for c in fields if c != "influential_factors"}
        if not scalars & load.never_null_paths(footer):
            return False
    return True


def _has_naive_dates(footer: pa.Schema) -> bool:
    try:
        layout = xdm.find_layout(footer)
    except SchemaError:
        return False
    for instance in layout.instances:
        if "score_date" in layout.fields[instance]:
            kind = _type_at(footer, layout.path(instance, "score_date"))
            if pa.types.is_timestamp(kind) and kind.tz is None:
                return True
    return False


def _type_at(schema: pa.Schema, dotted: str) -> pa.DataType:
    names = dotted.split(".")
    kind = schema.field(names[0]).type
    for name in names[1:]:
        kind = kind.field(name).type
    return kind


def _source(schema: pa.Schema, files: list[Path], wanted: list[str]) -> str:
    """The FROM clause: the parts, plus the primary identity picked once per record."""
    reader = _read_parquet(files)
    layout = xdm.find_layout(schema)
    if not set(wanted) & set(xdm.IDENTITY_COLUMNS) or layout.identity_map is None:
        return reader
    pick = _identity_expression(schema, layout.identity_map)
    return f"(SELECT *, {pick} AS {_IDENTITY} FROM {reader})"


def _identity_expression(schema: pa.Schema, column: str) -> str:
    """The first identity flagged primary, else the first identity, as {ns, id}."""
    kind = schema.field(column).type
    identity = kind.item_type.value_type if pa.types.is_map(kind) else None
    if identity is None or not pa.types.is_struct(identity):
        raise SchemaError(f"identity map column {column!r} has type {kind}, not a map of lists.")
    names = {xdm.normalize(f.name): f.name for f in identity}
    id_ref = f"i.{quote_identifier(names['id'])}" if "id" in names else "NULL"
    primary = f"i.{quote_identifier(names['primary'])}" if "primary" in names else "false"
    identities = (
        f"flatten(list_transform(map_entries({quote_identifier(column)}), lambda e: "
        "list_transform(list_filter(e.value, lambda i: i IS NOT NULL), lambda i: "
        f"struct_pack(ns := e.key, id := CAST({id_ref} AS VARCHAR), "
        f"p := coalesce(CAST({primary} AS BOOLEAN), false)))))"
    )
    return f"coalesce(list_filter({identities}, lambda x: x.p)[1], {identities}[1])"


def _instance_ref(layout: xdm.ScoreLayout, instance: str, field: str | None = None) -> str:
    steps = [layout.customer_ai, instance] + ([] if field is None else [field])
    return quote_identifier(layout.tenant) + "".join(f"[{quote_literal(s)}]" for s in steps)


def _instance_select(
    schema: pa.Schema, instance: str, wanted: list[str], naive: bool
) -> str | None:
    layout = xdm.find_layout(schema)
    if instance not in layout.instances:
        return None
    fields = layout.fields[instance]
    items = []
    for column in wanted:
        if column in xdm.IDENTITY_COLUMNS:
            key = "id" if column == "profile_id" else "ns"
            value = f"{_IDENTITY}.{key}" if layout.identity_map else "NULL"
            items.append(f"CAST({value} AS VARCHAR)")
        elif column == "instance":
            items.append(quote_literal(instance))
        elif column not in fields:
            items.append(f"CAST(NULL AS {_DUCKDB_TYPES[column]})")
        elif column == "score_date":
            items.append(_timestamp(_instance_ref(layout, instance, fields[column]), naive))
        else:
            items.append(_instance_ref(layout, instance, fields[column]))
    listed = ",\n  ".join(
        f"{item} AS {quote_identifier(c)}" for item, c in zip(items, wanted, strict=True)
    )
    return f"SELECT\n  {listed}"


def _timestamp(expression: str, naive: bool) -> str:
    # Naive values are UTC wall-clock times (Spark INT96): mark them UTC explicitly, as a
    # plain cast would read them in the session's time zone.
    if naive:
        return f"timezone('UTC', CAST({expression} AS TIMESTAMP))"
    return f"CAST({expression} AS TIMESTAMPTZ)"
