"""Write generated Customer AI runs as Spark-style parquet parts and marker files.

The physical record (one row per XDM profile record)::

    _id            string, not null
    identityMap    map<string, list<struct<id, authenticatedState, primary>>>
    timestamp      timestamp[us, UTC]
    _<tenant>      struct<CustomerAI: struct<<instance>: struct<score int32,
                   probability double, percentile int32, propensityType string,
                   scoreDate timestamp[us, UTC],
                   influentialFactors list<struct<code, value, importance>>>, ...>>

Parts are snappy-compressed, carry Spark's row metadata key
(``org.apache.spark.sql.parquet.row.metadata``) and no ``ARROW:schema``, as Spark output
does, so a reader sees only what parquet itself says. With ``timestamp="int96"`` every
timestamp is written as Spark's legacy INT96.

With ``drift=True`` parts differ the way parts of real jobs do, while part 0 keeps the
schema above: part ``i % 4 == 1`` has no ``timestamp`` column, ``i % 4 == 2`` writes
``score`` as int64, ``i % 4 == 3`` lists each instance's fields in reverse order, and
the last part has an extra all-null ``personID`` column of arrow type ``null``.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cai_frames.emulator.generator import InstanceValues, PartValues, part_values
from cai_frames.emulator.spec import DatasetSpec, RunIdentity, run_identity

SPARK_METADATA_KEY = b"org.apache.spark.sql.parquet.row.metadata"
SPARK_VERSION = b"3.5.1"
UTC_MICROS = pa.timestamp("us", tz="UTC")
_CRC_CHUNK = 512

IDENTITY_TYPE = pa.map_(
    pa.string(),
    pa.list_(
        pa.struct(
            [("id", pa.string()), ("authenticatedState", pa.string()), ("primary", pa.bool_())]
        )
    ),
)
FACTOR_TYPE = pa.list_(
    pa.struct([("code", pa.string()), ("value", pa.string()), ("importance", pa.string())])
)


@dataclass(frozen=True)
class PartVariant:
    """How one part's physical schema departs from the canonical one."""

    timestamp: bool = True
    score_int64: bool = False
    reversed_fields: bool = False
    null_column: bool = False


def part_variant(spec: DatasetSpec, index: int) -> PartVariant:
    """Return the schema variant of part ``index`` (always canonical without drift)."""
    if not spec.drift or index == 0:
        return PartVariant()
    return PartVariant(
        timestamp=index % 4 != 1,
        score_int64=index % 4 == 2,
        reversed_fields=index % 4 == 3,
        null_column=index == spec.parts - 1,
    )


def _instance_array(values: InstanceValues, variant: PartVariant) -> pa.StructArray:
    n = len(values.present)
    children: list[tuple[str, pa.Array]] = [
        ("score", pa.array(values.score.astype(np.int64 if variant.score_int64 else np.int32))),
        ("probability", pa.array(values.probability)),
        ("percentile", pa.array(values.percentile)),
        ("propensityType", pa.array(np.full(n, values.propensity_type))),
        ("scoreDate", pa.array(np.full(n, values.score_date_us), type=UTC_MICROS)),
        ("influentialFactors", values.factors),
    ]
    if variant.reversed_fields:
        children.reverse()
    return pa.StructArray.from_arrays(
        [array for _, array in children],
        names=[name for name, _ in children],
        mask=pa.array(~values.present),
    )


def physical_table(spec: DatasetSpec, values: PartValues, variant: PartVariant) -> pa.Table:
    """Assemble one part's record table in the physical schema of its variant."""
    instances = [_instance_array(inst, variant) for inst in values.instances]
    customer_ai = pa.StructArray.from_arrays(instances, names=list(spec.instances))
    tenant = pa.StructArray.from_arrays([customer_ai], names=["CustomerAI"])
    fields = [pa.field("_id", pa.string(), nullable=False), pa.field("identityMap", IDENTITY_TYPE)]
    arrays: list[pa.Array] = [values.record_ids, values.identity_map]
    if variant.timestamp:
        fields.append(pa.field("timestamp", UTC_MICROS))
        arrays.append(pa.array(values.timestamp_us, type=UTC_MICROS))
    fields.append(pa.field(spec.tenant, tenant.type))
    arrays.append(tenant)
    if variant.null_column:
        fields.append(pa.field("personID", pa.null()))
        arrays.append(pa.nulls(values.rows))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def spark_type(data_type: pa.DataType) -> Any:
    """Spark's JSON form of an arrow type, as Spark writes it in the row metadata."""
    simple = {
        pa.string(): "string",
        pa.int32(): "integer",
        pa.int64(): "long",
        pa.float64(): "double",
        pa.bool_(): "boolean",
        pa.null(): "void",
    }
    if data_type in simple:
        return simple[data_type]
    if pa.types.is_timestamp(data_type):
        return "timestamp"
    if pa.types.is_map(data_type):
        value = spark_type(data_type.item_type)
        return {"type": "map", "keyType": "string", "valueType": value, "valueContainsNull": True}
    if pa.types.is_list(data_type):
        element = spark_type(data_type.value_type)
        return {"type": "array", "elementType": element, "containsNull": True}
    if pa.types.is_struct(data_type):
        return {"type": "struct", "fields": [_spark_field(f) for f in data_type]}
    raise TypeError(f"no Spark type for arrow type {data_type}")


def _spark_field(field: pa.Field) -> dict[str, Any]:
    return {
        "name": field.name,
        "type": spark_type(field.type),
        "nullable": field.nullable,
        "metadata": {},
    }


def write_part(spec: DatasetSpec, table: pa.Table, path: Path) -> None:
    """Write ``table`` as one Spark-like part, through a temporary name."""
    spark_schema = {"type": "struct", "fields": [_spark_field(f) for f in table.schema]}
    row_metadata = json.dumps(spark_schema, separators=(",", ":"))
    partial = path.with_name(f".{path.name}.writing")
    with pq.ParquetWriter(
        partial,
        table.schema,
        compression="snappy",
        use_deprecated_int96_timestamps=spec.timestamp == "int96",
        store_schema=False,
    ) as writer:
        writer.write_table(table)
        writer.add_key_value_metadata(
            {SPARK_METADATA_KEY: row_metadata.encode(), b"org.apache.spark.version": SPARK_VERSION}
        )
    os.replace(partial, path)


def hadoop_checksum(path: Path) -> bytes:
    """The body of Hadoop's ``.<name>.crc`` file: a header and a CRC32 per 512 bytes."""
    sums = [struct.pack(">4sI", b"crc\0", _CRC_CHUNK)]
    with path.open("rb") as handle:
        while chunk := handle.read(_CRC_CHUNK):
            sums.append(struct.pack(">I", zlib.crc32(chunk)))
    return b"".join(sums)


def write_markers(identity: RunIdentity, parts: list[Path]) -> list[Path]:
    """Write the marker files Spark and Databricks leave beside the parts."""
    directory = parts[0].parent
    contents = {f".{part.name}.crc": hadoop_checksum(part) for part in parts}
    contents["_SUCCESS"] = b""
    contents[f"_started_{identity.transaction_id}"] = b""
    committed = {"added": [part.name for part in parts], "removed": []}
    contents[f"_committed_{identity.transaction_id}"] = json.dumps(committed).encode()
    markers = []
    for name, body in contents.items():
        (directory / name).write_bytes(body)
        markers.append(directory / name)
    return sorted(markers)


@dataclass(frozen=True)
class GeneratedBatch:
    """The files of one generated run.

    Attributes:
        spec: The dataset spec the run belongs to.
        run: Run index, 0 for the oldest.
        identity: The platform IDs and names of the run.
        directory: The folder holding the files.
        parts: Parquet parts, in file-name order.
        markers: Marker and checksum files, in file-name order.
    """

    spec: DatasetSpec
    run: int
    identity: RunIdentity
    directory: Path
    parts: tuple[Path, ...]
    markers: tuple[Path, ...]

    @property
    def rows(self) -> int:
        """Records the run holds."""
        return self.spec.rows


def generate_batch(spec: DatasetSpec, directory: Path, *, run: int | None = None) -> GeneratedBatch:
    """Write one run of ``spec`` into ``directory``, one part at a time.

    Args:
        spec: The dataset to generate; ``seed=None`` counts as seed 0.
        directory: Folder for the parts and markers; created when missing.
        run: Run index; ``None`` takes the newest run.

    Returns:
        The written files and the IDs of the run.

    Raises:
        ValueError: ``run`` is outside ``0..spec.runs - 1``.

    Example:
        >>> batch = generate_batch(DatasetSpec(rows=500, parts=2), tmp_path)  # doctest: +SKIP
        >>> len(batch.parts)  # doctest: +SKIP
        2
    """
    run = spec.runs - 1 if run is None else run
    if not 0 <= run < spec.runs:
        raise ValueError(f"run must be in 0..{spec.runs - 1} for this spec, got {run}")
    directory.mkdir(parents=True, exist_ok=True)
    identity = run_identity(spec, run)
    parts = []
    for index in range(spec.parts):
        table = physical_table(spec, part_values(spec, run, index), part_variant(spec, index))
        path = directory / identity.part_name(index)
        write_part(spec, table, path)
        parts.append(path)
        del table
    markers = write_markers(identity, parts) if spec.markers else []
    return GeneratedBatch(spec, run, identity, directory, tuple(parts), tuple(markers))
