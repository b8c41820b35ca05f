"""The audience route end to end: the real client against the emulator over loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
from click.testing import CliRunner

from cai_frames.audience import audience_view, load_audience
from cai_frames.audience_export import export_audience
from cai_frames.cli import main
from cai_frames.emulator import DatasetSpec, Emulator
from cai_frames.errors import (
    CacheMissError,
    ConfigurationError,
    ExportJobCancelled,
    ExportJobFailed,
    ExportJobTimeout,
    SegmentNotFoundError,
)

pytestmark = pytest.mark.integration

SCORES = DatasetSpec(
    dataset_id="5f0c7a1e2b3d4c5e6f708192", rows=3_000, parts=3, instances=("churn",), seed=21
)
FIELDS = ["person.name.firstName", "personalEmail.address", "_acmecorp.CustomerAI"]
FAST = {"poll_interval": 0.001, "progress": False}
JOBS = "/data/core/ups/export/jobs"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(datasets=[SCORES], seed=3) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def platform_env(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in emu.env().items():
        monkeypatch.setenv(key, value)
    emu.reset_requests()


def _segment(emu: Emulator, name: str) -> str:
    return next(s.segment_id for s in emu.segments() if s.name == name)


def _posts(emu: Emulator, path: str = JOBS) -> int:
    return sum(1 for r in emu.requests if r.method == "POST" and r.path.startswith(path))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("profile_id").reset_index(drop=True)


def _assert_rows_are_truth(loaded: pd.DataFrame, truth: pd.DataFrame) -> None:
    """Same rows as the truth, value for value in every truth column (nulls as None)."""
    got, want = _sorted(loaded), _sorted(truth)
    assert len(got) == len(want)
    for column in truth.columns:
        values = [None if v is pd.NA or v is pd.NaT else v for v in want[column].tolist()]
        assert got[column].tolist() == values, column


def test_load_audience_requested_fields_exactly_the_members_and_fields(emu: Emulator) -> None:
    segment = _segment(emu, "Email subscribers")

    loaded = load_audience(segment, fields=FIELDS, **FAST)

    truth = emu.audience_truth(segment, FIELDS)
    assert list(loaded.columns) == list(truth.columns)
    got = _sorted(loaded)
    want = _sorted(truth)
    assert got["profile_id"].tolist() == want["profile_id"].tolist()
    for column in ("person.name.firstName", "personalEmail.address", "propensity_type"):
        assert got[column].tolist() == want[column].tolist(), column
    assert got["score"].astype("int64").tolist() == want["score"].astype("int64").tolist()
    assert got["probability"].tolist() == pytest.approx(want["probability"].tolist())


def test_load_audience_high_score_segment_only_scores_above_74(emu: Emulator) -> None:
    segment = _segment(emu, "High churn risk")

    loaded = load_audience(segment, fields=["_acmecorp.CustomerAI.churn"], **FAST)

    truth = emu.audience_truth(segment, "_acmecorp.CustomerAI.churn")
    assert sorted(loaded["profile_id"]) == sorted(truth["profile_id"])
    assert len(loaded) > 0 and bool((loaded["score"] > 74).all())
    assert "person.name.firstName" not in loaded.columns


def test_load_audience_every_field_flattens_attributes(emu: Emulator) -> None:
    segment = _segment(emu, "Email subscribers")

    loaded = load_audience(segment, **FAST)

    truth = emu.audience_truth(segment, None)
    for column in ("homeAddress.city", "person.name.lastName", "segmentMembership"):
        assert column in loaded.columns
    got, want = _sorted(loaded), _sorted(truth)
    assert got["homeAddress.city"].tolist() == want["homeAddress.city"].tolist()
    membership = dict(got["segmentMembership"].iloc[0])["ups"]
    assert segment in dict(membership)


def test_load_audience_empty_segment_gives_no_rows(emu: Emulator) -> None:
    loaded = load_audience(_segment(emu, "Lapsed VIP"), fields=["personalEmail.address"], **FAST)

    assert len(loaded) == 0
    assert list(loaded.columns) == ["profile_id", "profile_namespace", "personalEmail.address"]


def test_export_audience_creates_dataset_shown_by_catalog(emu: Emulator) -> None:
    result = export_audience(_segment(emu, "Email subscribers"), dataset_name="mine", **FAST)

    assert result.dataset_created and result.status == "SUCCEEDED"
    assert _posts(emu, "/data/foundation/catalog/dataSets") == 1
    record = emu.exports.state.datasets[result.dataset_id].record("org")
    assert record["name"] == "mine" and record["lastBatchId"] == result.batch_id


def test_export_audience_given_dataset_creates_none(emu: Emulator) -> None:
    first = export_audience(_segment(emu, "Email subscribers"), **FAST)
    emu.reset_requests()

    again = export_audience(_segment(emu, "High churn risk"), dataset_id=first.dataset_id, **FAST)

    assert not again.dataset_created and again.dataset_id == first.dataset_id
    assert _posts(emu, "/data/foundation/catalog/dataSets") == 0


def test_export_audience_lowercase_dataset_reference_parsed(emu: Emulator) -> None:
    emu.exports.reference_case = "datasets"
    try:
        result = export_audience(_segment(emu, "Email subscribers"), **FAST)
    finally:
        emu.exports.reference_case = "dataSets"

    assert result.dataset_id in emu.exports.state.datasets


def test_export_audience_failed_job_quotes_errors(emu: Emulator) -> None:
    segment = _segment(emu, "High churn risk")
    errors = [{"code": "0090000009", "msg": "Error writing profiles", "callStack": "x"}]
    result = export_audience(segment, **FAST)
    emu.exports.fail(job_id=int(result.job_id) + 1, errors=errors)

    with pytest.raises(ExportJobFailed, match="0090000009: Error writing profiles") as caught:
        export_audience(segment, **FAST)

    assert caught.value.errors == errors and caught.value.status == "FAILED"


def test_export_audience_timeout_names_job_and_resumes_without_post(emu: Emulator) -> None:
    segment = _segment(emu, "Email subscribers")
    with pytest.raises(ExportJobTimeout) as caught:
        export_audience(segment, timeout=0, **FAST)
    job_id = caught.value.job_id
    assert f"job_id={job_id!r}" in str(caught.value)
    emu.reset_requests()

    result = export_audience(segment, job_id=job_id, **FAST)

    assert result.job_id == job_id and result.status == "SUCCEEDED"
    assert _posts(emu) + _posts(emu, "/data/foundation/catalog/dataSets") == 0


def test_export_audience_cancelled_by_switch_raises(emu: Emulator) -> None:
    segment = _segment(emu, "Lapsed VIP")
    emu.exports.cancel(segment_id=segment)

    with pytest.raises(ExportJobCancelled, match="CANCELLED"):
        export_audience(segment, **FAST)


def test_export_audience_deleted_job_raises_cancelling(emu: Emulator) -> None:
    from cai_frames.client import Client
    from cai_frames.export_jobs import ExportJobs

    segment = _segment(emu, "Email subscribers")
    with pytest.raises(ExportJobTimeout) as caught:
        export_audience(segment, timeout=0, **FAST)
    with Client() as client:
        ExportJobs(client.session).cancel(caught.value.job_id)

    with pytest.raises(ExportJobCancelled, match="CANCELLING"):
        export_audience(segment, job_id=caught.value.job_id, **FAST)


def test_export_audience_unknown_segment_names_created_dataset(emu: Emulator) -> None:
    before = set(emu.exports.state.datasets)
    with pytest.raises(SegmentNotFoundError, match="not found") as caught:
        export_audience("00000000-0000-4000-a000-000000000000", **FAST)

    [created] = set(emu.exports.state.datasets) - before
    assert not emu.exports.state.datasets[created].batches
    assert f"Dataset {created} was created for this export and is left empty" in str(caught.value)
    assert f"dataset_id={created!r}" in str(caught.value)
    assert isinstance(caught.value, LookupError)


def test_load_audience_rerun_by_job_id_no_post_no_download(emu: Emulator) -> None:
    segment = _segment(emu, "High churn risk")
    first = load_audience(segment, fields=FIELDS, **FAST)
    job_id = emu.exports.jobs()[-1]["id"]
    emu.reset_requests()

    again = load_audience(segment, job_id=job_id, **FAST)

    assert _posts(emu) + _posts(emu, "/data/foundation/catalog/dataSets") == 0
    assert not [r for r in emu.requests if "/data/foundation/export/" in r.path]
    assert again["profile_id"].tolist() == first["profile_id"].tolist()


def test_load_audience_offline_uses_newest_cached_export(emu: Emulator) -> None:
    segment = _segment(emu, "High churn risk")
    online = load_audience(segment, fields=FIELDS, **FAST)
    emu.reset_requests()

    offline = load_audience(segment, offline=True)

    assert emu.requests == []
    assert offline["profile_id"].tolist() == online["profile_id"].tolist()
    with pytest.raises(CacheMissError, match="Email subscribers|any export"):
        load_audience(_segment(emu, "Email subscribers"), offline=True)


def test_audience_view_joins_scores_in_duckdb(emu: Emulator) -> None:
    from cai_frames import scores_view

    segment = _segment(emu, "High churn risk")
    con = scores_view(SCORES.dataset_id, progress=False)
    audience_view(segment, con=con, fields=["personalEmail.address"], **FAST)

    joined = con.sql(
        "SELECT a.profile_id, s.score FROM audience a JOIN scores s USING (profile_id)"
    ).df()

    truth = emu.audience_truth(segment, "personalEmail.address")
    assert sorted(joined["profile_id"]) == sorted(truth["profile_id"])
    assert bool((joined["score"] > 74).all())


def test_cli_audience_prints_dataset_job_and_rows(emu: Emulator) -> None:
    segment = _segment(emu, "High churn risk")

    outcome = CliRunner().invoke(
        main,
        [
            "audience",
            segment,
            "--fields",
            "personalEmail.address",
            "--no-progress",
            "--poll-interval",
            "0.001",
        ],
    )

    assert outcome.exit_code == 0, outcome.output
    rows = len(emu.audience_truth(segment, "personalEmail.address"))
    assert f"loaded {rows:,} rows x 3 columns" in outcome.output
    assert "(created)" in outcome.output and "SUCCEEDED" in outcome.output


def test_load_audience_offline_two_emulator_sessions_gives_one_export(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each emulator numbers its jobs from the same first ID, so both exports are job 11037.
    small = DatasetSpec(
        dataset_id="5f0c7a1e2b3d4c5e6f7081aa", rows=600, parts=2, instances=("churn",), seed=5
    )
    job_ids, loaded = [], []
    for session in ("first", "second"):
        with Emulator(datasets=[small], seed=3) as emulator:
            for key, value in emulator.env().items():
                monkeypatch.setenv(key, value)
            segment = _segment(emulator, "Email subscribers")
            result = export_audience(segment, dataset_name=session, **FAST)
            loaded.append(load_audience(result, progress=False))
            job_ids.append(result.job_id)
            truth = emulator.audience_truth(segment)

    offline = load_audience(segment, offline=True)

    assert job_ids[0] == job_ids[1]
    assert len(offline) == len(truth) == len(loaded[1]) > 0
    _assert_rows_are_truth(offline, truth)


def test_load_audience_offline_same_segment_exported_twice_takes_the_newer(emu: Emulator) -> None:
    segment = _segment(emu, "High churn risk")
    load_audience(segment, fields=["personalEmail.address"], **FAST)
    load_audience(segment, fields=["person.name.firstName"], **FAST)

    offline = load_audience(segment, offline=True)

    truth = emu.audience_truth(segment, ["person.name.firstName"])
    assert list(offline.columns) == ["profile_id", "profile_namespace", "person.name.firstName"]
    _assert_rows_are_truth(offline, truth)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"segment_id": ""}, "segment ID '' cannot be used"),
        ({"segment_id": "../x"}, "segment ID '../x' cannot be used"),
        ({"poll_interval": 0}, "poll_interval must be more than 0 seconds, got 0"),
        ({"poll_interval": -1.0}, "poll_interval must be more than 0 seconds, got -1.0"),
        ({"timeout": -1}, "timeout must be 0 seconds or more, got -1"),
        ({"fields": []}, r"fields is empty \(\[\]\); leave it out"),
    ],
    ids=[
        "empty-segment",
        "path-segment",
        "zero-poll",
        "negative-poll",
        "negative-timeout",
        "empty-fields",
    ],
)
def test_export_audience_bad_argument_refused_before_any_request(
    emu: Emulator, arguments: dict[str, object], message: str
) -> None:
    call: dict[str, object] = {"segment_id": _segment(emu, "Email subscribers"), **FAST}
    call.update(arguments)
    datasets = len(emu.exports.state.datasets)

    with pytest.raises(ConfigurationError, match=message) as caught:
        export_audience(**call)  # type: ignore[arg-type]

    assert isinstance(caught.value, ValueError)
    assert emu.requests == []
    assert len(emu.exports.state.datasets) == datasets


def test_load_audience_columns_one_string_is_one_column(emu: Emulator) -> None:
    segment = _segment(emu, "Email subscribers")

    loaded = load_audience(segment, fields=FIELDS, columns="profile_id", **FAST)

    assert list(loaded.columns) == ["profile_id"]
    assert sorted(loaded["profile_id"]) == sorted(emu.audience_truth(segment, FIELDS)["profile_id"])


def test_load_audience_columns_empty_list_refused_before_any_request(emu: Emulator) -> None:
    with pytest.raises(ConfigurationError, match="^columns is empty; leave it out"):
        load_audience(_segment(emu, "Email subscribers"), columns=[], **FAST)

    assert emu.requests == []
