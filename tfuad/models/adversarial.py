"""Adversarially trained models of Baur et al. (2018): sAE-GAN, AnoVAEGAN and AnoGAN.

* :class:`SpatialAEGAN` (``saegan``): the spatial autoencoder trained with an
  additional adversarial loss on its reconstructions (context-encoder style
  "AE-GAN", Sec. "Experiments", Table 1).
* :class:`AnoVAEGAN` (``anovaegan``): the spatial VAE plus a discriminator,
  i.e. the paper's proposed model (Sec. "Methodology", Fig. 2)::

      L_VAE = λ1 ||x − x̂||₁ + λ2 KL(q(z|x) || N(0, I)) − λ3 log D(x̂)
      L_D   = −log D(x) − log(1 − D(x̂))

  trained in alternation: every ``train_step`` first updates the
  discriminator on the current reconstructions, then the VAE against the
  updated discriminator (Adam 1e-3 for the reconstruction objective, Adam 1e-4
  for the discriminator).
* :class:`AnoGAN` (``anogan``): Schlegl et al. (2017) as used by Baur et al.:
  a DCGAN-style generator/discriminator pair trained on healthy slices, and a
  reconstruction obtained by iteratively optimising the latent code
  (100 steps in the paper) under the mapping loss
  ``(1 − λ) · ||x − G(z)||₁ + λ · ||f(x) − f(G(z))||₁`` with λ = 0.1 and
  ``f`` the discriminator's last convolutional features.

Discriminators output logits; ``−log D(·)`` and ``−log(1 − D(·))`` are computed
as ``softplus(−logit)`` and ``softplus(logit)`` for numerical stability, in
float32 (also when the networks compute in bfloat16).

Example:
    >>> import tensorflow as tf
    >>> model = AnoVAEGAN(image_size=32, base_filters=4, max_filters=8)
    >>> model.compile()          # Adam(1e-3) for the VAE, Adam(1e-4) for D
    >>> x = tf.random.uniform((4, 32, 32, 1))
    >>> logs = model.fit(tf.data.Dataset.from_tensors(x), shuffle=False, verbose=0).history
    >>> sorted(logs)
    ['adv_loss', 'd_loss', 'kl_loss', 'loss', 'rec_loss']
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfuad.models.autoencoders import LossTrackingModel, SpatialAE, SpatialVAE, l1_per_sample
from tfuad.models.base import to_float32
from tfuad.models.layers import (
    Discriminator,
    check_number,
    conv_decoder,
    dense_decoder_head,
    trunk_depth,
    trunk_filters,
)

__all__ = [
    "ADVERSARIAL_BETA_1",
    "discriminator_loss",
    "generator_loss",
    "SpatialAEGAN",
    "AnoVAEGAN",
    "AnoGAN",
]

#: Adam β1 of the adversarial optimisers (DCGAN convention, also used by the
#: authors' reference implementation).
ADVERSARIAL_BETA_1 = 0.5


def discriminator_loss(real_logits, fake_logits):
    """``mean(−log D(x)) + mean(−log(1 − D(x̂)))`` from discriminator logits.

    Args:
        real_logits: Logits on real images ``(B, 1)``.
        fake_logits: Logits on reconstructed/generated images ``(B, 1)``.

    Returns:
        Scalar tensor.

    Example:
        >>> round(float(discriminator_loss(tf.zeros((2, 1)), tf.zeros((2, 1)))), 4)
        1.3863
    """
    return (tf.reduce_mean(tf.nn.softplus(-to_float32(real_logits)))
            + tf.reduce_mean(tf.nn.softplus(to_float32(fake_logits))))


def generator_loss(fake_logits):
    """Non-saturating generator loss ``mean(−log D(x̂))`` from discriminator logits.

    Args:
        fake_logits: Logits on reconstructed/generated images ``(B, 1)``.

    Returns:
        Scalar tensor.
    """
    return tf.reduce_mean(tf.nn.softplus(-to_float32(fake_logits)))


class _AdversarialTraining:
    """A discriminator with its own optimiser ``d_optimizer`` (mixin).

    Constructors call :meth:`_init_discriminator` once the trunk attributes
    (``depth``, ``base_filters``, ``max_filters``, ``kernel_size``) are set:
    the discriminator has the depth and filters of the model's trunk.
    """

    optimizer_names = ("optimizer", "d_optimizer")

    def _init_discriminator(self, d_learning_rate: float):
        self.d_learning_rate = check_number("d_learning_rate", d_learning_rate, minimum=0,
                                            exclusive_minimum=True)
        self.discriminator = Discriminator(self.depth, self.base_filters, self.max_filters,
                                           self.kernel_size, name="discriminator")

    def loss_names(self) -> tuple:
        return super().loss_names() + ("d_loss",)

    def build_networks(self, input_shape):
        super().build_networks(input_shape)
        self.discriminator.build(input_shape)

    def default_optimizer(self, name: str):
        if name == "d_optimizer":
            return keras.optimizers.Adam(self.d_learning_rate, beta_1=ADVERSARIAL_BETA_1)
        return super().default_optimizer(name)

    def optimizer_variables(self, name: str) -> list:
        if name == "d_optimizer":
            return self.discriminator.trainable_variables
        return super().optimizer_variables(name)

    def compile(self, optimizer=None, d_optimizer=None, **kwargs):
        """Configure training; without arguments use the paper's optimisers.

        Args:
            optimizer: Optimiser of the reconstruction/generator objective.
            d_optimizer: Optimiser of the discriminator (default: Adam with
                ``d_learning_rate`` and β1 = 0.5).
            **kwargs: Passed to :meth:`keras.Model.compile`.
        """
        self.d_optimizer = self._resolve_optimizer("d_optimizer", d_optimizer)
        super().compile(optimizer=optimizer, **kwargs)

    def _discriminator_loss(self, real, fake, training):
        return discriminator_loss(self.discriminator(real, training=training),
                                  self.discriminator(fake, training=training))

    def _train_discriminator(self, real, fake):
        """One ``d_optimizer`` step on ``L_D``; returns ``L_D`` before the update."""
        fake = tf.stop_gradient(fake)
        variables = self.optimizer_variables("d_optimizer")
        with tf.GradientTape() as tape:
            d_loss = self._discriminator_loss(real, fake, training=True)
        self.d_optimizer.apply(tape.gradient(d_loss, variables), variables)
        return d_loss

    def get_config(self):
        config = super().get_config()
        config.update(d_learning_rate=self.d_learning_rate)
        return config


class _AdversarialAutoencoder(_AdversarialTraining):
    #: The total loss holds the generator term, which rises as the discriminator learns; the
    #: reconstruction term measures convergence.
    convergence_term = "rec_loss"
    """Autoencoder trained with ``+ adv_weight · (−log D(x̂))`` (mixin).

    Args:
        adv_weight: Weight λ3 of the adversarial term.
        d_learning_rate: Learning rate of the discriminator's Adam (paper: 1e-4).
    """

    def __init__(self, *args, adv_weight: float = 1.0, d_learning_rate: float = 1e-4, **kwargs):
        super().__init__(*args, **kwargs)
        self.adv_weight = check_number("adv_weight", adv_weight, minimum=0)
        self._init_discriminator(d_learning_rate)

    def loss_names(self) -> tuple:
        names = super().loss_names()
        return names[:-1] + ("adv_loss", names[-1])  # keep d_loss last

    def _add_adversarial(self, terms, x_hat, training):
        terms["adv_loss"] = generator_loss(self.discriminator(x_hat, training=training))
        terms["loss"] = terms["loss"] + self.adv_weight * terms["adv_loss"]
        return terms

    def compute_terms(self, x, training: bool = False):
        x_hat, terms = super().compute_terms(x, training=training)
        return x_hat, self._add_adversarial(terms, x_hat, training)

    def train_step(self, data):
        x = self._images(data)
        variables = self.optimizer_variables("optimizer")
        with tf.GradientTape() as tape:
            # Reconstruction terms only; the adversarial term is added after the
            # discriminator step so that the VAE plays against the updated D.
            x_hat, terms = super().compute_terms(x, training=True)
            with tape.stop_recording():
                terms["d_loss"] = self._train_discriminator(x, x_hat)
            terms = self._add_adversarial(terms, x_hat, training=True)
        self.optimizer.apply(tape.gradient(terms["loss"], variables), variables)
        return self._track(terms)

    def test_step(self, data):
        x = self._images(data)
        x_hat, terms = self.compute_terms(x, training=False)
        terms["d_loss"] = self._discriminator_loss(x, x_hat, training=False)
        return self._track(terms)

    def get_config(self):
        config = super().get_config()
        config.update(adv_weight=self.adv_weight)
        return config


@keras.saving.register_keras_serializable(package="tfuad")
class SpatialAEGAN(_AdversarialAutoencoder, SpatialAE):
    """Spatial autoencoder with adversarial training ``sAE-GAN`` (Baur et al. 2018, Table 1).

    :class:`SpatialAE` whose reconstructions are also judged by a
    :class:`~tfuad.models.layers.Discriminator`: ``loss = rec_weight ·
    ||x − x̂||₁ + adv_weight · (−log D(x̂))`` and ``d_loss = −log D(x) −
    log(1 − D(x̂))``, alternating a discriminator step and an autoencoder step
    in every ``train_step``. :meth:`log_density` is the base Gaussian
    likelihood around the reconstruction.

    Args:
        adv_weight: Weight λ3 of the adversarial term.
        d_learning_rate: Discriminator learning rate (paper: 1e-4).
        *args, **kwargs: As for :class:`~tfuad.models.autoencoders.SpatialAE`
            (``learning_rate`` 1e-3 is the reconstruction objective's).

    Example:
        >>> model = SpatialAEGAN(image_size=128)
        >>> model.compile()
        >>> round(float(model.d_optimizer.learning_rate), 6)
        0.0001
    """

    model_name = "saegan"


@keras.saving.register_keras_serializable(package="tfuad")
class AnoVAEGAN(_AdversarialAutoencoder, SpatialVAE):
    """AnoVAEGAN: spatial VAE with adversarial training (Baur et al. 2018, Fig. 2).

    ``loss = rec_weight · ||x − x̂||₁ + kl_weight · KL + adv_weight · (−log D(x̂))``
    for encoder and decoder (Adam ``learning_rate`` = 1e-3) and
    ``d_loss = −log D(x) − log(1 − D(x̂))`` for the discriminator (Adam
    ``d_learning_rate`` = 1e-4), alternating a discriminator step and a VAE
    step in every ``train_step``. :meth:`reconstruct` decodes the posterior
    mean; :meth:`log_density` is the VAE's ELBO.

    Args:
        adv_weight: Weight λ3 of the adversarial term.
        d_learning_rate: Discriminator learning rate (paper: 1e-4).
        *args, **kwargs: As for :class:`~tfuad.models.autoencoders.SpatialVAE`.

    Example:
        >>> AnoVAEGAN(image_size=256).latent_shape
        (16, 16, 64)
    """

    model_name = "anovaegan"


@keras.saving.register_keras_serializable(package="tfuad")
class AnoGAN(_AdversarialTraining, LossTrackingModel):
    """AnoGAN (Schlegl et al. 2017) as evaluated by Baur et al. (2018, Table 1).

    Generator: a ``latent_dim`` code → dense layer → ``feature_size`` px trunk
    features → the shared decoder trunk (stride-2 transposed convolutions,
    linear output). Discriminator: the shared convolution trunk + a dense
    logit. Both are trained with the standard non-saturating GAN losses
    (``loss`` is the generator's ``−log D(G(z))``, ``d_loss`` the
    discriminator's), Adam with learning rate 1e-4 and β1 = 0.5.

    Reconstruction maps an image to the latent space by ``anogan_steps``
    Adam steps (learning rate ``anogan_lr``) on the per-sample mapping loss
    ``(1 − λ) Σ|x − G(z)| + λ Σ|f(x) − f(G(z))|`` (λ = ``anogan_lambda``,
    ``f`` = :meth:`Discriminator.features`), starting from a seeded
    ``N(0, I)`` draw; the whole batch is optimised at once inside one
    compiled :meth:`search_latent` (a ``tf.while_loop``), samples do not
    interact. :meth:`log_density` returns ``−mapping loss`` at the found code:
    a surrogate, not a normalised density.

    Args:
        image_size: Side of the square input slices.
        channels: Input channels.
        sigma: Kept for the common model interface (not used by
            :meth:`log_density`).
        latent_dim: Dimension of the generator's input code.
        feature_size: Side of the generator's first / discriminator's last
            feature maps (default ``image_size // 16``).
        base_filters: Filters of the finest convolution block.
        max_filters: Cap on the filters.
        kernel_size: Convolution kernel side.
        learning_rate: Generator learning rate (paper: 1e-4).
        d_learning_rate: Discriminator learning rate (paper: 1e-4).
        anogan_steps: Latent optimisation steps per reconstruction (paper: 100).
        anogan_lambda: Weight λ of the feature-matching term (Schlegl: 0.1).
        anogan_lr: Adam learning rate of the latent optimisation.
        search_seed: Seed of the initial latent codes of the mapping
            (reconstructions are deterministic for a given batch).
        seed: Seed of the training noise.
        **kwargs: Passed to :class:`keras.Model`.

    Example:
        >>> model = AnoGAN(image_size=32, latent_dim=8, base_filters=4, max_filters=8,
        ...                anogan_steps=5)
        >>> model.compile()
        >>> tuple(model.reconstruct(tf.zeros((2, 32, 32, 1))).shape)
        (2, 32, 32, 1)
    """

    model_name = "anogan"
    convergence_term = "none"  # no loss of AnoGAN measures convergence: the last weights are kept
    iterative = True

    def __init__(self, image_size: int = 128, channels: int = 1, sigma: float = 1.0,
                 latent_dim: int = 128, feature_size: int | None = None, base_filters: int = 32,
                 max_filters: int = 128, kernel_size: int = 5, learning_rate: float = 1e-4,
                 d_learning_rate: float = 1e-4, anogan_steps: int = 100,
                 anogan_lambda: float = 0.1, anogan_lr: float = 0.05, search_seed: int = 0,
                 seed: int | None = None, **kwargs):
        super().__init__(image_size=image_size, channels=channels, sigma=sigma,
                         learning_rate=learning_rate, seed=seed, **kwargs)
        self.latent_dim = check_number("latent_dim", latent_dim, integer=True, minimum=1)
        self.feature_size = self.image_size // 16 if feature_size is None else feature_size
        self.depth = trunk_depth(self.image_size, self.feature_size, "feature_size")
        self.base_filters = check_number("base_filters", base_filters, integer=True, minimum=1)
        self.max_filters = check_number("max_filters", max_filters, integer=True, minimum=1)
        self.kernel_size = check_number("kernel_size", kernel_size, integer=True, minimum=1)
        self.anogan_steps = check_number("anogan_steps", anogan_steps, integer=True, minimum=0)
        self.anogan_lambda = check_number("anogan_lambda", anogan_lambda, minimum=0, maximum=1)
        self.anogan_lr = check_number("anogan_lr", anogan_lr, minimum=0, exclusive_minimum=True)
        self.search_seed = check_number("search_seed", search_seed, integer=True, minimum=0)
        self._init_discriminator(d_learning_rate)
        trunk_channels = trunk_filters(self.depth, self.base_filters, self.max_filters)[-1]
        self.generator = keras.Sequential([
            dense_decoder_head(self.feature_size, trunk_channels),
            conv_decoder(self.depth, self.channels, self.base_filters, self.max_filters,
                         self.kernel_size),
        ], name="generator")

    # -- networks -----------------------------------------------------------
    def build_networks(self, input_shape):
        super().build_networks(input_shape)
        self.generator.build((None, self.latent_dim))

    def optimizer_variables(self, name: str) -> list:
        if name == "optimizer":
            return self.generator.trainable_variables
        return super().optimizer_variables(name)

    def default_optimizer(self, name: str):
        if name == "optimizer":
            return keras.optimizers.Adam(self.learning_rate, beta_1=ADVERSARIAL_BETA_1)
        return super().default_optimizer(name)

    def generate(self, z, training: bool = False):
        """Images ``G(z)`` of shape ``(B, S, S, channels)`` from codes ``(B, latent_dim)``, float32."""
        return to_float32(self.generator(z, training=training))

    # -- latent mapping -----------------------------------------------------
    def mapping_loss(self, x, z):
        """Per-sample mapping loss ``(1 − λ) Σ|x − G(z)| + λ Σ|f(x) − f(G(z))|``.

        Args:
            x: Images ``(B, S, S, channels)``.
            z: Latent codes ``(B, latent_dim)``.

        Returns:
            Tensor ``(B,)``.
        """
        return self._mapping_loss(x, self._features(x), z)

    def _features(self, x):
        """Discriminator features ``f(x)``, float32."""
        return to_float32(self.discriminator.features(x))

    def _mapping_loss(self, x, x_features, z):
        g = self.generate(z)
        residual = l1_per_sample(x, g)
        discrimination = tf.reduce_sum(tf.abs(x_features - self._features(g)), axis=1)
        return (1.0 - self.anogan_lambda) * residual + self.anogan_lambda * discrimination

    @tf.function(reduce_retracing=True)
    def search_latent(self, x, steps, compute_dtype=None):
        """Latent codes minimising :meth:`mapping_loss`, found by Adam in a ``tf.while_loop``.

        Compiled once per input signature and compute dtype: pass ``steps``
        as an ``int32`` tensor to share one trace between step counts. The
        code, its Adam moments and the loss stay float32 under
        ``mixed_bfloat16``.

        Args:
            x: Images ``(B, S, S, channels)``.
            steps: Number of Adam steps (scalar).
            compute_dtype: The networks' compute dtype, a key of the trace
                (:meth:`map_to_latent` passes it, so a trace made inside
                :func:`~tfuad.models.base.computing_at` is not reused at
                another precision).

        Returns:
            Codes ``(B, latent_dim)``; the start is ``N(0, I)`` drawn with
            ``search_seed``, so the result is deterministic.
        """
        x = tf.cast(x, tf.float32)
        x_features = self._features(x)
        z = tf.random.stateless_normal((tf.shape(x)[0], self.latent_dim),
                                       seed=(self.search_seed, 0))
        beta_1, beta_2, epsilon = 0.9, 0.999, 1e-7

        def step(i, z, m, v):
            with tf.GradientTape() as tape:
                tape.watch(z)
                loss = tf.reduce_sum(self._mapping_loss(x, x_features, z))
            grad = tape.gradient(loss, z)
            m = beta_1 * m + (1.0 - beta_1) * grad
            v = beta_2 * v + (1.0 - beta_2) * tf.square(grad)
            t = tf.cast(i + 1, tf.float32)
            rate = self.anogan_lr * tf.sqrt(1.0 - beta_2 ** t) / (1.0 - beta_1 ** t)
            return i + 1, z - rate * m / (tf.sqrt(v) + epsilon), m, v

        _, z, _, _ = tf.while_loop(lambda i, *_: i < tf.cast(steps, tf.int32), step,
                                   (tf.constant(0), z, tf.zeros_like(z), tf.zeros_like(z)))
        return z

    def map_to_latent(self, x, steps: int | None = None):
        """Latent codes of ``x`` after ``steps`` (default ``anogan_steps``) mapping steps."""
        steps = self.anogan_steps if steps is None else check_number("steps", steps, integer=True,
                                                                     minimum=0)
        return self.search_latent(tf.cast(x, tf.float32), tf.constant(steps, tf.int32), self.compute_dtype)

    def call(self, inputs, training: bool = False):
        self._check_shape(inputs.shape)
        return self.generate(self.map_to_latent(inputs), training=training)

    def log_density(self, x, training: bool = False):
        """Surrogate log-density ``−mapping_loss(x, z*)`` of shape ``(B,)``.

        ``z*`` comes from :meth:`map_to_latent` and is held fixed
        (``stop_gradient``): at a converged mapping ∂loss/∂z ≈ 0, so the
        gradient w.r.t. ``x`` is that of the mapping loss itself. Not a
        normalised density.
        """
        x = tf.cast(x, tf.float32)
        return -self.mapping_loss(x, tf.stop_gradient(self.map_to_latent(x)))

    # -- training -----------------------------------------------------------
    def _noise(self, x):
        return keras.random.normal((tf.shape(x)[0], self.latent_dim), seed=self.seed_generator)

    def train_step(self, data):
        x = self._images(data)
        z = self._noise(x)
        variables = self.optimizer_variables("optimizer")
        with tf.GradientTape() as tape:
            fake = self.generate(z, training=True)
            with tape.stop_recording():
                d_loss = self._train_discriminator(x, fake)
            g_loss = generator_loss(self.discriminator(fake, training=True))
        self.optimizer.apply(tape.gradient(g_loss, variables), variables)
        return self._track({"loss": g_loss, "d_loss": d_loss})

    def test_step(self, data):
        x = self._images(data)
        fake = self.generate(self._noise(x))
        return self._track({"loss": generator_loss(self.discriminator(fake)),
                            "d_loss": self._discriminator_loss(x, fake, training=False)})

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim, feature_size=self.feature_size,
                      base_filters=self.base_filters, max_filters=self.max_filters,
                      kernel_size=self.kernel_size, anogan_steps=self.anogan_steps,
                      anogan_lambda=self.anogan_lambda, anogan_lr=self.anogan_lr,
                      search_seed=self.search_seed)
        return config
