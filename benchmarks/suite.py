"""The cases: each sets up its data, measures ours beside its baselines, and states rows.

Every figure is a ratio against a baseline measured in the same run on the same files,
since absolute times drift from machine to machine and run to run.
"""

from __future__ import annotations

import inspect
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.measure import Row, Variant, check_row, measure, memory_row, time_row
from benchmarks.serve import served, spec_dict
from cai_frames import download_scores, load, xdm
from cai_frames.cache import CacheEntry
from cai_frames.client import Client
from cai_frames.emulator import DatasetSpec, Emulator
from cai_frames.settings import Settings

logger = logging.getLogger(__name__)

SEED = 7
DECILES = (
    "SELECT least({score} // 10, 9) AS decile, count(*) AS profiles, "
    "avg({probability}) AS mean_probability FROM {source} GROUP BY 1 ORDER BY 1"
)


@dataclass(frozen=True)
class Size:
    """How big each case's data is, and how it is measured.

    Attributes:
        warm: (rows, parts) of the cached batch loaded warm, queried and loaded again.
        cold: (rows, parts) of the batch downloaded cold.
        large: (rows, parts) of a batch with large parts, for the client's memory.
        view: (rows, parts) of the batch a view is created over.
        full: (rows, parts) of a real-size batch, or None.
        latency: First-byte latency of the shaped network, seconds.
        bandwidth: Bytes per second per connection of the shaped network.
        repeat: Runs of each variant (slow baselines run once).
        slow_limit: Seconds after which DuckDB's ``.df()`` is stopped: it builds a
            Python object per nested value, which at 4M rows takes minutes and ~20 GB.
    """

    warm: tuple[int, int]
    cold: tuple[int, int]
    large: tuple[int, int]
    view: tuple[int, int]
    full: tuple[int, int] | None
    latency: float
    bandwidth: float
    repeat: int
    slow_limit: float


SIZES = {
    "small": Size((20_000, 8), (12_000, 40), (60_000, 2), (1_200, 120), None, 0.02, 5e6, 2, 60),
    "medium": Size(
        (4_000_000, 100), (1_000_000, 200), (4_000_000, 8), (60_000, 600), None, 0.03, 10e6, 5, 60
    ),
    "full": Size(
        (4_000_000, 100),
        (1_000_000, 200),
        (4_000_000, 8),
        (60_000, 600),
        (46_700_000, 640),
        0.03,
        10e6,
        3,
        60,
    ),
}


def default_concurrency() -> int:
    """Parts :class:`cai_frames.Client` downloads at once unless told otherwise."""
    return int(inspect.signature(Client).parameters["concurrency"].default)


class Context:
    """The data folder, the benchmark cache and the size, shared by the cases."""

    def __init__(self, data_dir: Path, size: Size, repeat: int | None) -> None:
        """Keep generated data under ``data_dir/emulator``, cached batches in ``cache``."""
        self.data_dir = data_dir
        self.emulator_dir = data_dir / "emulator"
        self.cache_dir = data_dir / "cache"
        self.scratch = data_dir / "scratch"
        self.size = size
        self.repeat = repeat or size.repeat
        self.clear_scratch()

    def clear_scratch(self) -> None:
        """Empty the folder the download runs write into."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)

    def spec(self, kind: str, shape: tuple[int, int]) -> DatasetSpec:
        """The benchmark dataset of one kind and shape (same spec, same data, reused)."""
        rows, parts = shape
        name = f"Customer AI Scores - bench {kind} {rows}x{parts}"
        return DatasetSpec(name=name, rows=rows, parts=parts, markers=False, seed=SEED)

    def cached(self, spec: DatasetSpec) -> CacheEntry:
        """The batch of ``spec`` in the benchmark cache, generated and downloaded if new."""
        with Emulator(datasets=[spec], data_dir=self.emulator_dir) as emu:
            settings = Settings.from_env(emu.env(), cache_dir=self.cache_dir)
            with Client(settings=settings) as client:
                entry = download_scores(spec.dataset_id, client=client, progress=False)
        return entry

    def variant(
        self, job: str, *, slow: bool = False, limit: float | None = None, **params: Any
    ) -> Variant:
        """A job measured ``repeat`` times, or once when ``slow``, stopped after ``limit``."""
        params = {"job": job, "scratch": str(self.scratch), **params}
        return Variant(job, params, 1 if slow else self.repeat, limit)


def _strs(paths: list[Path]) -> list[str]:
    return [str(p) for p in paths]


def warm_case(ctx: Context) -> list[Row]:
    """A cached batch with the full nested record, loaded against three baselines."""
    spec = ctx.spec("warm", ctx.size.warm)
    files = _strs(ctx.cached(spec).part_paths)
    where = {"dataset_id": spec.dataset_id, "cache_dir": str(ctx.cache_dir)}
    samples = measure(
        {
            "load_scores": ctx.variant("warm_ours", **where),
            "read_table": ctx.variant("warm_floor", files=files),
            "read_parquet+concat": ctx.variant("warm_concat", slow=True, files=files, limit=600),
            "duckdb .df()": ctx.variant(
                "warm_duckdb", slow=True, files=files, limit=ctx.size.slow_limit
            ),
        },
        warm=[Path(f) for f in files],
    )
    case = f"warm load {spec.rows:,} rows / {spec.parts} parts"
    return [
        time_row(case, samples, "load_scores", "read_table", at_most=1.25),
        time_row(
            case, samples, "load_scores", "read_parquet+concat", at_least=10, metric="speed-up"
        ),
        time_row(case, samples, "load_scores", "duckdb .df()", metric="speed-up"),
        memory_row(case, samples, "load_scores", "read_table", at_most=1.5),
    ]


def cold_case(ctx: Context) -> list[Row]:
    """Downloads through a shaped network, against curl one by one and ``xargs -P``."""
    spec = ctx.spec("cold", ctx.size.cold)
    large = ctx.spec("large", ctx.size.large)
    size = ctx.size
    workers = default_concurrency()
    with served(
        [spec, large], ctx.emulator_dir, latency=size.latency, bandwidth=size.bandwidth
    ) as env:
        parts, headers = _listing(env, spec)
        ours = {"env": env, "dataset_id": spec.dataset_id}
        samples = measure(
            {
                "download_scores": ctx.variant("cold_ours", **ours),
                "curl one by one": ctx.variant(
                    "cold_curl", slow=True, parts=parts, headers=headers, parallel=1
                ),
                f"xargs -P {workers} curl": ctx.variant(
                    "cold_curl", parts=parts, headers=headers, parallel=workers
                ),
            }
        )
        big = measure(
            {"download_scores": ctx.variant("cold_ours", env=env, dataset_id=large.dataset_id)}
        )
    ctx.clear_scratch()
    shaped = f"{size.latency * 1000:g} ms first byte, {size.bandwidth / 1e6:g} MB/s per connection"
    case = f"cold download {spec.parts} parts ({shaped})"
    note = "ours includes the token, catalog and listing requests; curl gets the URLs given"
    part_mb = big["download_scores"].extra[0]["bytes"] / large.parts / 1e6
    rows = [
        time_row(
            case,
            samples,
            "download_scores",
            f"xargs -P {workers} curl",
            at_least=0.9,
            metric="throughput",
            note=note,
        ),
        time_row(
            case,
            samples,
            "download_scores",
            "curl one by one",
            at_least=5,
            metric="throughput",
            note=note,
        ),
    ]
    for label, found, mb in (
        (f"{spec.parts} parts", samples["download_scores"], _part_mb(samples, spec)),
        (f"{large.parts} parts", big["download_scores"], part_mb),
    ):
        rows.append(
            check_row(
                case,
                f"client peak memory, {label} of {mb:.2f} MB",
                "download_scores",
                found.peak,
                "< 200 MB",
                found.peak < 200,
                found,
            )
        )
    return rows


def _part_mb(samples: dict[str, Any], spec: DatasetSpec) -> float:
    return float(samples["download_scores"].extra[0]["bytes"]) / spec.parts / 1e6


def _listing(env: dict[str, str], spec: DatasetSpec) -> tuple[list[list[str]], dict[str, str]]:
    """The parts' names and URLs, and the headers a curl user would send."""
    with Client(settings=Settings.from_env(env)) as client:
        batch = client.source.resolve_batch(spec.dataset_id)
        parts = [[p.name, p.url] for p in client.source.list_parts(batch)]
        headers = client.session.platform_headers(client.session.tokens.token())
    return parts, headers


def sql_case(ctx: Context) -> list[Row]:
    """Score deciles through the view against DuckDB on the files; a view over many parts."""
    spec = ctx.spec("warm", ctx.size.warm)
    rows = _decile_rows(ctx, spec, f"SQL deciles {spec.rows:,} rows / {spec.parts} parts")
    view = ctx.spec("view", ctx.size.view)
    files = _strs(ctx.cached(view).part_paths)
    where = {"dataset_id": view.dataset_id, "cache_dir": str(ctx.cache_dir)}
    samples = measure(
        {
            "scores_view": ctx.variant("sql_ours", **where),
            "read_parquet view": ctx.variant("sql_duckdb", files=files),
        },
        warm=[Path(f) for f in files],
    )
    case = f"create view over {view.parts} parts"
    mine = samples["scores_view"]
    rows.append(time_row(case, samples, "scores_view", "read_parquet view"))
    rows.append(
        check_row(case, "seconds", "scores_view", mine.median_s, "< 1 s", mine.median_s < 1, mine)
    )
    return rows


def _decile_rows(ctx: Context, spec: DatasetSpec, case: str) -> list[Row]:
    entry = ctx.cached(spec)
    files = _strs(entry.part_paths)
    layout = xdm.find_layout(load.read_schema(entry.part_paths))
    instance = layout.instances[0]
    raw = {c: _dotted(layout.path(instance, c)) for c in ("score", "probability")}
    where = {"dataset_id": spec.dataset_id, "cache_dir": str(ctx.cache_dir)}
    samples = measure(
        {
            "scores_view": ctx.variant(
                "sql_ours", query=DECILES.format(**{c: c for c in raw}, source="scores"), **where
            ),
            "read_parquet": ctx.variant(
                "sql_duckdb", query=DECILES.format(**raw, source="parts"), files=files
            ),
        },
        warm=entry.part_paths,
    )
    return [time_row(case, samples, "scores_view", "read_parquet", at_most=1.1)]


def _dotted(path: str) -> str:
    return ".".join('"' + name.replace('"', '""') + '"' for name in path.split("."))


def again_case(ctx: Context) -> list[Row]:
    """A second online load when the latest batch is cached, against the offline load."""
    spec = ctx.spec("warm", ctx.size.warm)
    entry = ctx.cached(spec)
    where = {"dataset_id": spec.dataset_id, "cache_dir": str(ctx.cache_dir)}
    online = {"spec": spec_dict(spec), "data_dir": str(ctx.emulator_dir), **where}
    samples = measure(
        {
            "load_scores online": ctx.variant("again_ours", offline=False, **online),
            "load_scores offline": ctx.variant("again_ours", offline=True, **online),
        },
        warm=entry.part_paths,
    )
    case = f"nothing new, {spec.rows:,} rows cached"
    found = samples["load_scores online"]
    counts = found.extra[0]
    offline = samples["load_scores offline"].extra
    silent = all(sum(e.values()) == e["rows"] for e in offline)
    exact = silent and all(
        e["catalog_requests"] == 1 and not e["file_requests"] for e in found.extra
    )
    metric = (
        f"requests: {counts['catalog_requests']} catalog, {counts['file_requests']} file, "
        f"{counts['other_requests']} token; offline {'none' if silent else 'some'}"
    )
    return [
        time_row(case, samples, "load_scores online", "load_scores offline", at_most=1.1),
        check_row(
            case,
            metric,
            "load_scores online",
            counts["catalog_requests"],
            "1 catalog, 0 file",
            exact,
            found,
        ),
    ]


def full_case(ctx: Context) -> list[Row]:
    """A real-size batch: aggregates through the view, two columns loaded."""
    if ctx.size.full is None:
        return []
    spec = ctx.spec("full", ctx.size.full)
    rows = _decile_rows(ctx, spec, f"full size SQL deciles {spec.rows:,} rows / {spec.parts} parts")
    entry = ctx.cached(spec)
    layout = xdm.find_layout(load.read_schema(entry.part_paths))
    leaves = [layout.path(layout.instances[0], c) for c in ("score", "probability")]
    where = {"dataset_id": spec.dataset_id, "cache_dir": str(ctx.cache_dir)}
    samples = measure(
        {
            "load_scores 2 columns": ctx.variant(
                "warm_ours", columns=["score", "probability"], **where
            ),
            "read_table 2 columns": ctx.variant(
                "warm_floor", columns=leaves, files=_strs(entry.part_paths)
            ),
        },
        warm=entry.part_paths,
    )
    case = f"full size, 2 columns of {spec.rows:,} rows ({entry.size / 1e9:.1f} GB of parts)"
    rows.append(time_row(case, samples, "load_scores 2 columns", "read_table 2 columns"))
    rows.append(
        memory_row(case, samples, "load_scores 2 columns", "read_table 2 columns", at_most=1.5)
    )
    return rows


CASES: dict[str, Callable[[Context], list[Row]]] = {
    "warm": warm_case,
    "cold": cold_case,
    "sql": sql_case,
    "again": again_case,
    "full": full_case,
}
