"""Score history: every cached scoring run of a dataset, together and compared.

Customer AI rescores into the same dataset, and the platform deletes each batch once a
newer run replaces it (``replay.predecessors`` names what was replaced). The cache keeps
every batch it downloaded (:mod:`cai_frames.cache`), so the runs it holds are the only
record of how propensities moved. This module reads them:

- :func:`list_runs`: the cached runs of a dataset, newest first;
- :func:`load_score_history`: all of them as one tidy frame with ``batch_id`` and
  ``run_date`` columns;
- :func:`scores_history_view`: the same as a DuckDB view over the cached parts in place;
- :func:`cai_frames.compare.compare_runs`: two runs compared, profile by profile;
- :func:`backfill_runs`: download every run the platform still serves.

A run is a complete cache entry. An entry without its manifest, or with a part missing
or resized, is no run and never appears here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from . import load, sql
from .api import download_scores
from .cache import Cache, CacheEntry
from .client import Client, client_scope
from .errors import CacheMissError, ConfigurationError, HistoryError
from .names import check_id
from .settings import Settings, offline_from_env
from .xdm import UTC_MICROS, column_list

logger = logging.getLogger(__name__)

RUN_COLUMNS = ("batch_id", "run_date")


def list_runs(
    dataset_id: str,
    *,
    runs: int | None = None,
    since: date | datetime | str | None = None,
    offline: bool = False,
    progress: bool = True,
    client: Client | None = None,
    cache_dir: str | Path | None = None,
) -> list[CacheEntry]:
    """The cached runs of a dataset, newest first, after downloading the latest one.

    Args:
        dataset_id: The Customer AI score dataset.
        runs: Keep only this many of the newest runs.
        since: Keep runs created at or after this time (a date is midnight UTC, a naive
            time is UTC).
        offline: Use the cache only, with no network call.
        progress: Show a progress bar while downloading.
        client: The platform client; by default one built from the environment.
        cache_dir: The cache folder.

    Returns:
        Complete cache entries, newest run first; empty when none is cached.

    Raises:
        HistoryError: ``runs`` is below 1, or ``since`` is not a time.
        NoBatchError: Online, and the dataset has no successful batch.
        ConfigurationError: Online, and a setting such as a credential is missing; the
            message says that ``offline=True`` reads the cached runs without them (so
            do :func:`load_score_history`, :func:`scores_history_view` and
            :func:`cai_frames.compare.compare_runs`).
    """
    cache, sandbox = _sync(dataset_id, [None], offline, progress, client, cache_dir)
    entries = cache.entries(sandbox, dataset_id)
    if since is not None:
        bound = _utc(since)
        entries = [e for e in entries if e.created_at >= bound]
    if runs is not None:
        if runs < 1:
            raise HistoryError(f"runs must be 1 or more, got {runs}; leave it out for all runs.")
        entries = entries[:runs]
    return entries


def load_score_history(
    dataset_id: str,
    *,
    runs: int | None = None,
    since: date | datetime | str | None = None,
    columns: str | Sequence[str] | None = None,
    offline: bool = False,
    progress: bool = True,
    client: Client | None = None,
    cache_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Load every cached run of a dataset as one tidy DataFrame.

    The latest run is downloaded first unless offline; older runs come from the cache
    only (see :func:`backfill_runs` to fetch those the platform still serves).

    Args:
        dataset_id: The Customer AI score dataset.
        runs: Only the newest ``runs`` runs.
        since: Only runs created at or after this time (see :func:`list_runs`).
        columns: Tidy columns to load, as for :func:`cai_frames.load_scores` (one
            string is one name, an empty list is refused); ``batch_id`` and
            ``run_date`` are always there.
        offline: Use the cache only, with no network call.
        progress: Show a progress bar while downloading.
        client: The platform client; by default one built from the environment.
        cache_dir: The cache folder.

    Returns:
        ``batch_id`` (string), ``run_date`` (the batch's creation time, timestamp[us,
        UTC]) and the tidy columns, Arrow-backed; runs oldest first, each in the order
        :func:`cai_frames.load_scores` gives.

    Raises:
        ConfigurationError: ``columns`` is an empty list.
        CacheMissError: No cached run matches.
        SchemaError: A run holds no Customer AI scores, or a column name is unknown.

    Example:
        >>> history = load_score_history("5cd9146b31dae914b75f654f")  # doctest: +SKIP
        >>> history.groupby("run_date")["score"].mean()  # doctest: +SKIP
    """
    wanted = _tidy_columns(columns)
    entries = _selected(dataset_id, runs, since, offline, progress, client, cache_dir)
    ordered = entries[::-1]
    tables = [_with_run(load.load_table(e.part_paths, columns=wanted), e) for e in ordered]
    return load.to_pandas(load.merge_tables(tables, [e.path for e in ordered]))


def scores_history_view(
    dataset_id: str,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    name: str = "scores_history",
    runs: int | None = None,
    since: date | datetime | str | None = None,
    columns: str | Sequence[str] | None = None,
    offline: bool = False,
    progress: bool = True,
    client: Client | None = None,
    cache_dir: str | Path | None = None,
) -> duckdb.DuckDBPyConnection:
    """Register a DuckDB view of every cached run, with the columns of the history frame.

    One tidy ``SELECT`` per run (:func:`cai_frames.sql.view_sql`) with the run's
    ``batch_id`` and ``run_date`` as literals, joined by ``UNION ALL BY NAME``; the view
    reads the cached parts in place. The arguments are those of
    :func:`load_score_history`, plus the connection ``con`` (a new in-memory one by
    default) and the view's ``name``.

    Returns:
        The connection, with the view registered.

    Raises:
        CacheMissError: No cached run matches.

    Example:
        >>> con = scores_history_view("5cd9146b31dae914b75f654f")  # doctest: +SKIP
        >>> con.sql("SELECT run_date, avg(score) FROM scores_history GROUP BY 1").df()
        ... # doctest: +SKIP
    """
    wanted = _tidy_columns(columns)
    entries = _selected(dataset_id, runs, since, offline, progress, client, cache_dir)
    query = "\nUNION ALL BY NAME\n".join(_run_select(e, wanted) for e in entries[::-1])
    con = duckdb.connect() if con is None else con
    con.execute(f"CREATE OR REPLACE VIEW {sql.quote_identifier(name)} AS\n{query}")
    logger.debug("created view %s over %d runs", name, len(entries))
    return con


def backfill_runs(
    dataset_id: str,
    *,
    progress: bool = True,
    client: Client | None = None,
    cache_dir: str | Path | None = None,
) -> list[CacheEntry]:
    """Download every successful run the platform still serves, so history starts there.

    Runs the platform has already deleted (replaced by a newer one) cannot be fetched
    any more; only runs cached before then are in the history.

    Returns:
        The entries of the runs the catalog lists as successful, newest first.

    Raises:
        NotFoundError: The dataset does not exist in this sandbox.
    """
    check_id(dataset_id, "dataset ID")
    with client_scope(client, cache_dir=cache_dir) as active:
        batches = active.catalog.successful_batches(dataset_id)
        logger.info("dataset %s: %d successful runs served", dataset_id, len(batches))
        return [
            download_scores(
                dataset_id,
                batch_id=batch.batch_id,
                progress=progress,
                client=active,
                cache_dir=cache_dir,
            )
            for batch in batches
        ]


def _sync(
    dataset_id: str,
    batch_ids: Sequence[str | None],
    offline: bool,
    progress: bool,
    client: Client | None,
    cache_dir: str | Path | None,
) -> tuple[Cache, str]:
    """Download the batches (``None`` for the latest) unless offline; the cache and sandbox."""
    check_id(dataset_id, "dataset ID")
    if offline or offline_from_env():
        settings = client.settings if client else Settings.from_env()
    else:
        with _online_client(client, cache_dir) as active:
            settings = active.settings
            for batch_id in batch_ids:
                download_scores(
                    dataset_id,
                    batch_id=batch_id,
                    progress=progress,
                    client=active,
                    cache_dir=cache_dir,
                )
    return Cache(cache_dir or settings.cache_dir), settings.sandbox


@contextmanager
def _online_client(client: Client | None, cache_dir: str | Path | None) -> Iterator[Client]:
    """``client``, or one built from the environment whose setting errors say how to go offline.

    Online, history first downloads the latest run, which needs credentials; the runs
    already cached do not, and a user missing credentials should learn that here.
    """
    if client is not None:
        yield client
        return
    try:
        built = Client(cache_dir=cache_dir)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{exc} To read the cached runs without credentials, pass offline=True (or set "
            "CAI_FRAMES_OFFLINE=1)."
        ) from exc
    try:
        yield built
    finally:
        built.close()


def _tidy_columns(columns: str | Sequence[str] | None) -> list[str] | None:
    """The tidy columns to read from each run: ``columns`` without the run columns."""
    names = column_list(columns)
    return None if names is None else [c for c in names if c not in RUN_COLUMNS]


def _utc(since: date | datetime | str) -> datetime:
    try:
        stamp = pd.Timestamp(since)
    except (TypeError, ValueError) as exc:
        raise HistoryError(
            f"since={since!r} is not a date or time; pass e.g. '2026-01-05' or a datetime."
        ) from exc
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    result: datetime = stamp.to_pydatetime()
    return result


def _selected(
    dataset_id: str,
    runs: int | None,
    since: date | datetime | str | None,
    offline: bool,
    progress: bool,
    client: Client | None,
    cache_dir: str | Path | None,
) -> list[CacheEntry]:
    """:func:`list_runs`, raising when it finds nothing."""
    entries = list_runs(
        dataset_id,
        runs=runs,
        since=since,
        offline=offline,
        progress=progress,
        client=client,
        cache_dir=cache_dir,
    )
    if not entries:
        raise CacheMissError(
            f"no cached run of dataset {dataset_id} matches; load it once online (without "
            "offline=True), or widen runs= and since=."
        )
    return entries


def _with_run(table: pa.Table, entry: CacheEntry) -> pa.Table:
    rows = table.num_rows
    run_date = pa.scalar(entry.created * 1000, UTC_MICROS)
    table = table.add_column(0, "run_date", pa.repeat(run_date, rows))
    return table.add_column(0, "batch_id", pa.repeat(pa.scalar(entry.batch_id, pa.string()), rows))


def _run_select(entry: CacheEntry, columns: list[str] | None) -> str:
    stamp = entry.created_at.isoformat(sep=" ")
    return (
        f"SELECT {sql.quote_literal(entry.batch_id)} AS batch_id, "
        f"TIMESTAMPTZ {sql.quote_literal(stamp)} AS run_date, *\n"
        f"FROM (\n{sql.view_sql(entry.part_paths, columns=columns)}\n)"
    )
