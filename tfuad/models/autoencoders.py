"""Dense and spatial (variational) autoencoders of Baur et al. (2018).

The four non-adversarial models of "Deep Autoencoding Models for Unsupervised
Anomaly Segmentation in Brain MR Images" (Sec. "Methodology" and Fig. 3):

* :class:`DenseAE` (``dae``) and :class:`DenseVAE` (``dvae``): a dense
  ``latent_dim = 512`` bottleneck;
* :class:`SpatialAE` (``sae``) and :class:`SpatialVAE` (``svae``): a fully
  convolutional bottleneck of ``latent_size × latent_size × latent_channels``
  feature maps (16 × 16 × 64 at 256 px in the paper).

All four use the same convolutional trunk (see :mod:`tfuad.models.layers`), so
their encoder/decoder complexity is identical and only the bottleneck differs,
as the paper requires ("Implementation").

Losses (per sample, averaged over the batch, following the authors' reference
implementation): ``rec_loss = ||x - x̂||₁`` summed over pixels and
``kl_loss = KL(q(z|x) || N(0, I))`` summed over every latent cell; the
training objective is ``loss = rec_weight · rec_loss + kl_weight · kl_loss``
(λ1 and λ2 of the paper).

Example:
    >>> import tensorflow as tf
    >>> model = SpatialVAE(image_size=32, base_filters=4, max_filters=8)
    >>> model.compile()                         # Adam(1e-3), as in the paper
    >>> x = tf.random.uniform((8, 32, 32, 1))
    >>> dataset = tf.data.Dataset.from_tensor_slices(x).batch(4)   # images only
    >>> history = model.fit(dataset, shuffle=False, verbose=0)
    >>> sorted(history.history)
    ['kl_loss', 'loss', 'rec_loss']
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfuad.errors import ArrayError, ConfigError
from tfuad.models.base import AnomalyModel, gaussian_log_likelihood, to_float32
from tfuad.models.layers import (
    UPSAMPLING,
    check_number,
    conv_decoder,
    conv_encoder,
    dense_decoder_head,
    dense_encoder_head,
    spatial_decoder_head,
    spatial_encoder_head,
    trunk_depth,
    trunk_filters,
)

__all__ = [
    "l1_per_sample",
    "gaussian_kl",
    "LossTrackingModel",
    "DenseAE",
    "DenseVAE",
    "SpatialAE",
    "SpatialVAE",
]


def l1_per_sample(x, x_hat):
    """Per-sample ℓ1 distance ``Σ |x - x̂|`` over pixels and channels.

    Args:
        x: Images ``(B, H, W, C)``.
        x_hat: Reconstructions ``(B, H, W, C)``.

    Returns:
        Tensor ``(B,)``.
    """
    return tf.reduce_sum(tf.abs(to_float32(x) - to_float32(x_hat)), axis=[1, 2, 3])


def gaussian_kl(mean, log_var):
    """Per-sample ``KL(N(mean, exp(log_var)) || N(0, I))`` summed over all latent cells.

    Args:
        mean: Posterior means ``(B, ...)``.
        log_var: Posterior log-variances, same shape.

    Returns:
        float32 tensor ``(B,)`` (computed in float32 whatever the inputs' dtype).

    Example:
        >>> float(gaussian_kl(tf.zeros((1, 4)), tf.zeros((1, 4)))[0])
        0.0
    """
    mean, log_var = to_float32(mean), to_float32(log_var)
    kl = 0.5 * (tf.exp(log_var) + tf.square(mean) - 1.0 - log_var)
    return tf.reduce_sum(tf.reshape(kl, (tf.shape(kl)[0], -1)), axis=1)


class LossTrackingModel(AnomalyModel):
    """An :class:`AnomalyModel` with loss trackers and the paper's default optimisers.

    Subclasses list their loss terms in :meth:`loss_names` (one
    :class:`keras.metrics.Mean` each, exposed as :attr:`metrics`; the names
    must not depend on constructor arguments), the optimiser attributes in
    ``optimizer_names`` with :meth:`default_optimizer` and
    :meth:`optimizer_variables`, and build their sub-networks in
    :meth:`build_networks`, called by :meth:`build`.

    ``compile()`` without arguments creates every optimiser;
    :meth:`get_compile_config` / :meth:`compile_from_config` store and
    restore all of them, and each optimiser is built on its own variable list
    so that ``model.save`` / ``keras.models.load_model`` restore their state
    (moments and iteration counts) for resuming training.

    Args:
        image_size: Side of the square input slices.
        channels: Input channels.
        sigma: Standard deviation of the Gaussian likelihood of
            :meth:`log_density`.
        learning_rate: Learning rate of the default ``optimizer``.
        seed: Seed of the model's random draws (``None``: from the global
            Keras seed).
    """

    #: Attributes holding the optimisers created by :meth:`compile`.
    optimizer_names = ("optimizer",)

    def __init__(self, image_size: int = 128, channels: int = 1, sigma: float = 1.0,
                 learning_rate: float = 1e-3, seed: int | None = None, **kwargs):
        super().__init__(
            image_size=check_number("image_size", image_size, integer=True, minimum=2),
            channels=check_number("channels", channels, integer=True, minimum=1),
            sigma=check_number("sigma", sigma, minimum=0, exclusive_minimum=True),
            **kwargs)
        self.learning_rate = check_number("learning_rate", learning_rate, minimum=0,
                                          exclusive_minimum=True)
        self.seed = None if seed is None else check_number("seed", seed, integer=True, minimum=0)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.loss_trackers = [keras.metrics.Mean(name=name) for name in self.loss_names()]

    # -- losses and metrics -------------------------------------------------
    def loss_names(self) -> tuple:
        """Names of the reported loss terms (``loss`` is the optimised objective)."""
        return ("loss",)

    @property
    def metrics(self):
        return list(self.loss_trackers)

    def _track(self, terms: dict) -> dict:
        for tracker in self.loss_trackers:
            tracker.update_state(terms[tracker.name])
        return {tracker.name: tracker.result() for tracker in self.loss_trackers}

    @staticmethod
    def _images(data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return tf.cast(x, tf.float32)

    # -- optimisers ---------------------------------------------------------
    def default_optimizer(self, name: str):
        """The paper's optimiser for attribute ``name`` (Adam, lr ``learning_rate``)."""
        if name != "optimizer":
            raise KeyError(name)
        return keras.optimizers.Adam(self.learning_rate)

    def optimizer_variables(self, name: str) -> list:
        """Variables updated by the optimiser held in attribute ``name``."""
        if name != "optimizer":
            raise KeyError(name)
        return self.trainable_variables

    def _resolve_optimizer(self, name: str, optimizer):
        if optimizer is None:
            return self.default_optimizer(name)
        return keras.optimizers.get(optimizer)

    def build_optimizers(self):
        """Create the optimiser slots on their variable lists (needs a built, compiled model)."""
        for name in self.optimizer_names:
            getattr(self, name).build(self.optimizer_variables(name))

    def compile(self, optimizer=None, **kwargs):
        """Configure training; without arguments use the paper's optimiser(s).

        The model and every optimiser are built here (the input shape is
        known from ``image_size`` and ``channels``), so each optimiser owns
        slots for exactly the variables it updates.

        Args:
            optimizer: Optimiser of the reconstruction/generator objective
                (default: :meth:`default_optimizer`).
            **kwargs: Passed to :meth:`keras.Model.compile` (e.g.
                ``run_eagerly``, ``jit_compile``).
        """
        super().compile(optimizer=self._resolve_optimizer("optimizer", optimizer), **kwargs)
        if not self.built:
            self.build((None, self.image_size, self.image_size, self.channels))
        self.build_optimizers()

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            for name in self.optimizer_names[1:]:
                config[name] = keras.saving.serialize_keras_object(getattr(self, name))
        return config

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))

    # -- building -----------------------------------------------------------
    def _check_shape(self, shape):
        shape = tuple(shape)
        expected = (self.image_size, self.image_size, self.channels)
        if len(shape) != 4 or any(d is not None and d != e for d, e in zip(shape[1:], expected)):
            raise ArrayError(f"{type(self).__name__} expects inputs of shape "
                             f"(batch, {expected[0]}, {expected[1]}, {expected[2]}), got {shape}")

    def build_networks(self, input_shape):
        """Build the sub-networks for images of ``input_shape`` (none here)."""

    def build(self, input_shape):
        """Check ``input_shape`` and build the sub-networks (:meth:`build_networks`)."""
        self._check_shape(input_shape)
        self.build_networks(tuple(input_shape))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(learning_rate=self.learning_rate, seed=self.seed)
        return config


class _Autoencoder(LossTrackingModel):
    """Shared trunk, losses and training loop of the four autoencoders.

    Subclasses create ``self.encoder`` and ``self.decoder`` from
    :meth:`encoder_trunk` / :meth:`decoder_trunk` plus their bottleneck heads
    and define ``latent_shape``, the shape of one latent code.
    """

    #: True for models with a Gaussian posterior (means and log-variances).
    variational = False

    def __init__(self, image_size: int = 128, channels: int = 1, sigma: float = 1.0,
                 base_filters: int = 32, max_filters: int = 128, kernel_size: int = 5,
                 rec_weight: float = 1.0, learning_rate: float = 1e-3, seed: int | None = None,
                 upsampling: str = "resize", **kwargs):
        super().__init__(image_size=image_size, channels=channels, sigma=sigma,
                         learning_rate=learning_rate, seed=seed, **kwargs)
        self.base_filters = check_number("base_filters", base_filters, integer=True, minimum=1)
        self.max_filters = check_number("max_filters", max_filters, integer=True, minimum=1)
        self.kernel_size = check_number("kernel_size", kernel_size, integer=True, minimum=1)
        self.rec_weight = check_number("rec_weight", rec_weight, minimum=0)
        if upsampling not in UPSAMPLING:
            raise ConfigError(f"upsampling must be one of {', '.join(UPSAMPLING)}, got {upsampling!r}")
        self.upsampling = upsampling

    # -- networks -----------------------------------------------------------
    def _set_depth(self, size: int, name: str):
        self.depth = trunk_depth(self.image_size, size, name)
        self.trunk_channels = trunk_filters(self.depth, self.base_filters, self.max_filters)[-1]

    def encoder_trunk(self):
        """A fresh encoder trunk (identical across the autoencoder variants)."""
        return conv_encoder(self.depth, self.base_filters, self.max_filters, self.kernel_size)

    def decoder_trunk(self):
        """A fresh decoder trunk (identical across the autoencoder variants)."""
        return conv_decoder(self.depth, self.channels, self.base_filters, self.max_filters,
                            self.kernel_size, upsampling=self.upsampling)

    def build_networks(self, input_shape):
        super().build_networks(input_shape)
        self.encoder.build(input_shape)
        self.decoder.build((None, *self.latent_shape))

    def optimizer_variables(self, name: str) -> list:
        if name != "optimizer":
            return super().optimizer_variables(name)
        return self.encoder.trainable_variables + self.decoder.trainable_variables

    # -- inference ----------------------------------------------------------
    def encode(self, x, training: bool = False):
        """Latent code ``z``, float32 (VAEs: the pair ``(mean, log_var)``)."""
        return to_float32(self.encoder(x, training=training))

    def decode(self, z, training: bool = False):
        """Reconstruction ``(B, S, S, channels)`` of latent codes ``z``, float32."""
        return to_float32(self.decoder(z, training=training))

    def _latent_point(self, x, training):
        return self.encode(x, training=training)

    def call(self, inputs, training: bool = False):
        self._check_shape(inputs.shape)
        return self.decode(self._latent_point(inputs, training), training=training)

    # -- training -----------------------------------------------------------
    def loss_names(self) -> tuple:
        return super().loss_names() + ("rec_loss",)

    def loss_weights(self) -> dict:
        """Weight of every loss term in the objective ``loss``."""
        return {"rec_loss": self.rec_weight}

    def _sample_latent(self, x, training):
        """A latent code for training and the latent loss terms."""
        return self.encode(x, training=training), {}

    def compute_terms(self, x, training: bool = False):
        """Reconstruction and batch-mean loss terms of images ``x``.

        Args:
            x: Images ``(B, S, S, channels)``.
            training: Training mode (batch statistics).

        Returns:
            ``(x_hat, terms)``: the reconstruction and a dict with one scalar
            per name in :meth:`loss_names` (``loss`` is the weighted sum).
        """
        z, terms = self._sample_latent(x, training)
        x_hat = self.decode(z, training=training)
        terms["rec_loss"] = tf.reduce_mean(l1_per_sample(x, x_hat))
        terms["loss"] = tf.add_n([weight * terms[name]
                                  for name, weight in self.loss_weights().items()])
        return x_hat, terms

    def train_step(self, data):
        x = self._images(data)
        variables = self.optimizer_variables("optimizer")
        with tf.GradientTape() as tape:
            _, terms = self.compute_terms(x, training=True)
        self.optimizer.apply(tape.gradient(terms["loss"], variables), variables)
        return self._track(terms)

    def test_step(self, data):
        _, terms = self.compute_terms(self._images(data), training=False)
        return self._track(terms)

    def get_config(self):
        config = super().get_config()
        config.update(base_filters=self.base_filters, max_filters=self.max_filters,
                      kernel_size=self.kernel_size, rec_weight=self.rec_weight, upsampling=self.upsampling)
        return config

    @classmethod
    def from_config(cls, config):
        """Rebuild from :meth:`get_config`; configs saved before ``upsampling`` existed used transposed convolutions."""
        return cls(**{"upsampling": "transpose", **config})


class _Variational:
    """Gaussian posterior ``q(z|x)`` with the reparameterisation trick (mixin).

    The encoder head outputs means and log-variances; training samples
    ``z = mean + exp(log_var / 2) · ε`` and adds ``kl_weight · kl_loss``;
    :meth:`reconstruct` decodes the posterior mean (deterministic).

    Args:
        kl_weight: Weight λ2 of the KL term.
    """

    variational = True
    has_elbo = True

    def __init__(self, *args, kl_weight: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.kl_weight = check_number("kl_weight", kl_weight, minimum=0)

    def loss_names(self) -> tuple:
        return super().loss_names() + ("kl_loss",)

    def encode(self, x, training: bool = False):
        """Posterior ``(mean, log_var)``, each of shape ``(B, *latent_shape)``, float32."""
        mean, log_var = tf.split(to_float32(self.encoder(x, training=training)), 2, axis=-1)
        return mean, log_var

    def _latent_point(self, x, training):
        return self.encode(x, training=training)[0]

    def loss_weights(self) -> dict:
        return {**super().loss_weights(), "kl_loss": self.kl_weight}

    def _sample_latent(self, x, training):
        mean, log_var = self.encode(x, training=training)
        eps = keras.random.normal(tf.shape(mean), seed=self.seed_generator)
        z = mean + tf.exp(0.5 * log_var) * eps
        return z, {"kl_loss": tf.reduce_mean(gaussian_kl(mean, log_var))}

    def log_density(self, x, training: bool = False):
        """ELBO per sample: ``log N(x; Dec(μ), σ²I) − KL(q(z|x) || N(0, I))``.

        The likelihood term is evaluated at the posterior mean ``μ`` (a
        deterministic one-point estimate of the expectation), so the result is
        reproducible and differentiable w.r.t. ``x``; the Gaussian constant is
        dropped and ``σ`` is the model's fixed ``sigma``.

        Args:
            x: Images ``(B, S, S, channels)``.
            training: Training mode.

        Returns:
            Tensor ``(B,)``.
        """
        mean, log_var = self.encode(x, training=training)
        x_hat = self.decode(mean, training=training)
        return gaussian_log_likelihood(x, x_hat, self.sigma) - gaussian_kl(mean, log_var)

    def get_config(self):
        config = super().get_config()
        config.update(kl_weight=self.kl_weight)
        return config


@keras.saving.register_keras_serializable(package="tfuad")
class DenseAE(_Autoencoder):
    """Dense autoencoder ``dAE`` (Baur et al. 2018, Fig. 3a, Table 1).

    The shared convolutional trunk reduces the image to ``feature_size`` px,
    a linear 1×1 convolution and a dense layer map it to a ``latent_dim``
    vector; the decoder mirrors this.

    Args:
        image_size: Side of the square input slices (128, 256, ...).
        channels: Input channels.
        sigma: Standard deviation of the Gaussian likelihood of
            :meth:`log_density`.
        latent_dim: Width of the dense bottleneck (paper: 512).
        feature_size: Spatial side of the trunk output that is flattened
            (default ``image_size // 16``, the same trunk as the spatial models).
        base_filters: Filters of the first trunk block.
        max_filters: Cap on the trunk filters.
        kernel_size: Convolution kernel side.
        upsampling: How the decoder doubles the resolution: ``"resize"``
            (nearest-neighbour resize, then a convolution; the default, free of
            checkerboard artefacts) or ``"transpose"`` (the papers' stride-2
            transposed convolutions).
        rec_weight: Weight λ1 of the ℓ1 reconstruction loss.
        learning_rate: Adam learning rate (paper: 1e-3).
        seed: Seed of the model's random draws.
        **kwargs: Passed to :class:`keras.Model` (e.g. ``name``).

    Example:
        >>> model = DenseAE(image_size=128)
        >>> model.latent_shape
        (512,)
    """

    model_name = "dae"

    def __init__(self, image_size: int = 128, channels: int = 1, sigma: float = 1.0,
                 latent_dim: int = 512, feature_size: int | None = None, base_filters: int = 32,
                 max_filters: int = 128, kernel_size: int = 5, rec_weight: float = 1.0,
                 learning_rate: float = 1e-3, seed: int | None = None, **kwargs):
        super().__init__(image_size=image_size, channels=channels, sigma=sigma,
                         base_filters=base_filters, max_filters=max_filters,
                         kernel_size=kernel_size, rec_weight=rec_weight,
                         learning_rate=learning_rate, seed=seed, **kwargs)
        self.latent_dim = check_number("latent_dim", latent_dim, integer=True, minimum=1)
        self.feature_size = self.image_size // 16 if feature_size is None else feature_size
        self._set_depth(self.feature_size, "feature_size")
        head_units = self.latent_dim * (2 if self.variational else 1)
        self.encoder = keras.Sequential(
            [self.encoder_trunk(), dense_encoder_head(head_units, self.trunk_channels)],
            name="encoder")
        self.decoder = keras.Sequential(
            [dense_decoder_head(self.feature_size, self.trunk_channels), self.decoder_trunk()],
            name="decoder")

    @property
    def latent_shape(self) -> tuple:
        return (self.latent_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, feature_size=self.feature_size)
        return config


@keras.saving.register_keras_serializable(package="tfuad")
class DenseVAE(_Variational, DenseAE):
    """Dense variational autoencoder ``dVAE`` (Baur et al. 2018, Fig. 3c).

    :class:`DenseAE` with a Gaussian posterior over the 512-d code, trained
    with ``rec_weight · ||x - x̂||₁ + kl_weight · KL``; :meth:`log_density`
    is the ELBO.

    Args:
        kl_weight: Weight λ2 of the KL term.
        *args, **kwargs: As for :class:`DenseAE`.

    Example:
        >>> model = DenseVAE(image_size=128, kl_weight=1.0)
        >>> model.has_elbo
        True
    """

    model_name = "dvae"


@keras.saving.register_keras_serializable(package="tfuad")
class SpatialAE(_Autoencoder):
    """Spatial (fully convolutional) autoencoder ``sAE`` (Baur et al. 2018, Fig. 3b).

    The shared trunk reduces the image to ``latent_size`` px and a linear 1×1
    convolution maps it to ``latent_channels`` feature maps: the latent code
    keeps its spatial layout (paper: 16 × 16 × 64 at 256 px; 8 × 8 × 64 is the
    ``latent_size = image_size // 32`` variant).

    Args:
        image_size: Side of the square input slices (128, 256, ...).
        channels: Input channels.
        sigma: Standard deviation of the Gaussian likelihood of
            :meth:`log_density`.
        latent_size: Spatial side of the latent code (default
            ``image_size // 16``); ``image_size / latent_size`` must be a power
            of two.
        latent_channels: Feature maps of the latent code (paper: 64).
        base_filters: Filters of the first trunk block.
        max_filters: Cap on the trunk filters.
        kernel_size: Convolution kernel side.
        upsampling: How the decoder doubles the resolution: ``"resize"``
            (nearest-neighbour resize, then a convolution; the default, free of
            checkerboard artefacts) or ``"transpose"`` (the papers' stride-2
            transposed convolutions).
        rec_weight: Weight λ1 of the ℓ1 reconstruction loss.
        learning_rate: Adam learning rate (paper: 1e-3).
        seed: Seed of the model's random draws.
        **kwargs: Passed to :class:`keras.Model` (e.g. ``name``).

    Example:
        >>> SpatialAE(image_size=256).latent_shape
        (16, 16, 64)
        >>> SpatialAE(image_size=256, latent_size=8).latent_shape
        (8, 8, 64)
    """

    model_name = "sae"

    def __init__(self, image_size: int = 128, channels: int = 1, sigma: float = 1.0,
                 latent_size: int | None = None, latent_channels: int = 64,
                 base_filters: int = 32, max_filters: int = 128, kernel_size: int = 5,
                 rec_weight: float = 1.0, learning_rate: float = 1e-3, seed: int | None = None,
                 **kwargs):
        super().__init__(image_size=image_size, channels=channels, sigma=sigma,
                         base_filters=base_filters, max_filters=max_filters,
                         kernel_size=kernel_size, rec_weight=rec_weight,
                         learning_rate=learning_rate, seed=seed, **kwargs)
        self.latent_size = self.image_size // 16 if latent_size is None else latent_size
        self.latent_channels = check_number("latent_channels", latent_channels, integer=True,
                                            minimum=1)
        self._set_depth(self.latent_size, "latent_size")
        head_channels = self.latent_channels * (2 if self.variational else 1)
        self.encoder = keras.Sequential(
            [self.encoder_trunk(), spatial_encoder_head(head_channels)], name="encoder")
        self.decoder = keras.Sequential(
            [spatial_decoder_head(self.trunk_channels), self.decoder_trunk()], name="decoder")

    @property
    def latent_shape(self) -> tuple:
        return (self.latent_size, self.latent_size, self.latent_channels)

    def get_config(self):
        config = super().get_config()
        config.update(latent_size=self.latent_size, latent_channels=self.latent_channels)
        return config


@keras.saving.register_keras_serializable(package="tfuad")
class SpatialVAE(_Variational, SpatialAE):
    """Spatial variational autoencoder ``sVAE`` (Baur et al. 2018, Fig. 3d).

    :class:`SpatialAE` with an independent Gaussian posterior on every latent
    cell and the KL to ``N(0, I)`` summed over all cells.

    Args:
        kl_weight: Weight λ2 of the KL term.
        *args, **kwargs: As for :class:`SpatialAE`.

    Example:
        >>> model = SpatialVAE(image_size=128)
        >>> model.latent_shape
        (8, 8, 64)
    """

    model_name = "svae"
