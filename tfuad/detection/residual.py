"""Reconstruction residuals (Baur et al. 2018): anomaly map = |x − x̂|.

The network may run at another precision than the model was built with
(``precision="mixed_bfloat16"``: bfloat16 arithmetic on the same float32
weights); the reconstruction comes back as float32 and the residual is taken
in float32 against the float32 input.
"""
from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

from tfuad.models.base import computing_at, precision_of
from tfuad.precision import resolve_precision

__all__ = ["reconstruct_slices"]


_COMPILED = weakref.WeakKeyDictionary()


def _compiled_reconstruct(model, slice_shape, precision: str):
    """One graph per model, slice shape and precision, reused for every volume."""
    per_model = _COMPILED.setdefault(model, {})
    key = (tuple(slice_shape), precision)
    if key not in per_model:
        spec = tf.TensorSpec((None, *key[0]), tf.float32)
        ref = weakref.proxy(model)  # the cache must not keep the model alive
        per_model[key] = tf.function(lambda x: ref.reconstruct(x, training=False), input_signature=[spec])
    return per_model[key]


def reconstruct_slices(model, slices, batch_size: int = 32, precision: str | None = None) -> np.ndarray:
    """Reconstruct ``(N, S, S, 1)`` slices in batches with ``model.reconstruct``.

    Args:
        model: Any tfuad model.
        slices: ``(N, S, S, 1)`` normalised slices.
        batch_size: Slices per forward pass.
        precision: ``"float32"``, ``"mixed_bfloat16"``, ``"auto"`` or ``None``
            (the model's own precision).

    Returns:
        float32 array of the same shape.
    """
    slices = np.asarray(slices, np.float32)
    precision = precision_of(model) if precision is None else resolve_precision(precision)
    fn = _compiled_reconstruct(model, slices.shape[1:], precision)
    with computing_at(model, precision):  # the first call traces at this precision
        out = [fn(tf.constant(slices[i:i + batch_size])).numpy() for i in range(0, len(slices), batch_size)]
    return np.concatenate(out) if out else np.zeros_like(slices)
