"""Runs published over time: each replaces the one before, which the platform then deletes."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from cai_frames import Client, NoBatchError, NotFoundError, Settings
from cai_frames.emulator import DatasetSpec, Emulator

pytestmark = pytest.mark.integration

WEEKLY = DatasetSpec(
    dataset_id="6c0ffee00000000000000001",
    rows=1_000,
    parts=2,
    runs=3,
    published=1,
    delete_replaced=True,
    seed=31,
)
KEPT = DatasetSpec(dataset_id="6c0ffee00000000000000002", rows=400, parts=1, runs=2, seed=32)


@pytest.fixture()
def emu() -> Iterator[Emulator]:
    with Emulator(datasets=[WEEKLY, KEPT]) as running:
        yield running


@pytest.fixture()
def client(emu: Emulator) -> Iterator[Client]:
    with Client(settings=Settings.from_env(emu.env())) as active:
        yield active


def test_emulator_published_shows_only_the_first_runs(emu: Emulator) -> None:
    assert len(emu.batches(WEEKLY.dataset_id)) == 1
    assert len(emu.batches(KEPT.dataset_id)) == 2


def test_advance_replacement_names_predecessor_and_deletes_it(
    emu: Emulator, client: Client
) -> None:
    first = emu.latest_batch_id(WEEKLY.dataset_id)
    assert first is not None
    old = client.source.resolve_batch(WEEKLY.dataset_id, first)
    assert len(client.source.list_parts(old)) == WEEKLY.parts

    second = emu.advance(WEEKLY.dataset_id)

    newest, replaced = emu.batches(WEEKLY.dataset_id)
    assert (newest["_key"], newest["status"]) == (second, "success")
    assert newest["replay"]["predecessors"] == [first]
    assert newest["created"] - replaced["created"] > 6 * 24 * 3600 * 1000
    assert replaced["status"] == "deleted"
    with pytest.raises(NotFoundError):
        client.source.list_parts(old)
    with pytest.raises(NoBatchError):
        client.source.resolve_batch(WEEKLY.dataset_id, first)
    listed = client.catalog.successful_batches(WEEKLY.dataset_id)
    assert [b.batch_id for b in listed] == [second]


def test_advance_deleted_run_keeps_its_truth(emu: Emulator) -> None:
    first = emu.latest_batch_id(WEEKLY.dataset_id)
    before = emu.truth(WEEKLY.dataset_id, first)

    emu.advance(WEEKLY.dataset_id)

    pd.testing.assert_frame_equal(emu.truth(WEEKLY.dataset_id, first), before)


def test_advance_without_delete_replaced_keeps_serving_old_runs(client: Client) -> None:
    listed = client.catalog.successful_batches(KEPT.dataset_id)
    assert len(listed) == 2
    assert all(len(client.source.list_parts(b)) == KEPT.parts for b in listed)


def test_advance_past_the_last_run_raises(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="all 2 runs"):
        emu.advance(KEPT.dataset_id)


@pytest.mark.parametrize("published", [0, 4], ids=["none", "more-than-runs"])
def test_dataset_spec_published_out_of_range_raises(published: int) -> None:
    with pytest.raises(ValueError, match="published"):
        DatasetSpec(runs=3, published=published)


def test_dataset_spec_published_leaves_generated_bytes_alone() -> None:
    assert DatasetSpec(runs=3, published=1, delete_replaced=True).fingerprint() == (
        DatasetSpec(runs=3).fingerprint()
    )


def test_runs_drift_a_week_apart_like_weekly_rescoring(emu: Emulator) -> None:
    ids = [emu.latest_batch_id(WEEKLY.dataset_id)] + [
        emu.advance(WEEKLY.dataset_id) for _ in range(2)
    ]
    truths = [emu.truth(WEEKLY.dataset_id, b).set_index("profile_id") for b in ids]

    for old, new in zip(truths, truths[1:], strict=False):
        left = old.index.difference(new.index)
        arrived = new.index.difference(old.index)
        assert len(left) == len(arrived) == WEEKLY.rows // 20
        both = old.index.intersection(new.index)
        moved = (new.loc[both, "score"] - old.loc[both, "score"]).abs()
        buckets = [pd.cut(t.loc[both, "score"], [-1, 24, 74, 100]) for t in (old, new)]
        crossed = (buckets[0] != buckets[1]).mean()
        assert moved.median() <= 5
        assert 0.01 < crossed < 0.3
