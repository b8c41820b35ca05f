"""The shipped notebook runs top to bottom against the emulator."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_notebook_scores_runs_and_shows_the_distribution(tmp_path: Path) -> None:
    notebook = nbformat.read(REPO_ROOT / "notebooks" / "scores.ipynb", as_version=4)

    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any("image/png" in out.get("data", {}) for out in outputs), "no plot was drawn"
    head = next(out for out in outputs if "text/html" in out.get("data", {}))
    assert "profile_id" in head["data"]["text/html"]
