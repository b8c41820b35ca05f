"""Where the team's shared reference files live, for the tests that read them.

The documented AEP example responses and the parquet-testing files sit in a ``shared``
folder beside the repository. A test that needs one skips, saying where it looked, when
the folder is not there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SHARED_DIR = Path(__file__).resolve().parent.parent.parent / "shared"
EXAMPLES_DIR = SHARED_DIR / "aep-examples"


def shared_file(*parts: str) -> Path:
    """The path of a shared reference file; skips the test when it is absent."""
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared reference file not found: {path}")
    return path


def aep_example(name: str) -> dict[str, Any]:
    """One documented example response (the whole fixture: request, status, body...)."""
    file_name = name if name.endswith(".json") else f"{name}.json"
    loaded: dict[str, Any] = json.loads(shared_file("aep-examples", file_name).read_text())
    return loaded
