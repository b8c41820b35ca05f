"""The second route: load an audience (a segment) exported to a dataset.

The export itself (dataset, job, polling) is :func:`cai_frames.audience_export.export_audience`;
given a segment ID, :func:`load_audience` and :func:`audience_view` run it first. They
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import pandas as pd
import pyarrow as pa

from . import load, sql
from .audience_export import ExportResult, export_audience
from .audience_table import tidy_audience
from .cache import Cache, CacheEntry
from .client import Client, client_scope
from .download import download_batch
from .errors import (
    CacheMissError,
    SchemaError,
)
from .export_jobs import job_batch_ids, job_segment_ids
from .names import check_id
from .settings import Settings, offline_from_env
from .source import BatchInfo, PartSource, RemotePart
from .xdm import column_list

logger = logging.getLogger(__name__)

IDENTITY_MAP = "identityMap"


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
    with client_scope(client) as active:
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
    columns: str | Sequence[str] | None = None,
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
        columns: Tidy column names to keep (physical columns with ``raw=True``); one
            string is one name, an empty list is refused.
        raw: Return the profile records as written (nested), merged across parts.
        offline: Use the cache only: the export's batches, or for a segment ID the
            newest cached export of it (the batches of the one job created last, in any
            dataset; an export cached in part is skipped).
        progress: Show the job's state and the download.
        client: The platform client; by default one built from the environment.
        cache_dir: The cache folder.
        **export: Passed to :func:`export_audience` (``fields``, ``dataset_id``,
            ``job_id``, ``poll_interval``, ``timeout``, ...).

    Returns:
        The audience, Arrow-backed dtypes, rows as the module docstring orders them.

    Raises:
        ConfigurationError: ``columns`` is an empty list, or an argument of
            :func:`export_audience` is out of range; nothing is exported then.
        CacheMissError: Offline, and the cache holds no such export.
        ExportJobError: The export did not succeed (see :func:`export_audience`).

    Example:
        >>> members = load_audience(segment_id, fields=["person.name.firstName",
        ...                                             "_acmecorp.CustomerAI"])
        ... # doctest: +SKIP
    """
    wanted = column_list(columns)
    table = _audience_table(
        segment_or_result, wanted, raw, offline, progress, client, cache_dir, export
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
    with client_scope(client) as active:
        result = segment_or_result
        if isinstance(result, str):
            # An export job can run for an hour: check the cache folder before starting one.
            Cache(cache_dir or active.settings.cache_dir).check_folder()
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
        exported = [e for e in cache.entries(sandbox) if _exports(e, segment_or_result)]
        newest = _newest_export(exported)
        if newest:
            return newest
        what = f"any export of segment {segment_or_result}"
    raise CacheMissError(
        f"offline: the cache at {cache.root} holds no complete entry for {what} in sandbox "
        f"{sandbox!r}. Load it once online, or point CAI_FRAMES_CACHE_DIR at the cache "
        "that holds it."
    )


def _newest_export(entries: list[CacheEntry]) -> list[CacheEntry]:
    """The batches of the newest export job among ``entries`` that is cached whole.

    A job is its dataset and job ID together: job IDs are numbers that restart in each
    emulator and may repeat across orgs, while the cache is keyed by sandbox only, so
    the same job ID in two datasets is two exports. Newest means the job created last,
    then the one downloaded last; the batches come in the order the job lists them.
    """
    groups: dict[tuple[str, str], list[CacheEntry]] = {}
    for entry in entries:
        groups.setdefault((entry.dataset_id, str(_job(entry).get("id"))), []).append(entry)
    whole = [g for g in groups.values() if _is_whole(g)]
    if not whole:
        return []
    newest = max(whole, key=_export_time)
    order = job_batch_ids(_job(newest[0]))
    return sorted(newest, key=lambda e: order.index(e.batch_id))


def _job(entry: CacheEntry) -> Mapping[str, Any]:
    job = entry.manifest.get("catalog")
    return job if isinstance(job, Mapping) else {}


def _is_whole(group: list[CacheEntry]) -> bool:
    """Whether the cache holds every batch the job lists, and only those."""
    return sorted(job_batch_ids(_job(group[0]))) == sorted(e.batch_id for e in group)


def _export_time(group: list[CacheEntry]) -> tuple[int, str]:
    created = _job(group[0]).get("creationTime")
    stamp = created if isinstance(created, int) and not isinstance(created, bool) else 0
    return stamp, max(e.downloaded_at for e in group)


def _exports(entry: CacheEntry, segment_id: str) -> bool:
    job = entry.manifest.get("catalog")
    return isinstance(job, Mapping) and segment_id in job_segment_ids(job)
