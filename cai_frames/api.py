"""The public entry points: download a score batch, load it, query it.

Each function resolves the batch to use (the latest successful one unless a batch ID is
given), makes sure the cache holds it whole, and reads the cached parts. With
``offline=True`` (or ``CAI_FRAMES_OFFLINE=1``) no network call is made: the newest
complete cached batch is used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd

from . import load, sql
from .cache import Cache, CacheEntry
from .client import Client, client_scope
from .download import download_batch
from .errors import CacheMissError
from .names import check_id
from .settings import Settings, offline_from_env
from .xdm import column_list

logger = logging.getLogger(__name__)


def download_scores(
    dataset_id: str,
    *,
    batch_id: str | None = None,
    offline: bool = False,
    progress: bool = True,
    client: Client | None = None,
    cache_dir: str | Path | None = None,
) -> CacheEntry:
    """Make sure the cache holds a score batch whole and return its entry.

    Args:
        dataset_id: The Customer AI score dataset (shown in "Access scores").
        batch_id: A given batch; by default the latest successful one.
        offline: Use the cache only, with no network call.
        progress: Show a progress bar while downloading.
        client: The platform client; by default one built from the environment.
        cache_dir: The cache folder; by default ``CAI_FRAMES_CACHE_DIR`` or the user
            cache folder.

    Returns:
        The complete cache entry: its folder, batch ID and part paths.

    Raises:
        CacheMissError: Offline, and no complete entry matches.
        NoBatchError: The dataset has no successful batch yet.
        ConfigurationError: A setting is missing or malformed.

    Example:
        >>> entry = download_scores("5cd9146b31dae914b75f654f")  # doctest: +SKIP
        >>> entry.batch_id, len(entry.parts)  # doctest: +SKIP
    """
    check_id(dataset_id, "dataset ID")
    if offline or offline_from_env():
        settings = client.settings if client else Settings.from_env()
        cache = Cache(cache_dir or settings.cache_dir)
        return _cached_entry(cache, settings.sandbox, dataset_id, batch_id)
    with client_scope(client, cache_dir=cache_dir) as active:
        settings = active.settings
        cache = Cache(cache_dir or settings.cache_dir)
        if batch_id is not None:
            entry = cache.get(settings.sandbox, dataset_id, batch_id)
            if entry is not None:
                return entry
        return download_batch(
            active.source,
            cache,
            sandbox=settings.sandbox,
            dataset_id=dataset_id,
            batch_id=batch_id,
            concurrency=active.concurrency,
            progress=progress,
        )


def load_scores(
    dataset_id: str,
    *,
    batch_id: str | None = None,
    columns: str | Sequence[str] | None = None,
    raw: bool = False,
    offline: bool = False,
    progress: bool = True,
    client: Client | None = None,
    cache_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Load a Customer AI score batch as one tidy DataFrame.

    The tidy frame has one row per profile (per profile and instance when the dataset
    holds several Customer AI instances) with the columns ``profile_id``,
    ``profile_namespace``, ``instance`` (several instances only), ``score``,
    ``probability``, ``percentile``, ``propensity_type``, ``score_date`` and
    ``influential_factors``, all with Arrow-backed dtypes.

    Args:
        dataset_id: The Customer AI score dataset.
        batch_id: A given batch; by default the latest successful one.
        columns: Tidy column names to load (raw column names with ``raw=True``); fewer
            columns read less from disk. One string is one name (``"score"``); an
            empty list is refused.
        raw: Return the records as written (nested columns), merged across parts.
        offline: Use the cache only, with no network call.
        progress: Show a progress bar while downloading.
        client: The platform client; by default one built from the environment.
        cache_dir: The cache folder.

    Returns:
        The scores, in part order then file order.

    Raises:
        ConfigurationError: ``columns`` is an empty list.
        CacheMissError: Offline, and no complete entry matches.
        NoBatchError: The dataset has no successful batch yet.
        SchemaError: The batch holds no Customer AI scores (try ``raw=True``).

    Example:
        >>> scores = load_scores("5cd9146b31dae914b75f654f")  # doctest: +SKIP
        >>> scores.groupby("propensity_type")["score"].describe()  # doctest: +SKIP
    """
    wanted = column_list(columns)
    entry = download_scores(
        dataset_id,
        batch_id=batch_id,
        offline=offline,
        progress=progress,
        client=client,
        cache_dir=cache_dir,
    )
    table = load.load_table(entry.part_paths, columns=wanted, raw=raw)
    return load.to_pandas(table)


def scores_view(
    dataset_id: str,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    name: str = "scores",
    batch_id: str | None = None,
    raw: bool = False,
    offline: bool = False,
    progress: bool = True,
    client: Client | None = None,
    cache_dir: str | Path | None = None,
) -> duckdb.DuckDBPyConnection:
    """Register a DuckDB view over a cached score batch, tidy like :func:`load_scores`.

    The view reads the cached parquet parts in place; nothing is copied into memory
    until a query runs.

    Args:
        dataset_id: The Customer AI score dataset.
        con: The connection to register the view on; by default a new in-memory one.
        name: The view's name.
        batch_id: A given batch; by default the latest successful one.
        raw: Expose the records as written instead of the tidy columns.
        offline: Use the cache only, with no network call.
        progress: Show a progress bar while downloading.
        client: The platform client; by default one built from the environment.
        cache_dir: The cache folder.

    Returns:
        The connection, with the view registered.

    Example:
        >>> con = scores_view("5cd9146b31dae914b75f654f")  # doctest: +SKIP
        >>> con.sql("SELECT propensity_type, avg(score) FROM scores GROUP BY 1").df()
        ... # doctest: +SKIP
    """
    entry = download_scores(
        dataset_id,
        batch_id=batch_id,
        offline=offline,
        progress=progress,
        client=client,
        cache_dir=cache_dir,
    )
    con = duckdb.connect() if con is None else con
    sql.create_view(con, name, entry.part_paths, raw=raw)
    return con


def _cached_entry(cache: Cache, sandbox: str, dataset_id: str, batch_id: str | None) -> CacheEntry:
    if batch_id is None:
        entry = cache.latest(sandbox, dataset_id)
    else:
        entry = cache.get(sandbox, dataset_id, batch_id)
    if entry is None:
        which = f"batch {batch_id}" if batch_id else "any batch"
        raise CacheMissError(
            f"offline: the cache at {cache.root} holds no complete entry for {which} of "
            f"dataset {dataset_id} in sandbox {sandbox!r}. Load it once online (without "
            "offline=True or CAI_FRAMES_OFFLINE), or point CAI_FRAMES_CACHE_DIR at the "
            "cache that holds it."
        )
    logger.debug("offline: using cached batch %s", entry.batch_id)
    return entry
