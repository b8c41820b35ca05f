"""The emulator in a process of its own, for measurements of the client over HTTP.

``python -m benchmarks.serve '{...}'`` generates (or reuses) the datasets, serves them
with the given network shape, prints the client environment as one JSON line and
serves until its standard input closes. Serving from another process keeps the
server's Python threads off the measured client's interpreter lock and out of its
memory, as a real platform would be.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cai_frames.emulator import DatasetSpec, Emulator


def spec_dict(spec: DatasetSpec) -> dict[str, Any]:
    """A spec as JSON can carry it."""
    fields = asdict(spec)
    fields["instances"] = list(spec.instances)
    return fields


def spec_from_dict(fields: dict[str, Any]) -> DatasetSpec:
    """The spec :func:`spec_dict` wrote."""
    status = fields["status"]
    return DatasetSpec(
        **{
            **fields,
            "instances": tuple(fields["instances"]),
            "status": status if isinstance(status, str) else tuple(status),
        }
    )


@contextmanager
def served(
    specs: list[DatasetSpec],
    data_dir: Path,
    *,
    latency: float = 0.0,
    bandwidth: float | None = None,
) -> Iterator[dict[str, str]]:
    """Serve ``specs`` from another process; yield the environment that points at it."""
    config = {
        "specs": [spec_dict(s) for s in specs],
        "data_dir": str(data_dir),
        "latency": latency,
        "bandwidth": bandwidth,
    }
    command = [sys.executable, "-m", "benchmarks.serve", json.dumps(config)]
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the emulator process exited with {process.wait()}")
        yield dict(json.loads(line))
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)


def main() -> None:
    """Serve the configuration in ``argv[1]`` until standard input closes."""
    config = json.loads(sys.argv[1])
    emulator = Emulator(
        datasets=[spec_from_dict(s) for s in config["specs"]],
        data_dir=config["data_dir"],
        latency=config["latency"],
        bandwidth=config["bandwidth"],
    )
    with emulator as emu:
        print(json.dumps(emu.env()), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
