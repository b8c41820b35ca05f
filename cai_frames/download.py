"""Copy one batch from a :class:`~cai_frames.source.PartSource` into the cache.

The flow: ask the source which batch is current, return at once if the cache already
holds it whole, otherwise take the batch's lock, list its parts and fetch the missing
ones several at a time, each streamed to disk under a temporary name, then write the
manifest. A second process asking for the same batch waits on the lock and then finds
the entry complete.

A part survives the network twice over. urllib3 retries a request that got no answer
or a busy one (:mod:`cai_frames.http`), but not a body that breaks halfway, so here a
broken body is resumed with a ``Range`` request from the bytes already on disk, up to
:data:`RESUME_ATTEMPTS` requests in all. A part that arrives whole but wrong (another
size than listed, or not readable parquet) is fetched once more from the start, then
reported.

A Ctrl-C (or any error) stops every fetch at its next chunk and cancels the queued ones;
the partial files stay as they are and no manifest is written, so the next run resumes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .cache import Cache, CacheEntry, EntryWriter, cache_write_errors
from .errors import DownloadError, IncompleteBodyError
from .source import BatchInfo, PartSource, RemotePart

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8
# Requests one part may take when its body keeps breaking: the first and the resumes.
RESUME_ATTEMPTS = 5
# Seconds the main thread waits on the download threads at a time.
_WAIT_SLICE = 0.2


def download_batch(
    source: PartSource,
    cache: Cache,
    *,
    sandbox: str,
    dataset_id: str,
    batch_id: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    progress: bool = True,
) -> CacheEntry:
    """Make sure the cache holds the batch whole, downloading what it lacks.

    Args:
        source: Where the parts come from.
        cache: Where they go.
        sandbox: The sandbox, the first level of the cache.
        dataset_id: The dataset to take the batch from.
        batch_id: A given batch; ``None`` takes the latest successful one.
        concurrency: Parts fetched at the same time.
        progress: Show a progress bar of the bytes fetched.

    Returns:
        The complete cache entry.

    Raises:
        CacheError: The cache folder cannot be written (checked before any request
            when nothing of the dataset is cached yet).
    """
    cache.check_writable(sandbox, dataset_id)
    batch = source.resolve_batch(dataset_id, batch_id)
    entry = cache.get(sandbox, dataset_id, batch.batch_id)
    if entry is not None:
        logger.debug("batch %s of dataset %s is cached already", batch.batch_id, dataset_id)
        return entry
    lock = cache.lock(sandbox, dataset_id, batch.batch_id)
    with cache_write_errors(Path(lock.lock_file).parent):
        try:
            lock.acquire(timeout=0)
        except TimeoutError:
            logger.info("batch %s is being downloaded by another process; waiting", batch.batch_id)
            lock.acquire()
    try:
        # Another process may have finished the entry while this one waited.
        entry = cache.get(sandbox, dataset_id, batch.batch_id)
        if entry is not None:
            return entry
        return _download_locked(source, cache, sandbox, batch, concurrency, progress)
    finally:
        lock.release()


def _download_locked(
    source: PartSource,
    cache: Cache,
    sandbox: str,
    batch: BatchInfo,
    concurrency: int,
    progress: bool,
) -> CacheEntry:
    parts = list(source.list_parts(batch))
    writer = cache.writer(sandbox, batch, parts)
    missing = writer.missing()
    total = sum(p.size for p in missing)
    logger.info(
        "batch %s: %d parts listed, %d to fetch (%d bytes)",
        batch.batch_id,
        len(parts),
        len(missing),
        total,
    )
    started = time.monotonic()
    with _progress_bar(total, batch.batch_id, enabled=progress and bool(missing)) as bar:
        _fetch_all(source, writer, missing, concurrency, bar)
    if missing:
        elapsed = time.monotonic() - started
        logger.info("batch %s: fetched %d bytes in %.1f s", batch.batch_id, total, elapsed)
    return writer.finish()


def _fetch_all(
    source: PartSource,
    writer: EntryWriter,
    parts: list[RemotePart],
    concurrency: int,
    bar: Any,
) -> None:
    """Fetch ``parts`` several at a time; stop them all at the first error or Ctrl-C.

    A ``with`` block over the pool would wait for every queued part on the way out, so
    a Ctrl-C would go on downloading the whole batch. Instead the running fetches see
    the stop event at their next chunk, the queued ones are cancelled, the partial files
    stay for the next run to resume, and the original exception goes on.
    """
    if not parts:
        return
    stop = threading.Event()
    bar = _LockedBar(bar, stop)
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="cai")
    try:
        futures = [pool.submit(_fetch_one, source, writer, part, bar) for part in parts]
        _wait_all(futures)
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _wait_all(futures: list[Future[None]]) -> None:
    """Wait for every future, raising the first error; short waits keep Ctrl-C prompt."""
    pending: set[Future[None]] = set(futures)
    while pending:
        done, pending = wait(pending, timeout=_WAIT_SLICE, return_when=FIRST_EXCEPTION)
        for future in done:
            future.result()


def _fetch_one(source: PartSource, writer: EntryWriter, part: RemotePart, bar: Any) -> None:
    """Fetch one part until it is whole and valid parquet, then move it into the entry."""
    for fetch in (1, 2):
        _fetch_resuming(source, writer, part, bar)
        try:
            writer.commit_part(part)
        except DownloadError as exc:
            bar.update(-part.size)
            if fetch == 2:
                raise DownloadError(
                    f"{exc} It was fetched twice and was wrong both times, so the server "
                    "sends it damaged; try again later, or report the batch to Adobe support."
                ) from exc
            logger.warning("%s Fetching it once more.", exc)
            continue
        logger.debug("part %s is whole (%d bytes)", part.name, part.size)
        return


def _fetch_resuming(source: PartSource, writer: EntryWriter, part: RemotePart, bar: Any) -> None:
    """Fetch a part's bytes into its partial file, resuming after each broken body."""
    partial = writer.partial_path(part)
    for attempt in range(1, RESUME_ATTEMPTS + 1):
        try:
            _fetch_from_partial(source, partial, part, bar)
            return
        except IncompleteBodyError as exc:
            kept = partial.stat().st_size if partial.exists() else 0
            if attempt == RESUME_ATTEMPTS:
                raise DownloadError(
                    f"part {part.name}: the connection broke during each of {attempt} "
                    f"attempts; the {kept} bytes received are kept in {partial.name} and the "
                    "next download resumes from there. Check the network and try again."
                ) from exc
            logger.warning(
                "%s Resuming from byte %d (attempt %d of %d).",
                exc,
                kept,
                attempt + 1,
                RESUME_ATTEMPTS,
            )


def _fetch_from_partial(source: PartSource, partial: Path, part: RemotePart, bar: Any) -> None:
    """One request for the bytes of ``part`` not yet in ``partial``."""
    start = partial.stat().st_size if partial.exists() else 0
    if start > part.size:
        start = 0
    # Unbuffered, so that whatever arrived is on disk even if the process is killed.
    with (
        cache_write_errors(partial.parent),
        open(partial, "r+b" if start else "wb", buffering=0) as out,
    ):
        out.seek(start)
        out.truncate()
        if start:
            bar.update(start)
        began = source.fetch_part(part, out, start=start, on_bytes=bar.update)
        if began != start and start:
            bar.update(-start)


class _Cancelled(Exception):
    """Raised in a download thread, between chunks, once the download is being stopped."""


class _LockedBar:
    """Serialises progress updates from the download threads, and stops them when asked.

    Every chunk written passes through :meth:`update`, so it is where a running fetch
    learns that the download is being stopped.
    """

    def __init__(self, bar: Any, stop: threading.Event) -> None:
        self._bar = bar
        self._stop = stop
        self._lock = threading.Lock()

    def update(self, n: int) -> None:
        if self._stop.is_set():
            raise _Cancelled("the download was stopped")
        with self._lock:
            self._bar.update(n)


@contextmanager
def _progress_bar(total: int, batch_id: str, *, enabled: bool) -> Iterator[Any]:
    bar = tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"batch {batch_id[:12]}",
        disable=not enabled,
        leave=False,
    )
    try:
        yield bar
    finally:
        bar.close()
