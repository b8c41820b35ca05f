"""The ``cai-frames`` command: a thin layer over the public API.

Only this module configures logging output; the library itself attaches no handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import pandas as pd

from . import __version__
from .api import download_scores, load_scores, scores_view
from .cache import Cache, CacheEntry
from .client import Client
from .compare import RunComparison, compare_runs
from .errors import CaiFramesError
from .history import list_runs
from .settings import Settings, default_cache_dir

_CACHE_DIR_HELP = "Cache folder (default: CAI_FRAMES_CACHE_DIR or the user cache folder)."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cai-frames")
@click.option("-v", "--verbose", count=True, help="More log output (-v INFO, -vv DEBUG).")
def main(verbose: int) -> None:
    """Customer AI scores from Adobe Experience Platform, as DataFrames and SQL."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    help=_CACHE_DIR_HELP + " The demo defaults to an 'emulator' folder inside it.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the generated data.")
@click.option("--progress/--no-progress", default=True, help="Show download progress.")
def demo(cache_dir: Path | None, seed: int, progress: bool) -> None:
    """Run the whole job against the embedded emulator and print a summary."""
    from .emulator import Emulator

    cache_dir = cache_dir or default_cache_dir() / "emulator"
    with _cli_errors(), Emulator(seed=seed) as emu:
        dataset_id = emu.dataset_id("churn")
        click.echo(f"Emulator serving {len(emu.dataset_ids)} datasets at {emu.platform_url}")
        with Client(settings=Settings.from_env(emu.env(), cache_dir=cache_dir)) as client:
            started = time.perf_counter()
            entry = download_scores(dataset_id, client=client, progress=progress)
            fetched = _file_requests(emu)
            scores = load_scores(dataset_id, client=client, progress=False)
            elapsed = time.perf_counter() - started
            how = f"downloaded in {fetched} requests" if fetched else "already cached"
            click.echo(
                f"Dataset {dataset_id}, batch {entry.batch_id}: {len(entry.parts)} parts, "
                f"{entry.size / 1e6:.1f} MB, {how}\n"
                f"Cache entry: {entry.path}\n"
                f"See it with: cai-frames cache list --cache-dir {cache_dir}\n"
                f"Loaded {len(scores):,} rows x {scores.shape[1]} columns in {elapsed:.2f} s\n"
            )
            click.echo(_summary(scores))

            emu.reset_requests()
            started = time.perf_counter()
            load_scores(dataset_id, client=client, progress=False)
            click.echo(
                f"\nSecond load: {_file_requests(emu)} file requests, "
                f"{time.perf_counter() - started:.2f} s (served from the cache)"
            )
            con = scores_view(dataset_id, client=client, progress=False)
            buckets = con.sql(_BUCKET_SQL).df()
            click.echo("\nDuckDB view 'scores':\n" + buckets.to_string(index=False))


_BUCKET_SQL = """
    SELECT CASE WHEN score < 25 THEN 'low' WHEN score <= 74 THEN 'medium' ELSE 'high' END
               AS bucket,
           count(*) AS profiles,
           round(avg(probability), 3) AS mean_probability
    FROM scores GROUP BY bucket ORDER BY min(score)
"""


def _file_requests(emu: Any) -> int:
    return sum(1 for _, path, _ in emu.requests if "/data/foundation/export/" in path)


@main.command()
@click.argument("dataset_id")
@click.option("--batch", "batch_id", help="A given batch ID (default: the latest successful).")
@click.option("--offline", is_flag=True, help="Use the cache only.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help=_CACHE_DIR_HELP)
@click.option("--progress/--no-progress", default=True, help="Show download progress.")
def download(
    dataset_id: str, batch_id: str | None, offline: bool, cache_dir: Path | None, progress: bool
) -> None:
    """Download a score batch into the cache and print where it is."""
    with _cli_errors():
        entry = download_scores(
            dataset_id, batch_id=batch_id, offline=offline, cache_dir=cache_dir, progress=progress
        )
    click.echo(f"batch {entry.batch_id}: {len(entry.parts)} parts, {entry.size:,} bytes")
    click.echo(str(entry.path))


def _view_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter(f"the view name {value!r} is blank; pass a name such as scores")
    return value


@main.command("sql")
@click.argument("dataset_id")
@click.argument("query")
@click.option(
    "--name", default="scores", show_default=True, callback=_view_name, help="The view's name."
)
@click.option("--batch", "batch_id", help="A given batch ID (default: the latest successful).")
@click.option("--raw", is_flag=True, help="Expose the nested records as written.")
@click.option("--offline", is_flag=True, help="Use the cache only.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help=_CACHE_DIR_HELP)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Rows to print at most.",
)
def sql_command(
    dataset_id: str,
    query: str,
    name: str,
    batch_id: str | None,
    raw: bool,
    offline: bool,
    cache_dir: Path | None,
    max_rows: int,
) -> None:
    """Run a SQL QUERY over a view of the scores (named 'scores' by default)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise click.ClickException(f"the query failed: {exc}") from exc
    if not statements:
        raise click.UsageError(
            f"the query {query!r} holds no statement; pass a SELECT, such as "
            '"SELECT count(*) FROM scores"'
        )
    with _cli_errors():
        con = scores_view(
            dataset_id,
            name=name,
            batch_id=batch_id,
            raw=raw,
            offline=offline,
            cache_dir=cache_dir,
            progress=False,
        )
        try:
            result = con.sql(query)
            if result is None or statements[-1].type in _no_result_statements():
                return
            # One row past the limit tells whether rows were left out, without fetching all.
            frame = result.limit(max_rows + 1).df()
        except duckdb.Error as exc:
            raise click.ClickException(f"the query failed: {exc}") from exc
    with pd.option_context("display.width", 200):
        click.echo(frame.head(max_rows).to_string(index=False))
    if len(frame) > max_rows:
        click.echo(f"(the first {max_rows} rows; --max-rows to show more)")


def _no_result_statements() -> frozenset[Any]:
    """Statement types that only change the session or the catalog (SET, CREATE, ...)."""
    import duckdb

    kinds = ["SET", "VARIABLE_SET", "TRANSACTION", "LOAD", "ATTACH", "DETACH", "CREATE"]
    kinds += ["CREATE_FUNC", "DROP", "ALTER", "VACUUM", "PREPARE"]
    return frozenset(getattr(duckdb.StatementType, kind) for kind in kinds)


@main.command()
@click.argument("segment_id")
@click.option("--fields", help="Comma-separated XDM paths to export (default: every field).")
@click.option("--dataset", "dataset_id", help="Profile dataset to write into (default: new).")
@click.option("--job", "job_id", help="Wait for or reuse this export job, starting none.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="Seconds to wait for the job.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds between polls.",
)
@click.option("--cache-dir", type=click.Path(path_type=Path), help=_CACHE_DIR_HELP)
@click.option("--progress/--no-progress", default=True, help="Show the job's state and download.")
def audience(
    segment_id: str,
    fields: str | None,
    dataset_id: str | None,
    job_id: str | None,
    timeout: float,
    poll_interval: float,
    cache_dir: Path | None,
    progress: bool,
) -> None:
    """Export the audience SEGMENT_ID to a dataset, wait for the job, and load it."""
    from .audience import load_audience
    from .audience_export import export_audience

    with _cli_errors(), Client(cache_dir=cache_dir) as client:
        # An export job can run for an hour: check the cache folder before starting one.
        _open_cache(cache_dir, client.settings)
        result = export_audience(
            segment_id,
            fields=fields,
            dataset_id=dataset_id,
            job_id=job_id,
            timeout=timeout,
            poll_interval=poll_interval,
            progress=progress,
            client=client,
        )
        members = load_audience(result, client=client, cache_dir=cache_dir, progress=progress)
    made = "created" if result.dataset_created else "existing"
    click.echo(f"dataset {result.dataset_id} ({made})")
    click.echo(f"export job {result.job_id}: {result.status}, batch {', '.join(result.batch_ids)}")
    click.echo(f"loaded {len(members):,} rows x {members.shape[1]} columns")
    click.echo(", ".join(str(c) for c in members.columns))


@main.group()
def cache() -> None:
    """Look at or clear the local cache."""


@cache.command("list")
@click.option("--cache-dir", type=click.Path(path_type=Path), help=_CACHE_DIR_HELP)
def cache_list(cache_dir: Path | None) -> None:
    """List the cached runs (complete batches) of each dataset, newest first."""
    with _cli_errors():
        store = _open_cache(cache_dir, Settings.from_env())
        entries = store.entries()
    if not entries:
        click.echo(f"no complete entries in {store.root}")
        return
    click.echo(f"{store.root}")
    by_dataset: dict[tuple[str, str], list[CacheEntry]] = {}
    for entry in entries:
        by_dataset.setdefault((entry.sandbox, entry.dataset_id), []).append(entry)
    for (sandbox, dataset_id), runs in sorted(by_dataset.items()):
        plural = "s" if len(runs) != 1 else ""
        click.echo(f"\nsandbox {sandbox}, dataset {dataset_id}: {len(runs)} run{plural}")
        click.echo(_runs_table(runs))


def _runs_table(entries: list[CacheEntry]) -> str:
    rows = [
        {
            "batch": e.batch_id,
            "created": e.created_at.strftime("%Y-%m-%d %H:%M"),
            "replaces": ", ".join(e.predecessors) or "-",
            "parts": len(e.parts),
            "MB": round(e.size / 1e6, 1),
            "downloaded": e.downloaded_at,
        }
        for e in entries
    ]
    return pd.DataFrame(rows).to_string(index=False)


@cache.command("prune")
@click.option("--keep", type=int, required=True, help="Runs to keep per dataset (newest first).")
@click.option("--sandbox", help="Only this sandbox.")
@click.option("--dataset", "dataset_id", help="Only this dataset.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help=_CACHE_DIR_HELP)
def cache_prune(
    keep: int, sandbox: str | None, dataset_id: str | None, cache_dir: Path | None
) -> None:
    """Drop all but the KEEP newest runs of each dataset; the newest is always kept.

    Incomplete entries (interrupted downloads) are left for the next download to resume.
    """
    with _cli_errors():
        settings = Settings.from_env()
        store = _open_cache(cache_dir, settings)
        if dataset_id and not sandbox:
            sandbox = settings.sandbox
        removed = store.prune(keep, sandbox=sandbox, dataset_id=dataset_id)
    for entry in removed:
        click.echo(f"removed batch {entry.batch_id} of dataset {entry.dataset_id}")
    freed = sum(e.size for e in removed)
    click.echo(f"pruned {len(removed)} run(s), freed {freed / 1e6:.1f} MB")


@cache.command("verify")
@click.option("--repair", is_flag=True, help="Remove broken parts; the next download refetches.")
@click.option(
    "--quick",
    is_flag=True,
    help="Check sizes and footers only; misses damage inside the data pages.",
)
@click.option("--cache-dir", type=click.Path(path_type=Path), help=_CACHE_DIR_HELP)
def cache_verify(repair: bool, quick: bool, cache_dir: Path | None) -> None:
    """Re-read every cached part, data pages included (exit 1 if one is broken)."""
    with _cli_errors():
        store = _open_cache(cache_dir, Settings.from_env())
        checks = store.verify(repair=repair, quick=quick)
    broken = [check for check in checks if check.problems]
    for check in checks:
        state = "skipped" if check.skipped else "ok" if check.ok else "repaired"
        if check.problems and not check.repaired:
            state = "BROKEN"
        click.echo(f"{state:9}{check.path}")
        for name, problem in check.problems:
            click.echo(f"         {name} {problem}")
    click.echo(f"{len(checks)} entries checked, {len(broken)} broken")
    if broken and repair:
        click.echo("repaired entries are incomplete: the next download fetches what was removed")
    if broken and not repair:
        raise click.exceptions.Exit(1)


@cache.command("clear")
@click.option("--sandbox", help="Only this sandbox.")
@click.option("--dataset", "dataset_id", help="Only this dataset.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help=_CACHE_DIR_HELP)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(
    sandbox: str | None, dataset_id: str | None, cache_dir: Path | None, yes: bool
) -> None:
    """Remove cached batches (all of them unless narrowed down)."""
    with _cli_errors():
        settings = Settings.from_env()
        store = _open_cache(cache_dir, settings)
        if dataset_id and not sandbox:
            sandbox = settings.sandbox
        what = f"dataset {dataset_id}" if dataset_id else "every dataset"
        if not yes:
            click.confirm(f"Remove the cached batches of {what} in {store.root}?", abort=True)
        freed = store.clear(sandbox=sandbox, dataset_id=dataset_id)
    click.echo(f"freed {freed / 1e6:.1f} MB")


@main.command("history")
@click.argument("dataset_id")
@click.option("--instance", help="The Customer AI instance, when the dataset holds several.")
@click.option("--offline", is_flag=True, help="Use the cache only.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help=_CACHE_DIR_HELP)
@click.option(
    "--movers",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Biggest movers to print.",
)
@click.option("--progress/--no-progress", default=True, help="Show download progress.")
def history_command(
    dataset_id: str,
    instance: str | None,
    offline: bool,
    cache_dir: Path | None,
    movers: int,
    progress: bool,
) -> None:
    """Print the cached runs of a dataset and compare the last two."""
    with _cli_errors():
        entries = list_runs(dataset_id, offline=offline, progress=progress, cache_dir=cache_dir)
        if not entries:
            raise click.ClickException(f"no cached run of dataset {dataset_id}; load it online.")
        click.echo(f"dataset {dataset_id}: {len(entries)} cached run(s), newest first")
        click.echo(_runs_table(entries))
        if len(entries) < 2:
            click.echo("\nOnly one run is cached: the next scoring run can be compared with it.")
            return
        # The newest run was fetched above; comparing needs no more network calls.
        result = compare_runs(dataset_id, instance=instance, offline=True, cache_dir=cache_dir)
    click.echo(_comparison_text(result, movers))


def _comparison_text(result: RunComparison, movers: int) -> str:
    day = "%Y-%m-%d"
    shares = result.shares.map(lambda share: f"{share:.1%}")
    columns = ["profile_id", "score_before", "score_after", "score_delta"]
    columns += ["bucket_before", "bucket_after"]
    return "\n".join(
        [
            f"\nrun {result.before} ({result.before_date:{day}}) -> {result.after} "
            f"({result.after_date:{day}}), instance {result.instance}",
            "\nBucket shares (low < 25, medium 25-74, high > 74):",
            shares.to_string(),
            "\nProfiles in both runs, bucket before (rows) x after (columns):",
            result.transitions.to_string(),
            f"\nPSI on the before run's score deciles: {result.psi:.4f}",
            f"Appeared: {len(result.appeared):,} profiles; disappeared: "
            f"{len(result.disappeared):,}",
            f"\nBiggest movers ({min(movers, len(result.deltas))} of {len(result.deltas):,}):",
            result.movers(movers)[columns].to_string(index=False),
        ]
    )


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Loopback address to listen on (127.0.0.1, ::1 or localhost).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port (0 for any free one).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the generated data.")
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds before the first byte of every response, like a distant server.",
)
@click.option(
    "--bandwidth",
    type=click.FloatRange(min=0, min_open=True),
    help="Bytes per second each connection is paced to, e.g. 10e6 (default: no cap).",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="KIND[:KEY=VALUE,...]",
    help="A fault switch, repeatable, such as drop_connection:count=3 or "
    "status_error:status=503,fraction=0.1 (kinds in cai_frames.emulator.faults).",
)
@click.option("--fault-seed", default=0, show_default=True, help="Seed of the faults' picks.")
def emulate(
    host: str,
    port: int,
    seed: int,
    latency: float,
    bandwidth: float | None,
    faults: tuple[str, ...],
    fault_seed: int,
) -> None:
    """Serve the AEP emulator until interrupted, printing the settings to use it."""
    from .emulator import Emulator
    from .emulator.faults import Faults, parse_switch

    try:
        switches = [parse_switch(text) for text in faults]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from exc
    try:
        emulator = Emulator(
            seed=seed,
            host=host,
            port=port,
            latency=latency,
            bandwidth=bandwidth,
            faults=Faults(*switches, seed=fault_seed),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    with _cli_errors(), emulator as emu:
        click.echo("# AEP emulator running; in another shell:")
        for key, value in emu.env().items():
            click.echo(f"export {key}={value}")
        click.echo("# datasets:")
        for dataset_id in emu.dataset_ids:
            click.echo(f"#   {dataset_id}")
        segments = emu.segments()
        if segments:
            click.echo("# segments (for cai-frames audience):")
            for segment in segments:
                click.echo(f"#   {segment.segment_id}  {segment.name}")
        if switches:
            click.echo(f"# faults: {', '.join(faults)} (seed {fault_seed})")
        click.echo("# Ctrl-C to stop")
        try:
            emu.serve_forever()
        except KeyboardInterrupt:
            pass


def _summary(scores: pd.DataFrame) -> str:
    """Profiles, score range and mean probability per score decile, as text."""
    ranks = scores["score"].rank(method="first")
    deciles = pd.qcut(ranks, 10, labels=list(range(1, 11)))
    table = (
        scores.assign(decile=deciles)
        .groupby("decile", observed=True)
        .agg(
            profiles=("score", "size"),
            min_score=("score", "min"),
            max_score=("score", "max"),
            mean_probability=("probability", "mean"),
        )
        .round({"mean_probability": 3})
    )
    return "Score deciles:\n" + table.to_string()


def _open_cache(cache_dir: Path | None, settings: Settings) -> Cache:
    """The cache the command works on, refused at once when its path cannot be a folder."""
    store = Cache(cache_dir or settings.cache_dir)
    store.check_folder()
    return store


@contextmanager
def _cli_errors() -> Iterator[None]:
    """Turn library errors into a one-line message and exit status 1."""
    try:
        yield
    except CaiFramesError as exc:
        raise click.ClickException(str(exc)) from exc
