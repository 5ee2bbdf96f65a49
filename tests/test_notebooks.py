"""The notebooks run top to bottom on the embedded sample (CPU), and are stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.paths import NOTEBOOKS

NOTEBOOKS = sorted((NOTEBOOKS).glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.get("outputs") and c.get("execution_count") is None for c in code)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbclient
    import nbformat

    monkeypatch.setenv("CLIMDL_NOTEBOOK_WORK", str(tmp_path))
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    if path.stem != "04_scaling_out":  # the scaling notebook shows commands, not figures
        assert images, "the notebook draws no figure"
    nbformat.write(nb, tmp_path / path.name)  # kept for inspection on failure
    assert os.environ["CLIMDL_NOTEBOOK_WORK"] == str(tmp_path)
