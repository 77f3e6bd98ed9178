"""Checks on arrays shared by every layer (metrics, post-processing, data, figures).

Example:
    >>> import numpy as np
    >>> check_real_finite(np.array([1.0, 2.0]), "scores").tolist()
    [1.0, 2.0]
"""
from __future__ import annotations

import numpy as np

from tfuad.errors import ArrayError

__all__ = ["check_real_finite"]


def check_real_finite(array: np.ndarray, name: str, error: type = ArrayError) -> np.ndarray:
    """Return ``array`` unless it is not real-valued (bool, integer, float) or not finite.

    Args:
        array: The values.
        name: What they are, for the message.
        error: The :class:`~tfuad.errors.ArrayError` subclass to raise.

    Raises:
        ArrayError: (or ``error``) naming ``name`` and the problem.
    """
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
            or array.dtype == bool):
        raise error(f"{name} must be real-valued, got dtype {array.dtype}")
    finite = np.isfinite(array)
    if not finite.all():
        raise error(f"{name} contains {int((~finite).sum())} NaN/Inf values")
    return array
