"""Every lab notebook runs top to bottom (headless, nbclient)."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_every_built_lab_has_a_notebook():
    from llmlab.labs import SYLLABUS, built_labs

    names = {p.stem for p in NOTEBOOKS}
    for lab_id in built_labs():
        module = next(s.module for s in SYLLABUS if s.id == lab_id)
        assert module in names, f"notebooks/{module}.ipynb is missing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
