"""Fixtures shared by every test: an isolated environment and cache folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Clear every AEP_/CAI_FRAMES_ variable and point the cache at a temporary folder.

    Yields:
        The cache folder the test runs with.
    """
    for name in list(os.environ):
        if name.startswith(("AEP_", "CAI_FRAMES_")):
            monkeypatch.delenv(name)
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("CAI_FRAMES_CACHE_DIR", str(cache_dir))
    yield cache_dir
