"""Running jobs in fresh processes, and turning their samples into compared rows."""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Variant:
    """One way of doing a case's work: a job and its parameters.

    Attributes:
        job: A name in :data:`benchmarks.jobs.JOBS`.
        params: What the job is given.
        runs: How many times to measure it.
        timeout: Seconds after which a run is stopped and counted as "more than this".
    """

    job: str
    params: dict[str, Any]
    runs: int
    timeout: float | None = None


@dataclass
class Samples:
    """What the runs of one variant measured."""

    seconds: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)
    added_mb: list[float] = field(default_factory=list)
    extra: list[dict[str, Any]] = field(default_factory=list)
    timed_out: bool = False

    @property
    def median_s(self) -> float:
        """Median seconds (a stopped run counts as its time limit, so a lower bound)."""
        return statistics.median(self.seconds)

    @property
    def peak(self) -> float:
        """Highest resident memory seen in any run, MB."""
        return max(self.peak_mb) if self.peak_mb else float("nan")

    @property
    def added(self) -> float:
        """Most memory any run added above what it held before starting, MB."""
        return max(self.added_mb) if self.added_mb else float("nan")


def run_job(variant: Variant) -> tuple[dict[str, Any] | None, float]:
    """Run one measurement in a fresh interpreter; ``None`` if it hit its time limit."""
    command = [sys.executable, "-m", "benchmarks.jobs", json.dumps(variant.params)]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=variant.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return None, float(variant.timeout or 0)
    if done.returncode != 0:
        raise RuntimeError(
            f"job {variant.job} failed with exit status {done.returncode}:\n{done.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result, float(result["seconds"])


def measure(variants: dict[str, Variant], warm: list[Path] | None = None) -> dict[str, Samples]:
    """Measure every variant, taking turns run by run so drift hits them all alike.

    Variants measured once (the slow baselines) go last: some of them take ~10 GB, which
    pushes the parts out of the page cache. ``warm`` files are read before every run,
    so each run starts with them in the page cache.
    """
    samples = {label: Samples() for label in variants}
    rounds = max(v.runs for v in variants.values())
    repeated = [label for label, v in variants.items() if v.runs > 1]
    order = [label for index in range(rounds) for label in repeated if index < variants[label].runs]
    order += [label for label, v in variants.items() if v.runs <= 1]
    for label in order:
        variant = variants[label]
        read_through(warm or [])
        result, seconds = run_job(variant)
        logger.info("%s %s: %.3f s", variant.job, label, seconds)
        kept = samples[label]
        kept.seconds.append(seconds)
        if result is None:
            kept.timed_out = True
            continue
        kept.peak_mb.append(result["peak_mb"])
        kept.added_mb.append(result["added_mb"])
        kept.extra.append(result["extra"])
    return samples


def read_through(paths: list[Path]) -> None:
    """Read every file once, which puts it in the page cache."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass


@dataclass
class Row:
    """One line of the report: ours against a baseline on one metric.

    ``ratio`` is stated the way the target is: a time ratio (ours over baseline) for
    "at most" targets, a speed-up or throughput ratio (baseline time over ours) for
    "at least" ones, a memory ratio for memory targets; absolute checks have none.
    """

    case: str
    metric: str
    ours: str
    baseline: str
    ours_value: float
    baseline_value: float | None
    ratio: float | None
    target: str
    met: bool | None
    ours_peak_mb: float
    baseline_peak_mb: float | None
    runs: str
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        """The row with its met flag as yes/no/n.a."""
        data = asdict(self)
        data["met"] = {True: "yes", False: "no", None: "n/a"}[self.met]
        return data


def time_row(
    case: str,
    samples: dict[str, Samples],
    ours: str,
    baseline: str,
    *,
    at_most: float | None = None,
    at_least: float | None = None,
    metric: str = "time",
    note: str = "",
) -> Row:
    """Compare median times.

    With ``metric="time"`` the ratio is ours over the baseline, bounded by ``at_most``;
    otherwise (a speed-up, a throughput) it is the baseline over ours, bounded by
    ``at_least``. Without a bound the row is for information.
    """
    mine, theirs = samples[ours], samples[baseline]
    faster = metric != "time"
    ratio = theirs.median_s / mine.median_s if faster else mine.median_s / theirs.median_s
    bound = at_least if faster else at_most
    met = None
    if bound is not None:
        met = ratio >= bound if faster else ratio <= bound
    target = "none" if bound is None else (f">= {bound:g}x" if faster else f"<= {bound:g}x")
    if theirs.timed_out:
        # A stopped baseline took at least its limit: the ratio is a lower bound.
        note = "; ".join(filter(None, [note, "baseline stopped at its time limit: ratio >= shown"]))
        met = True if met else None
    return Row(
        case,
        metric,
        ours,
        baseline,
        mine.median_s,
        theirs.median_s,
        ratio,
        target,
        met,
        mine.peak,
        theirs.peak,
        f"{len(mine.seconds)}/{len(theirs.seconds)}",
        note,
    )


def memory_row(
    case: str, samples: dict[str, Samples], ours: str, baseline: str, *, at_most: float
) -> Row:
    """Compare the memory each added at its peak above its starting point."""
    mine, theirs = samples[ours], samples[baseline]
    ratio = mine.added / theirs.added
    return Row(
        case,
        "peak memory added",
        ours,
        baseline,
        mine.added,
        theirs.added,
        ratio,
        f"<= {at_most:g}x",
        ratio <= at_most,
        mine.peak,
        theirs.peak,
        f"{len(mine.seconds)}/{len(theirs.seconds)}",
        "values in MB above the process's memory before the load",
    )


def check_row(
    case: str, metric: str, ours: str, value: float, target: str, met: bool, samples: Samples
) -> Row:
    """An absolute check with no baseline (a limit, or a count of requests)."""
    return Row(
        case,
        metric,
        ours,
        "-",
        value,
        None,
        None,
        target,
        met,
        samples.peak,
        None,
        str(len(samples.seconds)),
    )
