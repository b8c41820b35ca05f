"""Export an audience (a segment) to a dataset and wait for the job to end.

:func:`export_audience` creates a dataset on the Profile union schema (unless one is
given), starts an export job for the segment into it, and polls the job until it ends,
showing its state. The job API itself is :mod:`cai_frames.export_jobs`; loading the
job's batch is :mod:`cai_frames.audience`.

Each way a job can end other than ``SUCCEEDED`` is its own error (see
:mod:`cai_frames.errors`); a job given by ``job_id`` that already ended is not started
again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tqdm.auto import tqdm

from .client import Client, client_scope
from .errors import (
    ApiError,
    ConfigurationError,
    ExportJobCancelled,
    ExportJobError,
    ExportJobFailed,
    ExportJobTimeout,
    SegmentNotFoundError,
)
from .export_jobs import (
    CANCELLED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    ExportJobs,
    create_profile_dataset,
    export_request,
    job_batch_ids,
    job_dataset_id,
    job_segment_ids,
    job_status,
)
from .names import check_id

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 10.0
DEFAULT_TIMEOUT = 3600.0


@dataclass(frozen=True)
class ExportResult:
    """A finished audience export.

    Attributes:
        job_id: The export job's ID (a number on the platform).
        status: The job's final status, ``SUCCEEDED``.
        segment_id: The exported segment.
        dataset_id: The dataset the job wrote into.
        dataset_created: Whether :func:`export_audience` created that dataset.
        batch_ids: Every batch the job wrote (one unless segments go to one batch each).
        job: The job record as last read.
    """

    job_id: int | str
    status: str
    segment_id: str
    dataset_id: str
    dataset_created: bool
    batch_ids: tuple[str, ...]
    job: Mapping[str, Any] = field(repr=False)

    @property
    def batch_id(self) -> str:
        """The first (usually the only) batch ID."""
        return self.batch_ids[0]


def export_audience(
    segment_id: str,
    *,
    fields: Sequence[str] | str | None = None,
    merge_policy_id: str | None = None,
    dataset_id: str | None = None,
    dataset_name: str | None = None,
    job_id: int | str | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
    client: Client | None = None,
) -> ExportResult:
    """Export a segment's profiles to a dataset and wait for the job to succeed.

    Args:
        segment_id: The segment (audience) to export.
        fields: XDM dot paths to export (``"person.name.firstName"``,
            ``"_acmecorp.CustomerAI"``), as a list or one comma-separated string; by
            default (``None``) every field. An empty list is refused.
        merge_policy_id: The merge policy; by default the sandbox's default one.
        dataset_id: A dataset on the Profile union schema to write into; by default a
            new one is created (and logged).
        dataset_name: The name of the dataset created when ``dataset_id`` is not given.
        job_id: An export job started before: it is read (never started again) and
            waited for if still running.
        poll_interval: Seconds between polls of the job; more than 0.
        timeout: Seconds to wait for the job to end; 0 or more (0 reads the job once).
        progress: Show the job's state while waiting.
        client: The platform client; by default one built from the environment.

    Returns:
        The job, its dataset and its batch IDs.

    Raises:
        ConfigurationError: An argument is out of range (an empty or path-like
            ``segment_id``, an empty ``fields``, ``poll_interval`` not above 0,
            ``timeout`` below 0); checked before anything is created on the platform.
        SegmentNotFoundError: The platform knows no such segment; the message names
            the dataset created for the export, left empty.
        ExportJobFailed: The job ended ``FAILED``; the message quotes its errors.
        ExportJobCancelled: The job was cancelled.
        ExportJobTimeout: The job had not ended after ``timeout``; pass its ``job_id``
            to go on waiting.

    Example:
        >>> result = export_audience(segment_id, fields=["person.name.firstName"])
        ... # doctest: +SKIP
        >>> result.dataset_id, result.batch_id  # doctest: +SKIP
    """
    wanted = _check_arguments(segment_id, fields, poll_interval, timeout)
    with client_scope(client) as active:
        jobs = ExportJobs(active.session)
        if job_id is not None:
            job = jobs.get(job_id)
            _check_segment(job, segment_id)
            created = False
        else:
            job, created = _start(
                active,
                jobs,
                segment_id,
                wanted,
                merge_policy_id,
                dataset_id,
                dataset_name,
                progress,
            )
        job = _wait(jobs, job, segment_id, poll_interval, timeout, progress)
    return _result(job, segment_id, created)


def _check_arguments(
    segment_id: str, fields: Sequence[str] | str | None, poll_interval: float, timeout: float
) -> list[str] | None:
    """The field list, once every argument is known good; nothing is on the platform yet.

    Raises:
        ConfigurationError: The segment ID is empty or path-like, ``fields`` names no
            path, ``poll_interval`` is not above 0 or ``timeout`` is below 0.
    """
    check_id(segment_id, "segment ID")
    if not poll_interval > 0:
        raise ConfigurationError(
            f"poll_interval must be more than 0 seconds, got {poll_interval!r}; the default "
            f"is {DEFAULT_POLL_INTERVAL:g}."
        )
    if not timeout >= 0:
        raise ConfigurationError(
            f"timeout must be 0 seconds or more, got {timeout!r}; the default is "
            f"{DEFAULT_TIMEOUT:g} (0 reads the job once without waiting)."
        )
    wanted = _field_list(fields)
    if fields is not None and wanted is None:
        raise ConfigurationError(
            f"fields is empty ({fields!r}); leave it out (fields=None) to export every field."
        )
    return wanted


def _field_list(fields: Sequence[str] | str | None) -> list[str] | None:
    if fields is None:
        return None
    items = fields.split(",") if isinstance(fields, str) else list(fields)
    return [f.strip() for f in items if f.strip()] or None


def _start(
    client: Client,
    jobs: ExportJobs,
    segment_id: str,
    fields: list[str] | None,
    merge_policy_id: str | None,
    dataset_id: str | None,
    dataset_name: str | None,
    progress: bool,
) -> tuple[dict[str, Any], bool]:
    """Create the dataset when none is given, then start the job."""
    created = dataset_id is None
    if dataset_id is None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        name = dataset_name or f"cai-frames audience {segment_id} {stamp}"
        dataset_id = create_profile_dataset(client.session, name)
        note = f"created dataset {dataset_id} ({name!r}) on the Profile union schema"
        logger.info("%s for segment %s", note, segment_id)
        if progress:
            tqdm.write(note)
    body = export_request(segment_id, dataset_id, fields=fields, merge_policy_id=merge_policy_id)
    try:
        job = jobs.start(body)
    except ApiError as exc:
        if exc.status == 404 or segment_id in (exc.server_message or ""):
            raise _segment_not_found(exc, segment_id, dataset_id if created else None) from exc
        raise
    logger.info(
        "started export job %s of segment %s into dataset %s", job.get("id"), segment_id, dataset_id
    )
    return job, created


def _segment_not_found(exc: ApiError, segment_id: str, created: str | None) -> ExportJobError:
    said = exc.server_message or str(exc)
    left = (
        f" Dataset {created} was created for this export and is left empty; pass "
        f"dataset_id={created!r} next time to reuse it."
        if created
        else ""
    )
    return SegmentNotFoundError(
        f"the platform refused to export segment {segment_id}: {said}. Check the segment "
        f"ID (Segments > the segment > its ID) and the sandbox AEP_SANDBOX_NAME.{left}",
        status=None,
    )


def _check_segment(job: Mapping[str, Any], segment_id: str) -> None:
    segments = job_segment_ids(job)
    if segments and segment_id not in segments:
        raise ExportJobError(
            f"export job {job.get('id')} exports segment(s) {', '.join(segments)}, not "
            f"{segment_id}; pass the segment the job was started for.",
            job_id=job.get("id"),
            status=job_status(job),
            job=job,
        )


def _wait(
    jobs: ExportJobs,
    job: dict[str, Any],
    segment_id: str,
    poll_interval: float,
    timeout: float,
    progress: bool,
) -> dict[str, Any]:
    """Poll the job until it succeeds; raise for every other ending."""
    job_id = job["id"]
    deadline = time.monotonic() + timeout
    label = f"export job {job_id}"
    bar = tqdm(desc=label, bar_format="{desc} [{elapsed}]", disable=not progress, leave=False)
    with bar:
        while True:
            status = job_status(job)
            bar.set_description_str(f"{label}: {status or '?'}", refresh=True)
            if status == SUCCEEDED:
                return job
            _raise_if_ended(job, segment_id)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ExportJobTimeout(
                    f"export job {job_id} of segment {segment_id} is still {status} after "
                    f"{timeout:g} s; pass job_id={job_id!r} (--job {job_id}) to go on "
                    f"waiting without starting another job, or a longer timeout.",
                    job_id=job_id,
                    status=status,
                    job=job,
                )
            time.sleep(min(poll_interval, left))
            job = jobs.get(job_id)


def _raise_if_ended(job: Mapping[str, Any], segment_id: str) -> None:
    job_id, status = job.get("id"), job_status(job)
    if status == FAILED:
        said = "; ".join(f"{e.get('code')}: {e.get('msg')}" for e in _errors(job))
        raise ExportJobFailed(
            f"export job {job_id} of segment {segment_id} FAILED ({said or 'no errors given'})."
            f" Check the segment and merge policy, then export again (a new job); quote "
            f"job {job_id} to Adobe support if it keeps failing.",
            job_id=job_id,
            status=status,
            job=job,
        )
    if status in CANCELLED:
        raise ExportJobCancelled(
            f"export job {job_id} of segment {segment_id} was cancelled (status {status}); "
            f"export again to start a new job.",
            job_id=job_id,
            status=status,
            job=job,
        )
    if status not in RUNNING:
        logger.warning("export job %s has status %r; waiting on", job_id, status)


def _errors(job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    errors = job.get("errors")
    return [e for e in errors if isinstance(e, Mapping)] if isinstance(errors, list) else []


def _result(job: dict[str, Any], segment_id: str, created: bool) -> ExportResult:
    dataset_id, batch_ids = job_dataset_id(job), job_batch_ids(job)
    if not dataset_id or not batch_ids:
        raise ExportJobError(
            f"export job {job.get('id')} SUCCEEDED but names no destination dataset or "
            f"batch ({job.get('destination')!r}); its data cannot be read.",
            job_id=job.get("id"),
            status=job_status(job),
            job=job,
        )
    return ExportResult(
        job["id"], job_status(job), segment_id, dataset_id, created, tuple(batch_ids), job
    )
