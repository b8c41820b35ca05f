"""The local cache of score batches.

Every batch lives in its own folder, keyed by the data batch ID the platform serves::

    {cache_dir}/
    └── {sandbox}/
        └── {dataset_id}/
            ├── {batch_id}/                 one cache entry
            │   ├── part-00000-...-c000.snappy.parquet
            │   ├── part-00001-...-c000.snappy.parquet
            │   ├── part-00002-...-c000.snappy.parquet.partial   being downloaded
            │   └── manifest.json           written last: its presence marks the entry complete
            └── {batch_id}.lock             held while the entry is being written

Why it is written this way: a download of hundreds of parts can stop at any moment
(a dropped network, Ctrl-C, a killed kernel). A part is first written to a
``.partial`` name, its size checked against the listing, and only then renamed to its
own name, so a part under its real name is always whole. The manifest is written to a
temporary file and renamed into place after every part is in, so an entry without a
manifest is never read by the loader, and a later download resumes it, keeping the
parts already whole. Renames within one folder are atomic on every platform we run on.
Before its rename each part is also checked to be parquet (:mod:`cai_frames.integrity`),
and :meth:`Cache.verify` checks every cached part again on demand.

The manifest records the file names, sizes, source file IDs, the catalog record of the
batch and the download time. It never holds a token or any other secret.

A new batch of a dataset gets a folder of its own and never replaces an older one: the
platform deletes a batch once a newer run replaces it, so the cache is the only history
of a dataset's scoring runs (:mod:`cai_frames.history` reads it). Only
:meth:`Cache.prune` and :meth:`Cache.clear` remove entries.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from .errors import CacheError, CaiFramesError, DownloadError, HistoryError
from .integrity import EntryCheck, check_entry, part_problem
from .names import check_file_name, check_id
from .source import BatchInfo, RemotePart

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_CACHE_DIR_FIX = "set CAI_FRAMES_CACHE_DIR or pass cache_dir= / --cache-dir to a writable folder"


@dataclass(frozen=True)
class CacheEntry:
    """One complete batch on disk.

    Attributes:
        path: The entry's folder.
        sandbox: The sandbox the batch came from.
        dataset_id: The dataset the batch belongs to.
        batch_id: The data batch ID (the folder name).
        created: The batch's creation time in epoch milliseconds, from the catalog.
        downloaded_at: When the entry was completed (ISO 8601, UTC).
        parts: The parts' file names, sorted (not in the repr).
        manifest: The whole manifest as read (not in the repr).
    """

    path: Path
    sandbox: str
    dataset_id: str
    batch_id: str
    created: int
    downloaded_at: str
    # Both run to tens of kB for a batch of hundreds of parts: left out of the repr.
    parts: tuple[str, ...] = field(repr=False)
    manifest: Mapping[str, Any] = field(repr=False)

    @property
    def part_paths(self) -> list[Path]:
        """Full paths of the parts, in file-name order."""
        return [self.path / name for name in self.parts]

    @property
    def size(self) -> int:
        """Total bytes of the parts, as recorded in the manifest."""
        return sum(int(p["size"]) for p in self.manifest["parts"])

    @property
    def created_at(self) -> datetime:
        """The batch's creation time (the scoring run's date), in UTC."""
        return _EPOCH + timedelta(milliseconds=self.created)

    @property
    def predecessors(self) -> tuple[str, ...]:
        """Catalog IDs of the batches this one replaced (``replay.predecessors``).

        Empty for a first run and for older-layout batches, whose records carry no
        ``replay``.
        """
        replay = self.manifest.get("catalog", {}).get("replay") or {}
        return tuple(str(p) for p in replay.get("predecessors") or ())

    @property
    def record_count(self) -> int | None:
        """Rows the producer reported for the batch, when it did."""
        value = self.manifest.get("record_count")
        return None if value is None else int(value)


class Cache:
    """The cache folder: finds complete entries, writes new ones, removes old ones.

    Args:
        root: The cache folder; created when first written to.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    def entry_path(self, sandbox: str, dataset_id: str, batch_id: str) -> Path:
        """The folder of one entry, whether or not it exists."""
        return self._dataset_path(sandbox, dataset_id) / check_id(batch_id, "batch ID")

    def lock(self, sandbox: str, dataset_id: str, batch_id: str) -> FileLock:
        """A cross-process lock held while an entry is written.

        Raises:
            CacheError: The dataset's folder cannot be created.
        """
        folder = self._dataset_path(sandbox, dataset_id)
        with cache_write_errors(folder):
            folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder / (check_id(batch_id, "batch ID") + LOCK_SUFFIX)))

    def check_writable(self, sandbox: str, dataset_id: str) -> None:
        """Fail now, before any network call, when a download could not be stored.

        The nearest existing folder on the way to the dataset's folder must be a folder,
        and writable unless the dataset already has complete entries: a read-only cache
        still serves the batches it holds.

        Raises:
            CacheError: The cache folder (or a parent) is a file, or nothing of the
                dataset is cached and the folder is not writable.
        """
        existing = self._nearest_folder(self._dataset_path(sandbox, dataset_id))
        if existing is None:
            return
        if not os.access(existing, os.W_OK | os.X_OK) and not self.entries(sandbox, dataset_id):
            raise CacheError(
                f"cannot write to the cache folder {self.root}: {existing} is not writable; "
                f"{_CACHE_DIR_FIX}."
            )

    def check_folder(self) -> None:
        """Fail when the cache folder, or a folder on the way to it, is a file.

        Raises:
            CacheError: The path cannot be a folder, so nothing is or can be cached there.
        """
        self._nearest_folder(self.root)

    def _nearest_folder(self, folder: Path) -> Path | None:
        """The nearest existing path on the way to ``folder``, checked to be a folder."""
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise CacheError(
                f"cannot use the cache folder {self.root}: {existing} is not a folder; "
                f"{_CACHE_DIR_FIX}."
            )
        return existing

    def get(self, sandbox: str, dataset_id: str, batch_id: str) -> CacheEntry | None:
        """The complete entry for this batch, or ``None`` when there is none."""
        return _read_entry(self.entry_path(sandbox, dataset_id, batch_id))

    def entries(
        self, sandbox: str | None = None, dataset_id: str | None = None
    ) -> list[CacheEntry]:
        """Every complete entry, newest batch first, optionally for one sandbox or dataset."""
        found = [
            entry
            for folder in self._entry_folders(sandbox, dataset_id)
            if (entry := _read_entry(folder)) is not None
        ]
        return sorted(found, key=lambda e: (e.created, e.downloaded_at), reverse=True)

    def latest(self, sandbox: str, dataset_id: str) -> CacheEntry | None:
        """The complete entry of the newest batch of a dataset, or ``None``."""
        entries = self.entries(sandbox, dataset_id)
        return entries[0] if entries else None

    def writer(self, sandbox: str, batch: BatchInfo, parts: Sequence[RemotePart]) -> EntryWriter:
        """Start (or resume) writing the entry of ``batch``.

        The caller must hold :meth:`lock` for the same batch.
        """
        path = self.entry_path(sandbox, batch.dataset_id, batch.batch_id)
        return EntryWriter(path, sandbox, batch, parts)

    def clear(self, sandbox: str | None = None, dataset_id: str | None = None) -> int:
        """Remove entries (complete or not) and return the bytes freed.

        Entries being written by another process right now are left alone.
        """
        freed = 0
        for folder in list(self._entry_folders(sandbox, dataset_id)):
            lock = FileLock(str(folder) + LOCK_SUFFIX)
            try:
                with lock.acquire(timeout=0):
                    freed += _folder_size(folder)
                    shutil.rmtree(folder)
            except TimeoutError:
                logger.warning("left %s alone: another process is writing it", folder)
                continue
            Path(lock.lock_file).unlink(missing_ok=True)
        return freed

    def prune(
        self, keep: int, *, sandbox: str | None = None, dataset_id: str | None = None
    ) -> list[CacheEntry]:
        """Drop all but the ``keep`` newest complete runs of each dataset.

        The newest run of a dataset is never dropped. Incomplete entries are not runs and
        are left alone: the next download of their batch resumes them (``clear`` removes
        them). An entry that another process holds locked is left alone too. Each
        entry's manifest goes first, so a reader never sees a half-removed run.

        Args:
            keep: Runs kept per dataset, newest first; at least 1.
            sandbox: Only this sandbox; every sandbox by default.
            dataset_id: Only this dataset; every dataset by default.

        Returns:
            The entries removed.

        Raises:
            HistoryError: ``keep`` is below 1.
        """
        if keep < 1:
            raise HistoryError(
                f"cannot keep {keep} runs: prune always keeps the newest run of a dataset. "
                "Pass keep=1 or more, or use clear() to remove a dataset's entries."
            )
        by_dataset: dict[tuple[str, str], list[CacheEntry]] = {}
        for entry in self.entries(sandbox, dataset_id):
            by_dataset.setdefault((entry.sandbox, entry.dataset_id), []).append(entry)
        return [
            entry
            for entries in by_dataset.values()
            for entry in entries[keep:]
            if self._remove_entry(entry)
        ]

    def _remove_entry(self, entry: CacheEntry) -> bool:
        lock = FileLock(str(entry.path) + LOCK_SUFFIX)
        try:
            with lock.acquire(timeout=0):
                (entry.path / MANIFEST_NAME).unlink(missing_ok=True)
                shutil.rmtree(entry.path)
        except TimeoutError:
            logger.warning("left %s alone: another process is writing it", entry.path)
            return False
        Path(lock.lock_file).unlink(missing_ok=True)
        logger.info("pruned batch %s of dataset %s", entry.batch_id, entry.dataset_id)
        return True

    def verify(
        self,
        *,
        repair: bool = False,
        quick: bool = False,
        sandbox: str | None = None,
        dataset_id: str | None = None,
    ) -> list[EntryCheck]:
        """Check every part of every complete entry: size, footer and every data page.

        The data pages are decoded a batch of rows at a time, so memory stays flat but
        every part is read from disk (see :mod:`cai_frames.integrity`).

        Args:
            repair: Remove the broken parts and the manifest of each broken entry, so
                that it counts as incomplete and the next download fetches only those.
            quick: Check only sizes and footers (a few kilobytes per part); misses
                bytes gone wrong inside the data pages.
            sandbox: Only this sandbox; every sandbox by default.
            dataset_id: Only this dataset; every dataset by default.

        Returns:
            One check per entry with a manifest, in folder order. Entries another
            process is writing are skipped.
        """
        return [
            check_entry(
                folder,
                folder / MANIFEST_NAME,
                FileLock(f"{folder}{LOCK_SUFFIX}"),
                repair=repair,
                quick=quick,
            )
            for folder in self._entry_folders(sandbox, dataset_id)
            if (folder / MANIFEST_NAME).exists()
        ]

    def _dataset_path(self, sandbox: str, dataset_id: str) -> Path:
        return self.root / check_id(sandbox, "sandbox") / check_id(dataset_id, "dataset ID")

    def _entry_folders(self, sandbox: str | None, dataset_id: str | None) -> Iterator[Path]:
        sandboxes = [self.root / check_id(sandbox, "sandbox")] if sandbox else _subdirs(self.root)
        for sandbox_dir in sandboxes:
            if dataset_id:
                datasets = [sandbox_dir / check_id(dataset_id, "dataset ID")]
            else:
                datasets = _subdirs(sandbox_dir)
            for dataset_dir in datasets:
                yield from _subdirs(dataset_dir)


class EntryWriter:
    """Writes one entry: parts under temporary names, then the manifest.

    Parts already whole on disk (from an interrupted earlier run) are kept.
    """

    def __init__(
        self, path: Path, sandbox: str, batch: BatchInfo, parts: Sequence[RemotePart]
    ) -> None:
        self.path = path
        self.sandbox = sandbox
        self.batch = batch
        self.parts = sorted(parts, key=lambda p: p.name)
        for part in self.parts:
            check_file_name(part.name)
        with cache_write_errors(path):
            path.mkdir(parents=True, exist_ok=True)

    def final_path(self, part: RemotePart) -> Path:
        """Where a whole part lives."""
        return self.path / check_file_name(part.name)

    def partial_path(self, part: RemotePart) -> Path:
        """Where a part is written while it is downloading."""
        return self.path / (check_file_name(part.name) + PARTIAL_SUFFIX)

    def missing(self) -> list[RemotePart]:
        """Parts not yet whole on disk."""
        return [part for part in self.parts if not self._is_whole(part)]

    def commit_part(self, part: RemotePart) -> None:
        """Check a downloaded part's size and parquet footer, then move it under its name.

        Raises:
            DownloadError: The size on disk differs from the listed size, or the file is
                not readable parquet; the partial file is removed so a retry starts clean.
        """
        partial = self.partial_path(part)
        problem = part_problem(partial, part.size)
        if problem:
            partial.unlink(missing_ok=True)
            raise DownloadError(
                f"part {part.name} of batch {self.batch.batch_id} {problem}; the partial "
                "file was removed. Run the download again to fetch it anew."
            )
        with cache_write_errors(self.path):
            os.replace(partial, self.final_path(part))

    def finish(self) -> CacheEntry:
        """Write the manifest, marking the entry complete, and return it.

        Raises:
            CacheError: A part is still missing.
        """
        missing = self.missing()
        if missing:
            raise CacheError(
                f"cannot complete batch {self.batch.batch_id}: {len(missing)} part(s) missing, "
                f"first {missing[0].name}"
            )
        # A process killed while writing the manifest leaves its temporary file behind.
        for stale in self.path.glob(MANIFEST_NAME + ".*.tmp"):
            stale.unlink(missing_ok=True)
        manifest = self._manifest()
        with cache_write_errors(self.path):
            _write_json_atomic(self.path / MANIFEST_NAME, manifest)
        entry = _entry_from_manifest(self.path, manifest)
        logger.info(
            "cached batch %s of dataset %s: %d parts, %d bytes",
            entry.batch_id,
            entry.dataset_id,
            len(entry.parts),
            entry.size,
        )
        return entry

    def _is_whole(self, part: RemotePart) -> bool:
        try:
            return self.final_path(part).stat().st_size == part.size
        except FileNotFoundError:
            return False

    def _manifest(self) -> dict[str, Any]:
        batch = self.batch
        return {
            "format": MANIFEST_FORMAT,
            "complete": True,
            "sandbox": self.sandbox,
            "dataset_id": batch.dataset_id,
            "batch_id": batch.batch_id,
            "catalog_id": batch.catalog_id,
            "status": batch.status,
            "created": batch.created,
            "record_count": batch.record_count,
            "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "parts": [{"name": p.name, "size": p.size, "file_id": p.file_id} for p in self.parts],
            "catalog": dict(batch.metadata),
        }


@contextmanager
def cache_write_errors(folder: Path) -> Iterator[None]:
    """Turn an OS error while writing under ``folder`` into a :class:`CacheError`.

    A read-only disk, a full one, or a cache folder that is a file would otherwise
    show as a bare ``OSError`` traceback; the message names the folder and the fix.
    """
    try:
        yield
    except CaiFramesError:
        # Some are OSErrors too (a broken connection is a ConnectionError): not the disk's.
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CacheError(
            f"cannot write to the cache folder {folder}: {reason} ({type(exc).__name__}); "
            f"{_CACHE_DIR_FIX}."
        ) from exc


def _read_entry(folder: Path) -> CacheEntry | None:
    """Read an entry's manifest; ``None`` unless the entry is complete and whole."""
    manifest_path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        logger.warning("ignoring cache entry %s: unreadable manifest (%s)", folder, exc)
        return None
    if not isinstance(manifest, dict) or manifest.get("complete") is not True:
        return None
    try:
        entry = _entry_from_manifest(folder, manifest)
        sizes = {p["name"]: int(p["size"]) for p in manifest["parts"]}
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("ignoring cache entry %s: malformed manifest (%s)", folder, exc)
        return None
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            logger.warning("ignoring cache entry %s: part %s is missing or resized", folder, name)
            return None
    logger.debug("cache hit: %s", folder)
    return entry


def _entry_from_manifest(folder: Path, manifest: Mapping[str, Any]) -> CacheEntry:
    names = tuple(sorted(check_file_name(p["name"]) for p in manifest["parts"]))
    return CacheEntry(
        path=folder,
        sandbox=str(manifest["sandbox"]),
        dataset_id=str(manifest["dataset_id"]),
        batch_id=str(manifest["batch_id"]),
        created=int(manifest.get("created") or 0),
        downloaded_at=str(manifest.get("downloaded_at", "")),
        parts=names,
        manifest=manifest,
    )


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
