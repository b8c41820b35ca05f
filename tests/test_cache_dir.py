"""A cache folder that cannot be used: one clean ``CacheError``, before any request.

A cache folder that is a file (or sits under one) and a read-only cache are checked
against the emulator; a read-only cache that holds the batch must still serve it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cai_frames import download_scores, load_scores
from cai_frames.cache import Cache
from cai_frames.cli import main
from cai_frames.emulator import DatasetSpec, Emulator
from cai_frames.errors import CacheError

DATASET = "5f0c7a1e2b3d4c5e6f70dd05"
FIX = "set CAI_FRAMES_CACHE_DIR or pass cache_dir= / --cache-dir to a writable folder."


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(datasets=[DatasetSpec(dataset_id=DATASET, rows=60, parts=2, seed=51)]) as e:
        yield e


@pytest.fixture
def env(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in emu.env().items():
        monkeypatch.setenv(key, value)
    emu.reset_requests()


@pytest.mark.integration
def test_download_scores_cache_dir_is_a_file_fails_before_any_request(
    emu: Emulator, env: None, tmp_path: Path
) -> None:
    file = tmp_path / "cache.txt"
    file.write_text("not a folder")

    with pytest.raises(CacheError) as raised:
        download_scores(DATASET, cache_dir=file, progress=False)

    assert str(raised.value) == f"cannot use the cache folder {file}: {file} is not a folder; {FIX}"
    assert emu.requests == []


@pytest.mark.integration
def test_download_cli_cache_dir_under_a_file_one_line_before_any_request(
    emu: Emulator, env: None, tmp_path: Path
) -> None:
    file = tmp_path / "cache.txt"
    file.write_text("not a folder")

    result = CliRunner().invoke(main, ["download", DATASET, "--cache-dir", str(file / "sub")])

    assert result.exit_code == 1
    assert result.output == (
        f"Error: cannot use the cache folder {file / 'sub'}: {file} is not a folder; {FIX}\n"
    )
    assert emu.requests == []


def test_cache_lock_folder_cannot_be_created_raises_cache_error_naming_it() -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc, where no folder can be created")
    cache = Cache("/proc/cai-frames-nowhere")

    with pytest.raises(CacheError) as raised:
        cache.lock("prod", DATASET, "01E5QSWCAASFQ054FNBKYV6TIQ")

    folder = Path("/proc/cai-frames-nowhere/prod") / DATASET
    assert str(raised.value) == (
        f"cannot write to the cache folder {folder}: No such file or directory "
        f"(FileNotFoundError); {FIX}"
    )
    assert isinstance(raised.value.__cause__, FileNotFoundError)


def _deny_writes(monkeypatch: pytest.MonkeyPatch, *folders: Path) -> None:
    """Report ``folders`` and what is under them as not writable, as a read-only mount is.

    The tests run as root, for whom a read-only mode does not stop writes, so the check
    is told directly; the chmod test below covers a real read-only folder elsewhere.
    """
    real = os.access

    def access(path: object, mode: int, **kwargs: object) -> bool:
        where = Path(str(path))
        if mode & os.W_OK and any(f == where or f in where.parents for f in folders):
            return False
        return real(path, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)


@pytest.mark.integration
def test_not_writable_cache_serves_cached_batch_and_refuses_empty_dataset_early(
    emu: Emulator, env: None, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = load_scores(DATASET, progress=False)
    empty = isolated_env.parent / "empty-cache"
    empty.mkdir()
    _deny_writes(monkeypatch, isolated_env, empty)
    emu.reset_requests()

    online = load_scores(DATASET, progress=False)
    offline = load_scores(DATASET, offline=True, progress=False)
    served_online = [path for _, path, _ in emu.requests]
    emu.reset_requests()
    with pytest.raises(CacheError) as raised:
        download_scores(DATASET, cache_dir=empty, progress=False)

    assert online.equals(expected) and offline.equals(expected)
    assert served_online and not [p for p in served_online if "path=" in p]
    assert emu.requests == []
    assert str(raised.value) == (
        f"cannot write to the cache folder {empty}: {empty} is not writable; {FIX}"
    )


@pytest.mark.integration
def test_read_only_cache_folder_serves_cached_batch_online_and_offline(
    emu: Emulator, env: None, isolated_env: Path
) -> None:
    expected = load_scores(DATASET, progress=False)
    paths = [isolated_env, *isolated_env.rglob("*")]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        if os.access(isolated_env, os.W_OK):
            pytest.skip("running as root: a read-only mode does not stop writes")
        online = load_scores(DATASET, progress=False)
        offline = load_scores(DATASET, offline=True, progress=False)
    finally:
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)

    assert online.equals(expected) and offline.equals(expected)
