"""The downloader and the cache: driven by an in-memory part source, then by real
processes against the emulator (two at once on one batch, and one killed mid-download)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cai_frames import load_scores
from cai_frames.cache import MANIFEST_NAME, PARTIAL_SUFFIX, Cache
from cai_frames.download import download_batch
from cai_frames.emulator import DatasetSpec, Emulator
from cai_frames.emulator.faults import FILES, Faults, slow_first_byte, stall
from cai_frames.errors import CacheError, ConfigurationError, DownloadError, UnsafeFileNameError
from cai_frames.source import BatchInfo, PartSource, RemotePart

DATASET = "5cd9146b31dae914b75f654f"


class MemorySource:
    """A part source holding its parts in memory, counting what it is asked."""

    def __init__(self, parts: dict[str, bytes], batch_id: str = "01E5QSWCAASFQ054FNBKYV6TIQ"):
        self.parts = parts
        self.batch = BatchInfo(
            dataset_id=DATASET,
            batch_id=batch_id,
            catalog_id=batch_id,
            status="success",
            created=1586715571217,
            record_count=10,
            metadata={"status": "success", "createdClient": "acp_foundation_push"},
        )
        self.listed_sizes: dict[str, int] = {}
        self.fetches: list[tuple[str, int]] = []
        self.resolves = 0
        self.lock = threading.Lock()

    def resolve_batch(self, dataset_id: str, batch_id: str | None = None) -> BatchInfo:
        self.resolves += 1
        return self.batch

    def list_parts(self, batch: BatchInfo) -> Iterable[RemotePart]:
        for name, data in self.parts.items():
            size = self.listed_sizes.get(name, len(data))
            yield RemotePart(name=name, size=size, file_id="f-1", url=f"mem://{name}")

    def fetch_part(
        self,
        part: RemotePart,
        out: BinaryIO,
        *,
        start: int = 0,
        on_bytes: Callable[[int], None] | None = None,
    ) -> int:
        with self.lock:
            self.fetches.append((part.name, start))
        data = self.parts[part.name][start:]
        out.write(data)
        if on_bytes:
            on_bytes(len(data))
        return start


def _parquet(rows: int) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"n": list(range(rows))}), sink)
    return bytes(sink.getvalue().to_pybytes())


def _parts(count: int) -> dict[str, bytes]:
    return {f"part-{i:05d}-c000.snappy.parquet": _parquet(1 + i) for i in range(count)}


def _download(source: PartSource, cache: Cache) -> object:
    return download_batch(source, cache, sandbox="prod", dataset_id=DATASET, progress=False)


def test_source_memory_fake_satisfies_protocol() -> None:
    assert isinstance(MemorySource({}), PartSource)


def test_download_batch_fresh_cache_writes_every_part_and_manifest(tmp_path: Path) -> None:
    source = MemorySource(_parts(5))
    cache = Cache(tmp_path)

    entry = download_batch(source, cache, sandbox="prod", dataset_id=DATASET, progress=False)

    folder = tmp_path / "prod" / DATASET / source.batch.batch_id
    assert entry.path == folder
    assert entry.parts == tuple(sorted(source.parts))
    for name, data in source.parts.items():
        assert (folder / name).read_bytes() == data
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["complete"] is True
    assert [p["name"] for p in manifest["parts"]] == sorted(source.parts)
    assert [p["size"] for p in manifest["parts"]] == [len(source.parts[n]) for n in entry.parts]
    assert manifest["catalog"] == {"status": "success", "createdClient": "acp_foundation_push"}
    assert not list(folder.glob("*" + PARTIAL_SUFFIX))


def test_download_batch_already_cached_fetches_nothing(tmp_path: Path) -> None:
    source = MemorySource(_parts(3))
    cache = Cache(tmp_path)
    first = _download(source, cache)
    source.fetches.clear()

    second = _download(source, cache)

    assert source.fetches == []
    assert second == first


def test_download_batch_interrupted_entry_resumes_missing_parts_only(tmp_path: Path) -> None:
    source = MemorySource(_parts(4))
    cache = Cache(tmp_path)
    folder = tmp_path / "prod" / DATASET / source.batch.batch_id
    folder.mkdir(parents=True)
    names = sorted(source.parts)
    (folder / names[0]).write_bytes(source.parts[names[0]])
    (folder / (names[1] + PARTIAL_SUFFIX)).write_bytes(source.parts[names[1]][:40])

    _download(source, cache)

    assert sorted(source.fetches) == [(names[1], 40), (names[2], 0), (names[3], 0)]
    assert (folder / names[1]).read_bytes() == source.parts[names[1]]


def test_download_batch_size_mismatch_raises_and_leaves_entry_incomplete(tmp_path: Path) -> None:
    source = MemorySource(_parts(2))
    bad = sorted(source.parts)[1]
    source.listed_sizes[bad] = 999
    cache = Cache(tmp_path)

    size = len(source.parts[bad])
    with pytest.raises(DownloadError, match=f"{bad} .* {size} bytes but the listing says 999"):
        _download(source, cache)

    folder = tmp_path / "prod" / DATASET / source.batch.batch_id
    assert not (folder / MANIFEST_NAME).exists()
    assert not (folder / bad).exists()
    assert not (folder / (bad + PARTIAL_SUFFIX)).exists()
    assert cache.get("prod", DATASET, source.batch.batch_id) is None


def test_download_batch_path_like_name_refused_before_writing(tmp_path: Path) -> None:
    source = MemorySource({"../escape.parquet": b"x" * 10})
    cache = Cache(tmp_path)

    with pytest.raises(UnsafeFileNameError, match="escape.parquet"):
        _download(source, cache)

    assert source.fetches == []
    assert not (tmp_path / "prod" / DATASET / "escape.parquet").exists()
    assert not (tmp_path / "prod" / "escape.parquet").exists()


@pytest.mark.parametrize(
    "batch_id",
    ["../up", "a/b", "", "..", "nul\x00"],
    ids=["dotdot", "slash", "empty", "dots", "nul"],
)
def test_cache_entry_path_unsafe_batch_id_refused(tmp_path: Path, batch_id: str) -> None:
    with pytest.raises(ConfigurationError, match="batch ID"):
        Cache(tmp_path).entry_path("prod", DATASET, batch_id)


def test_cache_get_part_removed_after_completion_is_not_trusted(tmp_path: Path) -> None:
    source = MemorySource(_parts(3))
    cache = Cache(tmp_path)
    entry = _download(source, cache)
    assert entry is not None
    (tmp_path / "prod" / DATASET / source.batch.batch_id / sorted(source.parts)[2]).unlink()

    assert cache.get("prod", DATASET, source.batch.batch_id) is None
    assert cache.latest("prod", DATASET) is None


def test_cache_latest_picks_newest_batch_by_catalog_time(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    older = MemorySource(_parts(1), batch_id="older")
    newer = MemorySource(_parts(1), batch_id="newer")
    newer.batch = BatchInfo(**{**newer.batch.__dict__, "created": older.batch.created + 1})
    _download(newer, cache)
    _download(older, cache)

    latest = cache.latest("prod", DATASET)

    assert latest is not None and latest.batch_id == "newer"
    assert [e.batch_id for e in cache.entries()] == ["newer", "older"]


def test_cache_clear_dataset_removes_its_entries_and_reports_bytes(tmp_path: Path) -> None:
    source = MemorySource(_parts(3))
    cache = Cache(tmp_path)
    _download(source, cache)
    manifest = tmp_path / "prod" / DATASET / source.batch.batch_id / MANIFEST_NAME
    expected = sum(len(d) for d in source.parts.values()) + manifest.stat().st_size

    freed = cache.clear(sandbox="prod", dataset_id=DATASET)

    assert freed == expected
    assert cache.entries() == []


def test_entry_writer_finish_with_missing_part_raises(tmp_path: Path) -> None:
    source = MemorySource(_parts(2))
    writer = Cache(tmp_path).writer("prod", source.batch, list(source.list_parts(source.batch)))

    with pytest.raises(CacheError, match="2 part\\(s\\) missing"):
        writer.finish()


# The processes below run this: one download of the batch, one part at a time. Given a
# second argument, the process first imports everything, then waits for that file to
# exist, so a test can decide when each process starts to download.
DOWNLOAD_SCRIPT = """
import logging, os, sys, time
from cai_frames import download_scores
from cai_frames.client import Client
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
deadline = time.monotonic() + 60
while len(sys.argv) > 2 and not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
    time.sleep(0.01)
with Client(concurrency=1) as client:
    entry = download_scores(sys.argv[1], client=client, progress=False)
print(entry.batch_id, len(entry.parts))
"""
PROCESS_DATASET = "5f0c7a1e2b3d4c5e6f70cc03"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    spec = DatasetSpec(dataset_id=PROCESS_DATASET, rows=1_200, parts=4, seed=41)
    with Emulator(datasets=[spec]) as emulator:
        yield emulator


def _start(
    emu: Emulator, cache_dir: Path, go: Path | None = None, dataset: str = PROCESS_DATASET
) -> subprocess.Popen[str]:
    env = {**os.environ, **emu.env(), "CAI_FRAMES_CACHE_DIR": str(cache_dir)}
    return subprocess.Popen(
        [sys.executable, "-c", DOWNLOAD_SCRIPT, dataset, *([str(go)] if go else [])],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert process.poll() is None, f"the download ended first: {process.communicate()}"
        assert time.monotonic() < deadline, "the download never got there"
        time.sleep(0.01)


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.communicate()


def _assert_no_untrusted_file(emu: Emulator, folder: Path) -> None:
    """No manifest yet, and every file under a real part name is the served part."""
    assert not (folder / MANIFEST_NAME).exists()
    assert Cache(folder.parents[2]).get("prod", PROCESS_DATASET, folder.name) is None
    for served in emu.parts(PROCESS_DATASET):
        if (folder / served.name).exists():
            assert (folder / served.name).read_bytes() == served.read_bytes()


def _file_gets(emu: Emulator) -> list[str]:
    return [path.split("path=")[1] for _, path, _ in emu.requests if "path=" in path]


@pytest.mark.slow
@pytest.mark.integration
def test_download_two_processes_one_fetches_other_waits_same_entry(
    emu: Emulator, tmp_path: Path
) -> None:
    emu.faults = Faults(slow_first_byte(0.25, path=FILES))
    emu.reset_requests()
    go_first, go_second = tmp_path / "go-first", tmp_path / "go-second"
    folder = tmp_path / "prod" / PROCESS_DATASET / str(emu.latest_batch_id(PROCESS_DATASET))
    try:
        processes = [_start(emu, tmp_path, go_first), _start(emu, tmp_path, go_second)]
        go_first.touch()
        # The first part's partial file exists only while the first process holds the lock;
        # its four slow parts then keep it busy far longer than the second needs to ask.
        first_partial = folder / (emu.parts(PROCESS_DATASET)[0].name + PARTIAL_SUFFIX)
        _wait_for(first_partial.exists, processes[0])
        go_second.touch()
        results = [p.communicate(timeout=60) for p in processes]
    finally:
        emu.faults = None

    names = [p.name for p in emu.parts(PROCESS_DATASET)]
    batch_id = emu.latest_batch_id(PROCESS_DATASET)
    assert [p.returncode for p in processes] == [0, 0]
    assert [out for out, _ in results] == [f"{batch_id} {len(names)}\n"] * 2
    assert sorted(_file_gets(emu)) == sorted(names)
    waited = ["being downloaded by another process" in err for _, err in results]
    assert waited == [False, True]
    entry = Cache(tmp_path).get("prod", PROCESS_DATASET, str(batch_id))
    assert entry is not None and list(entry.parts) == names


@pytest.mark.slow
@pytest.mark.integration
def test_download_killed_mid_part_and_after_parts_next_run_resumes_to_truth(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [p.name for p in emu.parts(PROCESS_DATASET)]
    sizes = {p.name: p.stat().st_size for p in emu.parts(PROCESS_DATASET)}
    folder = tmp_path / "prod" / PROCESS_DATASET / str(emu.latest_batch_id(PROCESS_DATASET))
    emu.faults = Faults(stall(0.5, at=0.5, path=FILES))
    emu.reset_requests()
    try:
        # Killed during the first part, while half of it is on disk.
        first = _start(emu, tmp_path)
        partial = folder / (names[0] + PARTIAL_SUFFIX)
        _wait_for(lambda: partial.exists() and partial.stat().st_size > 0, first)
        _kill(first)
        kept = partial.stat().st_size
        _assert_no_untrusted_file(emu, folder)

        # Killed again once two parts are whole.
        second = _start(emu, tmp_path)
        _wait_for(lambda: (folder / names[1]).exists(), second)
        _kill(second)
        _assert_no_untrusted_file(emu, folder)
        served = emu.faults.served
    finally:
        emu.faults = None
    whole = [n for n in names if (folder / n).exists()]
    partials = {
        p.name.removesuffix(PARTIAL_SUFFIX): p.stat().st_size for p in folder.glob("*.partial")
    }

    for key, value in {**emu.env(), "CAI_FRAMES_CACHE_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    emu.reset_requests()
    frame = load_scores(PROCESS_DATASET, progress=False)

    truth = emu.truth(PROCESS_DATASET)
    assert len(frame) == len(truth)
    assert frame["profile_id"].tolist() == truth["profile_id"].tolist()
    assert frame["probability"].tolist() == pytest.approx(truth["probability"].tolist())
    resumed = [s for s in served if names[0] in s.path and s.range]
    assert [(s.range, s.bytes) for s in resumed] == [(f"bytes={kept}-", sizes[names[0]] - kept)]
    assert 0 < kept < sizes[names[0]]
    # The last run fetched only what the killed ones had not made whole, resuming partials.
    assert names[:2] == whole[:2]
    assert sorted(_file_gets(emu)) == sorted(n for n in names if n not in whole)
    ranges = {s.path.split("path=")[1]: s.range for s in emu.faults.served}
    assert {n: ranges[n] for n in partials if partials[n]} == {
        n: f"bytes={size}-" for n, size in partials.items() if size
    }


SLOW_DATASET = "5f0c7a1e2b3d4c5e6f70cc04"


@pytest.mark.slow
@pytest.mark.integration
def test_download_interrupted_stops_at_once_keeps_partial_next_run_resumes_to_truth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = DatasetSpec(dataset_id=SLOW_DATASET, rows=400, parts=3, seed=43)
    # About a second per part, so the interrupted part is still streaming when the
    # signal lands and the parts queued behind it have not started.
    with Emulator(datasets=[spec], bandwidth=20e3) as emu:
        emu.faults = Faults()
        names = [p.name for p in emu.parts(SLOW_DATASET)]
        sizes = {p.name: p.stat().st_size for p in emu.parts(SLOW_DATASET)}
        folder = tmp_path / "prod" / SLOW_DATASET / str(emu.latest_batch_id(SLOW_DATASET))
        partial = folder / (names[0] + PARTIAL_SUFFIX)
        process = _start(emu, tmp_path, dataset=SLOW_DATASET)
        _wait_for(lambda: partial.exists() and partial.stat().st_size > 0, process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        kept = partial.stat().st_size
        on_disk = sorted(p.name for p in folder.iterdir())
        first_run = _file_gets(emu)

        for key, value in {**emu.env(), "CAI_FRAMES_CACHE_DIR": str(tmp_path)}.items():
            monkeypatch.setenv(key, value)
        emu.faults = Faults()
        frame = load_scores(SLOW_DATASET, progress=False)
        truth = emu.truth(SLOW_DATASET)
        second_run = [(s.path.split("path=")[1], s.range) for s in emu.faults.served]

    assert process.returncode == -signal.SIGINT
    assert "KeyboardInterrupt" in err
    # Stopped inside the first part: nothing else fetched, no manifest, the partial kept.
    assert 0 < kept < sizes[names[0]]
    assert on_disk == [names[0] + PARTIAL_SUFFIX]
    assert first_run == [names[0]]
    assert sorted(second_run) == sorted(
        [(names[0], f"bytes={kept}-"), *((n, None) for n in names[1:])]
    )
    assert frame["profile_id"].tolist() == truth["profile_id"].tolist()
    assert frame["probability"].tolist() == pytest.approx(truth["probability"].tolist())
