"""The contract every tfuad model follows, so detection treats all models alike.

A model is a subclassed :class:`keras.Model` that takes float32 slices of shape
``(batch, H, W, 1)`` and

* ``call(x)`` / :meth:`AnomalyModel.reconstruct` returns the reconstruction
  (same shape);
* :meth:`AnomalyModel.log_density` returns a per-sample, differentiable
  (w.r.t. ``x``) log-density or surrogate of shape ``(batch,)``: the ELBO for
  VAEs and GMVAEs, ``-||x - x̂||² / (2σ²)`` (a Gaussian likelihood around the
  reconstruction) for plain autoencoders; MAP-TV restoration maximises it;
* overrides ``train_step``/``test_step`` and reports its loss terms as
  :class:`keras.metrics.Mean` trackers;
* ``compile()`` with no arguments builds the paper's optimisers;
* implements ``get_config`` so it round-trips through ``.keras`` files.
"""
from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["AnomalyModel", "gaussian_log_likelihood"]


def gaussian_log_likelihood(x, x_hat, sigma: float):
    """Per-sample Gaussian log-likelihood ``-Σ (x - x̂)² / (2σ²)`` (constant dropped).

    Args:
        x: Images ``(B, H, W, C)``.
        x_hat: Means ``(B, H, W, C)``.
        sigma: Fixed standard deviation.

    Returns:
        Tensor ``(B,)``.
    """
    sq = tf.square(tf.cast(x, tf.float32) - tf.cast(x_hat, tf.float32))
    return -tf.reduce_sum(sq, axis=[1, 2, 3]) / (2.0 * sigma * sigma)


class AnomalyModel(keras.Model):
    """Base class: see the module docstring for the contract.

    Args:
        image_size: Side of the square input slices.
        channels: Input channels (1 for one modality).
        sigma: Standard deviation of the Gaussian likelihood used by
            :meth:`log_density` in models without their own ELBO.
    """

    #: Name accepted by ``tfuad train`` (set by subclasses).
    model_name = None
    #: True when :meth:`log_density` is a proper ELBO.
    has_elbo = False
    #: True when :meth:`reconstruct` runs an optimisation per image (AnoGAN's
    #: latent search); calibration then takes the 98th percentile on the
    #: calibration subjects instead of all training volumes, as for MAP-TV.
    iterative = False

    def __init__(self, image_size: int = 128, channels: int = 1, sigma: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.sigma = float(sigma)

    def reconstruct(self, x, training: bool = False):
        """Reconstruction of ``x`` (deterministic: posterior means)."""
        return self(x, training=training)

    def log_density(self, x, training: bool = False):
        """Per-sample differentiable log-density surrogate, shape ``(B,)``."""
        return gaussian_log_likelihood(x, self.reconstruct(x, training=training), self.sigma)

    def build_for_inference(self):
        """Create all variables by calling the model once on zeros."""
        self(tf.zeros((1, self.image_size, self.image_size, self.channels)), training=False)
        return self

    def get_config(self):
        config = super().get_config()
        config.update(image_size=self.image_size, channels=self.channels, sigma=self.sigma)
        return config
