"""Input checks shared by the evaluation measures, and their typed error.

Every measure in :mod:`tfuad.metrics` that is called with arrays of the wrong
shape, non-finite scores or a nonsensical option raises
:class:`MetricInputError`, an :class:`~tfuad.errors.ArrayError` (so a
:class:`~tfuad.errors.TfuadError` and a :class:`ValueError`) with a one-line
message.

Example:
    >>> check_count(2000, "resamples", minimum=1)
    2000
    >>> check_count(0, "resamples", minimum=1)
    Traceback (most recent call last):
    ...
    tfuad.metrics.checks.MetricInputError: resamples must be an integer >= 1, got 0
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from tfuad.arrays import check_real_finite
from tfuad.errors import ArrayError

__all__ = ["MetricInputError", "check_count", "check_fraction", "check_seed", "same_shape", "as_mask",
           "finite_scores"]


class MetricInputError(ArrayError):
    """Arrays or options that a measure cannot be computed from (one-line message)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def check_count(value, name: str, *, minimum: int = 0) -> int:
    """``value`` as an ``int`` ≥ ``minimum`` (booleans refused).

    Example:
        >>> check_count(3, "k", minimum=2)
        3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise MetricInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_fraction(value, name: str, *, low: float = 0.0, high: float = 1.0,
                   include_low: bool = False, include_high: bool = False) -> float:
    """``value`` as a float inside ``(low, high)`` (ends included on request).

    Example:
        >>> check_fraction(0.95, "confidence")
        0.95
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if include_low else value > low) and (value <= high if include_high else value < high)
    if not ok:
        interval = f"{'[' if include_low else '('}{low:g}, {high:g}{']' if include_high else ')'}"
        raise MetricInputError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def check_seed(seed) -> int:
    """A non-negative integer seed for :func:`numpy.random.default_rng`.

    Example:
        >>> check_seed(7)
        7
    """
    return check_count(seed, "seed", minimum=0)


def same_shape(**arrays) -> list:
    """The arrays as :class:`numpy.ndarray`, refusing different shapes or empty arrays.

    Example:
        >>> [a.shape for a in same_shape(pred=[[1, 0]], truth=[[0, 1]])]
        [(1, 2), (1, 2)]
    """
    out = {name: np.asarray(a) for name, a in arrays.items()}
    shapes = {name: a.shape for name, a in out.items()}
    if len(set(shapes.values())) > 1:
        raise MetricInputError("shape mismatch: " + ", ".join(f"{n} {s}" for n, s in shapes.items()))
    name, first = next(iter(out.items()))
    if first.size == 0:
        raise MetricInputError(f"{name} is empty (shape {first.shape})")
    return list(out.values())


def as_mask(array, name: str) -> np.ndarray:
    """A boolean view of a 0/1 or boolean array; other values are refused.

    Example:
        >>> as_mask([0, 1, 1], "truth").tolist()
        [False, True, True]
    """
    array = np.asarray(array)
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise MetricInputError(f"{name} must be a boolean or 0/1 array, got dtype {array.dtype}")
    if array.size and not np.isin(array, (0, 1)).all():
        raise MetricInputError(f"{name} must be binary (0/1 or bool); it holds other values")
    return array.astype(bool)


def finite_scores(array, name: str) -> np.ndarray:
    """A real-valued array as float64, refusing NaN or infinite entries.

    Example:
        >>> finite_scores([0.5, 2], "scores").dtype
        dtype('float64')
    """
    return check_real_finite(array, name, MetricInputError).astype(np.float64, copy=False)
