"""What one measurement runs, in a process of its own.

``python -m benchmarks.jobs '{"job": ..., ...}'`` prepares the job (imports, emulator,
file lists: none of it timed), resets the process's peak memory, runs the job once and
prints one JSON line: the seconds it took, the peak resident memory while it ran
(``VmHWM``, in MB) and what it added above the memory held before it started, plus any
counts the job reports. A fresh process per measurement keeps one job's allocations,
caches and threads from weighing on the next.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Job = Callable[[], dict[str, Any]]

CATALOG = "/data/foundation/catalog"
EXPORT = "/data/foundation/export"


def warm_ours(p: dict[str, Any]) -> Job:
    """``load_scores`` from the cache, offline."""
    from cai_frames import load_scores

    def run() -> dict[str, Any]:
        frame = load_scores(
            p["dataset_id"], offline=True, cache_dir=p["cache_dir"], columns=p.get("columns")
        )
        return {"rows": len(frame)}

    return run


def warm_floor(p: dict[str, Any]) -> Job:
    """The floor: one ``pyarrow.parquet.read_table`` of every part, Arrow-backed dtypes."""
    import pandas as pd
    import pyarrow.parquet as pq

    def run() -> dict[str, Any]:
        table = pq.read_table(p["files"], columns=p.get("columns"))
        return {"rows": len(table.to_pandas(types_mapper=pd.ArrowDtype))}

    return run


def warm_concat(p: dict[str, Any]) -> Job:
    """The usual notebook way: ``pandas.read_parquet`` per part, then ``pandas.concat``."""
    import pandas as pd

    def run() -> dict[str, Any]:
        return {"rows": len(pd.concat([pd.read_parquet(f) for f in p["files"]]))}

    return run


def warm_duckdb(p: dict[str, Any]) -> Job:
    """DuckDB's ``read_parquet`` over the parts, then ``.df()``."""
    import duckdb

    def run() -> dict[str, Any]:
        return {"rows": len(duckdb.read_parquet(p["files"]).df())}

    return run


def cold_ours(p: dict[str, Any]) -> Job:
    """``download_scores`` into an empty cache, from the emulator named by ``env``."""
    from cai_frames import download_scores

    os.environ.update(p["env"])
    cache_dir = tempfile.mkdtemp(prefix="cai-bench-cold-", dir=p["scratch"])

    def run() -> dict[str, Any]:
        entry = download_scores(p["dataset_id"], cache_dir=cache_dir, progress=False)
        return {"parts": len(entry.parts), "bytes": entry.size}

    return run


def cold_curl(p: dict[str, Any]) -> Job:
    """The same parts fetched by ``curl``: one after another, or ``xargs -P`` at once."""
    out = Path(tempfile.mkdtemp(prefix="cai-bench-curl-", dir=p["scratch"]))
    headers = [arg for name, value in p["headers"].items() for arg in ("-H", f"{name}: {value}")]
    curl = ["curl", "-sS", "--fail", *headers]
    pairs = [(str(out / name), url) for name, url in p["parts"]]

    def run() -> dict[str, Any]:
        if p["parallel"] <= 1:
            for path, url in pairs:
                subprocess.run([*curl, "-o", path, url], check=True)
        else:
            listed = "\0".join(arg for path, url in pairs for arg in ("-o", path, url))
            command = ["xargs", "-0", "-P", str(p["parallel"]), "-n", "3", *curl]
            subprocess.run(command, input=listed.encode(), check=True)
        return {"parts": len(pairs), "bytes": sum(f.stat().st_size for f in out.iterdir())}

    return run


def sql_ours(p: dict[str, Any]) -> Job:
    """``scores_view`` over the cached batch, then the query (or only the view)."""
    from cai_frames import scores_view

    def run() -> dict[str, Any]:
        con = scores_view(p["dataset_id"], offline=True, cache_dir=p["cache_dir"])
        rows = con.sql(p["query"]).fetchall() if p.get("query") else []
        return {"result_rows": len(rows)}

    return run


def sql_duckdb(p: dict[str, Any]) -> Job:
    """The same query straight on DuckDB's ``read_parquet`` (or only its view)."""
    import duckdb

    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in p["files"])
    source = f"read_parquet([{listed}], union_by_name = true)"

    def run() -> dict[str, Any]:
        con = duckdb.connect()
        con.execute(f"CREATE VIEW parts AS SELECT * FROM {source}")
        rows = con.sql(p["query"]).fetchall() if p.get("query") else []
        return {"result_rows": len(rows)}

    return run


def again_ours(p: dict[str, Any]) -> Job:
    """A second ``load_scores`` with the latest batch cached, beside a running emulator.

    With ``offline`` set the load makes no request: the same process, emulator and all,
    so the two differ only by the requests.
    """
    from benchmarks.serve import spec_from_dict
    from cai_frames import load_scores
    from cai_frames.emulator import Emulator

    spec = spec_from_dict(p["spec"])
    emu = Emulator(datasets=[spec], data_dir=p["data_dir"]).start()
    os.environ.update(emu.env())

    def run() -> dict[str, Any]:
        emu.reset_requests()
        frame = load_scores(
            spec.dataset_id, cache_dir=p["cache_dir"], progress=False, offline=p["offline"]
        )
        paths = [path for _, path, _ in emu.requests]
        return {
            "rows": len(frame),
            "catalog_requests": sum(path.startswith(CATALOG) for path in paths),
            "file_requests": sum(path.startswith(EXPORT) for path in paths),
            "other_requests": sum(not path.startswith((CATALOG, EXPORT)) for path in paths),
        }

    return run


JOBS: dict[str, Callable[[dict[str, Any]], Job]] = {
    f.__name__: f
    for f in (
        warm_ours,
        warm_floor,
        warm_concat,
        warm_duckdb,
        cold_ours,
        cold_curl,
        sql_ours,
        sql_duckdb,
        again_ours,
    )
}


def _status_mb(field: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def _reset_peak() -> bool:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so the peak is the job's own.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def main() -> None:
    """Run the job given as JSON in ``argv[1]`` and print its measurement."""
    params = json.loads(sys.argv[1])
    job = JOBS[params["job"]](params)
    reset = _reset_peak()
    before = _status_mb("VmRSS") or 0.0
    started = time.perf_counter()
    extra = job()
    seconds = time.perf_counter() - started
    peak = _status_mb("VmHWM") if reset else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"seconds": seconds, "peak_mb": peak, "added_mb": max(peak - before, 0.0)}
    print(json.dumps({**result, "extra": extra}), flush=True)


if __name__ == "__main__":
    main()
