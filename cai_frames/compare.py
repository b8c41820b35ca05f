"""Two scoring runs of a dataset compared, profile by profile.

:func:`compare_runs` reads two cached runs (by default the two newest; see
:mod:`cai_frames.history` for how runs are kept) and returns a :class:`RunComparison`:
bucket shares, the bucket transition table, per-profile deltas, the profiles that
appeared or disappeared, and the population stability index on score deciles.

Buckets are the platform's: ``low`` below 25, ``medium`` 25 to 74, ``high`` above 74.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import load
from .cache import CacheEntry
from .client import Client
from .errors import CacheMissError, HistoryError
from .history import _sync

logger = logging.getLogger(__name__)

BUCKETS = ("low", "medium", "high")
#: Share given to an empty bin in the population stability index, so its log is finite.
PSI_EPSILON = 1e-4
_COMPARED = ["profile_id", "instance", "score", "probability"]


@dataclass(frozen=True)
class RunComparison:
    """Two scoring runs of one dataset compared, profile by profile.

    Profiles are matched by ``profile_id`` (the primary identity) within one instance.
    Records without a profile ID or a score are left out, and a profile scored twice in
    one run counts once, with its last record. Buckets: ``low`` for a score below 25,
    ``medium`` for 25 to 74, ``high`` above 74.

    Attributes:
        dataset_id: The dataset.
        instance: The Customer AI instance compared.
        before: Batch ID of the earlier run.
        after: Batch ID of the later run.
        before_date: Run date of ``before`` (the batch's creation time, UTC).
        after_date: Run date of ``after``.
        shares: Share of each run's profiles in each bucket: index ``bucket`` (low,
            medium, high), columns ``before`` and ``after``; each column sums to 1.
        transitions: Profiles in both runs counted by bucket: rows are the bucket in
            ``before`` (index ``before``), columns the bucket in ``after`` (``after``),
            both low, medium, high; the counts add up to ``len(deltas)``.
        deltas: One row per profile in both runs, by ``profile_id``: ``profile_id``,
            ``score_before``, ``score_after``, ``score_delta`` (after minus before),
            ``probability_before``, ``probability_after``, ``probability_delta``,
            ``bucket_before``, ``bucket_after``.
        appeared: Profiles only in ``after``: ``profile_id``, ``score``,
            ``probability``, ``bucket``, by ``profile_id``.
        disappeared: Profiles only in ``before``, with the same columns.
        psi: Population stability index of the ``after`` scores against the
            ``before`` scores. Bin edges are the nine deciles of the ``before`` scores
            (numpy's linear quantiles, repeated edges merged), bins closed on the right,
            the outer two open-ended. With ``b`` and ``a`` the shares of the ``before``
            and ``after`` profiles in a bin (an empty bin's share taken as
            :data:`PSI_EPSILON`), PSI is the sum over bins of ``(a - b) * ln(a / b)``.
            A common reading: below 0.1 stable, 0.1 to 0.25 a moderate shift, above
            0.25 a large one.
        psi_bins: The bins ``psi`` sums over: ``lower`` (exclusive), ``upper``
            (inclusive), ``before`` and ``after`` shares (before the epsilon),
            ``contribution``.
    """

    dataset_id: str
    instance: str
    before: str
    after: str
    before_date: datetime
    after_date: datetime
    shares: pd.DataFrame
    transitions: pd.DataFrame
    deltas: pd.DataFrame
    appeared: pd.DataFrame
    disappeared: pd.DataFrame
    psi: float
    psi_bins: pd.DataFrame

    def movers(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` profiles whose score moved most, largest absolute change first.

        Raises:
            HistoryError: ``n`` is below 0 (``len(deltas)`` gives every profile).
        """
        if n < 0:
            raise HistoryError(
                f"movers(n) needs n of 0 or more, got {n}; pass n=len(result.deltas) for "
                "every profile."
            )
        size = self.deltas["score_delta"].abs().rename("size")
        order = pd.concat([size, self.deltas["profile_id"]], axis=1)
        ranked = order.sort_values(["size", "profile_id"], ascending=[False, True])
        return self.deltas.loc[ranked.index[:n]]


def compare_runs(
    dataset_id: str,
    *,
    before: str | None = None,
    after: str | None = None,
    instance: str | None = None,
    offline: bool = False,
    progress: bool = True,
    client: Client | None = None,
    cache_dir: str | Path | None = None,
) -> RunComparison:
    """Compare two cached runs of a dataset (by default the two newest).

    Online, the latest run is downloaded first, and so are ``before`` and ``after``
    when the cache lacks them (the platform must still serve them).

    Args:
        dataset_id: The Customer AI score dataset.
        before: Batch ID of the earlier run; by default the run before ``after``.
        after: Batch ID of the later run; by default the newest cached run.
        instance: The Customer AI instance to compare; needed when the runs hold
            several.
        offline: Use the cache only, with no network call.
        progress: Show a progress bar while downloading.
        client: The platform client; by default one built from the environment.
        cache_dir: The cache folder.

    Raises:
        HistoryError: Fewer than two runs cached, the same run twice, ``before`` newer
            than ``after``, or an instance missing or unknown (the message lists the
            instances).
        ConfigurationError: Online, and a setting (such as a credential) is missing;
            ``offline=True`` compares cached runs without credentials.
        CacheMissError: Offline, and ``before`` or ``after`` is not cached.

    Example:
        >>> result = compare_runs("5cd9146b31dae914b75f654f")  # doctest: +SKIP
        >>> result.transitions, result.psi  # doctest: +SKIP
    """
    wanted = [None, *(b for b in (before, after) if b is not None)]
    cache, sandbox = _sync(dataset_id, wanted, offline, progress, client, cache_dir)
    old, new = _pick_pair(cache.entries(sandbox, dataset_id), dataset_id, before, after)
    tables = [load.load_table(e.part_paths, columns=_COMPARED) for e in (old, new)]
    chosen = _pick_instance(dataset_id, instance, tables)
    first, second = (_profiles(t, chosen) for t in tables)
    psi, psi_bins = _psi(first, second)
    return RunComparison(
        dataset_id=dataset_id,
        instance=chosen,
        before=old.batch_id,
        after=new.batch_id,
        before_date=old.created_at,
        after_date=new.created_at,
        shares=_shares(first, second),
        psi=psi,
        psi_bins=psi_bins,
        **_matched(first, second),
    )


def _pick_pair(
    entries: list[CacheEntry], dataset_id: str, before: str | None, after: str | None
) -> tuple[CacheEntry, CacheEntry]:
    if len(entries) < 2:
        held = ", ".join(e.batch_id for e in entries) or "none"
        raise HistoryError(
            f"comparing needs two runs of dataset {dataset_id}, but the cache holds "
            f"{len(entries)} ({held}). Download older runs the platform still serves with "
            "backfill_runs(), or wait for the next scoring run."
        )
    new = _find(entries, dataset_id, after) if after else entries[0]
    if before:
        old = _find(entries, dataset_id, before)
    else:
        older = [
            e for e in entries if (e.created, e.downloaded_at) < (new.created, new.downloaded_at)
        ]
        if not older:
            raise HistoryError(
                f"run {new.batch_id} is the oldest cached run of dataset {dataset_id}; pass "
                "before= a run to compare it with."
            )
        old = older[0]
    if old.batch_id == new.batch_id:
        raise HistoryError(f"before and after are both run {old.batch_id}; pick two runs.")
    if old.created > new.created:
        raise HistoryError(
            f"before={old.batch_id} (run of {old.created_at:%Y-%m-%d %H:%M:%S} UTC) is newer "
            f"than after={new.batch_id} (run of {new.created_at:%Y-%m-%d %H:%M:%S} UTC); "
            "swap them, so that before is the earlier run."
        )
    return old, new


def _find(entries: list[CacheEntry], dataset_id: str, batch_id: str) -> CacheEntry:
    for entry in entries:
        if batch_id in (entry.batch_id, entry.manifest.get("catalog_id")):
            return entry
    held = ", ".join(e.batch_id for e in entries)
    raise CacheMissError(
        f"run {batch_id} of dataset {dataset_id} is not cached; cached runs: {held}. "
        "Load it online while the platform still serves it."
    )


def _pick_instance(dataset_id: str, instance: str | None, tables: list[pa.Table]) -> str:
    names = sorted({n for t in tables for n in pc.unique(t["instance"]).to_pylist() if n})
    if instance is None and len(names) == 1:
        return str(names[0])
    if instance is not None and instance in names:
        return instance
    if instance is None:
        raise HistoryError(
            f"the runs of dataset {dataset_id} hold {len(names)} Customer AI instances "
            f"({', '.join(names) or 'none'}); pass instance= one of them."
        )
    raise HistoryError(
        f"no instance {instance!r} in the runs of dataset {dataset_id}; they hold "
        f"{', '.join(names)}."
    )


def _profiles(table: pa.Table, instance: str) -> pa.Table:
    """One row per profile of ``instance``: ``profile_id``, ``score``, ``probability``."""
    keep = pc.and_(
        pc.equal(table["instance"], instance),
        pc.and_(pc.is_valid(table["profile_id"]), pc.is_valid(table["score"])),
    )
    table = table.filter(pc.fill_null(keep, False)).select(["profile_id", "score", "probability"])
    if pc.count_distinct(table["profile_id"]).as_py() == table.num_rows:
        return table
    repeated = pd.Series(table["profile_id"].to_numpy(zero_copy_only=False)).duplicated("last")
    logger.warning("%d profiles scored more than once; keeping their last record", repeated.sum())
    return table.filter(pa.array(~repeated.to_numpy()))


def _bucket_codes(scores: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.intp]:
    values = np.asarray(scores)
    codes: npt.NDArray[np.intp] = np.where(values < 25, 0, np.where(values <= 74, 1, 2))
    return codes


def _bucket_labels(codes: npt.NDArray[np.intp]) -> pa.Array:
    return pa.array(BUCKETS, pa.string()).take(pa.array(codes))


def _shares(first: pa.Table, second: pa.Table) -> pd.DataFrame:
    columns = {}
    for label, table in (("before", first), ("after", second)):
        counts = np.bincount(_bucket_codes(table["score"]), minlength=len(BUCKETS))
        columns[label] = counts / max(table.num_rows, 1)
    return pd.DataFrame(columns, index=pd.Index(BUCKETS, name="bucket"))


def _psi(first: pa.Table, second: pa.Table) -> tuple[float, pd.DataFrame]:
    before = np.asarray(first["score"], dtype=np.float64)
    after = np.asarray(second["score"], dtype=np.float64)
    if not len(before) or not len(after):
        raise HistoryError("a run holds no scores for the instance, so no PSI can be computed.")
    edges = np.unique(np.quantile(before, np.linspace(0.1, 0.9, 9)))
    shares = [
        np.bincount(np.searchsorted(edges, v, side="left"), minlength=len(edges) + 1) / len(v)
        for v in (before, after)
    ]
    b, a = (np.where(s > 0, s, PSI_EPSILON) for s in shares)
    contribution = (a - b) * np.log(a / b)
    bins = pd.DataFrame(
        {
            "lower": np.concatenate([[-np.inf], edges]),
            "upper": np.concatenate([edges, [np.inf]]),
            "before": shares[0],
            "after": shares[1],
            "contribution": contribution,
        }
    )
    return float(contribution.sum()), bins


def _matched(first: pa.Table, second: pa.Table) -> dict[str, pd.DataFrame]:
    """Deltas, transitions, appeared and disappeared, from one outer join on profile_id."""
    left = first.rename_columns(["profile_id", "score_before", "probability_before"])
    right = second.rename_columns(["profile_id", "score_after", "probability_after"])
    joined = left.join(right, keys="profile_id", join_type="full outer")
    in_before, in_after = pc.is_valid(joined["score_before"]), pc.is_valid(joined["score_after"])
    both = joined.filter(pc.and_(in_before, in_after)).sort_by("profile_id")
    codes = [_bucket_codes(both[f"score_{side}"]) for side in ("before", "after")]
    deltas = pa.table(
        {
            "profile_id": both["profile_id"],
            "score_before": both["score_before"],
            "score_after": both["score_after"],
            "score_delta": pc.subtract(both["score_after"], both["score_before"]),
            "probability_before": both["probability_before"],
            "probability_after": both["probability_after"],
            "probability_delta": pc.subtract(both["probability_after"], both["probability_before"]),
            "bucket_before": _bucket_labels(codes[0]),
            "bucket_after": _bucket_labels(codes[1]),
        }
    )
    counts = np.bincount(codes[0] * 3 + codes[1], minlength=9).reshape(3, 3)
    transitions = pd.DataFrame(
        counts,
        index=pd.Index(BUCKETS, name="before"),
        columns=pd.Index(BUCKETS, name="after"),
    )
    return {
        "deltas": load.to_pandas(deltas),
        "transitions": transitions,
        "appeared": _only(joined.filter(pc.invert(in_before)), "after"),
        "disappeared": _only(joined.filter(pc.invert(in_after)), "before"),
    }


def _only(table: pa.Table, side: str) -> pd.DataFrame:
    table = table.sort_by("profile_id")
    scores = table[f"score_{side}"]
    return load.to_pandas(
        pa.table(
            {
                "profile_id": table["profile_id"],
                "score": scores,
                "probability": table[f"probability_{side}"],
                "bucket": _bucket_labels(_bucket_codes(scores)),
            }
        )
    )
