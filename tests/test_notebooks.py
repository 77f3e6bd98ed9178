"""The notebooks in ``notebooks/`` are stored clean and parameterised for quick runs.

Running them is the job of nbmake (``pytest`` collects ``notebooks/*.ipynb``, see
pyproject.toml, in quick mode set by ``notebooks/conftest.py``); these checks are static.
"""
import re
from pathlib import Path

import nbformat
import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_quickstart.ipynb", "02_baur2018_autoencoders.ipynb", "03_chen2020_map_restoration.ipynb",
            "04_deployment.ipynb"]
PARAMETERS = ("QUICK", "DATA", "EPOCHS", "IMAGE_SIZE", "OUT")


def _read(path):
    return nbformat.read(path, as_version=4)


def _parameters_cell(nb):
    return next(c for c in nb.cells if c.cell_type == "code")


def test_the_four_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_valid_and_stored_without_outputs(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} holds outputs"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_code_cell_holds_the_parameters(path, monkeypatch):
    cell = _parameters_cell(_read(path))
    assert "parameters" in cell.metadata.get("tags", [])
    for quick, expected in (("1", True), ("0", False)):
        monkeypatch.setenv("TFUAD_NOTEBOOK_QUICK", quick)
        monkeypatch.delenv("TFUAD_NOTEBOOK_DATA", raising=False)
        monkeypatch.delenv("TFUAD_NOTEBOOK_OUT", raising=False)
        namespace = {}
        exec(cell.source, namespace)
        assert all(name in namespace for name in PARAMETERS)
        assert namespace["QUICK"] is expected
        assert namespace["DATA"] is None and namespace["OUT"] is None  # demo data in a fresh folder


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_call_the_package_instead_of_copying_it(path):
    nb = _read(path)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert not re.search(r"^\s*(def|class) ", code, re.MULTILINE), "cells define functions or classes"
    private = re.findall(r"from tfuad[\w.]* import [^\n]*\b_\w+", code)
    assert not private, f"cells import private names: {private}"
    assert "from tfuad" in code


def test_pytest_runs_the_notebooks_in_quick_mode():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "notebooks" in config["testpaths"] and "--nbmake" in config["addopts"].split()
    conftest = (ROOT / "notebooks" / "conftest.py").read_text(encoding="utf-8")
    assert 'os.environ.setdefault("TFUAD_NOTEBOOK_QUICK", "1")' in conftest
