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

Precision (:mod:`tfuad.precision`): a model is built under one Keras dtype
policy, ``"float32"`` or ``"mixed_bfloat16"`` (the ``dtype`` constructor
argument, else Keras' global policy); every sub-layer takes the model's
policy, and the policy is part of the config, so a saved model loads with it.
Under ``mixed_bfloat16`` the variables stay float32 and the networks compute
in bfloat16, while :meth:`AnomalyModel.reconstruct`, ``call`` and
:meth:`AnomalyModel.log_density` return float32 and the loss terms, KL terms
and ELBOs are formed and reduced in float32. :func:`computing_at` runs an
existing model at another precision (for inference: the weights are the
same, only the arithmetic changes).
"""
from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from tfuad.errors import ConfigError
from tfuad.precision import DEFAULT_PRECISION, PRECISIONS, resolve_precision

__all__ = ["AnomalyModel", "gaussian_log_likelihood", "to_float32", "precision_of", "computing_at"]


def to_float32(t):
    """``t`` as a float32 tensor (network outputs of a ``mixed_bfloat16`` model are bfloat16)."""
    return tf.cast(t, tf.float32)


def _layers_in(value) -> list:
    """Every Keras layer in ``value`` (a layer or a list/tuple of layers), nested layers included."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [layer for item in items if isinstance(item, keras.layers.Layer)
            for layer in item._flatten_layers(include_self=True, recursive=True)]


def precision_of(model) -> str:
    """The dtype policy name a model (any Keras layer) computes with, e.g. ``"float32"``.

    Objects without a dtype policy (not Keras layers) count as float32.
    """
    policy = getattr(model, "dtype_policy", None)
    return DEFAULT_PRECISION if policy is None else policy.name


@contextlib.contextmanager
def computing_at(model, precision=None):
    """Run ``model`` (every one of its layers) at ``precision`` inside the block.

    The weights are untouched (float32 under both policies); only the compute
    dtype changes, so a float32 model can be evaluated in bfloat16 and back.
    The dtype is read when a function is traced: trace (or first call) a
    ``tf.function`` inside the block and it keeps that precision afterwards.
    The model is the same object throughout, so do not use it from another
    thread meanwhile.

    Args:
        model: A Keras model.
        precision: ``"float32"``, ``"mixed_bfloat16"``, ``"auto"`` or ``None``
            (the model's own precision: nothing changes).

    Yields:
        The precision the model computes at inside the block.

    Example:
        >>> with computing_at(model, "mixed_bfloat16"):            # doctest: +SKIP
        ...     x_hat = model.reconstruct(x)                       # bfloat16 inside, float32 out
    """
    if precision is None or resolve_precision(precision) == precision_of(model):
        yield precision_of(model)
        return
    precision = resolve_precision(precision)
    layers = _layers_in(model)
    saved = [layer.dtype_policy for layer in layers]
    try:
        for layer in layers:
            layer.dtype_policy = precision
        yield precision
    finally:
        for layer, policy in zip(layers, saved):
            layer.dtype_policy = policy


def gaussian_log_likelihood(x, x_hat, sigma: float):
    """Per-sample Gaussian log-likelihood ``-Σ (x - x̂)² / (2σ²)`` (constant dropped).

    Args:
        x: Images ``(B, H, W, C)``.
        x_hat: Means ``(B, H, W, C)``.
        sigma: Fixed standard deviation.

    Returns:
        Tensor ``(B,)``.
    """
    sq = tf.square(to_float32(x) - to_float32(x_hat))
    return -tf.reduce_sum(sq, axis=[1, 2, 3]) / (2.0 * sigma * sigma)


class AnomalyModel(keras.Model):
    """Base class: see the module docstring for the contract.

    Args:
        image_size: Side of the square input slices.
        channels: Input channels (1 for one modality).
        sigma: Standard deviation of the Gaussian likelihood used by
            :meth:`log_density` in models without their own ELBO.
        **kwargs: Passed to :class:`keras.Model`; ``dtype`` is the dtype
            policy, ``"float32"`` or ``"mixed_bfloat16"`` (default: Keras'
            global policy).

    Raises:
        ConfigError: for another dtype policy (``mixed_float16`` would need
            loss scaling, which the training steps do not do).
    """

    #: Name accepted by ``tfuad train`` (set by subclasses).
    model_name = None
    #: True when :meth:`log_density` is a proper ELBO.
    has_elbo = False
    #: True when :meth:`reconstruct` runs an optimisation per image (AnoGAN's
    #: latent search); calibration then takes the 98th percentile on the
    #: calibration subjects instead of all training volumes, as for MAP-TV.
    iterative = False
    #: Intensity normalisation of the paper the model comes from (Baur: ``percentile``, scaling the
    #: brain to [0, 1]; Chen: ``zscore``); ``tfuad train --normalization`` overrides it.
    default_normalization = "percentile"
    #: Loss term whose validation value decides best weights, plateaus and early stopping
    #: (``"none"``: keep the last weights, never stop early).
    convergence_term = "loss"

    def __init__(self, image_size: int = 128, channels: int = 1, sigma: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if self.dtype_policy.name not in PRECISIONS:
            raise ConfigError(f"{type(self).__name__} supports the dtype policies {', '.join(PRECISIONS)}, "
                              f"not {self.dtype_policy.name!r}")
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.sigma = float(sigma)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        # Sub-layers compute with the model's policy, also when it is not the global one
        # (``dtype=`` given, or a saved model loaded under another global policy).
        policy = self.__dict__.get("_dtype_policy")
        if policy is not None and name != "_dtype_policy":
            for layer in _layers_in(value):
                if layer.dtype_policy.name != policy.name:
                    layer.dtype_policy = policy

    @property
    def precision(self) -> str:
        """The dtype policy the model computes with: ``"float32"`` or ``"mixed_bfloat16"``."""
        return precision_of(self)

    def reconstruct(self, x, training: bool = False):
        """Reconstruction of ``x`` (deterministic: posterior means), float32."""
        return to_float32(self(x, training=training))

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
