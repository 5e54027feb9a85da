"""Every notebook in notebooks/ runs from top to bottom without errors."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# what each notebook leaves under its working folder `notebook_out/` when it has run to the end
OUTPUTS = {
    "01_tour.ipynb": ["bank"],
    "02_three_d_coupled.ipynb": ["3d_coupled/bank", "3d_coupled/footprint_sheet.png", "augmentation/labels.json"],
    "03_label_driven_models.ipynb": ["bank", "exchange/model.pt", "exchange.png", "mapper/model.pt", "factors.png",
                                     "set_yaw.png"],
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert not errors
    for rel in OUTPUTS[path.name]:
        assert (tmp_path / "notebook_out" / rel).exists(), rel


def test_there_is_a_notebook():
    assert NOTEBOOKS, "notebooks/ should hold at least the tour notebook"
    assert sorted(OUTPUTS) == [p.name for p in NOTEBOOKS], "list each notebook's outputs in OUTPUTS"
