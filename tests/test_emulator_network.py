"""Network shaping: latency and bandwidth pacing with a fake clock, and over loopback."""

from __future__ import annotations

import pyarrow as pa
import pytest
from click.testing import CliRunner

import cai_frames
from cai_frames.cli import main
from cai_frames.emulator import DatasetSpec, Emulator
from cai_frames.emulator.network import SLICE_BYTES, NetworkShape


class FakeTime:
    """A clock that moves only when something sleeps, recording every wait."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class ClosableBody:
    """A WSGI body that remembers whether it was closed."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.chunks)

    def close(self) -> None:
        self.closed = True


def test_shape_latency_only_waits_once_before_the_first_byte() -> None:
    fake = FakeTime()
    shaped = NetworkShape(latency=0.05).shape(
        [b"a" * 10, b"b" * 5], clock=fake.clock, sleep=fake.sleep
    )

    body = b"".join(shaped)

    assert body == b"a" * 10 + b"b" * 5
    assert fake.waits == [0.05]


def test_shape_bandwidth_releases_each_chunk_when_the_link_would_have_sent_it() -> None:
    fake = FakeTime()
    shaped = NetworkShape(bandwidth=1000).shape(
        [b"x" * 500, b"y" * 250, b"z" * 250], clock=fake.clock, sleep=fake.sleep
    )

    body = b"".join(shaped)

    # 500, 250 and 250 bytes at 1000 B/s take 0.5, 0.25 and 0.25 s: 1 s in all.
    assert body == b"x" * 500 + b"y" * 250 + b"z" * 250
    assert fake.waits == pytest.approx([0.5, 0.25, 0.25])
    assert fake.now - 100.0 == pytest.approx(1.0)


def test_shape_slow_consumer_banks_no_credit_beyond_its_bytes() -> None:
    fake = FakeTime()
    shaped = iter(
        NetworkShape(bandwidth=1000).shape(
            [b"a" * 100, b"b" * 100], clock=fake.clock, sleep=fake.sleep
        )
    )

    next(shaped)
    fake.now += 5.0  # the reader stalls far longer than the first chunk took
    next(shaped)

    # The second chunk was due at 0.2 s after the start, long past: no further wait.
    assert fake.waits == pytest.approx([0.1])


def test_shape_large_chunk_is_cut_into_slices() -> None:
    fake = FakeTime()
    chunk = bytes(range(256)) * ((3 * SLICE_BYTES + 1) // 256 + 1)
    chunk = chunk[: 3 * SLICE_BYTES + 1]

    pieces = list(NetworkShape(bandwidth=1e9).shape([chunk], clock=fake.clock, sleep=fake.sleep))

    assert [len(p) for p in pieces] == [SLICE_BYTES, SLICE_BYTES, SLICE_BYTES, 1]
    assert b"".join(pieces) == chunk


def test_shape_close_closes_the_wrapped_body_even_unread() -> None:
    inner = ClosableBody([b"never read"])

    NetworkShape(latency=1.0).shape(inner).close()

    assert inner.closed


def test_network_shape_default_changes_nothing() -> None:
    assert not NetworkShape().active
    assert NetworkShape(latency=0.01).active
    assert NetworkShape(bandwidth=1.0).active


@pytest.mark.parametrize(
    ("latency", "bandwidth", "named"),
    [(-0.1, None, "latency"), (0.0, 0.0, "bandwidth"), (0.0, -5.0, "bandwidth")],
    ids=["negative-latency", "zero-bandwidth", "negative-bandwidth"],
)
def test_network_shape_impossible_values_raise(
    latency: float, bandwidth: float | None, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        NetworkShape(latency=latency, bandwidth=bandwidth)


@pytest.mark.integration
def test_emulator_shaped_serves_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = DatasetSpec(dataset_id="5f0c7a1e2b3d4c5e6f7081aa", rows=1_200, parts=3, seed=21)

    with Emulator(datasets=[spec], latency=0.005, bandwidth=20e6) as emu:
        for key, value in emu.env().items():
            monkeypatch.setenv(key, value)
        scores = cai_frames.load_scores(spec.dataset_id, progress=False)
        truth = emu.truth_table(spec.dataset_id)
        shape = emu.network

    assert shape == NetworkShape(latency=0.005, bandwidth=20e6)
    loaded = pa.Table.from_pandas(scores, preserve_index=False)
    assert loaded.column("profile_id").to_pylist() == truth.column("profile_id").to_pylist()
    assert loaded.column("score").to_pylist() == truth.column("score").to_pylist()


def test_cli_emulate_zero_bandwidth_is_refused() -> None:
    result = CliRunner().invoke(main, ["emulate", "--port", "0", "--bandwidth", "0"])

    assert result.exit_code == 2
    assert "--bandwidth" in result.output
