"""Every fault switch of the emulator, driven through the real client over loopback.

A recoverable fault must end in a DataFrame equal to the generator's truth, row for row;
an unrecoverable one in its own error, with nothing partial visible in the cache.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from urllib3.util.retry import Retry

from cai_frames import load_scores
from cai_frames.cache import MANIFEST_NAME, PARTIAL_SUFFIX, Cache
from cai_frames.cli import main
from cai_frames.client import Client
from cai_frames.download import RESUME_ATTEMPTS
from cai_frames.emulator import DatasetSpec, Emulator
from cai_frames.emulator.faults import (
    FILES,
    Faults,
    Switch,
    drop_connection,
    expire_token,
    ignore_range,
    loop_listing,
    parse_switch,
    slow_first_byte,
    status_error,
    throttle,
    unsafe_name,
    wrong_length,
)
from cai_frames.errors import (
    ApiError,
    AuthenticationError,
    ConfigurationError,
    DownloadError,
    UnsafeFileNameError,
)
from cai_frames.http import LoggingRetry, build_retry
from cai_frames.settings import Settings

pytestmark = pytest.mark.integration

DATASET = "5f0c7a1e2b3d4c5e6f70aa01"
SPEC = DatasetSpec(dataset_id=DATASET, rows=1_200, parts=4, seed=21)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(datasets=[SPEC]) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def clean_emulator(emu: Emulator) -> Iterator[None]:
    emu.faults = None
    emu.reset_requests()
    yield
    emu.faults = None


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "faulty-cache"


def _fast_retry(total: int = 3) -> Retry:
    return build_retry(total=total, backoff_factor=0, backoff_jitter=0)


def _client(emu: Emulator, cache_dir: Path, *, retry: Retry | None = None, **kwargs: Any) -> Client:
    settings = Settings.from_env(emu.env(), cache_dir=cache_dir)
    kwargs.setdefault("concurrency", 2)
    return Client(settings=settings, retry=retry or _fast_retry(), **kwargs)


def _load(emu: Emulator, cache_dir: Path, **kwargs: Any) -> pd.DataFrame:
    with _client(emu, cache_dir, **kwargs) as client:
        return load_scores(DATASET, client=client, progress=False)


def _assert_equals_truth(frame: pd.DataFrame, emu: Emulator) -> None:
    """Every row and value of ``frame`` equals the generator's truth, in order."""
    truth = emu.truth(DATASET)
    assert list(frame.columns) == list(truth.columns)
    assert len(frame) == len(truth)
    for column in truth.columns:
        got, want = frame[column].tolist(), truth[column].tolist()
        if column == "probability":
            assert got == pytest.approx(want), column
        else:
            assert got == want, column


def _parts(emu: Emulator) -> dict[str, int]:
    """Name and size of each part the emulator serves, in name order."""
    return {p.name: p.stat().st_size for p in emu.parts(DATASET)}


def _one_part(emu: Emulator, index: int = 1) -> tuple[str, str]:
    """A part's name and a pattern that matches only its downloads."""
    name = list(_parts(emu))[index]
    return name, FILES + r".*" + re.escape(name)


def _entry_folder(emu: Emulator, cache_dir: Path) -> Path:
    return cache_dir / "prod" / DATASET / str(emu.latest_batch_id(DATASET))


def _assert_nothing_partial_visible(emu: Emulator, cache_dir: Path, bad: str | None) -> None:
    """No manifest, no entry, and every file under a real part name whole."""
    folder = _entry_folder(emu, cache_dir)
    batch_id = str(emu.latest_batch_id(DATASET))
    assert Cache(cache_dir).get("prod", DATASET, batch_id) is None
    assert not (folder / MANIFEST_NAME).exists()
    if bad is not None:
        assert not (folder / bad).exists()
    for served in emu.parts(DATASET):
        path = folder / served.name
        if path.exists():
            assert path.read_bytes() == served.read_bytes()


def _statuses(emu: Emulator, status: int) -> list[str]:
    return [path for _, path, code in emu.requests if code == status]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_status_error_twice_retried_equals_truth(
    emu: Emulator, cache_dir: Path, status: int
) -> None:
    emu.faults = Faults(status_error(status, count=2))

    frame = _load(emu, cache_dir)

    _assert_equals_truth(frame, emu)
    assert len(_statuses(emu, status)) == 2


def test_status_error_always_gives_up_naming_attempts(emu: Emulator, cache_dir: Path) -> None:
    emu.faults = Faults(status_error(503, path="/catalog/"))

    with pytest.raises(ApiError, match="answered 503.*after 3 attempts") as caught:
        _load(emu, cache_dir, retry=_fast_retry(total=2))

    assert caught.value.status == 503
    assert len(_statuses(emu, 503)) == 3
    assert not cache_dir.exists() or not any(cache_dir.rglob("*.parquet"))


def _recording_retry(waits: list[float], total: int = 3) -> Retry:
    """A retry policy that records each ``Retry-After`` wait instead of sleeping it."""

    class RecordingRetry(LoggingRetry):
        def sleep_for_retry(self, response: Any) -> bool:
            wait = self.get_retry_after(response)
            if wait is None:
                return False
            waits.append(wait)
            return True

    return RecordingRetry(
        total=total,
        backoff_factor=0,
        status_forcelist=frozenset({429, 500, 502, 503, 504}),
        allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,
        retry_after_max=60,
    )


def test_throttle_retry_after_seconds_honoured(emu: Emulator, cache_dir: Path) -> None:
    emu.faults = Faults(throttle(7, count=2, path=FILES))
    waits: list[float] = []

    frame = _load(emu, cache_dir, retry=_recording_retry(waits))

    _assert_equals_truth(frame, emu)
    assert waits == [7, 7]
    assert len(_statuses(emu, 429)) == 2


def test_throttle_retry_after_http_date_honoured(emu: Emulator, cache_dir: Path) -> None:
    emu.faults = Faults(throttle(30, http_date=True, count=1))
    waits: list[float] = []

    frame = _load(emu, cache_dir, retry=_recording_retry(waits))

    _assert_equals_truth(frame, emu)
    # An HTTP date has whole seconds, so the wait is the 30 s less under a second.
    assert len(waits) == 1 and 28 <= waits[0] <= 30


def test_throttle_retry_after_past_cap_waits_the_cap(emu: Emulator, cache_dir: Path) -> None:
    emu.faults = Faults(throttle(3600, count=1))
    waits: list[float] = []

    _load(emu, cache_dir, retry=_recording_retry(waits))

    assert waits == [60]


def test_drop_connection_resumes_with_range_from_bytes_on_disk(
    emu: Emulator, cache_dir: Path
) -> None:
    name, pattern = _one_part(emu)
    size = _parts(emu)[name]
    emu.faults = Faults(drop_connection(0.5, path=pattern, count=1))

    frame = _load(emu, cache_dir)

    _assert_equals_truth(frame, emu)
    served = [s for s in emu.faults.served if name in s.path]
    half = size // 2
    assert [(s.range, s.bytes) for s in served] == [(None, half), (f"bytes={half}-", size - half)]
    assert sum(s.bytes for s in served) == size
    assert len(_statuses(emu, 206)) == 1


def test_drop_connection_every_attempt_is_download_error_partial_kept(
    emu: Emulator, cache_dir: Path
) -> None:
    name, pattern = _one_part(emu)
    emu.faults = Faults(drop_connection(0.5, path=pattern, count=RESUME_ATTEMPTS))

    with pytest.raises(DownloadError, match=f"{re.escape(name)}.*each of {RESUME_ATTEMPTS}"):
        _load(emu, cache_dir)

    _assert_nothing_partial_visible(emu, cache_dir, name)
    partial = _entry_folder(emu, cache_dir) / (name + PARTIAL_SUFFIX)
    assert partial.stat().st_size == sum(s.bytes for s in emu.faults.served if name in s.path)


def test_drop_connection_then_range_ignored_full_download_equals_truth(
    emu: Emulator, cache_dir: Path
) -> None:
    name, pattern = _one_part(emu)
    size = _parts(emu)[name]
    emu.faults = Faults(drop_connection(0.5, path=pattern, count=1), ignore_range(path=pattern))

    frame = _load(emu, cache_dir)

    _assert_equals_truth(frame, emu)
    served = [(s.range, s.bytes) for s in emu.faults.served if name in s.path]
    assert served == [(None, size // 2), (f"bytes={size // 2}-", size)]
    assert _statuses(emu, 206) == []


@pytest.mark.parametrize("delta", [-100, 100], ids=["shorter", "longer"])
def test_wrong_length_once_fetched_again_equals_truth(
    emu: Emulator, cache_dir: Path, delta: int
) -> None:
    name, pattern = _one_part(emu)
    emu.faults = Faults(wrong_length(delta, path=pattern, count=1))

    frame = _load(emu, cache_dir)

    _assert_equals_truth(frame, emu)
    size = _parts(emu)[name]
    assert [s.bytes for s in emu.faults.served if name in s.path] == [size + delta, size]


def test_wrong_length_twice_is_download_error_naming_part(emu: Emulator, cache_dir: Path) -> None:
    name, pattern = _one_part(emu)
    emu.faults = Faults(wrong_length(-100, path=pattern, count=2))

    with pytest.raises(DownloadError, match=f"{re.escape(name)}.*fetched twice"):
        _load(emu, cache_dir)

    _assert_nothing_partial_visible(emu, cache_dir, name)
    assert not (_entry_folder(emu, cache_dir) / (name + PARTIAL_SUFFIX)).exists()


def test_expire_token_once_new_token_fetched_equals_truth(emu: Emulator, cache_dir: Path) -> None:
    emu.faults = Faults(expire_token(path=FILES, count=1))

    frame = _load(emu, cache_dir)

    _assert_equals_truth(frame, emu)
    assert len(_statuses(emu, 401)) >= 1
    token_posts = [p for m, p, _ in emu.requests if m == "POST" and p.startswith("/ims/")]
    assert len(token_posts) == 2


def test_expire_token_twice_is_authentication_error(emu: Emulator, cache_dir: Path) -> None:
    _, pattern = _one_part(emu)
    emu.faults = Faults(expire_token(path=pattern, count=2))

    with pytest.raises(AuthenticationError, match="freshly fetched token.*AEP_CLIENT_ID"):
        _load(emu, cache_dir, concurrency=1)

    _assert_nothing_partial_visible(emu, cache_dir, None)


def test_slow_first_byte_past_read_timeout_retried_equals_truth(
    emu: Emulator, cache_dir: Path
) -> None:
    _, pattern = _one_part(emu)
    emu.faults = Faults(slow_first_byte(1.0, path=pattern, count=1))

    frame = _load(emu, cache_dir, timeout=(5, 0.4))

    _assert_equals_truth(frame, emu)
    assert emu.faults.hits == [1]
    # The late answer to the abandoned request is logged when it is finally sent.
    deadline = time.monotonic() + 10
    while len([p for _, p, _ in emu.requests if re.search(pattern, p)]) < 2:
        assert time.monotonic() < deadline, "the slow request never finished"
        time.sleep(0.05)


def test_loop_listing_stops_with_error_nothing_written(emu: Emulator, cache_dir: Path) -> None:
    emu.faults = Faults(loop_listing())

    with pytest.raises(ApiError, match="pagination loop"):
        _load(emu, cache_dir)

    assert not _entry_folder(emu, cache_dir).exists()
    assert _statuses(emu, 206) == [] and not [p for p in _statuses(emu, 200) if "path=" in p]


@pytest.mark.parametrize(
    "name",
    ["../x.parquet", "/etc/x.parquet", "x\x00.parquet", "sub\\x.parquet", None],
    ids=["parent", "absolute", "nul", "backslash", "duplicate"],
)
def test_unsafe_name_refused_before_anything_written(
    emu: Emulator, cache_dir: Path, name: str | None
) -> None:
    emu.faults = Faults(unsafe_name(name))
    shown = repr(name)[1:-1] if name else list(_parts(emu))[0]

    with pytest.raises(UnsafeFileNameError) as caught:
        _load(emu, cache_dir)

    assert shown in str(caught.value)
    assert not _entry_folder(emu, cache_dir).exists()
    assert not [p for p in _statuses(emu, 200) if "path=" in p]


def test_faults_same_seed_hits_same_requests(emu: Emulator, cache_dir: Path) -> None:
    runs = []
    for attempt in range(2):
        emu.faults = Faults(status_error(500, fraction=0.3), seed=5)
        emu.reset_requests()
        _load(emu, cache_dir / str(attempt), concurrency=1, retry=_fast_retry(total=10))
        runs.append([(p, code) for _, p, code in emu.requests if "/ims/" not in p])

    assert runs[0] == runs[1]
    assert any(code == 500 for _, code in runs[0])


def test_client_http_ims_url_off_loopback_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEP_CLIENT_ID", "id")
    monkeypatch.setenv("AEP_CLIENT_SECRET", "secret")
    monkeypatch.setenv("AEP_ORG_ID", "org@AdobeOrg")
    monkeypatch.setenv("AEP_IMS_URL", "http://ims.example.com/ims/token/v3")

    with pytest.raises(ConfigurationError, match="AEP_IMS_URL uses plain http://"):
        Client()


def test_faulty_download_leaks_no_secret_anywhere(
    emu: Emulator,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    name, pattern = _one_part(emu)
    emu.faults = Faults(
        status_error(502, count=1),
        expire_token(path=FILES, count=1),
        drop_connection(path=pattern, count=1),
        wrong_length(-50, path=FILES, count=1),
    )
    texts = [repr(_load(emu, cache_dir).shape)]
    emu.faults = Faults(loop_listing())
    with pytest.raises(ApiError) as caught:
        _load(emu, cache_dir.with_name("other"))
    texts += [str(caught.value), repr(caught.value), str(caught.value.__cause__)]
    for key, value in {**emu.env(), "CAI_FRAMES_CACHE_DIR": str(cache_dir)}.items():
        monkeypatch.setenv(key, value)
    emu.faults = None
    runner = CliRunner()
    texts += [runner.invoke(main, ["-vv", "download", DATASET, "--no-progress"]).output]
    texts += [runner.invoke(main, ["cache", "list"]).output]
    for record in caplog.records:
        texts += [record.getMessage(), repr(record.args), record.exc_text or ""]
    files = [p.read_bytes() for p in cache_dir.rglob("*") if p.is_file()]

    secrets = [*emu.issued_tokens(), emu.env()["AEP_CLIENT_SECRET"], "Bearer "]
    assert len(emu.issued_tokens()) >= 3
    assert len(caplog.records) > 50
    for secret in secrets:
        assert not [t for t in texts if secret in t], secret[:6]
        assert not [f for f in files if secret.encode() in f], secret[:6]


@pytest.mark.parametrize(
    ("text", "kind", "count", "fraction", "options"),
    [
        ("drop_connection:count=3", "drop_connection", 3, 1.0, {"at": 0.5}),
        ("status_error:status=502,fraction=0.1", "status_error", None, 0.1, {"status": 502}),
        (
            "throttle:retry_after=2,http_date=true",
            "throttle",
            None,
            1.0,
            {"retry_after": 2, "http_date": True},
        ),
        ("unsafe_name:name=none,count=1", "unsafe_name", 1, 1.0, {"name": None}),
    ],
    ids=["drop", "status", "throttle-date", "duplicate"],
)
def test_parse_switch_settings_read_as_typed_values(
    text: str, kind: str, count: int | None, fraction: float, options: dict[str, Any]
) -> None:
    switch = parse_switch(text)

    assert (switch.kind, switch.count, switch.fraction, switch.options) == (
        kind,
        count,
        fraction,
        options,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("teapot", "unknown fault 'teapot'"),
        ("throttle:2", "'2' is not key=value"),
        ("stall:colour=red", "unknown option 'colour'; stall takes at, count, delay, fraction"),
        ("drop_connection:count=abc", "count must be an integer >= 0, or none, got 'abc'"),
        ("drop_connection:count=-1", "count must be an integer >= 0, or none, got -1"),
        ("status_error:fraction=2", "fraction must be a number in (0, 1], got 2"),
        ("status_error:fraction=0", "fraction must be a number in (0, 1], got 0"),
        ("status_error:status=200", "status must be an HTTP error status, 400 to 599, got 200"),
        ("throttle:retry_after=-3", "retry_after must be an integer number of seconds >= 0"),
        ("stall:delay=-0.5", "delay must be a number of seconds >= 0, got -0.5"),
        ("drop_connection:at=1", "at must be a share of the body in (0, 1), got 1"),
        ("status_error:path=(", "path '(' is not a regular expression"),
    ],
    ids=[
        *("unknown", "no-equals", "unknown-setting", "count-text", "count-negative"),
        *("fraction-2", "fraction-0", "status-200", "retry-negative", "delay-negative"),
        *("at-1", "bad-pattern"),
    ],
)
def test_parse_switch_malformed_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_switch(text)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: drop_connection(count=-1), "drop_connection count must be an integer >= 0"),
        (lambda: status_error(502, fraction=1.5), "status_error fraction must be a number in"),
        (lambda: status_error(302), "status_error status must be an HTTP error status"),
        (lambda: slow_first_byte(-1.0), "slow_first_byte delay must be a number of seconds"),
        (lambda: Switch("throttle"), "throttle takes the options ['http_date', 'retry_after']"),
        (lambda: Switch("teapot"), "unknown fault 'teapot'"),
    ],
    ids=["count", "fraction", "status", "delay", "missing-options", "kind"],
)
def test_switch_constructors_out_of_range_refused(
    build: Callable[[], Switch], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


def test_cli_emulate_fault_bad_count_is_usage_error() -> None:
    result = CliRunner().invoke(main, ["emulate", "--port", "0", "--fault", "stall:count=abc"])

    assert result.exit_code == 2
    assert "stall count must be an integer >= 0, or none, got 'abc'" in result.output


def test_cli_emulate_bad_fault_is_usage_error() -> None:
    result = CliRunner().invoke(main, ["emulate", "--port", "0", "--fault", "teapot:count=1"])

    assert result.exit_code == 2
    assert "unknown fault 'teapot'" in result.output
