"""The export-job client against fakes: starting a job once, both body spellings, paging."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import responses
from _shared import aep_example

from cai_frames.errors import ApiError, TransportError
from cai_frames.export_jobs import (
    ExportJobs,
    create_profile_dataset,
    export_request,
    job_batch_ids,
    job_dataset_id,
)
from cai_frames.http import PlatformSession, build_retry
from cai_frames.settings import Settings

BASE = "https://platform.adobe.io"
IMS = "https://ims-na1.adobelogin.com/ims/token/v3"
JOBS = f"{BASE}/data/core/ups/export/jobs"
BODY = export_request("seg-1", "ds-1", fields=["personalEmail.address"])


def _session() -> PlatformSession:
    responses.post(IMS, json={"access_token": "tok", "expires_in": 86399})
    settings = Settings.from_env(
        environ={}, client_id="cid", client_secret="test-secret-xyz", org_id="O"
    )
    return PlatformSession(settings, retry=build_retry(total=0, backoff_factor=0))


def _job(
    job_id: int, dataset: str = "ds-1", segment: str = "seg-1", **extra: Any
) -> dict[str, Any]:
    return {
        "id": job_id,
        "status": "NEW",
        "creationTime": 10**13,
        "destination": {"datasetId": dataset, "batchId": f"b{job_id}"},
        "filter": {"segments": [{"segmentId": segment}]},
        **extra,
    }


def _posts() -> int:
    return sum(
        1 for c in responses.calls if c.request.method == "POST" and "/jobs" in c.request.url
    )


@responses.activate
def test_start_unanswered_post_takes_started_job_without_second_post() -> None:
    jobs = ExportJobs(_session(), retry_wait=0)
    responses.post(JOBS, body=requests.ConnectionError("reset by peer"))
    listing = {"records": [_job(7, dataset="other"), _job(6)], "page": {}, "link": {}}
    responses.get(JOBS, json=listing)

    job = jobs.start(BODY)

    assert job["id"] == 6
    assert _posts() == 1


@responses.activate
def test_start_unanswered_post_no_job_found_posts_again() -> None:
    jobs = ExportJobs(_session(), retry_wait=0)
    responses.post(JOBS, body=requests.ConnectionError("reset"))
    responses.post(JOBS, json=_job(8))
    responses.get(JOBS, json={"records": [_job(5, dataset="other")], "page": {}, "link": {}})

    assert jobs.start(BODY)["id"] == 8
    assert _posts() == 2


@responses.activate
def test_start_429_repeats_post_without_listing() -> None:
    jobs = ExportJobs(_session(), retry_wait=0)
    responses.post(JOBS, status=429, json={"error_code": "429050", "message": "Too many"})
    responses.post(JOBS, json=_job(9))

    assert jobs.start(BODY)["id"] == 9
    assert _posts() == 2
    assert not [
        c for c in responses.calls if c.request.method == "GET" and "/jobs" in c.request.url
    ]


@responses.activate
def test_start_400_raises_after_one_post() -> None:
    jobs = ExportJobs(_session(), retry_wait=0)
    responses.post(JOBS, status=400, json={"title": "BadRequestError", "detail": "no schema"})

    with pytest.raises(ApiError, match="no schema"):
        jobs.start(BODY)
    assert _posts() == 1


@responses.activate
def test_start_never_answered_raises_transport_error_after_three_posts() -> None:
    jobs = ExportJobs(_session(), retry_wait=0)
    responses.post(JOBS, body=requests.ConnectionError("down"))
    responses.get(JOBS, json={"records": [], "page": {}, "link": {}})

    with pytest.raises(TransportError):
        jobs.start(BODY)
    assert _posts() == 3


@pytest.mark.parametrize(
    "name", ["catalog__post-datasets", "catalog__post-datasets__profile-export"]
)
@responses.activate
def test_create_profile_dataset_both_reference_spellings(name: str) -> None:
    documented = aep_example(name)
    responses.post(f"{BASE}/data/foundation/catalog/dataSets", status=201, json=documented["body"])

    dataset_id = create_profile_dataset(_session(), "audience")

    assert dataset_id == documented["body"][0].rpartition("/")[2]
    sent = json.loads(responses.calls[-1].request.body or b"{}")
    assert sent["schemaRef"]["id"] == "https://ns.adobe.com/xdm/context/profile__union"


@responses.activate
def test_create_profile_dataset_unexpected_body_raises() -> None:
    responses.post(f"{BASE}/data/foundation/catalog/dataSets", status=201, json={"id": "x"})

    with pytest.raises(ApiError, match="instead of"):
        create_profile_dataset(_session(), "audience")


def test_job_batch_ids_segment_per_batch_reads_every_batch() -> None:
    job = aep_example("segmentation__get-export-job__tutorial-succeeded")["body"]

    assert job_batch_ids(job) == ["da5cfb4de32c4b93a09f7e37fa53ad52", "df4gssdfb93a09f7e37fa53ad52"]
    assert job_dataset_id(job) == "5cf6bcf79ecc7c14530fe436"


def test_job_dataset_id_both_spellings() -> None:
    profile = aep_example("profile__get-export-job__succeeded")["body"]
    segmentation = aep_example("segmentation__get-export-job__succeeded")["body"]

    assert job_dataset_id(profile) == "5cf6bcf79ecc7c14530fe436"
    assert job_dataset_id(segmentation) == "5b7c86968f7b6501e21ba9df"
    assert job_batch_ids(profile) == ["da5cfb4de32c4b93a09f7e37fa53ad52"]


@responses.activate
def test_list_follows_relative_next_link() -> None:
    jobs = ExportJobs(_session())
    first = {"records": [_job(3)], "link": {"next": "/export/jobs/?limit=1&offset=1_3"}}
    responses.get(JOBS, json=first, match=[responses.matchers.query_param_matcher({"limit": "1"})])
    responses.get(f"{JOBS}/", json={"records": [_job(2)], "link": {}})

    assert [j["id"] for j in jobs.list(limit=1)] == [3, 2]
    assert responses.calls[-1].request.url.endswith(
        "/data/core/ups/export/jobs/?limit=1&offset=1_3"
    )
