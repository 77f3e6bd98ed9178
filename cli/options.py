"""Command-line options shared by several ``tfuad`` commands."""
from __future__ import annotations

import click

__all__ = ["schedule_options", "batch_size_option"]


def schedule_options(default=None):
    """``--schedule`` and ``--max-steps``: the MAP-TV optimisation schedule and its step limit.

    Args:
        default: Default schedule name; ``None`` means "the one the run was
            calibrated with" (commands that read a calibration).

    Returns:
        A decorator adding both options.
    """
    if default is None:
        schedule_help = ("MAP-TV schedule: paper (500 gradient steps, as Chen et al.) or fast (Adam, 30 steps) "
                         "[default: the one map-tv was calibrated with].")
        steps_help = "Step limit of the MAP-TV schedule [default: the calibrated one]."
    else:
        schedule_help = ("MAP-TV schedule: paper (500 gradient steps, as Chen et al.) or fast (Adam, 30 steps: "
                         "the paper's lesion-map quality in a fraction of the time; see README).")
        steps_help = ("Step limit of the MAP-TV schedule [default: 500 for paper, 30 for fast]; more fast steps "
                      "raise the lesion-map AUROC further at proportional cost.")

    def decorate(command):
        command = click.option("--max-steps", type=click.IntRange(min=1), default=None, help=steps_help)(command)
        return click.option("--schedule", type=click.Choice(["paper", "fast"]), default=default,
                            show_default=default is not None, help=schedule_help)(command)

    return decorate


def batch_size_option(command):
    """``--batch-size``: slices per forward pass, or per MAP-TV restoration batch."""
    return click.option("--batch-size", type=click.IntRange(min=1), default=None,
                        help="Slices per batch [default: 32; map-tv: a whole volume at once where memory "
                             "allows, up to 160 slices of 128 × 128 pixels].")(command)
