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
from .cache import Cache
from .client import Client
from .errors import CaiFramesError
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


@main.command("sql")
@click.argument("dataset_id")
@click.argument("query")
@click.option("--name", default="scores", show_default=True, help="The view's name.")
@click.option("--batch", "batch_id", help="A given batch ID (default: the latest successful).")
@click.option("--raw", is_flag=True, help="Expose the nested records as written.")
@click.option("--offline", is_flag=True, help="Use the cache only.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help=_CACHE_DIR_HELP)
@click.option("--max-rows", default=50, show_default=True, help="Rows to print at most.")
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
            frame = con.sql(query).df()
        except duckdb.Error as exc:
            raise click.ClickException(f"the query failed: {exc}") from exc
    with pd.option_context("display.max_rows", max_rows, "display.width", 200):
        click.echo(frame.to_string(index=False, max_rows=max_rows))


@main.group()
def cache() -> None:
    """Look at or clear the local cache."""


@cache.command("list")
@click.option("--cache-dir", type=click.Path(path_type=Path), help=_CACHE_DIR_HELP)
def cache_list(cache_dir: Path | None) -> None:
    """List the complete cached batches, newest first within each dataset."""
    store = Cache(cache_dir or Settings.from_env().cache_dir)
    entries = store.entries()
    if not entries:
        click.echo(f"no complete entries in {store.root}")
        return
    rows = [
        {
            "sandbox": e.sandbox,
            "dataset": e.dataset_id,
            "batch": e.batch_id,
            "created": pd.Timestamp(e.created, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M"),
            "parts": len(e.parts),
            "MB": round(e.size / 1e6, 1),
            "downloaded": e.downloaded_at,
        }
        for e in entries
    ]
    click.echo(f"{store.root}\n")
    click.echo(pd.DataFrame(rows).to_string(index=False))


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
        store = Cache(cache_dir or settings.cache_dir)
        if dataset_id and not sandbox:
            sandbox = settings.sandbox
        what = f"dataset {dataset_id}" if dataset_id else "every dataset"
        if not yes:
            click.confirm(f"Remove the cached batches of {what} in {store.root}?", abort=True)
        freed = store.clear(sandbox=sandbox, dataset_id=dataset_id)
    click.echo(f"freed {freed / 1e6:.1f} MB")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address.")
@click.option("--port", default=8765, show_default=True, help="Port (0 for any free one).")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated data.")
def emulate(host: str, port: int, seed: int) -> None:
    """Serve the AEP emulator until interrupted, printing the settings to use it."""
    from .emulator import Emulator

    with _cli_errors(), Emulator(seed=seed, host=host, port=port) as emu:
        click.echo("# AEP emulator running; in another shell:")
        for key, value in emu.env().items():
            click.echo(f"export {key}={value}")
        click.echo("# datasets:")
        for dataset_id in emu.dataset_ids:
            click.echo(f"#   {dataset_id}")
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


@contextmanager
def _cli_errors() -> Iterator[None]:
    """Turn library errors into a one-line message and exit status 1."""
    try:
        yield
    except CaiFramesError as exc:
        raise click.ClickException(str(exc)) from exc
