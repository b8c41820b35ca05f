"""The ``cai-frames`` command against the emulator."""

from __future__ import annotations

import signal
import subprocess
import sys
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


def test_cli_demo_prints_the_command_that_lists_its_cache(tmp_path: Path) -> None:
    demo_cache = tmp_path / "demo"
    output = _run("demo", "--no-progress", "--cache-dir", str(demo_cache))[1]
    command = f"cai-frames cache list --cache-dir {demo_cache}"

    assert f"See it with: {command}\n" in output
    code, listed = _run(*command.split()[1:])
    with Emulator() as emu:
        churn, batch_id = emu.dataset_id("churn"), emu.latest_batch_id(emu.dataset_id("churn"))
    assert code == 0
    assert f"sandbox prod, dataset {churn}: 1 run" in listed and str(batch_id) in listed


@pytest.mark.parametrize("query", ["", "   ", ";"], ids=["empty", "blank", "semicolon"])
def test_cli_sql_no_statement_is_usage_error_before_any_request(emu: Emulator, query: str) -> None:
    emu.reset_requests()

    code, output = _run("sql", DATASET, query)

    assert code == 2
    assert f"the query {query!r} holds no statement; pass a SELECT" in output
    assert emu.requests == []


def test_cli_sql_statement_without_result_prints_nothing() -> None:
    assert _run("sql", DATASET, "SET threads=1") == (0, "")


def test_cli_sql_blank_view_name_is_usage_error(emu: Emulator) -> None:
    emu.reset_requests()

    code, output = _run("sql", DATASET, "--name", "", "SELECT 1")

    assert code == 2
    assert "the view name '' is blank" in output
    assert emu.requests == []


@pytest.mark.parametrize("rows", ["0", "-1"])
def test_cli_sql_max_rows_below_one_is_usage_error(rows: str) -> None:
    code, output = _run("sql", DATASET, "--max-rows", rows, "SELECT 1")

    assert code == 2
    assert f"Invalid value for '--max-rows': {rows} is not in the range x>=1" in output


def test_cli_sql_max_rows_prints_exactly_that_many(emu: Emulator) -> None:
    query = "SELECT profile_id FROM scores ORDER BY profile_id"

    code, output = _run("sql", DATASET, "--max-rows", "3", query)

    first = sorted(emu.truth(DATASET)["profile_id"])[:3]
    assert code == 0
    assert [line.strip() for line in output.splitlines()] == [
        "profile_id",
        *first,
        "(the first 3 rows; --max-rows to show more)",
    ]


def test_cli_sql_max_rows_equal_to_the_rows_adds_no_note(emu: Emulator) -> None:
    query = "SELECT profile_id FROM scores ORDER BY profile_id LIMIT 3"

    output = _run("sql", DATASET, "--max-rows", "3", query)[1]

    first = sorted(emu.truth(DATASET)["profile_id"])[:3]
    assert [line.strip() for line in output.splitlines()] == ["profile_id", *first]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["history", DATASET, "--movers", "-1"], "'--movers': -1 is not in the range x>=0"),
        (["audience", "seg", "--poll-interval", "-5"], "'--poll-interval': -5.0 is not in the"),
        (["audience", "seg", "--poll-interval", "0"], "'--poll-interval': 0.0 is not in the"),
        (["audience", "seg", "--timeout", "-1"], "'--timeout': -1.0 is not in the range x>=0"),
    ],
    ids=["movers", "poll-negative", "poll-zero", "timeout"],
)
def test_cli_out_of_range_option_is_usage_error_before_any_request(
    emu: Emulator, args: list[str], message: str
) -> None:
    emu.reset_requests()

    code, output = _run(*args)

    assert code == 2
    assert message in output
    assert emu.requests == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "the emulator only serves loopback addresses"),
        (["--host", "10.0.0.5"], "got host '10.0.0.5'; use 127.0.0.1, ::1 or localhost"),
        (["--port", "99999"], "'--port': 99999 is not in the range 0<=x<=65535"),
        (["--port", "-1"], "'--port': -1 is not in the range 0<=x<=65535"),
    ],
    ids=["any-interface", "lan", "port-high", "port-negative"],
)
def test_cli_emulate_bad_address_is_usage_error(args: list[str], message: str) -> None:
    code, output = _run("emulate", *args)

    assert code == 2
    assert message in output


@pytest.mark.parametrize(
    "command",
    [
        ["cache", "list"],
        ["cache", "verify"],
        ["cache", "prune", "--keep", "1"],
        ["cache", "clear", "--yes"],
    ],
    ids=["list", "verify", "prune", "clear"],
)
def test_cli_cache_commands_file_as_cache_dir_fail_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    not_a_folder = tmp_path / "afile"
    not_a_folder.write_text("x")

    code, output = _run(*command, "--cache-dir", str(not_a_folder / "sub"))

    assert code == 1
    assert output.strip().splitlines() == [
        f"Error: cannot use the cache folder {not_a_folder / 'sub'}: {not_a_folder} is not a "
        "folder; set CAI_FRAMES_CACHE_DIR or pass cache_dir= / --cache-dir to a writable folder."
    ]


def test_cli_audience_file_as_cache_dir_refused_before_any_export(
    emu: Emulator, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "afile"
    not_a_folder.write_text("x")
    segment = emu.segments()[0].segment_id
    emu.reset_requests()

    code, output = _run("audience", segment, "--cache-dir", str(not_a_folder), "--no-progress")

    assert code == 1
    assert "is not a folder" in output
    assert [r for r in emu.requests if r.method == "POST" and "/ims/" not in r.path] == []


def test_cli_emulate_infinite_latency_is_usage_error() -> None:
    code, output = _run("emulate", "--port", "0", "--latency", "inf")

    assert code == 2
    assert "latency must be between 0 and 3600 seconds, got inf" in output


def test_cli_emulate_prints_settings_datasets_and_segments() -> None:
    command = [sys.executable, "-m", "cai_frames", "emulate", "--port", "0"]
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        try:
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                if line.startswith("# Ctrl-C"):
                    break
        finally:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=20)

    with Emulator() as expected:
        segments = expected.segments()
        datasets = expected.dataset_ids
    assert any(line.startswith("export AEP_PLATFORM_URL=http://127.0.0.1:") for line in lines)
    assert [f"#   {d}" for d in datasets] == [line for line in lines if line[4:] in datasets]
    for segment in segments:
        assert f"#   {segment.segment_id}  {segment.name}" in lines
    assert process.returncode == 0
