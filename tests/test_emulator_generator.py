"""Generated parts look like Spark's Customer AI output, and the truth matches them.

The truth is computed from the generator's values; these tests check it against the
parquet files read independently with pyarrow.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cai_frames.emulator import DatasetSpec, Emulator, generate_batch, truth_frame, truth_table
from cai_frames.emulator.generator import run_profiles

PART_NAME = re.compile(r"^part-\d{5}-tid-\d{19}-[0-9a-f-]{36}-\d+-1-c000\.snappy\.parquet$")
SPARK_KEY = b"org.apache.spark.sql.parquet.row.metadata"
SMALL = DatasetSpec(rows=900, parts=5, seed=4)
MULTI = DatasetSpec(rows=1200, parts=4, seed=5, instances=("conversion", "churn"), tenant="_globex")


def read_records(paths: tuple[Path, ...]) -> list[dict[str, Any]]:
    """Every record of the parts, in file order, read by pyarrow alone."""
    return [row for path in paths for row in pq.read_table(path).to_pylist()]


def primary_id(record: dict[str, Any]) -> str:
    ids = [i["id"] for _, items in record["identityMap"] for i in items if i["primary"]]
    assert len(ids) == 1
    return str(ids[0])


def test_generate_batch_spark_names_snappy_and_row_metadata(tmp_path: Path) -> None:
    batch = generate_batch(SMALL, tmp_path)
    for path in batch.parts:
        metadata = pq.read_metadata(path)
        assert PART_NAME.match(path.name)
        assert SPARK_KEY in metadata.metadata
        assert b"ARROW:schema" not in metadata.metadata
        assert metadata.row_group(0).column(0).compression == "SNAPPY"
    assert [p.name for p in batch.parts] == sorted(p.name for p in batch.parts)


def test_generate_batch_parts_uneven_and_sum_to_rows(tmp_path: Path) -> None:
    counts = [pq.read_metadata(p).num_rows for p in generate_batch(SMALL, tmp_path).parts]
    assert sum(counts) == SMALL.rows
    assert len(set(counts)) > 1


def test_generate_batch_same_spec_byte_identical(tmp_path: Path) -> None:
    first = generate_batch(SMALL, tmp_path / "a")
    second = generate_batch(SMALL, tmp_path / "b")

    def digests(paths: tuple[Path, ...]) -> list[str]:
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]

    assert digests(first.parts + first.markers) == digests(second.parts + second.markers)


def test_truth_other_seed_differs() -> None:
    other = DatasetSpec(rows=SMALL.rows, parts=SMALL.parts, seed=99, dataset_id=SMALL.dataset_id)
    assert not truth_frame(SMALL, 0)["profile_id"].equals(truth_frame(other, 0)["profile_id"])


def test_truth_matches_parquet_read_by_pyarrow(tmp_path: Path) -> None:
    records = read_records(generate_batch(SMALL, tmp_path).parts)
    truth = truth_frame(SMALL, 0)
    scores = [r["_acmecorp"]["CustomerAI"]["churn"] for r in records]
    assert len(truth) == len(records)
    assert list(truth["profile_id"]) == [primary_id(r) for r in records]
    assert list(truth["score"]) == [s["score"] for s in scores]
    assert list(truth["probability"]) == [s["probability"] for s in scores]
    assert list(truth["influential_factors"]) == [s["influentialFactors"] for s in scores]
    assert list(truth.columns) == [
        "profile_id",
        "profile_namespace",
        "score",
        "probability",
        "percentile",
        "propensity_type",
        "score_date",
        "influential_factors",
    ]


def test_truth_multi_instance_long_by_part_then_instance_name(tmp_path: Path) -> None:
    batch = generate_batch(MULTI, tmp_path)
    expected = []
    for path in batch.parts:
        records = pq.read_table(path).to_pylist()
        for name in ("churn", "conversion"):
            for record in records:
                if record["_globex"]["CustomerAI"][name] is not None:
                    expected.append((primary_id(record), name))
    truth = truth_frame(MULTI, 0)
    assert list(zip(truth["profile_id"], truth["instance"], strict=True)) == expected
    assert set(truth.loc[truth["instance"] == "conversion", "propensity_type"]) == {"CONVERSION"}


def test_generate_batch_instance_nulls_some_but_never_all(tmp_path: Path) -> None:
    table = pq.read_table(list(generate_batch(MULTI, tmp_path).parts))
    customer_ai = pc.struct_field(table.column("_globex"), "CustomerAI")
    null = [pc.is_null(pc.struct_field(customer_ai, n)) for n in ("churn", "conversion")]
    both_null = pc.and_(null[0], null[1])
    assert not pc.any(both_null).as_py()
    assert 0.1 < pc.mean(null[0].cast(pa.int8())).as_py() < 0.35


def test_truth_values_in_documented_ranges() -> None:
    truth = truth_table(MULTI, 0)
    score, probability = truth.column("score").to_numpy(), truth.column("probability").to_numpy()
    percentile = truth.column("percentile").to_numpy()
    assert score.min() >= 0 and score.max() <= 100
    assert ((probability > 0) & (probability < 1)).all()
    assert percentile.min() >= 1 and percentile.max() <= 100
    assert (score == np.rint(probability * 100)).all()
    assert abs(np.median(percentile) - 50) < 6


def test_truth_factors_two_to_five_distinct_importance_follows_score() -> None:
    factors = truth_table(SMALL, 0).column("influential_factors").to_pylist()
    scores = truth_table(SMALL, 0).column("score").to_pylist()
    high_share: dict[bool, list[float]] = {True: [], False: []}
    for items, score in zip(factors, scores, strict=True):
        codes = [f["code"] for f in items]
        assert 2 <= len(items) <= 5 and len(set(codes)) == len(codes)
        assert {f["importance"] for f in items} <= {"low", "medium", "high"}
        high = sum(f["importance"] == "high" for f in items) / len(items)
        high_share[score >= 50].append(high)
    assert np.mean(high_share[True]) > np.mean(high_share[False]) + 0.2


def test_generate_batch_drift_schemas_differ(tmp_path: Path) -> None:
    spec = DatasetSpec(rows=500, parts=5, seed=6, drift=True)
    schemas = [pq.read_schema(p) for p in generate_batch(spec, tmp_path).parts]
    churn = [
        s.field("_acmecorp").type.field("CustomerAI").type.field("churn").type for s in schemas
    ]
    assert "timestamp" in schemas[0].names and "timestamp" not in schemas[1].names
    assert churn[0].field("score").type == pa.int32()
    assert churn[2].field("score").type == pa.int64()
    assert [f.name for f in churn[3]] == list(reversed([f.name for f in churn[0]]))
    assert schemas[-1].field("personID").type == pa.null()
    assert len({s.to_string() for s in schemas}) == 5


def test_generate_batch_int96_timestamps_physical_int96(tmp_path: Path) -> None:
    spec = DatasetSpec(rows=200, parts=2, seed=7, timestamp="int96")
    path = generate_batch(spec, tmp_path).parts[0]
    schema = pq.ParquetFile(path).schema
    physical = {schema.column(i).path: schema.column(i).physical_type for i in range(len(schema))}
    assert physical["timestamp"] == "INT96"
    assert physical["_acmecorp.CustomerAI.churn.scoreDate"] == "INT96"


def test_generate_batch_score_date_is_run_day(tmp_path: Path) -> None:
    truth = truth_frame(SMALL, 0)
    assert truth["score_date"].nunique() == 1
    assert truth["score_date"].iloc[0].strftime("%Y-%m-%d %H:%M") == "2026-01-05 00:00"


def test_run_profiles_overlap_mostly_and_scores_drift() -> None:
    spec = DatasetSpec(rows=2000, parts=4, seed=8, runs=2)
    first = set(run_profiles(spec, 0, 0, spec.rows).tolist())
    second = set(run_profiles(spec, 1, 0, spec.rows).tolist())
    assert 0.9 < len(first & second) / spec.rows < 1.0
    old = truth_frame(spec, 0).set_index("profile_id")["probability"]
    new = truth_frame(spec, 1).set_index("profile_id")["probability"]
    both = old.index.intersection(new.index)
    assert np.corrcoef(old[both], new[both])[0, 1] > 0.8
    assert (old[both] != new[both]).mean() > 0.9


def test_spec_rows_below_parts_refused() -> None:
    with pytest.raises(ValueError, match="rows >= parts"):
        DatasetSpec(rows=3, parts=4)


def test_emulator_truth_of_failed_batch_refused() -> None:
    with Emulator([DatasetSpec(rows=20, parts=1, runs=2, status=("success", "failed"))]) as emu:
        dataset_id = emu.dataset_ids[0]
        failed = emu.batches(dataset_id)[0]
        assert len(emu.truth(dataset_id)) == 20
        with pytest.raises(ValueError, match="failed"):
            emu.truth(dataset_id, failed["_key"])


def test_emulator_truth_rows_equal_served_parts() -> None:
    with Emulator() as emu:
        for dataset_id in emu.dataset_ids:
            if emu.latest_batch_id(dataset_id) is None:
                continue
            table = pq.read_table(emu.parts(dataset_id))
            customer_ai = pc.struct_field(table.column(emu.spec(dataset_id).tenant), "CustomerAI")
            present = sum(
                len(customer_ai) - pc.struct_field(customer_ai, n).null_count
                for n in emu.spec(dataset_id).instances
            )
            assert table.num_rows == emu.spec(dataset_id).rows
            assert len(emu.truth(dataset_id)) == present


def test_emulator_data_dir_reused_then_regenerated(tmp_path: Path) -> None:
    spec = DatasetSpec(rows=40, parts=2, seed=1)
    with Emulator([spec], data_dir=tmp_path) as emu:
        path = emu.parts(spec.dataset_id)[0]
    written = path.stat().st_mtime_ns
    with Emulator([spec], data_dir=tmp_path) as emu:
        assert emu.parts(spec.dataset_id)[0].stat().st_mtime_ns == written
    changed = DatasetSpec(rows=40, parts=2, seed=1, dataset_id=spec.dataset_id, drift=True)
    with Emulator([changed], data_dir=tmp_path) as emu:
        assert "personID" in pq.read_schema(emu.parts(spec.dataset_id)[-1]).names


def test_emulator_stop_removes_temp_data_and_prints_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with Emulator([DatasetSpec(rows=20, parts=1)]) as emu:
        folder = emu.parts(emu.dataset_ids[0])[0].parent
        assert folder.is_dir()
    assert not folder.exists()
    assert capfd.readouterr() == ("", "")


def test_spec_schema_drift_is_drift() -> None:
    assert DatasetSpec(schema_drift=True).drift and DatasetSpec(drift=True).schema_drift
