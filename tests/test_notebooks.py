"""The course's notebooks: each runs top to bottom in its shortened form
(``ALEXNET_NOTEBOOK_QUICK=1``: fewer images and epochs, no TensorBoard server), and each is
kept in the repository without outputs. ``make test-notebooks`` runs them; CI calls it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
COURSE = ["01_images_and_classification", "02_convolution_and_the_network",
          "03_activations_softmax_loss", "04_dropout_lrn_pooling", "05_train_and_inspect",
          "06_by_hand_and_after_alexnet", "07_features_by_hand_and_learned"]  # fmt: skip


def test_the_course_is_complete_and_stored_without_outputs():
    import nbformat

    assert [p.stem for p in NOTEBOOKS] == COURSE
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.outputs == [] and c.execution_count is None for c in code), path
        assert nb.metadata.kernelspec.name == "python3", path
        assert "QUICK" in code[0].source, f"{path.name}: the first cell reads the quick switch"
        answers = [c for c in nb.cells if c.cell_type == "markdown" and "<details>" in c.source]
        assert len(answers) >= 3, f"{path.name}: exercises with their answers folded away"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    import nbclient
    import nbformat

    work = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", work, ignore=shutil.ignore_patterns("runs", ".*"))
    monkeypatch.setenv("ALEXNET_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(work / path.name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(work)}})  # fmt: skip
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on failure
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]  # fmt: skip
    assert not errors
