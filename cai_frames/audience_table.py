"""Reshape exported profile records into the tidy audience table.

An audience export writes XDM Individual Profile records, nested as the union schema is
(``person.name.firstName``, ``_<tenant>.CustomerAI.<instance>.score``). The tidy shape:

- ``profile_id`` and ``profile_namespace`` from the primary identity in ``identityMap``,
  picked as for scores (:func:`cai_frames.xdm.primary_identity`);
- every other leaf, structs flattened and named by their dot path; a map or a list (such
  as ``segmentMembership``) is a leaf;
- when a ``CustomerAI`` struct is found (by structure, as for scores): ``instance`` (only
  with several instances) and the tidy score columns, from the same field matching as
  :func:`cai_frames.xdm.tidy_table`.

Unlike scores, a member without a Customer AI instance is kept: with one instance its
score columns are null, with several it has one row whose ``instance`` is null. Rows:
with one instance, records in order; with several, each instance's members in record
order (instances by name), then the members with none.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from . import xdm
from .errors import SchemaError

logger = logging.getLogger(__name__)

IDENTITY_COLUMNS = ("profile_id", "profile_namespace")


def tidy_audience(table: pa.Table, columns: Sequence[str] | None = None) -> pa.Table:
    """The tidy audience of exported profile records.

    Args:
        table: The records, as :func:`cai_frames.load.read_parts` merges them.
        columns: Tidy column names to keep, in this order; ``None`` keeps all.

    Raises:
        SchemaError: A name in ``columns`` is not a tidy column of this audience.
    """
    layout = _layout(table.schema)
    identity = _identity(table)
    attributes = dict(identity)
    for name in table.column_names:
        if xdm.normalize(name) == "identitymap":
            continue
        skip = layout.customer_ai if layout is not None and name == layout.tenant else None
        attributes.update(_leaves(table.column(name), name, table.schema.field(name).type, skip))
    base = pa.table(attributes)
    tidy = base if layout is None else _with_scores(base, table, layout)
    return _select(tidy, columns)


def _layout(schema: pa.Schema) -> xdm.ScoreLayout | None:
    try:
        return xdm.find_layout(schema)
    except SchemaError:
        return None


def _identity(table: pa.Table) -> dict[str, pa.ChunkedArray]:
    name = next((n for n in table.column_names if xdm.normalize(n) == "identitymap"), None)
    if name is None or not pa.types.is_map(table.schema.field(name).type):
        logger.warning("no identityMap in the export: profile_id and profile_namespace are null")
        nulls = pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
        return dict.fromkeys(IDENTITY_COLUMNS, nulls)
    picked = [xdm.primary_identity(chunk) for chunk in table.column(name).chunks]
    return {
        "profile_id": pa.chunked_array([ids for ids, _ in picked], pa.string()),
        "profile_namespace": pa.chunked_array([names for _, names in picked], pa.string()),
    }


def _leaves(
    column: pa.ChunkedArray, path: str, kind: pa.DataType, skip: str | None = None
) -> dict[str, pa.ChunkedArray]:
    """The leaf columns under ``column``, named by dot path; ``skip`` names a child to leave."""
    if not pa.types.is_struct(kind):
        return {path: column}
    found: dict[str, pa.ChunkedArray] = {}
    for child in kind:
        if child.name == skip:
            continue
        # struct_field ANDs in the parent's validity, so a null struct gives null leaves.
        chunks = [pc.struct_field(chunk, [child.name]) for chunk in column.chunks]
        values = pa.chunked_array(chunks, child.type)
        found.update(_leaves(values, f"{path}.{child.name}", child.type))
    return found


def _with_scores(base: pa.Table, table: pa.Table, layout: xdm.ScoreLayout) -> pa.Table:
    """Add the tidy score columns: one row per record, or per (record, instance)."""
    per_instance = [_instance_scores(table, layout, name) for name in layout.instances]
    if len(per_instance) == 1:
        scores, _ = per_instance[0]
        return _join(base, scores)
    pieces, anywhere = [], None
    for name, (scores, valid) in zip(layout.instances, per_instance, strict=True):
        labelled = _join(pa.table({"instance": pa.repeat(name, table.num_rows)}), scores)
        pieces.append(_join(base, labelled).filter(valid))
        anywhere = valid if anywhere is None else pc.or_(anywhere, valid)
    assert anywhere is not None
    alone = _join(base, _null_scores(table.num_rows, with_instance=True))
    pieces.append(alone.filter(pc.invert(anywhere)))
    return pa.concat_tables(pieces, promote_options="permissive")


def _instance_scores(
    table: pa.Table, layout: xdm.ScoreLayout, instance: str
) -> tuple[pa.Table, pa.ChunkedArray]:
    path = [layout.customer_ai, instance]
    record = pa.chunked_array(
        [pc.struct_field(chunk, path) for chunk in table.column(layout.tenant).chunks]
    )
    fields = layout.fields[instance]
    columns: dict[str, pa.ChunkedArray | pa.Array] = {}
    for name in xdm.SCORE_COLUMNS:
        if name in fields:
            chunks = [pc.struct_field(chunk, [fields[name]]) for chunk in record.chunks]
            columns[name] = pa.chunked_array(chunks)
        else:
            columns[name] = pa.nulls(table.num_rows, xdm.TIDY_TYPES[name])
    valid = pa.chunked_array([chunk.is_valid() for chunk in record.chunks], pa.bool_())
    return pa.table(columns), valid


def _null_scores(rows: int, *, with_instance: bool) -> pa.Table:
    names = (["instance"] if with_instance else []) + list(xdm.SCORE_COLUMNS)
    return pa.table({name: pa.nulls(rows, xdm.TIDY_TYPES[name]) for name in names})


def _join(left: pa.Table, right: pa.Table) -> pa.Table:
    """The columns of both tables side by side (same rows)."""
    joined = left
    for name in right.column_names:
        joined = joined.append_column(name, right.column(name))
    return joined


def _select(tidy: pa.Table, columns: Sequence[str] | None) -> pa.Table:
    if columns is None:
        return tidy
    unknown = [c for c in columns if c not in tidy.column_names]
    if unknown:
        raise SchemaError(
            f"unknown audience column(s) {unknown}; this audience has {tidy.column_names} "
            "(pass raw=True for the records as written)."
        )
    return tidy.select(list(columns))
