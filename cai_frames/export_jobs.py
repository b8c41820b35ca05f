"""The Profile export-job API, and the dataset an audience export writes into.

An audience reaches the data lake in three calls: a dataset on the XDM Individual Profile
union schema (``POST /data/foundation/catalog/dataSets``), an export job for the segment
into it (``POST /data/core/ups/export/jobs``), and polls of the job until it ends. Its
``destination.batchId`` (or, one per segment, ``destination.batches[].batchId``) is then
read through Data Access like any batch.

Why starting a job is not simply retried: a second POST starts a second job. A POST that
got no answer, or a 5xx, may still have started one, so before trying again the newest
jobs are listed and one for the same dataset and segment, created since the first try,
is taken as the job that was started. A 429 is the platform refusing before doing
anything, so that one is repeated as it is.

The documented answers differ in small ways, and both forms are read: ``@/dataSets/{id}``
and ``@/datasets/{id}`` in the creation body, ``datasetId`` and ``dataSetId`` in a job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from .errors import ApiError, NotFoundError, TransportError
from .http import PlatformSession

logger = logging.getLogger(__name__)

UPS = "/data/core/ups"
JOBS = f"{UPS}/export/jobs"
DATASETS = "/data/foundation/catalog/dataSets"
PROFILE_UNION = "https://ns.adobe.com/xdm/context/profile__union"
XED_CONTENT_TYPE = "application/vnd.adobe.xed+json;version=1"
PROFILE_SCHEMA = "_xdm.context.profile"
SUCCEEDED, FAILED = "SUCCEEDED", "FAILED"
RUNNING = frozenset({"NEW", "QUEUED", "PROCESSING"})
CANCELLED = frozenset({"CANCELLING", "CANCELLED"})

# How far back a job may have been created (by the platform's clock) and still be taken
# for the one an unanswered POST started; allows for clock skew between the two sides.
ADOPT_SLACK_MS = 10 * 60 * 1000
ADOPT_PAGES = 3
START_ATTEMPTS = 3


def create_profile_dataset(session: PlatformSession, name: str) -> str:
    """Create an empty dataset on the Profile union schema and return its ID.

    Raises:
        ApiError: The platform refused, or answered without a dataset reference.
    """
    body = {"name": name, "schemaRef": {"id": PROFILE_UNION, "contentType": XED_CONTENT_TYPE}}
    response = session.request("POST", DATASETS, json=body)
    try:
        answer = response.json()
    except ValueError:
        answer = None
    dataset_id = _dataset_reference(answer)
    if dataset_id is None:
        raise ApiError(
            f"POST {DATASETS} answered {response.status_code} with {str(answer)[:120]!r} "
            f"instead of ['@/dataSets/<id>']; check that AEP_PLATFORM_URL is the platform "
            f"gateway.",
            status=response.status_code,
            url=DATASETS,
        )
    return dataset_id


def _dataset_reference(answer: Any) -> str | None:
    """The ID in ``["@/dataSets/{id}"]`` (any case of ``dataSets``), else ``None``."""
    if not isinstance(answer, list) or not answer or not isinstance(answer[0], str):
        return None
    prefix, _, dataset_id = answer[0].rpartition("/")
    return dataset_id if prefix.lower() == "@/datasets" and dataset_id else None


def export_request(
    segment_id: str,
    dataset_id: str,
    *,
    fields: Sequence[str] | None = None,
    merge_policy_id: str | None = None,
    merge_policy_version: int = 1,
) -> dict[str, Any]:
    """The body of an export job for one segment into one dataset, in one batch."""
    body: dict[str, Any] = {
        "filter": {
            "segments": [
                {"segmentId": segment_id, "segmentNs": "ups", "status": ["realized", "existing"]}
            ]
        },
        "destination": {"datasetId": dataset_id, "segmentPerBatch": False},
        "schema": {"name": PROFILE_SCHEMA},
    }
    if fields:
        body["fields"] = ",".join(fields)
    if merge_policy_id:
        body["mergePolicy"] = {"id": merge_policy_id, "version": merge_policy_version}
    return body


def job_status(job: Mapping[str, Any]) -> str:
    """The job's status, upper case."""
    return str(job.get("status") or "").upper()


def job_dataset_id(job: Mapping[str, Any]) -> str | None:
    """``destination.datasetId`` (or ``dataSetId``)."""
    destination = job.get("destination")
    if not isinstance(destination, Mapping):
        return None
    value = destination.get("datasetId") or destination.get("dataSetId")
    return str(value) if value else None


def job_batch_ids(job: Mapping[str, Any]) -> list[str]:
    """Every batch the job writes: ``destination.batchId``, or each ``batches[].batchId``."""
    destination = job.get("destination")
    if not isinstance(destination, Mapping):
        return []
    if destination.get("batchId"):
        return [str(destination["batchId"])]
    batches = destination.get("batches")
    items = batches if isinstance(batches, list) else []
    return [str(b["batchId"]) for b in items if isinstance(b, Mapping) and b.get("batchId")]


def job_segment_ids(job: Mapping[str, Any]) -> list[str]:
    """The segment IDs in the job's ``filter.segments``."""
    segments = (job.get("filter") or {}).get("segments")
    items = segments if isinstance(segments, list) else []
    return [str(s["segmentId"]) for s in items if isinstance(s, Mapping) and "segmentId" in s]


class ExportJobs:
    """Starts, reads, lists and cancels export jobs.

    Args:
        session: The platform session requests go through.
        retry_wait: Seconds between attempts to start a job.
    """

    def __init__(self, session: PlatformSession, *, retry_wait: float = 2.0) -> None:
        self.session = session
        self.retry_wait = retry_wait

    def start(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Start a job and return it, never starting two (see the module docstring).

        Raises:
            NotFoundError: The platform answered 404 (an unknown segment or dataset).
            ApiError: The platform refused the job, or stayed busy every attempt.
            TransportError: No answer on any attempt, and no started job was found.
        """
        since = int(time.time() * 1000) - ADOPT_SLACK_MS
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self._post(body)
            except ApiError as exc:
                client_error = exc.status < 500 and exc.status != 429
                if isinstance(exc, NotFoundError) or client_error:
                    raise
                failure: Exception = exc
            except TransportError as exc:
                failure = exc
            refused = isinstance(failure, ApiError) and failure.status == 429
            found = None if refused else self._started_since(body, since)
            if found is not None:
                return found
            if attempt == START_ATTEMPTS:
                raise failure
            logger.warning("starting the export job failed (%s); trying again", failure)
            time.sleep(self.retry_wait * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, body: Mapping[str, Any]) -> dict[str, Any]:
        response = self.session.request("POST", JOBS, json=body)
        return _job_object(response.json(), f"POST {JOBS}")

    def _started_since(self, body: Mapping[str, Any], since: int) -> dict[str, Any] | None:
        """A job for the same dataset and segment created since ``since``, if any."""
        dataset = body["destination"]["datasetId"]
        segments = job_segment_ids(body)
        for page, job in enumerate(self.list(limit=20)):
            if page >= 20 * ADOPT_PAGES or _created(job) < since:
                return None
            if job_dataset_id(job) == dataset and job_segment_ids(job)[:1] == segments[:1]:
                logger.warning(
                    "taking export job %s as the one the unanswered POST started", job.get("id")
                )
                return job
        return None

    def get(self, job_id: int | str) -> dict[str, Any]:
        """The job as it is now.

        Raises:
            NotFoundError: No such job.
        """
        url = f"{JOBS}/{quote(str(job_id), safe='')}"
        return _job_object(self.session.get_json(url), f"GET {url}")

    def cancel(self, job_id: int | str) -> None:
        """Ask the platform to cancel the job (it answers 200 or 204)."""
        self.session.request("DELETE", f"{JOBS}/{quote(str(job_id), safe='')}")

    def list(self, *, status: str | None = None, limit: int = 100) -> Iterator[dict[str, Any]]:
        """Yield jobs newest first, following ``link.next`` (relative to the UPS base)."""
        params: dict[str, Any] | None = {"limit": limit, **({"status": status} if status else {})}
        url: str | None = JOBS
        seen: set[str] = set()
        while url is not None and url not in seen:
            seen.add(url)
            body = self.session.get_json(url, params=params)
            records = body.get("records") if isinstance(body, dict) else None
            yield from (r for r in records or [] if isinstance(r, dict))
            link = body.get("link") if isinstance(body, dict) else None
            following = link.get("next") if isinstance(link, dict) else None
            url = _next_url(following) if records else None
            params = None


def _next_url(following: Any) -> str | None:
    if not isinstance(following, str) or not following:
        return None
    if "://" in following or following.startswith("/data/"):
        return following
    return f"{UPS}/{following.lstrip('/')}"


def _created(job: Mapping[str, Any]) -> int:
    value = job.get("creationTime")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _job_object(body: Any, request: str) -> dict[str, Any]:
    if not isinstance(body, dict) or "id" not in body:
        raise ApiError(
            f"{request} answered {str(body)[:120]!r}, not an export job; check that "
            f"AEP_PLATFORM_URL is the platform gateway.",
            status=200,
            url=request.split(" ", 1)[1],
        )
    return body
