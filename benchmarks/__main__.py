"""``python -m benchmarks``: run the suite, print the table, write it as JSON."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import Row
from benchmarks.suite import CASES, SIZES, Context, default_concurrency
from cai_frames.settings import default_cache_dir

DEFAULT_CASES = ("warm", "cold", "sql", "again")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="cai_frames against its baselines, side by side, on the same files.",
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="medium")
    parser.add_argument("--repeat", type=int, help="runs of each variant (default per size)")
    parser.add_argument("--json", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=sorted(CASES),
        help=f"cases to run (default: {' '.join(DEFAULT_CASES)}, and full with --size full)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_cache_dir() / "bench",
        help="where generated data and the benchmark cache are kept between runs",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen cases; exit 0 when they ran (targets missed are reported, not fatal)."""
    args = parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    cases = args.cases or [*DEFAULT_CASES, *(["full"] if args.size == "full" else [])]
    size = SIZES[args.size]
    ctx = Context(args.data_dir, size, args.repeat)
    started = time.monotonic()
    rows: list[Row] = []
    for name in cases:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.extend(CASES[name](ctx))
    elapsed = time.monotonic() - started
    print(format_table(rows))
    missed = [r for r in rows if r.met is False]
    print(f"\n{len(rows)} rows, {len(missed)} targets missed, {elapsed:.0f} s, size {args.size}")
    if args.json:
        args.json.write_text(json.dumps(report(args, ctx, rows, elapsed), indent=2))
        print(f"written to {args.json}")
    return 0


def report(args: argparse.Namespace, ctx: Context, rows: list[Row], elapsed: float) -> Any:
    """The run as JSON: where and how it ran, then every row."""
    size = ctx.size
    return {
        "size": args.size,
        "repeat": ctx.repeat,
        "seconds": round(elapsed, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "network": {"latency_s": size.latency, "bandwidth_bytes_per_s": size.bandwidth},
        "concurrency": default_concurrency(),
        "rows": [row.as_json() for row in rows],
    }


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned text table, one block per case."""
    header = ["metric", "ours", "baseline", "ours", "baseline", "ratio", "target", "met"]
    header += ["ours MB", "base MB", "runs"]
    lines: list[str] = []
    case = None
    table = [header]
    for row in rows:
        if row.case != case:
            table.append([f"[{row.case}]"])
            case = row.case
        table.append(_cells(row))
    widths = [max(len(r[i]) for r in table if len(r) > 1) for i in range(len(header))]
    for cells in table:
        if len(cells) == 1:
            lines.append(cells[0])
        else:
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    notes = sorted({f"{r.case}: {r.note}" for r in rows if r.note})
    return "\n".join(lines + ["", *notes])


def _cells(row: Row) -> list[str]:
    unit = "MB" if "memory added" in row.metric else "s" if row.baseline != "-" else ""
    return [
        row.metric,
        row.ours,
        row.baseline,
        _number(row.ours_value, unit),
        _number(row.baseline_value, unit),
        "-" if row.ratio is None else f"{row.ratio:.2f}x",
        row.target,
        {True: "yes", False: "NO", None: "-"}[row.met],
        _number(row.ours_peak_mb, ""),
        _number(row.baseline_peak_mb, ""),
        row.runs,
    ]


def _number(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:.0f}{' ' + unit if unit else ''}"


if __name__ == "__main__":
    sys.exit(main())
