"""The emulator's audience-export answers hold to the documented examples' shapes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from _emulator import platform_headers
from _shared import aep_example as example
from test_emulator_contract import assert_same_shape

from cai_frames.emulator import DatasetSpec, Emulator

DATASETS = "/data/foundation/catalog/dataSets"
JOBS = "/data/core/ups/export/jobs"
SPEC = DatasetSpec(dataset_id="5f0c7a1e2b3d4c5e6f708193", rows=200, parts=2, seed=4)
UNION = {
    "id": "https://ns.adobe.com/xdm/context/profile__union",
    "contentType": "application/vnd.adobe.xed+json;version=1",
}


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(datasets=[SPEC]) as running:
        yield running


@pytest.fixture(scope="module")
def session(emu: Emulator) -> requests.Session:
    http = requests.Session()
    http.headers.update(platform_headers(emu))
    return http


def _dataset(emu: Emulator, session: requests.Session) -> str:
    answer = session.post(emu.platform_url + DATASETS, json={"name": "a", "schemaRef": UNION})
    return str(answer.json()[0].rpartition("/")[2])


def _documented_job(segment_id: str, dataset_id: str) -> dict[str, Any]:
    """The request body of the export-job guide, every optional member included."""
    return {
        "fields": "identities.id,personalEmail.address",
        "mergePolicy": {"id": "timestampOrdered-none-mp", "version": 1},
        "filter": {
            "segments": [{"segmentId": segment_id, "segmentNs": "ups", "status": ["realized"]}],
            "segmentQualificationTime": {
                "startTime": "2018-01-01T00:00:00Z",
                "endTime": "2018-02-01T00:00:00Z",
            },
            "fromIngestTimestamp": "2018-01-01T00:00:00Z",
            "emptyProfiles": True,
        },
        "additionalFields": {
            "eventList": {
                "fields": "_id, _experience",
                "filter": {"fromIngestTimestamp": "2018-01-01T00:00:00Z"},
            }
        },
        "destination": {"datasetId": dataset_id, "segmentPerBatch": False},
        "schema": {"name": "_xdm.context.profile"},
    }


def _start(emu: Emulator, session: requests.Session) -> requests.Response:
    body = _documented_job(emu.segments()[1].segment_id, _dataset(emu, session))
    return session.post(emu.platform_url + JOBS, json=body)


def _finish(emu: Emulator, session: requests.Session, job_id: int) -> dict[str, Any]:
    for _ in range(emu.exports.new_polls + emu.exports.processing_polls + 1):
        job: dict[str, Any] = session.get(f"{emu.platform_url}{JOBS}/{job_id}").json()
    return job


@pytest.mark.parametrize(
    ("case", "name"),
    [
        ("dataSets", "catalog__post-datasets"),
        ("datasets", "catalog__post-datasets__segment-export"),
    ],
)
def test_create_dataset_documented_status_body_and_location(
    emu: Emulator, session: requests.Session, case: str, name: str
) -> None:
    documented = example(name)
    emu.exports.reference_case = case
    try:
        answer = session.post(emu.platform_url + DATASETS, json={"name": "a", "schemaRef": UNION})
    finally:
        emu.exports.reference_case = "dataSets"

    assert answer.status_code == documented["status"] == 201
    assert_same_shape(documented["body"], answer.json())
    dataset_id = answer.json()[0].rpartition("/")[2]
    assert answer.json()[0] == f"@/{case}/{dataset_id}"
    assert answer.headers["Location"].endswith(f"{DATASETS}/{dataset_id}")
    shown = session.get(emu.platform_url + answer.headers["Location"]).json()
    assert shown[dataset_id]["schemaRef"]["id"] == UNION["id"]


def test_post_export_job_documented_shape_and_x_location(
    emu: Emulator, session: requests.Session
) -> None:
    documented = example("segmentation__post-export-job__new")

    answer = _start(emu, session)

    assert answer.status_code == documented["status"] == 200
    assert_same_shape(documented["body"], answer.json())
    job = answer.json()
    assert job["status"] == "NEW" and job["destination"]["batchId"]
    assert answer.headers["X-Location"].endswith(f"{JOBS}/{job['id']}")


def test_get_export_job_progress_then_documented_succeeded_shape(
    emu: Emulator, session: requests.Session
) -> None:
    documented = example("segmentation__get-export-job__succeeded")
    # Its keys are identity namespaces (data, not shape): only the counts' type is held.
    documented["body"]["metrics"]["exportedProfileByNamespaceCounter"] = {"ECID": 0}
    job_id = _start(emu, session).json()["id"]
    url = f"{emu.platform_url}{JOBS}/{job_id}"

    seen = [session.get(url).json()["status"] for _ in range(3)]

    assert seen == ["NEW", "PROCESSING", "SUCCEEDED"]
    final = session.get(url)
    assert final.status_code == documented["status"]
    assert_same_shape(documented["body"], final.json())
    batch = final.json()["destination"]["batchId"]
    files = session.get(f"{emu.platform_url}/data/foundation/export/batches/{batch}/files")
    assert files.status_code == 200 and files.json()["data"]


def test_list_export_jobs_documented_shape_and_cursor_paging(
    emu: Emulator, session: requests.Session
) -> None:
    documented = example("segmentation__get-export-jobs__tutorial-list")
    failing = _start(emu, session).json()["id"]
    emu.exports.fail(job_id=failing)
    _finish(emu, session, failing)
    done = _start(emu, session).json()["id"]
    _finish(emu, session, done)

    answer = session.get(f"{emu.platform_url}{JOBS}/?limit=2")

    assert answer.status_code == 200
    body = answer.json()
    assert [r["id"] for r in body["records"]] == [done, failing]
    assert_same_shape(documented["body"], body)
    following = body["link"]["next"]
    assert following.startswith("/export/jobs/?limit=2&offset=")
    later = session.get(f"{emu.platform_url}/data/core/ups{following}").json()["records"]
    assert later and all(r["id"] < failing for r in later)


def test_list_export_jobs_unlisted_status_refused(emu: Emulator, session: requests.Session) -> None:
    answer = session.get(f"{emu.platform_url}{JOBS}?status=PROCESSING")

    assert answer.status_code == 400
    assert "NEW, SUCCEEDED, FAILED" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("status", "name"),
    [(200, "segmentation__delete-export-job"), (204, "profile__delete-export-job")],
)
def test_delete_export_job_documented_body_then_cancelling(
    emu: Emulator, session: requests.Session, status: int, name: str
) -> None:
    documented = example(name)
    job_id = _start(emu, session).json()["id"]
    emu.exports.cancel_status = status
    try:
        answer = session.delete(f"{emu.platform_url}{JOBS}/{job_id}")
    finally:
        emu.exports.cancel_status = 200

    assert answer.status_code == status
    if documented["body"] is None:
        assert answer.content == b""
    else:
        assert_same_shape(documented["body"], answer.json())
    url = f"{emu.platform_url}{JOBS}/{job_id}"
    assert [session.get(url).json()["status"] for _ in range(4)][::3] == [
        "CANCELLING",
        "CANCELLED",
    ]


def test_post_export_job_unknown_segment_404_names_it(
    emu: Emulator, session: requests.Session
) -> None:
    body = _documented_job("no-such-segment", _dataset(emu, session))

    answer = session.post(emu.platform_url + JOBS, json=body)

    assert answer.status_code == 404
    assert "no-such-segment" in answer.json()["detail"]
    assert not [
        j
        for j in emu.exports.jobs()
        if j["filter"]["segments"][0]["segmentId"] == "no-such-segment"
    ]


def test_audience_truth_fields_list_equals_comma_separated_string(emu: Emulator) -> None:
    segment = next(s.segment_id for s in emu.segments() if s.rule == "email")
    fields = ["personalEmail.address", f"{SPEC.tenant}.CustomerAI"]

    listed = emu.audience_truth(segment, fields)

    joined = emu.audience_truth(segment, ",".join(fields))
    assert listed.equals(joined)
    assert list(listed.columns) == [
        "profile_id",
        "profile_namespace",
        "personalEmail.address",
        "score",
        "probability",
        "percentile",
        "propensity_type",
        "score_date",
        "influential_factors",
    ]


def test_audience_truth_score_date_and_factors_are_the_scores_truth(emu: Emulator) -> None:
    segment = next(s.segment_id for s in emu.segments() if s.rule == "email")

    truth = emu.audience_truth(segment, [f"{SPEC.tenant}.CustomerAI"])

    scores = emu.truth(SPEC.dataset_id).set_index("profile_id")
    scored = truth[truth["score"].notna()].set_index("profile_id")
    assert len(scored) > 0
    want = scores.loc[scored.index]
    assert scored["score_date"].tolist() == want["score_date"].tolist()
    assert scored["influential_factors"].tolist() == want["influential_factors"].tolist()
    unscored = truth[truth["score"].isna()]
    assert unscored["score_date"].isna().all()
    assert unscored["influential_factors"].isna().all()
