"""The public API end to end: the real client against the emulator over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

import cai_frames
from cai_frames import (
    CacheMissError,
    ConfigurationError,
    NoBatchError,
    download_scores,
    load_scores,
    scores_view,
)
from cai_frames.emulator import DatasetSpec, Emulator

pytestmark = pytest.mark.integration

SPECS = [
    DatasetSpec(
        dataset_id="5f0c7a1e2b3d4c5e6f708192",
        name="Customer AI Scores - Churn",
        rows=3_000,
        parts=7,
        runs=2,
        layout="new",
        seed=11,
    ),
    DatasetSpec(
        dataset_id="5cd9146b31dae914b75f654f",
        name="Customer AI Scores - Legacy",
        rows=2_500,
        parts=130,
        layout="old",
        seed=12,
    ),
    DatasetSpec(
        dataset_id="60a1b2c3d4e5f60718293a4b",
        name="Customer AI Scores - Two apps",
        rows=1_500,
        parts=5,
        instances=("churn", "upsell"),
        seed=13,
        schema_drift=True,
    ),
    DatasetSpec(
        dataset_id="6b7c8d9e0f1a2b3c4d5e6f70",
        name="Customer AI Scores - Broken",
        rows=100,
        parts=1,
        status="failed",
        seed=14,
    ),
]
CHURN, LEGACY, MULTI, BROKEN = (spec.dataset_id for spec in SPECS)
KEY = ["profile_id", "instance"]


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(datasets=SPECS, seed=3) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def platform_env(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the settings at the emulator, as a user of the emulator would."""
    for key, value in emu.env().items():
        monkeypatch.setenv(key, value)
    emu.reset_requests()


def _file_requests(emu: Emulator) -> list[str]:
    return [path for _, path, _ in emu.requests if "/export/" in path]


def _assert_equals_truth(frame: pd.DataFrame, truth: pd.DataFrame) -> None:
    """Every row and value of the loaded frame equals the generator's truth."""
    assert list(frame.columns) == list(truth.columns)
    assert len(frame) == len(truth)
    for column in truth.columns:
        got = frame[column].tolist()
        want = truth[column].tolist()
        if column == "score_date":
            got = [pd.Timestamp(v) if v is not None else None for v in got]
            want = [pd.Timestamp(v) if v is not None else None for v in want]
        if column == "probability":
            assert got == pytest.approx(want), column
        else:
            assert got == want, column


def test_load_scores_new_layout_equals_generator_truth(emu: Emulator) -> None:
    scores = load_scores(CHURN, progress=False)

    _assert_equals_truth(scores, emu.truth(CHURN))
    assert all(isinstance(dtype, pd.ArrowDtype) for dtype in scores.dtypes)


def test_load_scores_old_layout_pages_past_100_parts(emu: Emulator) -> None:
    entry = download_scores(LEGACY, progress=False)
    scores = load_scores(LEGACY, progress=False)

    assert len(entry.parts) == 130
    assert entry.batch_id != entry.manifest["catalog_id"]
    related = [o["id"] for o in entry.manifest["catalog"]["relatedObjects"] if o["type"] == "batch"]
    assert related == [entry.batch_id]
    _assert_equals_truth(scores, emu.truth(LEGACY))


def test_download_scores_marker_files_never_cached(emu: Emulator) -> None:
    entry = download_scores(LEGACY, progress=False)

    on_disk = sorted(p.name for p in entry.path.iterdir())
    assert on_disk == sorted([*entry.parts, "manifest.json"])
    assert all(name.startswith("part-") and name.endswith(".parquet") for name in entry.parts)


def test_load_scores_second_call_downloads_nothing(emu: Emulator) -> None:
    first = load_scores(CHURN, progress=False)
    emu.reset_requests()

    second = load_scores(CHURN, progress=False)

    assert _file_requests(emu) == []
    catalog = [path for _, path, _ in emu.requests if "/catalog/" in path]
    assert len(catalog) == 1
    pd.testing.assert_frame_equal(first, second)


def test_load_scores_offline_uses_cache_without_network(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    online = load_scores(CHURN, progress=False)
    emu.reset_requests()
    monkeypatch.setenv("AEP_PLATFORM_URL", "http://127.0.0.1:9")

    offline = load_scores(CHURN, offline=True)

    assert emu.requests == []
    pd.testing.assert_frame_equal(online, offline)


def test_load_scores_offline_env_variable_means_offline(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_scores(CHURN, progress=False)
    emu.reset_requests()
    monkeypatch.setenv("CAI_FRAMES_OFFLINE", "1")

    load_scores(CHURN)

    assert emu.requests == []


def test_load_scores_offline_nothing_cached_raises_cache_miss() -> None:
    with pytest.raises(CacheMissError, match=f"dataset {CHURN}"):
        load_scores(CHURN, offline=True)


def test_load_scores_older_batch_by_id_equals_its_truth(emu: Emulator) -> None:
    older = emu.batches(CHURN)[1]
    batch_id = older["id"] if "id" in older else older["_key"]

    scores = load_scores(CHURN, batch_id=batch_id, progress=False)

    _assert_equals_truth(scores, emu.truth(CHURN, batch_id))


def test_load_scores_two_instances_and_drifted_parts_equal_truth(emu: Emulator) -> None:
    entry = download_scores(MULTI, progress=False)
    schemas = {str(pq.read_schema(path)) for path in entry.part_paths}
    assert len(schemas) > 1, "the drifted dataset should have parts with differing schemas"

    scores = load_scores(MULTI, progress=False)

    truth = emu.truth(MULTI)
    assert set(scores["instance"]) == {"churn", "upsell"}
    _assert_equals_truth(scores, truth)


def test_load_scores_columns_selects_tidy_columns(emu: Emulator) -> None:
    scores = load_scores(CHURN, columns=["profile_id", "score"], progress=False)

    truth = emu.truth(CHURN)
    assert list(scores.columns) == ["profile_id", "score"]
    assert scores["profile_id"].tolist() == truth["profile_id"].tolist()
    assert scores["score"].tolist() == truth["score"].tolist()


def test_load_scores_columns_one_string_is_one_column(emu: Emulator) -> None:
    scores = load_scores(CHURN, columns="score", progress=False)

    assert list(scores.columns) == ["score"]
    assert scores["score"].tolist() == emu.truth(CHURN)["score"].tolist()


def test_load_scores_columns_empty_list_refused_before_any_request(emu: Emulator) -> None:
    with pytest.raises(ConfigurationError, match="^columns is empty; leave it out to load every"):
        load_scores(CHURN, columns=[], progress=False)

    assert emu.requests == []


def test_load_scores_raw_returns_nested_records_as_written(emu: Emulator) -> None:
    entry = download_scores(CHURN, progress=False)
    raw = load_scores(CHURN, raw=True, progress=False)

    expected = pq.ParquetDataset(entry.part_paths).read().num_rows
    assert len(raw) == expected
    assert "_id" in raw.columns and "identityMap" in raw.columns
    assert any(name.startswith("_") and name != "_id" for name in raw.columns)


def test_load_scores_failed_only_dataset_says_none_succeeded() -> None:
    with pytest.raises(NoBatchError, match="failed"):
        load_scores(BROKEN, progress=False)


def test_load_scores_missing_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AEP_CLIENT_SECRET")

    with pytest.raises(ConfigurationError, match="AEP_CLIENT_SECRET"):
        load_scores(CHURN, progress=False)


def test_load_scores_plain_http_remote_url_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEP_PLATFORM_URL", "http://platform.example.com")

    with pytest.raises(ConfigurationError, match="AEP_PLATFORM_URL"):
        load_scores(CHURN, progress=False)


def test_scores_view_matches_dataframe(emu: Emulator) -> None:
    frame = load_scores(MULTI, progress=False)

    con = scores_view(MULTI, progress=False)
    view = con.sql("SELECT * FROM scores").df()

    assert list(view.columns) == list(frame.columns)
    want = frame.sort_values(KEY).reset_index(drop=True)
    got = view.sort_values(KEY).reset_index(drop=True)
    assert got["profile_id"].tolist() == want["profile_id"].tolist()
    assert got["score"].tolist() == want["score"].tolist()
    assert got["probability"].tolist() == pytest.approx(want["probability"].tolist())


def test_scores_view_on_given_connection_and_name(emu: Emulator) -> None:
    con = duckdb.connect()

    returned = scores_view(CHURN, con=con, name="churn_scores", progress=False)

    truth = emu.truth(CHURN)
    assert returned is con
    (count,) = con.execute("SELECT count(*) FROM churn_scores").fetchall()[0]
    assert count == len(truth)
    (high,) = con.execute("SELECT count(*) FROM churn_scores WHERE score > 74").fetchall()[0]
    assert high == int((truth["score"] > 74).sum())


def test_top_level_exports_resolve() -> None:
    assert cai_frames.load_scores is load_scores
    assert issubclass(cai_frames.NoBatchError, cai_frames.CaiFramesError)


def test_cache_layout_is_sandbox_dataset_batch(emu: Emulator, isolated_env: Path) -> None:
    entry = download_scores(CHURN, progress=False)

    assert entry.path.parent.parent.parent == isolated_env
    assert entry.path.relative_to(isolated_env).parts == ("prod", CHURN, entry.batch_id)
