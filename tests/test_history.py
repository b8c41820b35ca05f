"""Score history against the emulator: runs kept after the platform replaced them, compared
profile by profile with values computed from the generator's truth."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

from cai_frames import (
    Cache,
    CacheMissError,
    Client,
    ConfigurationError,
    HistoryError,
    Settings,
    backfill_runs,
    compare_runs,
    download_scores,
    list_runs,
    load_score_history,
    scores_history_view,
)
from cai_frames.cli import main
from cai_frames.emulator import DatasetSpec, Emulator

pytestmark = pytest.mark.integration

WEEKLY = DatasetSpec(
    dataset_id="6d15c0de0000000000000001",
    rows=1_200,
    parts=3,
    runs=3,
    published=1,
    delete_replaced=True,
    seed=41,
)
TWO_APPS = DatasetSpec(
    dataset_id="6d15c0de0000000000000002",
    rows=800,
    parts=2,
    runs=2,
    instances=("churn", "upsell"),
    tenant="_globexinc",
    seed=42,
)
TIDY = ["profile_id", "profile_namespace", "score", "probability", "percentile"]
TIDY += ["propensity_type", "score_date"]


@dataclass(frozen=True)
class Platform:
    emu: Emulator
    client: Client
    cache_dir: Path
    weekly: list[str]  # WEEKLY's batch IDs, oldest first


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Three weekly runs downloaded one by one, each replacing (deleting) the one before."""
    cache_dir = tmp_path_factory.mktemp("history-cache")
    with Emulator(datasets=[WEEKLY, TWO_APPS]) as emu:
        settings = Settings.from_env(emu.env(), cache_dir=cache_dir)
        with Client(settings=settings) as client:
            ids = [download_scores(WEEKLY.dataset_id, client=client, progress=False).batch_id]
            for _ in range(WEEKLY.runs - 1):
                emu.advance(WEEKLY.dataset_id)
                entry = download_scores(WEEKLY.dataset_id, client=client, progress=False)
                ids.append(entry.batch_id)
            backfill_runs(TWO_APPS.dataset_id, client=client, progress=False)
            yield Platform(emu, client, cache_dir, ids)


@pytest.fixture()
def cache_copy(platform: Platform, tmp_path: Path) -> Path:
    """A copy of the module's cache, for tests that damage or prune it."""
    return Path(shutil.copytree(platform.cache_dir, tmp_path / "copy"))


def _truth(platform: Platform, batch_id: str, dataset_id: str = WEEKLY.dataset_id) -> pd.DataFrame:
    return platform.emu.truth(dataset_id, batch_id)


def _run_dir(cache_dir: Path, batch_id: str) -> Path:
    return cache_dir / "prod" / WEEKLY.dataset_id / batch_id


def test_platform_serves_only_the_newest_run(platform: Platform) -> None:
    statuses = [b["status"] for b in platform.emu.batches(WEEKLY.dataset_id)]
    assert statuses == ["success", "deleted", "deleted"]
    assert platform.emu.batch_ids(WEEKLY.dataset_id) == platform.weekly[::-1]


def test_load_score_history_offline_every_replaced_run_equals_its_truth(
    platform: Platform,
) -> None:
    history = load_score_history(WEEKLY.dataset_id, offline=True, cache_dir=platform.cache_dir)

    assert list(history.columns[:2]) == ["batch_id", "run_date"]
    assert list(dict.fromkeys(history["batch_id"])) == platform.weekly
    created = {b["_key"]: b["created"] for b in platform.emu.batches(WEEKLY.dataset_id)}
    for batch_id, run in history.groupby("batch_id", sort=False):
        truth = _truth(platform, batch_id)
        got = run[TIDY].reset_index(drop=True).astype(truth[TIDY].dtypes.to_dict())
        pd.testing.assert_frame_equal(got, truth[TIDY])
        expected_date = pd.Timestamp(created[batch_id], unit="ms", tz="UTC")
        assert set(run["run_date"]) == {expected_date}


def test_load_score_history_dtypes_are_arrow_backed(platform: Platform) -> None:
    history = load_score_history(WEEKLY.dataset_id, offline=True, cache_dir=platform.cache_dir)

    assert all(isinstance(dtype, pd.ArrowDtype) for dtype in history.dtypes)
    assert history["run_date"].dtype == pd.ArrowDtype(pa.timestamp("us", tz="UTC"))


def test_load_score_history_runs_keeps_the_newest(platform: Platform) -> None:
    history = load_score_history(
        WEEKLY.dataset_id, runs=2, columns=["score"], offline=True, cache_dir=platform.cache_dir
    )

    assert list(history.columns) == ["batch_id", "run_date", "score"]
    assert list(dict.fromkeys(history["batch_id"])) == platform.weekly[1:]
    assert len(history) == 2 * WEEKLY.rows


def test_load_score_history_columns_one_string_is_one_column(platform: Platform) -> None:
    history = load_score_history(
        WEEKLY.dataset_id, runs=1, columns="score", offline=True, cache_dir=platform.cache_dir
    )

    assert list(history.columns) == ["batch_id", "run_date", "score"]
    assert history["score"].tolist() == _truth(platform, platform.weekly[-1])["score"].tolist()


@pytest.mark.parametrize("view", [False, True], ids=["frame", "view"])
def test_load_score_history_columns_empty_list_refused(platform: Platform, view: bool) -> None:
    call = scores_history_view if view else load_score_history

    with pytest.raises(ConfigurationError, match="^columns is empty; leave it out"):
        call(WEEKLY.dataset_id, columns=[], offline=True, cache_dir=platform.cache_dir)


@pytest.mark.parametrize("kind", ["str", "date", "datetime"])
def test_load_score_history_since_is_a_lower_bound_on_run_date(
    platform: Platform, kind: str
) -> None:
    middle = next(
        b for b in platform.emu.batches(WEEKLY.dataset_id) if b["_key"] == platform.weekly[1]
    )
    moment = pd.Timestamp(middle["created"], unit="ms", tz="UTC")
    since = {"str": moment.strftime("%Y-%m-%d"), "date": moment.date(), "datetime": moment}[kind]

    history = load_score_history(
        WEEKLY.dataset_id,
        since=since,
        columns=["score"],
        offline=True,
        cache_dir=platform.cache_dir,
    )

    assert list(dict.fromkeys(history["batch_id"])) == platform.weekly[1:]


def test_load_score_history_online_downloads_the_latest_first(
    platform: Platform, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh"

    history = load_score_history(
        WEEKLY.dataset_id, client=platform.client, cache_dir=fresh, progress=False
    )

    assert set(history["batch_id"]) == {platform.weekly[-1]}


def test_list_runs_newest_first_with_predecessors(platform: Platform) -> None:
    runs = list_runs(WEEKLY.dataset_id, offline=True, cache_dir=platform.cache_dir)

    assert [r.batch_id for r in runs] == platform.weekly[::-1]
    assert [r.predecessors for r in runs] == [
        (platform.weekly[1],),
        (platform.weekly[0],),
        (),
    ]
    assert runs[0].created_at > runs[1].created_at > runs[2].created_at


def test_scores_history_view_equals_the_concatenated_runs(platform: Platform) -> None:
    con = scores_history_view(WEEKLY.dataset_id, offline=True, cache_dir=platform.cache_dir)
    con.execute("SET TimeZone = 'Asia/Tokyo'")  # the view must not depend on it

    view = con.sql("SELECT * FROM scores_history ORDER BY run_date, profile_id").to_arrow_table()
    history = load_score_history(WEEKLY.dataset_id, offline=True, cache_dir=platform.cache_dir)
    expected = pa.Table.from_pandas(
        history.sort_values(["run_date", "profile_id"]), preserve_index=False
    )

    assert view.column_names == expected.column_names
    for name in view.column_names:
        got, want = view.column(name), expected.column(name)
        if pa.types.is_timestamp(want.type):
            got = got.cast(pa.timestamp("us", tz="UTC"))
        assert got.to_pylist() == want.to_pylist(), name


def test_scores_history_view_runs_selects_the_newest(platform: Platform) -> None:
    con = scores_history_view(
        WEEKLY.dataset_id, runs=1, name="latest", offline=True, cache_dir=platform.cache_dir
    )

    got = con.sql("SELECT DISTINCT batch_id FROM latest").fetchall()
    assert got == [(platform.weekly[-1],)]


@pytest.mark.parametrize("damage", ["part", "manifest"])
def test_history_incomplete_run_never_appears(
    cache_copy: Path, damage: str, platform: Platform
) -> None:
    folder = _run_dir(cache_copy, platform.weekly[1])
    victim = sorted(folder.glob("*.parquet"))[0] if damage == "part" else folder / "manifest.json"
    victim.unlink()

    history = load_score_history(WEEKLY.dataset_id, offline=True, cache_dir=cache_copy)
    con = scores_history_view(WEEKLY.dataset_id, offline=True, cache_dir=cache_copy)

    kept = [platform.weekly[0], platform.weekly[2]]
    assert list(dict.fromkeys(history["batch_id"])) == kept
    assert sorted(con.sql("SELECT DISTINCT batch_id FROM scores_history").fetchall()) == sorted(
        (b,) for b in kept
    )
    result = compare_runs(WEEKLY.dataset_id, offline=True, cache_dir=cache_copy)
    assert (result.before, result.after) == tuple(kept)


def test_load_score_history_nothing_cached_raises(tmp_path: Path) -> None:
    with pytest.raises(CacheMissError, match=WEEKLY.dataset_id):
        load_score_history(WEEKLY.dataset_id, offline=True, cache_dir=tmp_path)


def _bucket(scores: pd.Series) -> pd.Series:
    return pd.cut(scores, [-np.inf, 24, 74, np.inf], labels=["low", "medium", "high"]).astype(str)


def test_compare_runs_defaults_match_the_truth_of_the_two_newest(platform: Platform) -> None:
    result = compare_runs(WEEKLY.dataset_id, offline=True, cache_dir=platform.cache_dir)
    old, new = (_truth(platform, b) for b in platform.weekly[1:])

    assert (result.before, result.after) == tuple(platform.weekly[1:])
    assert result.instance == WEEKLY.instances[0]
    both = old.merge(new, on="profile_id", suffixes=("_before", "_after"))
    both = both.sort_values("profile_id").reset_index(drop=True)
    crosstab = pd.crosstab(_bucket(both["score_before"]), _bucket(both["score_after"]))
    crosstab = crosstab.reindex(index=["low", "medium", "high"], columns=["low", "medium", "high"])
    np.testing.assert_array_equal(result.transitions.to_numpy(), crosstab.fillna(0).to_numpy())
    assert result.transitions.to_numpy().sum() == len(both)

    deltas = result.deltas
    assert deltas["profile_id"].tolist() == both["profile_id"].tolist()
    assert deltas["score_delta"].tolist() == (both["score_after"] - both["score_before"]).tolist()
    assert (
        deltas["probability_delta"].tolist()
        == (both["probability_after"] - both["probability_before"]).tolist()
    )
    assert deltas["score_before"].tolist() == both["score_before"].tolist()
    assert deltas["bucket_after"].tolist() == _bucket(both["score_after"]).tolist()


def test_compare_runs_appeared_and_disappeared_match_the_truth(platform: Platform) -> None:
    result = compare_runs(WEEKLY.dataset_id, offline=True, cache_dir=platform.cache_dir)
    old, new = (set(_truth(platform, b)["profile_id"]) for b in platform.weekly[1:])

    assert result.appeared["profile_id"].tolist() == sorted(new - old)
    assert result.disappeared["profile_id"].tolist() == sorted(old - new)
    assert len(result.appeared) == WEEKLY.rows // 20


def test_compare_runs_shares_sum_to_one_and_match_the_truth(platform: Platform) -> None:
    result = compare_runs(
        WEEKLY.dataset_id,
        before=platform.weekly[0],
        after=platform.weekly[2],
        offline=True,
        cache_dir=platform.cache_dir,
    )

    np.testing.assert_allclose(result.shares.sum().to_numpy(), [1.0, 1.0])
    for column, batch_id in (("before", platform.weekly[0]), ("after", platform.weekly[2])):
        counts = _bucket(_truth(platform, batch_id)["score"]).value_counts(normalize=True)
        expected = counts.reindex(["low", "medium", "high"], fill_value=0.0)
        np.testing.assert_allclose(result.shares[column].to_numpy(), expected.to_numpy())


def test_compare_runs_psi_on_before_deciles_matches_pandas(platform: Platform) -> None:
    result = compare_runs(WEEKLY.dataset_id, offline=True, cache_dir=platform.cache_dir)
    old, new = (_truth(platform, b)["score"] for b in platform.weekly[1:])

    edges = sorted(set(old.quantile([i / 10 for i in range(1, 10)])))
    bins = [-np.inf, *edges, np.inf]
    b, a = (pd.cut(s, bins).value_counts(normalize=True, sort=False).to_numpy() for s in (old, new))
    b, a = np.where(b > 0, b, 1e-4), np.where(a > 0, a, 1e-4)

    assert result.psi == pytest.approx(float(np.sum((a - b) * np.log(a / b))), rel=1e-12)
    assert 0 < result.psi < 0.1  # one week of drift is a small shift
    assert result.psi_bins["before"].sum() == pytest.approx(1.0)


def test_compare_runs_movers_are_the_largest_score_changes(platform: Platform) -> None:
    result = compare_runs(WEEKLY.dataset_id, offline=True, cache_dir=platform.cache_dir)

    movers = result.movers(5)
    largest = result.deltas["score_delta"].abs().sort_values(ascending=False).head(5)
    assert movers["score_delta"].abs().tolist() == largest.tolist()


def test_compare_runs_movers_negative_n_refused(platform: Platform) -> None:
    result = compare_runs(WEEKLY.dataset_id, offline=True, cache_dir=platform.cache_dir)

    with pytest.raises(HistoryError, match=r"needs n of 0 or more, got -1") as caught:
        result.movers(-1)

    assert isinstance(caught.value, ValueError)
    assert len(result.movers(0)) == 0


def test_compare_runs_before_newer_than_after_refused_naming_both_dates(
    platform: Platform,
) -> None:
    older, newer = platform.weekly[0], platform.weekly[-1]
    created = {b["_key"]: b["created"] for b in platform.emu.batches(WEEKLY.dataset_id)}
    older_date, newer_date = (
        pd.Timestamp(created[b], unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M:%S")
        for b in (older, newer)
    )

    with pytest.raises(HistoryError) as caught:
        compare_runs(
            WEEKLY.dataset_id,
            before=newer,
            after=older,
            offline=True,
            cache_dir=platform.cache_dir,
        )

    assert str(caught.value) == (
        f"before={newer} (run of {newer_date} UTC) is newer than after={older} (run of "
        f"{older_date} UTC); swap them, so that before is the earlier run."
    )


def test_compare_runs_several_instances_need_one_named(platform: Platform) -> None:
    with pytest.raises(HistoryError, match="churn, upsell"):
        compare_runs(TWO_APPS.dataset_id, offline=True, cache_dir=platform.cache_dir)
    with pytest.raises(HistoryError, match="'renewal'"):
        compare_runs(
            TWO_APPS.dataset_id, instance="renewal", offline=True, cache_dir=platform.cache_dir
        )


def test_compare_runs_named_instance_matches_its_truth(platform: Platform) -> None:
    result = compare_runs(
        TWO_APPS.dataset_id, instance="upsell", offline=True, cache_dir=platform.cache_dir
    )
    old_id, new_id = platform.emu.batch_ids(TWO_APPS.dataset_id)[::-1]
    old, new = (
        _truth(platform, b, TWO_APPS.dataset_id).query("instance == 'upsell'")
        for b in (old_id, new_id)
    )

    both = old.merge(new, on="profile_id", suffixes=("_before", "_after")).sort_values("profile_id")
    assert (result.before, result.after) == (old_id, new_id)
    assert result.deltas["profile_id"].tolist() == both["profile_id"].tolist()
    assert (
        result.deltas["score_delta"].tolist()
        == (both["score_after"] - both["score_before"]).tolist()
    )


def test_compare_runs_one_run_cached_raises(platform: Platform, tmp_path: Path) -> None:
    download_scores(WEEKLY.dataset_id, client=platform.client, cache_dir=tmp_path, progress=False)

    with pytest.raises(HistoryError, match="holds 1"):
        compare_runs(WEEKLY.dataset_id, offline=True, cache_dir=tmp_path)


def test_compare_runs_unknown_run_offline_raises(platform: Platform) -> None:
    with pytest.raises(CacheMissError, match="NOSUCHRUN"):
        compare_runs(
            WEEKLY.dataset_id, before="NOSUCHRUN", offline=True, cache_dir=platform.cache_dir
        )


def test_backfill_runs_fetches_only_what_the_platform_still_serves(
    platform: Platform, tmp_path: Path
) -> None:
    served = backfill_runs(
        WEEKLY.dataset_id, client=platform.client, cache_dir=tmp_path, progress=False
    )
    both = backfill_runs(
        TWO_APPS.dataset_id, client=platform.client, cache_dir=tmp_path, progress=False
    )

    assert [e.batch_id for e in served] == [platform.weekly[-1]]
    assert [e.batch_id for e in both] == platform.emu.batch_ids(TWO_APPS.dataset_id)


def test_backfill_runs_entries_have_a_short_repr(platform: Platform, tmp_path: Path) -> None:
    [entry] = backfill_runs(
        WEEKLY.dataset_id, client=platform.client, cache_dir=tmp_path, progress=False
    )

    assert repr(entry) == (
        f"CacheEntry(path={entry.path!r}, sandbox='prod', dataset_id='{WEEKLY.dataset_id}', "
        f"batch_id='{platform.weekly[-1]}', created={entry.created}, "
        f"downloaded_at={entry.downloaded_at!r})"
    )
    assert len(repr(entry)) < 400 < len(repr(dict(entry.manifest)))


@pytest.mark.parametrize("keep", [1, 2, 3, 5])
def test_cache_prune_keeps_exactly_the_newest_runs(
    cache_copy: Path, platform: Platform, keep: int
) -> None:
    cache = Cache(cache_copy)

    removed = cache.prune(keep, dataset_id=WEEKLY.dataset_id, sandbox="prod")

    newest_first = platform.weekly[::-1]
    assert [e.batch_id for e in cache.entries("prod", WEEKLY.dataset_id)] == newest_first[:keep]
    assert sorted(e.batch_id for e in removed) == sorted(newest_first[keep:])
    assert len(cache.entries("prod", TWO_APPS.dataset_id)) == TWO_APPS.runs
    assert all(not e.path.exists() for e in removed)


def test_cache_prune_every_dataset_keeps_each_newest(cache_copy: Path, platform: Platform) -> None:
    cache = Cache(cache_copy)

    cache.prune(1)

    newest = {platform.weekly[-1], platform.emu.batch_ids(TWO_APPS.dataset_id)[0]}
    assert {e.batch_id for e in cache.entries()} == newest


@pytest.mark.parametrize("keep", [0, -1])
def test_cache_prune_keep_below_one_raises_and_removes_nothing(cache_copy: Path, keep: int) -> None:
    cache = Cache(cache_copy)

    with pytest.raises(HistoryError, match="keeps the newest"):
        cache.prune(keep)

    assert len(cache.entries()) == WEEKLY.runs + TWO_APPS.runs


def test_cache_prune_leaves_incomplete_entries_to_the_downloader(
    cache_copy: Path, platform: Platform
) -> None:
    folder = _run_dir(cache_copy, platform.weekly[0])
    (folder / "manifest.json").unlink()

    removed = Cache(cache_copy).prune(1, sandbox="prod", dataset_id=WEEKLY.dataset_id)

    assert [e.batch_id for e in removed] == [platform.weekly[1]]
    assert len(list(folder.glob("*.parquet"))) == WEEKLY.parts


def test_cli_history_prints_runs_and_the_comparison(platform: Platform) -> None:
    expected = compare_runs(WEEKLY.dataset_id, offline=True, cache_dir=platform.cache_dir)

    result = CliRunner().invoke(
        main, ["history", WEEKLY.dataset_id, "--offline", "--cache-dir", str(platform.cache_dir)]
    )

    assert result.exit_code == 0, result.output
    assert all(batch_id in result.output for batch_id in platform.weekly)
    assert f"PSI on the before run's score deciles: {expected.psi:.4f}" in result.output
    assert f"Appeared: {len(expected.appeared):,} profiles" in result.output
    top = expected.movers(1)["profile_id"].iloc[0]
    assert top in result.output


def test_cli_history_several_instances_without_instance_fails(platform: Platform) -> None:
    result = CliRunner().invoke(
        main, ["history", TWO_APPS.dataset_id, "--offline", "--cache-dir", str(platform.cache_dir)]
    )

    assert result.exit_code == 1
    assert "churn, upsell" in result.output


def test_cli_cache_list_shows_runs_per_dataset(platform: Platform) -> None:
    result = CliRunner().invoke(main, ["cache", "list", "--cache-dir", str(platform.cache_dir)])

    assert result.exit_code == 0, result.output
    assert f"dataset {WEEKLY.dataset_id}: 3 runs" in result.output
    assert f"dataset {TWO_APPS.dataset_id}: 2 runs" in result.output


def test_cli_cache_prune_keeps_n_and_refuses_zero(cache_copy: Path, platform: Platform) -> None:
    runner = CliRunner()
    args = ["cache", "prune", "--dataset", WEEKLY.dataset_id, "--cache-dir", str(cache_copy)]

    refused = runner.invoke(main, [*args, "--keep", "0"])
    pruned = runner.invoke(main, [*args, "--keep", "2"])

    assert refused.exit_code == 1 and "keep=1 or more" in refused.output
    assert pruned.exit_code == 0, pruned.output
    assert f"removed batch {platform.weekly[0]}" in pruned.output
    assert len(Cache(cache_copy).entries("prod", WEEKLY.dataset_id)) == 2


@pytest.mark.parametrize(
    "call",
    [load_score_history, scores_history_view, compare_runs, list_runs],
    ids=["load_score_history", "scores_history_view", "compare_runs", "list_runs"],
)
def test_history_online_without_credentials_says_offline_reads_the_cache(
    call: Callable[..., object], tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        call(WEEKLY.dataset_id, cache_dir=tmp_path, progress=False)

    message = str(caught.value)
    assert message.startswith("missing setting: AEP_CLIENT_ID")
    assert message.endswith(
        " To read the cached runs without credentials, pass offline=True (or set "
        "CAI_FRAMES_OFFLINE=1)."
    )
    assert isinstance(caught.value.__cause__, ConfigurationError)
    assert str(caught.value.__cause__) in message
