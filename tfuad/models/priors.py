"""Normative priors of Chen et al. 2020: a residual VAE and a Gaussian-mixture VAE.

Both models share one residual encoder/decoder (Section 3.2): an encoder of
down-sampling residual blocks (16, 32, 64, 128, 256, 512 filters by default), a
symmetric decoder of bilinear up-sampling residual blocks, and a latent map of
``image_size / 2**len(filters)`` pixels per side with ``latent_channels``
channels (2×2×512 for 128-pixel slices). Leaky ReLU is used in hidden layers,
identity activation in the layers that produce latent parameters and in the
output layer.

The likelihood is Gaussian with a fixed standard deviation ``sigma``. The paper
sets the variance so that ``log P(X|z)`` is the ℓ2 loss ``-||X - μ_X(z)||²``;
the default ``sigma = sqrt(1/2)`` (``2σ² = 1``) reproduces that.

``ResVAE`` (name ``"vae"``): ``p(z) = N(0, I)``, ``q(z|x)`` diagonal Gaussian.

``GMVAE`` (name ``"gmvae"``, Dilokthanakul et al. 2016, Nat-D/GMVAE): latent
variables ``z`` (same shape as the VAE's), ``ω`` (a ``latent_size² × w_dim``
map) and a mixture assignment ``k`` with ``clusters`` components and uniform
``p(k)``. ``p(z|ω, k) = N(μ_k(ω), diag σ_k²(ω))`` where 1×1-convolution
networks produce the means and variances of all components from ``ω``. The
ELBO (their Eq. 2) has four terms::

    ELBO = E_q(z|x)[log p(x|z)]                                   rec_loss
         - E_q(ω|x) p(k|z,ω)[KL(q(z|x) || p(z|ω,k))]              cond_prior
         - KL(q(ω|x) || N(0, I))                                  kl_w
         - E_q(z|x) q(ω|x)[KL(p(k|z,ω) || p(k))]                  kl_k

with ``p(k|z,ω) ∝ p(z|ω,k)`` computed analytically.

Training (``fit``) estimates the expectations with one reparameterised sample
of ``z`` and ``ω``, as the papers do. :meth:`log_density`, :meth:`reconstruct`
and ``evaluate`` use a *deterministic* plug-in ELBO instead: ``z`` and ``ω``
are set to their posterior means and the KL terms are analytic. The paper
samples during restoration; the deterministic version makes MAP restoration
reproducible and its gradient noise-free, at the price of ignoring the
posterior spread in the reconstruction term.

Example:
    >>> import numpy as np
    >>> from tfuad.models.priors import ResVAE
    >>> model = ResVAE(image_size=32, filters=(4, 8, 16))
    >>> model.compile()                       # Adam(1e-3)
    >>> x = np.zeros((2, 32, 32, 1), "float32")
    >>> model.log_density(x).shape            # doctest: +SKIP
    TensorShape([2])
    >>> model.prior().sample(3).shape         # doctest: +SKIP
    TensorShape([3, 4, 4, 16])
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfuad.errors import ConfigError
from tfuad.models.base import AnomalyModel, gaussian_log_likelihood, to_float32
from tfuad.models.resblocks import DownBlock, FlipGradConv2D, UpBlock

__all__ = ["ResVAE", "GMVAE", "PAPER_FILTERS", "PAPER_SIGMA"]

tfd = tfp.distributions

#: Encoder filters of Chen et al. 2020, Section 3.2.
PAPER_FILTERS = (16, 32, 64, 128, 256, 512)
#: Likelihood standard deviation that turns ``log P(X|z)`` into ``-||X - μ||²``.
PAPER_SIGMA = math.sqrt(0.5)


def _diag_gaussian(mean, logvar):
    """``N(mean, diag exp(logvar))`` over the last three axes (one event per sample), in float32."""
    mean, logvar = to_float32(mean), to_float32(logvar)
    return tfd.Independent(tfd.Normal(mean, tf.exp(0.5 * logvar)), reinterpreted_batch_ndims=3)


class _NormativePrior(AnomalyModel):
    """Residual encoder/decoder, training loop and trackers shared by both priors.

    Subclasses implement ``elbo_terms(x, training=False, sample=False)``,
    returning a dict of per-sample ``(B,)`` negative-ELBO terms (names listed in
    ``_term_names``; their sum is ``-ELBO(x)``). ``training`` sets the batch-norm
    mode; ``sample`` draws one reparameterised latent sample instead of using
    posterior means.
    """

    has_elbo = True
    default_normalization = "zscore"
    _term_names: tuple = ()

    def __init__(
        self,
        image_size: int = 128,
        channels: int = 1,
        sigma: float = PAPER_SIGMA,
        filters=PAPER_FILTERS,
        latent_channels: int | None = None,
        learning_rate: float = 1e-3,
        negative_slope: float = 0.2,
        **kwargs,
    ):
        super().__init__(image_size=image_size, channels=channels, sigma=sigma, **kwargs)
        self.filters = tuple(int(f) for f in filters)
        if not self.filters or min(self.filters) < 1:
            raise ConfigError(f"filters must be a non-empty sequence of positive integers, got {filters!r}")
        if self.sigma <= 0:
            raise ConfigError(f"sigma must be positive, got {sigma}")
        factor = 2 ** len(self.filters)
        if self.image_size % factor:
            raise ConfigError(
                f"image_size {self.image_size} is not divisible by 2**{len(self.filters)} = {factor} "
                f"(one halving per encoder block)"
            )
        self.latent_size = self.image_size // factor
        self.latent_channels = int(latent_channels) if latent_channels else self.filters[-1]
        self.learning_rate = float(learning_rate)
        self.negative_slope = float(negative_slope)

        self.down_blocks = [DownBlock(f, self.negative_slope, name=f"down{i}") for i, f in enumerate(self.filters)]
        decoder_filters = self.filters[-2::-1] + (self.filters[0],)
        self.up_blocks = [UpBlock(f, self.negative_slope, name=f"up{i}") for i, f in enumerate(decoder_filters)]
        self.z_mean = FlipGradConv2D(self.latent_channels, 1, name="z_mean")
        self.z_logvar = FlipGradConv2D(self.latent_channels, 1, name="z_logvar")
        self.x_mean = FlipGradConv2D(self.channels, 3, padding="same", name="x_mean")
        self._make_heads()
        self._trackers = {n: keras.metrics.Mean(name=n) for n in ("loss",) + self._term_names}
        # Variables exist from construction on, so fit/save/load never see an unbuilt model.
        self.build((None, self.image_size, self.image_size, self.channels))

    # ----------------------------------------------------------------- networks
    @property
    def latent_shape(self):
        """Shape ``(h, w, C)`` of one latent map ``z``."""
        return (self.latent_size, self.latent_size, self.latent_channels)

    def build(self, input_shape):
        shape = (None,) + tuple(input_shape[1:])
        for block in self.down_blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        self.z_mean.build(shape)
        self.z_logvar.build(shape)
        self._build_heads(shape)
        latent = (None,) + self.latent_shape
        for block in self.up_blocks:
            block.build(latent)
            latent = block.compute_output_shape(latent)
        self.x_mean.build(latent)
        self.built = True

    def _make_heads(self):
        """Create extra latent heads (GMVAE); nothing for the VAE."""

    def _build_heads(self, feature_shape):
        """Build the extra latent heads; nothing for the VAE."""

    def _features(self, x, training):
        h = tf.cast(x, tf.float32)
        for block in self.down_blocks:
            h = block(h, training=training)
        return h

    def _q_z(self, features):
        return _diag_gaussian(self.z_mean(features), self.z_logvar(features))

    def decode(self, z, training=False):
        """Mean image ``μ_X(z)`` of ``p(x|z)``, shape ``(B, H, W, channels)``, float32."""
        h = z
        for block in self.up_blocks:
            h = block(h, training=training)
        return to_float32(self.x_mean(h))

    def call(self, x, training=False):
        """Reconstruction: decoder of a posterior sample (training) or mean (inference), float32."""
        h = self._features(x, training)
        mean = to_float32(self.z_mean(h))
        if training:
            mean = mean + tf.exp(0.5 * to_float32(self.z_logvar(h))) * tf.random.normal(tf.shape(mean))
        return self.decode(mean, training=training)

    # --------------------------------------------------------------- objective
    def log_density(self, x, training: bool = False):
        """Deterministic ELBO per sample, shape ``(B,)``, differentiable w.r.t. ``x``.

        Latents are set to their posterior means and KL terms are analytic, so
        repeated calls give identical values (see the module docstring).
        """
        terms = self.elbo_terms(x, training, sample=False)
        return -tf.add_n(list(terms.values()))

    def _training_loss(self, terms):
        return tf.reduce_mean(tf.add_n(list(terms.values())))

    # ------------------------------------------------------------- training
    def compile(self, optimizer=None, **kwargs):
        """Compile; without arguments uses Adam with ``learning_rate``."""
        if optimizer is None:
            optimizer = keras.optimizers.Adam(self.learning_rate)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _report(self, loss, terms):
        self._trackers["loss"].update_state(loss)
        for name, value in terms.items():
            self._trackers[name].update_state(tf.reduce_mean(value))
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def train_step(self, data):
        x = keras.utils.unpack_x_y_sample_weight(data)[0]
        with tf.GradientTape() as tape:
            terms = self.elbo_terms(x, training=True, sample=True)
            loss = self._training_loss(terms)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._report(tf.reduce_mean(tf.add_n(list(terms.values()))), terms)

    def test_step(self, data):
        x = keras.utils.unpack_x_y_sample_weight(data)[0]
        terms = self.elbo_terms(x, training=False, sample=False)
        return self._report(tf.reduce_mean(tf.add_n(list(terms.values()))), terms)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=list(self.filters),
            latent_channels=self.latent_channels,
            learning_rate=self.learning_rate,
            negative_slope=self.negative_slope,
        )
        return config


@keras.saving.register_keras_serializable(package="tfuad")
class ResVAE(_NormativePrior):
    """VAE normative prior with ``p(z) = N(0, I)`` (registry name ``"vae"``).

    Args:
        image_size: Side of the square input slices (divisible by ``2**len(filters)``).
        channels: Input channels.
        sigma: Fixed standard deviation of the Gaussian likelihood
            (default ``sqrt(1/2)``: the log-likelihood is ``-||x - μ||²``).
        filters: Encoder filters, one down-sampling block each; the decoder mirrors them.
        latent_channels: Channels of ``z`` (default ``filters[-1]``).
        learning_rate: Adam learning rate used by ``compile()``.
        negative_slope: Leaky ReLU slope.

    Loss terms reported by ``fit``: ``loss`` (negative ELBO), ``rec_loss``, ``kl_z``.

    Example:
        >>> vae = ResVAE(image_size=32, filters=(4, 8, 16))
        >>> vae.compile()
        >>> vae.fit(healthy_slices, epochs=1)            # doctest: +SKIP
    """

    model_name = "vae"
    _term_names = ("rec_loss", "kl_z")

    def prior(self):
        """``p(z) = N(0, I)`` over latent maps of shape :attr:`latent_shape`."""
        return tfd.Independent(tfd.Normal(tf.zeros(self.latent_shape), 1.0), reinterpreted_batch_ndims=3)

    def posterior(self, x, training: bool = False):
        """``q(z|x)``: a diagonal Gaussian with batch shape ``(B,)``."""
        return self._q_z(self._features(x, training))

    def elbo_terms(self, x, training: bool = False, sample: bool = False):
        """Per-sample negative-ELBO terms ``{name: (B,)}``; see the class docstring."""
        q_z = self._q_z(self._features(x, training))
        z = q_z.sample() if sample else q_z.mean()
        rec = -gaussian_log_likelihood(x, self.decode(z, training=training), self.sigma)
        return {"rec_loss": rec, "kl_z": tfd.kl_divergence(q_z, self.prior())}


@keras.saving.register_keras_serializable(package="tfuad")
class GMVAE(_NormativePrior):
    """Gaussian-mixture VAE normative prior (registry name ``"gmvae"``).

    Args:
        image_size, channels, sigma, filters, latent_channels, learning_rate,
            negative_slope: As :class:`ResVAE`.
        clusters: Number ``c`` of mixture components (the paper uses 3, 6, 9).
        w_dim: Channels of the ``ω`` map (``latent_size × latent_size × w_dim``).
        prior_hidden: Width of the tanh hidden layer of the network that maps
            ``ω`` to all components' means and log-variances.
        kl_k_free_bits: Free-bits floor on ``KL(p(k|z,ω) || p(k))`` in the
            *training* loss (Nat-D/GMVAE's ``lambda``; 0 disables it). Reported
            metrics and :meth:`log_density` use the unmodified term.

    Loss terms reported by ``fit``: ``loss``, ``rec_loss``, ``cond_prior``,
    ``kl_w``, ``kl_k``.

    Example:
        >>> gm = GMVAE(image_size=32, filters=(4, 8, 16), clusters=3, w_dim=4)
        >>> w = gm.w_prior().sample(2)                   # doctest: +SKIP
        >>> gm.prior(w).sample().shape                   # doctest: +SKIP
        TensorShape([2, 4, 4, 16])
    """

    model_name = "gmvae"
    _term_names = ("rec_loss", "cond_prior", "kl_w", "kl_k")

    def __init__(
        self,
        image_size: int = 128,
        channels: int = 1,
        sigma: float = PAPER_SIGMA,
        filters=PAPER_FILTERS,
        latent_channels: int | None = None,
        learning_rate: float = 1e-3,
        negative_slope: float = 0.2,
        clusters: int = 9,
        w_dim: int = 64,
        prior_hidden: int = 256,
        kl_k_free_bits: float = 0.5,
        **kwargs,
    ):
        # Plain attributes first: the base constructor creates and builds the heads.
        self.clusters = int(clusters)
        self.w_dim = int(w_dim)
        self.prior_hidden = int(prior_hidden)
        self.kl_k_free_bits = float(kl_k_free_bits)
        if self.clusters < 1 or self.w_dim < 1 or self.prior_hidden < 1:
            raise ConfigError(
                f"clusters, w_dim and prior_hidden must be positive, got {clusters}, {w_dim}, {prior_hidden}"
            )
        if self.kl_k_free_bits < 0:
            raise ConfigError(f"kl_k_free_bits must be >= 0, got {kl_k_free_bits}")
        super().__init__(
            image_size=image_size,
            channels=channels,
            sigma=sigma,
            filters=filters,
            latent_channels=latent_channels,
            learning_rate=learning_rate,
            negative_slope=negative_slope,
            **kwargs,
        )

    def _make_heads(self):
        k_params = self.clusters * self.latent_channels
        self.w_mean = FlipGradConv2D(self.w_dim, 1, name="w_mean")
        self.w_logvar = FlipGradConv2D(self.w_dim, 1, name="w_logvar")
        self.prior_hidden_layer = FlipGradConv2D(self.prior_hidden, 1, activation="tanh", name="prior_hidden")
        self.prior_mean = FlipGradConv2D(k_params, 1, name="prior_mean")
        self.prior_logvar = FlipGradConv2D(k_params, 1, name="prior_logvar")

    def _build_heads(self, feature_shape):
        self.w_mean.build(feature_shape)
        self.w_logvar.build(feature_shape)
        w_shape = (None, self.latent_size, self.latent_size, self.w_dim)
        self.prior_hidden_layer.build(w_shape)
        hidden = (None, self.latent_size, self.latent_size, self.prior_hidden)
        self.prior_mean.build(hidden)
        self.prior_logvar.build(hidden)

    def _per_component(self, t):
        """``(B, h, w, c·C)`` → ``(B, c, h, w, C)``."""
        s = self.latent_size
        t = tf.reshape(t, [-1, s, s, self.clusters, self.latent_channels])
        return tf.transpose(t, [0, 3, 1, 2, 4])

    def components(self, w):
        """``p(z|ω, k)`` for all ``k``: batch shape ``(B, clusters)``, event :attr:`latent_shape`."""
        h = self.prior_hidden_layer(tf.cast(w, tf.float32))
        return _diag_gaussian(self._per_component(self.prior_mean(h)), self._per_component(self.prior_logvar(h)))

    def prior(self, w):
        """The mixture ``p(z|ω) = Σ_k p(k) p(z|ω, k)`` with uniform ``p(k)``.

        Args:
            w: ``ω`` maps ``(B, latent_size, latent_size, w_dim)``, e.g. samples
                of :meth:`w_prior`.

        Returns:
            A ``tfd.MixtureSameFamily`` with batch shape ``(B,)`` and event
            shape :attr:`latent_shape`.
        """
        comps = self.components(w)
        logits = tf.zeros(tf.stack([tf.shape(w)[0], self.clusters]))
        return tfd.MixtureSameFamily(tfd.Categorical(logits=logits), comps)

    def w_prior(self):
        """``p(ω) = N(0, I)`` over ``(latent_size, latent_size, w_dim)`` maps."""
        shape = (self.latent_size, self.latent_size, self.w_dim)
        return tfd.Independent(tfd.Normal(tf.zeros(shape), 1.0), reinterpreted_batch_ndims=3)

    def posterior(self, x, training: bool = False):
        """``q(z, ω|x) = q(z|x) q(ω|x)`` as a joint distribution with parts ``z`` and ``w``."""
        h = self._features(x, training)
        return tfd.JointDistributionNamed({"z": self._q_z(h), "w": _diag_gaussian(self.w_mean(h), self.w_logvar(h))})

    def elbo_terms(self, x, training: bool = False, sample: bool = False):
        """Per-sample negative-ELBO terms ``{name: (B,)}``; see the class docstring."""
        h = self._features(x, training)
        z_mean, z_logvar = to_float32(self.z_mean(h)), to_float32(self.z_logvar(h))
        q_z = _diag_gaussian(z_mean, z_logvar)
        q_w = _diag_gaussian(self.w_mean(h), self.w_logvar(h))
        z = q_z.sample() if sample else z_mean
        w = q_w.sample() if sample else q_w.mean()
        rec = -gaussian_log_likelihood(x, self.decode(z, training=training), self.sigma)
        comps = self.components(w)  # batch (B, c)
        # p(k|z,ω) ∝ p(z|ω,k) p(k); uniform p(k) cancels in the softmax.
        k_logits = comps.log_prob(z[:, None])
        p_k = tf.nn.softmax(k_logits, axis=-1)
        q_z_k = _diag_gaussian(z_mean[:, None], z_logvar[:, None])  # batch (B, 1) against (B, c)
        cond_prior = tf.reduce_sum(p_k * tfd.kl_divergence(q_z_k, comps), axis=-1)
        uniform = tfd.Categorical(logits=tf.zeros_like(k_logits))
        kl_k = tfd.kl_divergence(tfd.Categorical(logits=k_logits), uniform)
        return {
            "rec_loss": rec,
            "cond_prior": cond_prior,
            "kl_w": tfd.kl_divergence(q_w, self.w_prior()),
            "kl_k": kl_k,
        }

    def _training_loss(self, terms):
        kl_k = tf.maximum(terms["kl_k"], self.kl_k_free_bits)
        rest = [v for n, v in terms.items() if n != "kl_k"]
        return tf.reduce_mean(tf.add_n(rest) + kl_k)

    def get_config(self):
        config = super().get_config()
        config.update(
            clusters=self.clusters,
            w_dim=self.w_dim,
            prior_hidden=self.prior_hidden,
            kl_k_free_bits=self.kl_k_free_bits,
        )
        return config
