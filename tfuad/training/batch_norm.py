"""Batch-norm statistics recomputed on un-augmented training slices ("precise BN").

A batch-norm layer normalises with the statistics of the current batch while
training and with its moving averages at inference. The moving averages
(momentum 0.99) mix the last few hundred batches: batches of augmented slices
(intensity scale and gamma change every activation's mean and spread) seen
while the weights were still changing. At inference the network then meets
statistics that none of its inputs has, and the reconstruction suffers.

:func:`recompute_batch_norm` replaces every moving mean and variance by the
exact statistics of the current weights over a fixed set of un-augmented
training slices: the network runs in training mode batch by batch (each layer
sees the input that batch statistics give it, as in training), and each
layer's per-batch means ``m_b`` and variances ``v_b`` are pooled as

    mean = Σ n_b m_b / N,    variance = Σ n_b (v_b + m_b²) / N - mean²,

the population moments of the layer's input over all ``N`` slices. Measured on
the trained folds of the 128 px reproduction (``benchmarks/bn_statistics.py``,
README), it lowers the L1 of the sVAE's reconstructions of healthy validation
slices by 25–40 %, but not the VAE's, and the raw residual maps' AUROC rises in
6 folds of 9 and falls in 3, so it is an option (``TrainConfig.bn_statistics``),
not the default.

:class:`RecomputedBatchNorm` does it before every validation (so the
validation loss that picks the best epoch and stops training is that of the
network as it will be used) and, without validation slices, at the end of
every epoch; the weights saved with an epoch hold its recomputed statistics.

Example:
    >>> import numpy as np
    >>> from tfuad.models import model_class
    >>> model = model_class("sae")(image_size=32)
    >>> recompute_batch_norm(model, np.random.default_rng(0).random((8, 32, 32, 1), "float32"))
    9
"""
from __future__ import annotations

import keras
import numpy as np

from tfuad.training.checkpoint import restore_seed_states, seed_states

__all__ = ["batch_norm_layers", "recompute_batch_norm", "RecomputedBatchNorm", "BN_STATISTICS"]

#: Values of :attr:`~tfuad.training.trainer.TrainConfig.bn_statistics`.
BN_STATISTICS = ("recomputed", "moving")


def batch_norm_layers(model) -> list:
    """Every ``keras.layers.BatchNormalization`` inside ``model`` (nested layers included)."""
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)]


def recompute_batch_norm(model, slices, *, batch_size: int = 32, max_slices: int = 512, seed: int = 0) -> int:
    """Set every batch norm's moving mean and variance to their values over ``slices``.

    Args:
        model: A built Keras model.
        slices: ``(N, S, S, C)`` un-augmented training slices.
        batch_size: Slices per forward pass.
        max_slices: At most this many slices, a fixed random subset (``seed``).
        seed: Seed of that subset.

    Returns:
        The number of batch-norm layers updated (0: the model has none, or no slices).
    """
    layers = batch_norm_layers(model)
    slices = np.asarray(slices, dtype=np.float32)
    if not layers or len(slices) == 0:
        return 0
    if len(slices) > max_slices:
        slices = slices[np.sort(np.random.default_rng(seed).choice(len(slices), max_slices, replace=False))]
    if not model.built:
        model(slices[:1], training=False)
    momenta = [layer.momentum for layer in layers]
    sums = [np.zeros((2, *layer.moving_mean.shape), np.float64) for layer in layers]
    # the passes draw latent samples: the seed generators are put back, so training continues as without them
    seeds = seed_states(model)
    try:
        for layer in layers:
            layer.momentum = 0.0  # the moving statistics become the batch's own
        for start in range(0, len(slices), batch_size):
            batch = slices[start:start + batch_size]
            model(batch, training=True)
            for layer, total in zip(layers, sums):
                mean = np.asarray(layer.moving_mean, np.float64)
                total[0] += len(batch) * mean
                total[1] += len(batch) * (np.asarray(layer.moving_variance, np.float64) + mean ** 2)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        restore_seed_states(model, seeds, "recompute_batch_norm")
    for layer, total in zip(layers, sums):
        mean = total[0] / len(slices)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(total[1] / len(slices) - mean ** 2, 0.0).astype(np.float32))
    return len(layers)


class RecomputedBatchNorm(keras.callbacks.Callback):
    """Recompute the batch-norm statistics before each validation, or at each epoch's end without one.

    Place it before the callbacks that read the epoch's results (reconstruction
    quality, convergence, checkpoint).

    Args:
        slices: Un-augmented training slices.
        batch_size: Slices per forward pass.
        max_slices: At most this many slices (a fixed subset).
    """

    def __init__(self, slices, batch_size: int = 32, max_slices: int = 512):
        super().__init__()
        self.slices, self.batch_size, self.max_slices = slices, int(batch_size), int(max_slices)
        self._done = False

    def _recompute(self):
        recompute_batch_norm(self.model, self.slices, batch_size=self.batch_size, max_slices=self.max_slices)
        self._done = True

    def on_epoch_begin(self, epoch, logs=None):
        self._done = False

    def on_test_begin(self, logs=None):
        self._recompute()

    def on_epoch_end(self, epoch, logs=None):
        if not self._done:
            self._recompute()
