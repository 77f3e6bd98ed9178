"""Reconstruction residuals (Baur et al. 2018): anomaly map = |x − x̂|."""
from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

__all__ = ["reconstruct_slices", "residual_maps"]


_COMPILED = weakref.WeakKeyDictionary()


def _compiled_reconstruct(model, slice_shape):
    """One graph per model and slice shape, reused for every volume."""
    per_model = _COMPILED.setdefault(model, {})
    key = tuple(slice_shape)
    if key not in per_model:
        spec = tf.TensorSpec((None, *key), tf.float32)
        ref = weakref.proxy(model)  # the cache must not keep the model alive
        per_model[key] = tf.function(lambda x: ref.reconstruct(x, training=False), input_signature=[spec])
    return per_model[key]


def reconstruct_slices(model, slices, batch_size: int = 32) -> np.ndarray:
    """Reconstruct ``(N, S, S, 1)`` slices in batches with ``model.reconstruct``.

    Returns:
        float32 array of the same shape.
    """
    slices = np.asarray(slices, np.float32)
    fn = _compiled_reconstruct(model, slices.shape[1:])
    out = [fn(tf.constant(slices[i:i + batch_size])).numpy() for i in range(0, len(slices), batch_size)]
    return np.concatenate(out) if out else np.zeros_like(slices)


def residual_maps(model, slices, batch_size: int = 32):
    """Absolute reconstruction residuals.

    Args:
        model: Any tfuad model.
        slices: ``(N, S, S, 1)`` normalised slices.
        batch_size: Slices per forward pass.

    Returns:
        ``(maps, reconstructions)``, both ``(N, S, S, 1)`` float32.

    Example:
        >>> maps, recon = residual_maps(model, prepared.slices)   # doctest: +SKIP
    """
    recon = reconstruct_slices(model, slices, batch_size)
    return np.abs(np.asarray(slices, np.float32) - recon), recon
