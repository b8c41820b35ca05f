"""The tidy rows a run should load as, computed from the generator's own values.

Truth never reads parquet back: it regenerates each part's values (they are a pure
function of the spec, see :mod:`cai_frames.emulator.generator`) and reshapes them the way
the loader's tidy output is specified. A loader bug therefore cannot hide in the truth.

Row order: parts in file-name order (the part index), and within each part, for each
instance in instance-name order, the records carrying that instance in file order.
With one instance that is simply every record in file order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from cai_frames.emulator.generator import PartValues, part_values
from cai_frames.emulator.spec import DatasetSpec
from cai_frames.emulator.writer import FACTOR_TYPE, UTC_MICROS

PROFILE_NAMESPACE = "ECID"
TIDY_COLUMNS = (
    "profile_id",
    "profile_namespace",
    "instance",
    "score",
    "probability",
    "percentile",
    "propensity_type",
    "score_date",
    "influential_factors",
)


def tidy_schema(spec: DatasetSpec) -> pa.Schema:
    """The tidy schema of a dataset: ``instance`` only when it has several instances."""
    types = {
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
    names = [n for n in TIDY_COLUMNS if n != "instance" or len(spec.instances) > 1]
    return pa.schema([(name, types[name]) for name in names])


def _part_truth(spec: DatasetSpec, values: PartValues, schema: pa.Schema) -> list[pa.Table]:
    tables = []
    for inst in sorted(values.instances, key=lambda v: v.name):
        rows = pa.array(np.flatnonzero(inst.present))
        n = len(rows)
        columns = {
            "profile_id": values.primary_ids.take(rows),
            "profile_namespace": pa.array([PROFILE_NAMESPACE] * n, pa.string()),
            "instance": pa.array([inst.name] * n, pa.string()),
            "score": pa.array(inst.score).take(rows),
            "probability": pa.array(inst.probability).take(rows),
            "percentile": pa.array(inst.percentile).take(rows),
            "propensity_type": pa.array([inst.propensity_type] * n, pa.string()),
            "score_date": pa.array(np.full(n, inst.score_date_us), type=UTC_MICROS),
            "influential_factors": inst.factors.take(rows),
        }
        tables.append(pa.table([columns[name] for name in schema.names], schema=schema))
    return tables


def truth_table(spec: DatasetSpec, run: int) -> pa.Table:
    """Return the tidy truth of run ``run`` of ``spec`` as an arrow table."""
    schema = tidy_schema(spec)
    tables = []
    for index in range(spec.parts):
        tables.extend(_part_truth(spec, part_values(spec, run, index), schema))
    return pa.concat_tables(tables)


def truth_frame(spec: DatasetSpec, run: int) -> pd.DataFrame:
    """Return the tidy truth as pandas, ``influential_factors`` as lists of dicts."""
    table = truth_table(spec, run)
    factors = table.column("influential_factors").to_pylist()
    frame: pd.DataFrame = table.drop_columns(["influential_factors"]).to_pandas()
    frame["influential_factors"] = pd.Series(factors, index=frame.index, dtype=object)
    return frame
