"""The package reads as the pipeline: no module imports one of a layer above its own.

Layers, bottom to top (README, "Package layout"); a module may import its own
package and any package of a lower layer, never a higher layer nor a peer
package of its own layer. Imports inside functions count too.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> layer; the longest matching prefix of a module name decides.
LAYERS = {
    "tfuad": 0, "tfuad.errors": 0, "tfuad.files": 0, "tfuad.arrays": 0, "tfuad.canvas": 0, "tfuad.precision": 0,
    "tfuad.metrics": 1, "tfuad.postprocessing": 1, "tfuad.data": 1,
    "tfuad.models": 2, "tfuad.preprocess": 2,
    "tfuad.training": 3,
    "tfuad.detection": 4,
    "tfuad.reports": 5,
    "tfuad.workflows": 6,
    "tfuad.cli": 7, "tfuad.export": 7,
}
#: Top packages that may import each other although they share a layer (faces of one program).
PEERS_ALLOWED = {("tfuad.cli", "tfuad.export")}


def _package(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} is in no layer; add its package to LAYERS")


def _modules():
    """``(module name, file)`` of every module of the installed package (cli/ and export/ included)."""
    for folder, prefix in (("tfuad", "tfuad"), ("cli", "tfuad.cli"), ("export", "tfuad.export")):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([prefix, *parts]), path


def _imports(module: str, path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            yield node.lineno, base


def _violations():
    found = []
    for module, path in _modules():
        own = _package(module)
        for line, name in _imports(module, path):
            if not (name == "tfuad" or name.startswith("tfuad.")):
                continue
            other = _package(name)
            if other == own:
                continue
            if LAYERS[other] > LAYERS[own]:
                found.append(f"{path.relative_to(ROOT)}:{line}: {own} (layer {LAYERS[own]}) imports {name} "
                             f"(layer {LAYERS[other]})")
            elif LAYERS[other] == LAYERS[own] > 0 and {own, other} not in map(set, PEERS_ALLOWED):
                found.append(f"{path.relative_to(ROOT)}:{line}: {own} imports its peer {name} (both layer "
                             f"{LAYERS[own]}); move the shared piece down a layer")
    return found


def test_no_import_climbs_a_layer():
    assert _violations() == []


def test_the_check_sees_a_climbing_import(tmp_path, monkeypatch):
    """The rule itself: a data module importing reports is found, with its line."""
    fake = tmp_path / "tfuad" / "data"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from tfuad.reports.figures import save_figure\n")
    for folder in ("cli", "export"):
        (tmp_path / folder).mkdir()
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert _violations() == ["tfuad/data/bad.py:2: tfuad.data (layer 1) imports tfuad.reports.figures (layer 5)"]


@pytest.mark.parametrize("name, expected", [("tfuad.detection.methods.map_tv", "tfuad.detection"),
                                            ("tfuad.cli.main", "tfuad.cli"), ("tfuad.errors", "tfuad.errors")])
def test_modules_map_to_their_package(name, expected):
    assert _package(name) == expected
