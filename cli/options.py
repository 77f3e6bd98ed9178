"""Command-line options shared by several ``tfuad`` commands."""
from __future__ import annotations

import math

import click

__all__ = ["schedule_options", "batch_size_option", "method_option", "FPR"]


class _Fraction(click.ParamType):
    """A finite number strictly between 0 and 1 (an FPR limit)."""

    name = "fraction"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or not 0.0 < number < 1.0:
            self.fail(f"{value!r} is not an FPR limit: give a number strictly between 0 and 1, e.g. 0.05", param, ctx)
        return number


#: The parameter type of FPR limits.
FPR = _Fraction()


def method_option(*, multiple: bool = False, default="residual", exportable: bool = False, extra=()):
    """``--method``: a scoring method, with the choices and their summaries taken from the registry.

    Args:
        multiple: Repeatable option.
        default: Default method name(s).
        exportable: Offer only the methods a SavedModel can serve.
        extra: More choices (e.g. ``"all"``).
    """
    from tfuad.detection.methods import METHODS

    names = [n for n, cls in METHODS.items() if not exportable or cls.needs is not None]
    described = "; ".join(f"{n}: {METHODS[n].summary}" for n in names)
    return click.option("--method", "methods" if multiple else "method", multiple=multiple,
                        type=click.Choice([*names, *extra]), default=default, show_default=True,
                        help=f"Scoring method{' (repeatable)' if multiple else ''}. {described}.")


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
