"""Helpers shared by the tests (imported as ``from helpers import cli``: pytest puts tests/ on the path)."""
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
