"""The ``cai-frames`` command against the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cai_frames.cli import main
from cai_frames.emulator import DatasetSpec, Emulator, default_specs

pytestmark = pytest.mark.integration

SPEC = DatasetSpec(dataset_id="5f0c7a1e2b3d4c5e6f708192", rows=800, parts=3, seed=21)
DATASET = SPEC.dataset_id


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(datasets=[SPEC]) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def platform_env(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in emu.env().items():
        monkeypatch.setenv(key, value)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_cli_download_prints_batch_and_cache_path(emu: Emulator, isolated_env: Path) -> None:
    code, output = _run("download", DATASET, "--no-progress")

    batch_id = emu.latest_batch_id(DATASET)
    assert code == 0
    assert f"batch {batch_id}: 3 parts" in output
    assert str(isolated_env / "prod" / DATASET / str(batch_id)) in output


def test_cli_sql_counts_rows_of_the_view(emu: Emulator) -> None:
    code, output = _run("sql", DATASET, "SELECT count(*) AS n, max(score) AS top FROM scores")

    truth = emu.truth(DATASET)
    assert code == 0
    assert output.split() == ["n", "top", str(len(truth)), str(truth["score"].max())]


def test_cli_sql_bad_query_exits_with_message() -> None:
    code, output = _run("sql", DATASET, "SELECT nope FROM scores")

    assert code == 1
    assert "the query failed" in output and "nope" in output


def test_cli_cache_list_then_clear(emu: Emulator) -> None:
    _run("download", DATASET, "--no-progress")

    code, listed = _run("cache", "list")
    assert code == 0
    assert DATASET in listed and str(emu.latest_batch_id(DATASET)) in listed

    code, cleared = _run("cache", "clear", "--yes")
    assert code == 0 and cleared.startswith("freed ")
    assert "no complete entries" in _run("cache", "list")[1]


def test_cli_download_offline_with_empty_cache_fails_clearly() -> None:
    code, output = _run("download", DATASET, "--offline")

    assert code == 1
    assert "holds no complete entry" in output and DATASET in output


def test_cli_missing_credentials_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AEP_ORG_ID")

    code, output = _run("download", DATASET, "--no-progress")

    assert code == 1
    assert "AEP_ORG_ID" in output


def test_cli_demo_prints_summary_and_cached_second_load(tmp_path: Path) -> None:
    code, output = _run("demo", "--no-progress", "--cache-dir", str(tmp_path / "demo"))

    assert code == 0, output
    assert f"Loaded {default_specs()['churn'].rows:,} rows x 8 columns" in output
    assert "Score deciles:" in output
    assert "Second load: 0 file requests" in output
    assert "low" in output and "high" in output
