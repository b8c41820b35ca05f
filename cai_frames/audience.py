"""The second route: export an audience (a segment) to a dataset, then load it.

:func:`export_audience` creates a dataset on the Profile union schema (unless one is
given), starts an export job for the segment into it, and polls the job until it ends
(see :mod:`cai_frames.export_jobs`). :func:`load_audience` and :func:`audience_view`
download the job's batch into the same cache as scores, keyed by that batch ID under the
target dataset, and load it with the same merging rules as :func:`cai_frames.load_scores`.

The tidy audience has one row per member (per member and Customer AI instance when the
export holds several instances; a member with none keeps one row, ``instance`` null):

- ``profile_id``, ``profile_namespace``: the primary identity in ``identityMap``;
- one column per exported attribute leaf, named by its XDM dot path as passed in
  ``fields`` (``person.name.firstName``); maps and arrays, such as
  ``segmentMembership``, stay one column;
- when the Customer AI struct is exported: ``instance`` (several instances only) and the
  tidy score columns of :func:`cai_frames.load_scores`, null for members without scores.

A job's batch is not looked up in the Catalog: the job names it, so the batch record
kept in the cache manifest is the job itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from . import load, sql
from .audience_table import tidy_audience
from .cache import Cache, CacheEntry
from .client import Client
from .download import download_batch
from .errors import (
    ApiError,
    CacheMissError,
    ExportJobCancelled,
    ExportJobError,
    ExportJobFailed,
    ExportJobTimeout,
    SchemaError,
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
from .settings import Settings, offline_from_env
from .source import BatchInfo, PartSource, RemotePart

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 10.0
DEFAULT_TIMEOUT = 3600.0
IDENTITY_MAP = "identityMap"


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
            default every field.
        merge_policy_id: The merge policy; by default the sandbox's default one.
        dataset_id: A dataset on the Profile union schema to write into; by default a
            new one is created (and logged).
        dataset_name: The name of the dataset created when ``dataset_id`` is not given.
        job_id: An export job started before: it is read (never started again) and
            waited for if still running.
        poll_interval: Seconds between polls of the job.
        timeout: Seconds to wait for the job to end.
        progress: Show the job's state while waiting.
        client: The platform client; by default one built from the environment.

    Returns:
        The job, its dataset and its batch IDs.

    Raises:
        SegmentNotFoundError: The platform knows no such segment.
        ExportJobFailed: The job ended ``FAILED``; the message quotes its errors.
        ExportJobCancelled: The job was cancelled.
        ExportJobTimeout: The job had not ended after ``timeout``; pass its ``job_id``
            to go on waiting.

    Example:
        >>> result = export_audience(segment_id, fields=["person.name.firstName"])
        ... # doctest: +SKIP
        >>> result.dataset_id, result.batch_id  # doctest: +SKIP
    """
    wanted = _field_list(fields)
    with _client_scope(client) as active:
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


class JobBatchSource:
    """A :class:`~cai_frames.source.PartSource` for a batch an export job named.

    The batch is the one built from the job, so nothing is asked of the Catalog;
    listing and fetching go to the wrapped source (Data Access).
    """

    def __init__(self, source: PartSource, batch: BatchInfo) -> None:
        self.source = source
        self.batch = batch

    def resolve_batch(self, dataset_id: str, batch_id: str | None = None) -> BatchInfo:
        """The job's batch, whatever is asked."""
        return self.batch

    def list_parts(self, batch: BatchInfo) -> Iterable[RemotePart]:
        """The batch's parts, as the wrapped source lists them."""
        return self.source.list_parts(batch)

    def fetch_part(
        self,
        part: RemotePart,
        out: BinaryIO,
        *,
        start: int = 0,
        on_bytes: Callable[[int], None] | None = None,
    ) -> int:
        """The part's bytes, from the wrapped source."""
        return self.source.fetch_part(part, out, start=start, on_bytes=on_bytes)


def job_batch_info(result: ExportResult, batch_id: str) -> BatchInfo:
    """The cache's description of one batch of an export job."""
    job = result.job
    metrics = job.get("metrics")
    metrics = metrics if isinstance(metrics, Mapping) else {}
    count = metrics.get("totalExportedProfileCounter") if len(result.batch_ids) == 1 else None
    created = job.get("updateTime") or job.get("creationTime") or 0
    return BatchInfo(
        dataset_id=result.dataset_id,
        batch_id=batch_id,
        catalog_id=batch_id,
        status="success",
        created=int(created) if isinstance(created, int) else 0,
        record_count=count if isinstance(count, int) else None,
        metadata=dict(job),
    )


def download_audience(
    result: ExportResult,
    *,
    progress: bool = True,
    client: Client | None = None,
    cache_dir: str | Path | None = None,
) -> list[CacheEntry]:
    """Make sure the cache holds every batch of a finished export, and return the entries.

    Each batch is cached under ``{sandbox}/{result.dataset_id}/{batch_id}``, like a score
    batch, with the job record as its catalog record.
    """
    check_id(result.dataset_id, "dataset ID")
    with _client_scope(client) as active:
        cache = Cache(cache_dir or active.settings.cache_dir)
        sandbox = active.settings.sandbox
        entries = []
        for batch_id in result.batch_ids:
            entry = cache.get(sandbox, result.dataset_id, batch_id)
            if entry is None:
                source = JobBatchSource(active.source, job_batch_info(result, batch_id))
                entry = download_batch(
                    source,
                    cache,
                    sandbox=sandbox,
                    dataset_id=result.dataset_id,
                    batch_id=batch_id,
                    concurrency=active.concurrency,
                    progress=progress,
                )
            entries.append(entry)
    return entries


def load_audience(
    segment_or_result: str | ExportResult,
    *,
    columns: Sequence[str] | None = None,
    raw: bool = False,
    offline: bool = False,
    progress: bool = True,
    client: Client | None = None,
    cache_dir: str | Path | None = None,
    **export: Any,
) -> pd.DataFrame:
    """Load an audience as one tidy DataFrame (see the module docstring for its columns).

    Args:
        segment_or_result: A segment ID, which is exported first with
            :func:`export_audience` (``export`` holds its other arguments), or the
            :class:`ExportResult` of an export.
        columns: Tidy column names to keep (physical columns with ``raw=True``).
        raw: Return the profile records as written (nested), merged across parts.
        offline: Use the cache only: the export's batches, or for a segment ID the
            newest cached export of it.
        progress: Show the job's state and the download.
        client: The platform client; by default one built from the environment.
        cache_dir: The cache folder.
        **export: Passed to :func:`export_audience` (``fields``, ``dataset_id``,
            ``job_id``, ``poll_interval``, ``timeout``, ...).

    Returns:
        The audience, Arrow-backed dtypes, rows as the module docstring orders them.

    Raises:
        CacheMissError: Offline, and the cache holds no such export.
        ExportJobError: The export did not succeed (see :func:`export_audience`).

    Example:
        >>> members = load_audience(segment_id, fields=["person.name.firstName",
        ...                                             "_acmecorp.CustomerAI"])
        ... # doctest: +SKIP
    """
    table = _audience_table(
        segment_or_result, columns, raw, offline, progress, client, cache_dir, export
    )
    return load.to_pandas(table)


def audience_view(
    segment_or_result: str | ExportResult,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    name: str = "audience",
    raw: bool = False,
    offline: bool = False,
    progress: bool = True,
    client: Client | None = None,
    cache_dir: str | Path | None = None,
    **export: Any,
) -> duckdb.DuckDBPyConnection:
    """Register the audience on a DuckDB connection as ``name``, tidy like :func:`load_audience`.

    The tidy audience is built in Arrow and registered without a copy (an audience is
    one segment's members); ``raw=True`` is a view reading the cached parts in place.

    Returns:
        The connection.

    Example:
        >>> con = scores_view(score_dataset_id)  # doctest: +SKIP
        >>> audience_view(result, con=con).sql(
        ...     "SELECT a.profile_id, s.score FROM audience a JOIN scores s USING (profile_id)"
        ... )  # doctest: +SKIP
    """
    con = duckdb.connect() if con is None else con
    if raw:
        entries = _entries(segment_or_result, offline, progress, client, cache_dir, export)
        paths = [p for e in entries for p in e.part_paths]
        sql.create_view(con, name, paths, raw=True)
        return con
    table = _audience_table(
        segment_or_result, None, False, offline, progress, client, cache_dir, export
    )
    con.register(name, table)
    return con


def _audience_table(
    segment_or_result: str | ExportResult,
    columns: Sequence[str] | None,
    raw: bool,
    offline: bool,
    progress: bool,
    client: Client | None,
    cache_dir: str | Path | None,
    export: dict[str, Any],
) -> pa.Table:
    entries = _entries(segment_or_result, offline, progress, client, cache_dir, export)
    paths = [p for e in entries for p in e.part_paths]
    if not paths:
        raise SchemaError("the export wrote no parquet parts: the batch lists none.")
    if raw:
        return load.read_parts(paths, columns=columns)
    return tidy_audience(load.read_parts(paths), columns)


def _entries(
    segment_or_result: str | ExportResult,
    offline: bool,
    progress: bool,
    client: Client | None,
    cache_dir: str | Path | None,
    export: dict[str, Any],
) -> list[CacheEntry]:
    if offline or offline_from_env():
        settings = client.settings if client else Settings.from_env()
        return _cached_entries(
            Cache(cache_dir or settings.cache_dir), settings.sandbox, segment_or_result
        )
    with _client_scope(client) as active:
        result = segment_or_result
        if isinstance(result, str):
            result = export_audience(result, progress=progress, client=active, **export)
        return download_audience(result, progress=progress, client=active, cache_dir=cache_dir)


def _cached_entries(
    cache: Cache, sandbox: str, segment_or_result: str | ExportResult
) -> list[CacheEntry]:
    """The cached batches of an export, or of the newest cached export of a segment."""
    if isinstance(segment_or_result, ExportResult):
        result = segment_or_result
        entries = [cache.get(sandbox, result.dataset_id, b) for b in result.batch_ids]
        found = [e for e in entries if e is not None]
        if len(found) == len(entries):
            return found
        what = f"export job {result.job_id} (batches {', '.join(result.batch_ids)})"
    else:
        jobs = [e for e in cache.entries(sandbox) if _exports(e, segment_or_result)]
        if jobs:
            newest = jobs[0].manifest.get("catalog", {}).get("id")
            return [e for e in jobs if e.manifest.get("catalog", {}).get("id") == newest]
        what = f"any export of segment {segment_or_result}"
    raise CacheMissError(
        f"offline: the cache at {cache.root} holds no complete entry for {what} in sandbox "
        f"{sandbox!r}. Load it once online, or point CAI_FRAMES_CACHE_DIR at the cache "
        "that holds it."
    )


def _exports(entry: CacheEntry, segment_id: str) -> bool:
    job = entry.manifest.get("catalog")
    return isinstance(job, Mapping) and segment_id in job_segment_ids(job)


@contextmanager
def _client_scope(client: Client | None) -> Iterator[Client]:
    """Yield ``client``, or one built from the environment and closed afterwards."""
    if client is not None:
        yield client
        return
    built = Client()
    try:
        yield built
    finally:
        built.close()
