"""Parquet checks of parts, ``Cache.verify`` and ``cai-frames cache verify``, and repair."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cai_frames import load_scores
from cai_frames.cache import MANIFEST_NAME, Cache
from cai_frames.cli import main
from cai_frames.emulator import DatasetSpec, Emulator
from cai_frames.errors import PartReadError
from cai_frames.integrity import part_problem

DATASET = "5f0c7a1e2b3d4c5e6f70bb02"
SPEC = DatasetSpec(dataset_id=DATASET, rows=900, parts=3, seed=31)


def _parquet_file(path: Path, rows: int = 20) -> Path:
    pq.write_table(pa.table({"n": list(range(rows)), "s": [str(i) for i in range(rows)]}), path)
    return path


def test_part_problem_whole_parquet_is_none(tmp_path: Path) -> None:
    path = _parquet_file(tmp_path / "a.parquet")

    assert part_problem(path, path.stat().st_size) is None


def test_part_problem_other_size_than_listed_named(tmp_path: Path) -> None:
    path = _parquet_file(tmp_path / "a.parquet")
    size = path.stat().st_size

    assert part_problem(path, size + 1) == f"has {size} bytes but the listing says {size + 1}"


def test_part_problem_tail_magic_missing_named(tmp_path: Path) -> None:
    path = _parquet_file(tmp_path / "a.parquet")
    path.write_bytes(path.read_bytes()[:-1] + b"X")

    assert "parquet magic" in str(part_problem(path))


def test_part_problem_footer_garbled_between_magics_named(tmp_path: Path) -> None:
    path = _parquet_file(tmp_path / "a.parquet")
    data = bytearray(path.read_bytes())
    footer_length = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - footer_length
    data[start : start + footer_length] = b"\xff" * footer_length
    path.write_bytes(bytes(data))

    assert "unreadable parquet footer" in str(part_problem(path, len(data)))


@pytest.mark.parametrize("data", [b"", b"PAR1PAR1"], ids=["empty", "magic-only"])
def test_part_problem_too_short_named(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "a.parquet"
    path.write_bytes(data)

    assert f"only {len(data)} bytes" in str(part_problem(path))


def test_part_problem_missing_named(tmp_path: Path) -> None:
    assert part_problem(tmp_path / "nope.parquet") == "is missing"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(datasets=[SPEC]) as emulator:
        yield emulator


@pytest.fixture
def env(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in emu.env().items():
        monkeypatch.setenv(key, value)
    emu.reset_requests()


def _file_requests(emu: Emulator) -> list[str]:
    return [path for _, path, _ in emu.requests if "path=" in path]


def _names(manifest: dict[str, list[dict[str, str]]]) -> list[str]:
    return [p["name"] for p in manifest["parts"]]


def _truth_equal(frame: pd.DataFrame, emu: Emulator) -> None:
    truth = emu.truth(DATASET)
    assert len(frame) == len(truth)
    assert frame["profile_id"].tolist() == truth["profile_id"].tolist()
    assert frame["score"].tolist() == truth["score"].tolist()


@pytest.mark.integration
def test_cache_verify_whole_entry_reports_ok(emu: Emulator, env: None, isolated_env: Path) -> None:
    load_scores(DATASET, progress=False)

    checks = Cache(isolated_env).verify()
    result = CliRunner().invoke(main, ["cache", "verify"])

    assert [(c.ok, c.problems) for c in checks] == [(True, ())]
    assert result.exit_code == 0
    assert "1 entries checked, 0 broken" in result.output


@pytest.mark.integration
def test_cache_verify_repair_then_load_fetches_only_broken_part(
    emu: Emulator, env: None, isolated_env: Path
) -> None:
    load_scores(DATASET, progress=False)
    entry = Cache(isolated_env).entries()[0]
    broken = entry.part_paths[1]
    data = broken.read_bytes()
    broken.write_bytes(data[:-4] + b"XXXX")

    reported = CliRunner().invoke(main, ["cache", "verify"])
    repaired = CliRunner().invoke(main, ["cache", "verify", "--repair"])
    emu.reset_requests()
    frame = load_scores(DATASET, progress=False)

    assert reported.exit_code == 1
    assert f"BROKEN   {entry.path}" in reported.output and broken.name in reported.output
    assert repaired.exit_code == 0 and "repaired " in repaired.output
    assert [p.split("path=")[1] for p in _file_requests(emu)] == [broken.name]
    assert broken.read_bytes() == data
    _truth_equal(frame, emu)


@pytest.mark.integration
def test_cache_verify_unreadable_manifest_reported(
    emu: Emulator, env: None, isolated_env: Path
) -> None:
    load_scores(DATASET, progress=False)
    manifest = Cache(isolated_env).entries()[0].path / MANIFEST_NAME
    manifest.write_text(manifest.read_text()[:40])

    checks = Cache(isolated_env).verify()

    assert [c.problems[0][0] for c in checks] == [MANIFEST_NAME]
    assert "cannot be read" in checks[0].problems[0][1]


@pytest.mark.integration
def test_load_scores_truncated_manifest_and_stray_temp_repaired_without_refetch(
    emu: Emulator, env: None, isolated_env: Path
) -> None:
    # What a kill during the manifest write can leave: its temporary file, or (on a file
    # system without atomic rename) a manifest cut short.
    load_scores(DATASET, progress=False)
    folder = Cache(isolated_env).entries()[0].path
    manifest = folder / MANIFEST_NAME
    whole = json.loads(manifest.read_text())
    manifest.write_text(manifest.read_text()[:100])
    (folder / f"{MANIFEST_NAME}.k1ll3d.tmp").write_text('{"complete": tr')
    batch_id = folder.name

    assert Cache(isolated_env).get("prod", DATASET, batch_id) is None
    emu.reset_requests()
    frame = load_scores(DATASET, progress=False)

    _truth_equal(frame, emu)
    assert _file_requests(emu) == []
    assert json.loads(manifest.read_text())["parts"] == whole["parts"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([*_names(whole), MANIFEST_NAME])


def _garble_middle(path: Path, count: int = 2_000) -> bytes:
    """Overwrite ``count`` bytes in the middle of a file with garbage, keeping its size."""
    data = path.read_bytes()
    start = len(data) // 2 - count // 2
    garbage = bytes((i * 37 + 11) % 256 for i in range(count))
    path.write_bytes(data[:start] + garbage + data[start + count :])
    return data


def test_part_problem_garbage_in_data_pages_found_only_by_full_check(tmp_path: Path) -> None:
    part = _parquet_file(tmp_path / "p.parquet", rows=5_000)
    size = part.stat().st_size
    _garble_middle(part)

    assert part.stat().st_size == size
    assert part_problem(part, size) is None
    assert (part_problem(part, size, pages=True) or "").startswith("has unreadable data pages (")


@pytest.mark.integration
def test_cache_verify_garbage_mid_part_reported_repaired_refetched_quick_misses_it(
    emu: Emulator, env: None, isolated_env: Path
) -> None:
    load_scores(DATASET, progress=False)
    entry = Cache(isolated_env).entries()[0]
    broken = entry.part_paths[1]
    data = _garble_middle(broken)

    quick = CliRunner().invoke(main, ["cache", "verify", "--quick"])
    checks = Cache(isolated_env).verify()
    repaired = CliRunner().invoke(main, ["cache", "verify", "--repair"])
    emu.reset_requests()
    frame = load_scores(DATASET, progress=False)

    assert broken.stat().st_size == len(data)
    assert quick.exit_code == 0 and "1 entries checked, 0 broken" in quick.output
    assert [[name for name, _ in c.problems] for c in checks] == [[broken.name]]
    assert checks[0].problems[0][1].startswith("has unreadable data pages (")
    assert repaired.exit_code == 0 and f"repaired {entry.path}" in repaired.output
    assert [p.split("path=")[1] for p in _file_requests(emu)] == [broken.name]
    assert broken.read_bytes() == data
    _truth_equal(frame, emu)


@pytest.mark.integration
def test_load_scores_garbled_cached_part_hint_names_verify_repair_which_fixes_it(
    emu: Emulator, env: None, isolated_env: Path
) -> None:
    load_scores(DATASET, progress=False)
    broken = Cache(isolated_env).entries()[0].part_paths[0]
    _garble_middle(broken)

    with pytest.raises(PartReadError) as raised:
        load_scores(DATASET, progress=False)
    repaired = CliRunner().invoke(main, ["cache", "verify", "--repair"])
    frame = load_scores(DATASET, progress=False)

    message = str(raised.value)
    assert message.startswith(f"{broken} is not a readable parquet part (")
    assert message.endswith(
        "). Run `cai-frames cache verify --repair` to remove the broken parts (and only "
        "those); the next load fetches them again."
    )
    assert "cache clear" not in message
    assert repaired.exit_code == 0
    _truth_equal(frame, emu)
