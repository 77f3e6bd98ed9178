"""Helpers shared by the tests (imported as ``from helpers import cli``: pytest puts tests/ on the path)."""
import importlib.util
import sys
from pathlib import Path

from click.testing import CliRunner

from tfuad.cli.main import main


def cli(*args, check: bool = False):
    """Run ``tfuad ARGS...`` in-process (arguments turned into strings); the click ``Result``.

    Args:
        *args: The command line after ``tfuad``.
        check: Assert that the command succeeded (its output is the assertion's message).
    """
    result = CliRunner().invoke(main, [str(a) for a in args])
    if check:
        assert result.exit_code == 0, result.output
    return result


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    """Import ``benchmarks/<name>.py`` as a module (benchmarks/ on the path, for its sibling imports)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module
