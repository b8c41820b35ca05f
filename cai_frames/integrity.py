"""Is a part on disk whole parquet? A cheap check for every download, a full one on demand.

The quick check (:func:`part_problem`): a part has the size the listing gave, starts and
ends with the parquet magic ``PAR1``, and its footer (the file metadata) can be read.
Only the first and last bytes and the footer are read, so it costs a few kilobytes
however large the part. It cannot see bytes gone wrong inside the data pages.

The full check (``pages=True``) also decodes every data page, one batch of rows at a
time and discarding them, so memory stays flat whatever the part's size; it reads the
whole part from disk. Garbage inside a page fails to decompress or decode and is found.
Parquet pages carry no checksum unless the writer added one, so a change that still
decodes (a flipped digit in an uncompressed page) passes both checks.

The downloader runs the quick check on each part before renaming it into the cache
(:meth:`cai_frames.cache.EntryWriter.commit_part`); :meth:`cai_frames.cache.Cache.verify`
runs the full one (the quick one with ``quick=True``) on every part of the cached
entries, for a disk or a copy that went wrong after the download, and can repair what
it finds: the broken parts are removed and the entry's manifest with them, so the entry
counts as incomplete and the next download fetches only those parts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from .names import is_plain_name

logger = logging.getLogger(__name__)

MAGIC = b"PAR1"
# Header magic, footer length and footer magic: no parquet file is shorter.
_MIN_SIZE = 12
# Rows decoded at a time by the full check: a few megabytes of memory at most.
_CHECK_BATCH_ROWS = 16_384


def part_problem(path: Path, size: int | None = None, *, pages: bool = False) -> str | None:
    """Why the file at ``path`` is not a whole parquet part, or ``None`` when it is.

    Args:
        path: The file to check.
        size: The size it must have, when known.
        pages: Also decode every data page (reads the whole file), not only the footer.
    """
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return "is missing"
    if size is not None and actual != size:
        return f"has {actual} bytes but the listing says {size}"
    if actual < _MIN_SIZE:
        return f"has only {actual} bytes, too few for parquet"
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(-4, 2)
        tail = fh.read(4)
    if head != MAGIC or tail != MAGIC:
        return f"does not start and end with the parquet magic (got {head!r}...{tail!r})"
    try:
        pq.read_metadata(path)
    except (pa.ArrowException, OSError) as exc:
        return f"has an unreadable parquet footer ({exc})"
    return _pages_problem(path) if pages else None


def _pages_problem(path: Path) -> str | None:
    """Why the data pages of a part with a readable footer cannot be decoded, if they cannot."""
    try:
        with pq.ParquetFile(path) as part:
            for _ in part.iter_batches(batch_size=_CHECK_BATCH_ROWS, use_threads=False):
                pass
    except (pa.ArrowException, OSError, ValueError) as exc:
        return f"has unreadable data pages ({exc})"
    return None


@dataclass(frozen=True)
class EntryCheck:
    """What :meth:`cai_frames.cache.Cache.verify` found in one entry.

    Attributes:
        path: The entry's folder.
        problems: ``(file name, what is wrong)`` for each broken part, or for the
            manifest itself; empty when the entry is whole.
        repaired: Whether the broken parts and the manifest were removed.
        skipped: Whether the entry was left alone because another process holds it.
    """

    path: Path
    problems: tuple[tuple[str, str], ...]
    repaired: bool = False
    skipped: bool = False

    @property
    def ok(self) -> bool:
        """Whether the entry is whole (nothing found, nothing skipped)."""
        return not self.problems and not self.skipped


def check_entry(
    folder: Path, manifest: Path, lock: FileLock, *, repair: bool, quick: bool = False
) -> EntryCheck:
    """Check every part a manifest lists; with ``repair``, remove what is broken.

    Args:
        folder: The entry's folder.
        manifest: Its manifest file.
        lock: The entry's lock, taken without waiting; a held lock skips the entry.
        repair: Remove the broken parts and the manifest, so the entry is incomplete
            and the next download fetches only those parts.
        quick: Check sizes and footers only, not the data pages.
    """
    try:
        with lock.acquire(timeout=0):
            problems = _problems(folder, manifest, pages=not quick)
            if repair and problems:
                _repair(folder, manifest, problems)
    except TimeoutError:
        logger.warning("left %s alone: another process is writing it", folder)
        return EntryCheck(folder, (), skipped=True)
    for name, problem in problems:
        logger.warning("%s: %s %s", folder, name, problem)
    return EntryCheck(folder, tuple(problems), repaired=repair and bool(problems))


def _problems(folder: Path, manifest: Path, *, pages: bool) -> list[tuple[str, str]]:
    try:
        parts = json.loads(manifest.read_text(encoding="utf-8"))["parts"]
        listed = [(str(p["name"]), int(p["size"])) for p in parts]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [(manifest.name, f"cannot be read ({type(exc).__name__}: {exc})")]
    found = []
    for name, size in listed:
        # A manifest is data on disk too: a name that is not a plain file is never opened.
        if not is_plain_name(name):
            found.append((name, "is not a plain file name"))
            continue
        problem = part_problem(folder / name, size, pages=pages)
        if problem:
            found.append((name, problem))
    return found


def _repair(folder: Path, manifest: Path, problems: list[tuple[str, str]]) -> None:
    # The manifest goes first, so that no reader trusts the entry while parts go.
    manifest.unlink(missing_ok=True)
    for name, _ in problems:
        if name != manifest.name and is_plain_name(name):
            (folder / name).unlink(missing_ok=True)
    logger.info("repaired %s: %d broken file(s) removed, manifest removed", folder, len(problems))
