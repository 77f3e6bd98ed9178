"""Encoder, decoder and discriminator building blocks of the Baur et al. models.

All autoencoding models of Baur et al. (2018, "Deep Autoencoding Models for
Unsupervised Anomaly Segmentation in Brain MR Images", Sec. "Implementation")
share *one* convolutional trunk so that their encoder/decoder complexity is the
same and only the bottleneck differs:

* encoder trunk: ``depth`` blocks of stride-2 ``kernel_size`` convolution,
  batch normalisation and leaky ReLU, with ``min(base_filters * 2**i,
  max_filters)`` filters (32, 64, 128, 128, ... by default);
* decoder trunk: the mirror image with stride-2 transposed convolutions, then a
  linear 1×1 convolution to the image channels (no output non-linearity, so
  both [0, 1] intensities and z-scores can be reconstructed);
* bottleneck heads that turn trunk features into a latent code and back
  (dense ``latent_dim`` vector or ``latent_size × latent_size × latent_channels``
  feature maps);
* :class:`Discriminator`: the encoder trunk without normalisation followed by a
  one-unit dense layer (real/fake logit).

Example:
    >>> trunk = conv_encoder(trunk_depth(128, 16))     # 128 px -> 16 px
    >>> [layer.filters for layer in trunk.layers if hasattr(layer, "filters")]
    [32, 64, 128]
"""
from __future__ import annotations

import math

import keras

from tfuad.errors import ConfigError

__all__ = [
    "LEAKY_SLOPE",
    "check_number",
    "trunk_depth",
    "trunk_filters",
    "conv_block",
    "conv_encoder",
    "conv_decoder",
    "UPSAMPLING",
    "dense_encoder_head",
    "dense_decoder_head",
    "spatial_encoder_head",
    "spatial_decoder_head",
    "Discriminator",
]

#: Negative slope of every leaky ReLU (DCGAN convention).
LEAKY_SLOPE = 0.2


def check_number(name: str, value, *, integer: bool = False, minimum=None, maximum=None,
                 exclusive_minimum: bool = False):
    """Validate a numeric constructor argument.

    Args:
        name: Argument name used in the error message.
        value: The value to check.
        integer: Require an integer (booleans are rejected).
        minimum: Smallest allowed value (``None`` for no bound).
        maximum: Largest allowed value (``None`` for no bound).
        exclusive_minimum: Make ``minimum`` itself invalid.

    Returns:
        ``value`` as ``int`` or ``float``.

    Raises:
        ConfigError: if the value has the wrong type or is out of range.

    Example:
        >>> check_number("latent_dim", 512, integer=True, minimum=1)
        512
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not float(value).is_integer()):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    value = int(value) if integer else float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if minimum is not None and (value < minimum or (exclusive_minimum and value == minimum)):
        relation = ">" if exclusive_minimum else ">="
        raise ConfigError(f"{name} must be {relation} {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value!r}")
    return value


def trunk_depth(image_size: int, size: int, name: str = "latent_size") -> int:
    """Number of stride-2 blocks that take ``image_size`` down to ``size``.

    Args:
        image_size: Side of the square input.
        size: Side of the trunk output (e.g. the spatial latent size).
        name: Argument name used in the error message.

    Returns:
        ``log2(image_size / size)`` (at least 1).

    Raises:
        ConfigError: unless ``image_size / size`` is a power of two >= 2.

    Example:
        >>> trunk_depth(256, 16), trunk_depth(256, 8)
        (4, 5)
    """
    image_size = check_number("image_size", image_size, integer=True, minimum=2)
    size = check_number(name, size, integer=True, minimum=1)
    ratio = image_size // size
    if image_size % size or ratio < 2 or ratio & (ratio - 1):
        raise ConfigError(
            f"{name}={size} must divide image_size={image_size} by a power of two "
            "(2, 4, 8, 16, ...)")
    return ratio.bit_length() - 1


def trunk_filters(depth: int, base_filters: int = 32, max_filters: int = 128) -> list:
    """Filters of the encoder trunk blocks: ``min(base_filters * 2**i, max_filters)``.

    Args:
        depth: Number of blocks.
        base_filters: Filters of the first block.
        max_filters: Cap on the number of filters.

    Returns:
        List of ``depth`` integers.

    Example:
        >>> trunk_filters(5)
        [32, 64, 128, 128, 128]
    """
    return [min(base_filters * 2 ** i, max_filters) for i in range(depth)]


#: How decoders double the resolution: a stride-2 transposed convolution, or a nearest-neighbour
#: resize followed by a stride-1 convolution (no checkerboard; Odena et al. 2016, Distill).
UPSAMPLING = ("transpose", "resize")


def conv_block(filters: int, kernel_size: int = 5, strides: int = 2, *, transpose: bool = False,
               batch_norm: bool = True, upsampling: str = "transpose") -> list:
    """Convolution (or an up-sampling convolution), optional batch norm, leaky ReLU.

    Args:
        filters: Output channels.
        kernel_size: Square kernel side.
        strides: Stride (2 halves/doubles the resolution).
        transpose: Up-sample by ``strides`` instead of down-sampling.
        batch_norm: Add batch normalisation before the activation.
        upsampling: With ``transpose``: ``"transpose"`` (a transposed
            convolution, the papers' choice) or ``"resize"`` (nearest-neighbour
            resize, then a convolution: every output pixel sees the same number
            of inputs, so no checkerboard).

    Returns:
        List of layers.
    """
    if upsampling not in UPSAMPLING:
        raise ConfigError(f"upsampling must be one of {', '.join(UPSAMPLING)}, got {upsampling!r}")
    if transpose and upsampling == "resize":
        layers = [] if strides == 1 else [keras.layers.UpSampling2D(strides, interpolation="nearest")]
        layers.append(keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=not batch_norm))
    else:
        conv = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
        layers = [conv(filters, kernel_size, strides=strides, padding="same", use_bias=not batch_norm)]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE))
    return layers


def conv_encoder(depth: int, base_filters: int = 32, max_filters: int = 128, kernel_size: int = 5,
                 *, batch_norm: bool = True, name: str = "trunk") -> keras.Sequential:
    """Encoder trunk: ``depth`` stride-2 convolution blocks.

    Args:
        depth: Number of blocks (the resolution shrinks by ``2**depth``).
        base_filters: Filters of the first block.
        max_filters: Cap on the number of filters.
        kernel_size: Square kernel side.
        batch_norm: Use batch normalisation (off for discriminators).
        name: Name of the returned model.

    Returns:
        An unbuilt :class:`keras.Sequential` mapping ``(B, S, S, C)`` to
        ``(B, S / 2**depth, S / 2**depth, trunk_filters(...)[-1])``.
    """
    layers = []
    for filters in trunk_filters(depth, base_filters, max_filters):
        layers += conv_block(filters, kernel_size, 2, batch_norm=batch_norm)
    return keras.Sequential(layers, name=name)


def conv_decoder(depth: int, channels: int = 1, base_filters: int = 32, max_filters: int = 128,
                 kernel_size: int = 5, *, upsampling: str = "transpose", name: str = "trunk") -> keras.Sequential:
    """Decoder trunk: the mirror of :func:`conv_encoder` plus a linear output layer.

    Args:
        depth: Number of stride-2 transposed convolution blocks.
        channels: Output image channels.
        base_filters: Filters of the last (finest) block.
        max_filters: Cap on the number of filters.
        kernel_size: Square kernel side.
        upsampling: ``"transpose"`` or ``"resize"`` (see :func:`conv_block`).
        name: Name of the returned model.

    Returns:
        An unbuilt :class:`keras.Sequential` mapping trunk features at
        ``S / 2**depth`` to ``(B, S, S, channels)`` with a linear 1×1 output
        convolution.
    """
    layers = []
    for filters in reversed(trunk_filters(depth, base_filters, max_filters)):
        layers += conv_block(filters, kernel_size, 2, transpose=True, upsampling=upsampling)
    layers.append(keras.layers.Conv2D(channels, 1, padding="same", name="output"))
    return keras.Sequential(layers, name=name)


def _reduced_channels(trunk_channels: int) -> int:
    """Channels of the 1×1 convolution in front of a dense bottleneck (1/8 of the trunk)."""
    return max(1, trunk_channels // 8)


def dense_encoder_head(units: int, trunk_channels: int, *, name: str = "head") -> keras.Sequential:
    """Trunk features → dense latent vector.

    A linear 1×1 convolution first reduces the trunk channels eight-fold so
    that the dense layer stays affordable at 256 px (as in the authors'
    reference implementation), then the features are flattened into a
    ``units``-wide dense layer.

    Args:
        units: Output width (``latent_dim``, or ``2 * latent_dim`` for means
            and log-variances).
        trunk_channels: Channels of the trunk output.
        name: Name of the returned model.

    Returns:
        An unbuilt :class:`keras.Sequential`.
    """
    return keras.Sequential([
        keras.layers.Conv2D(_reduced_channels(trunk_channels), 1, name="reduce"),
        keras.layers.Flatten(),
        keras.layers.Dense(units, name="latent"),
    ], name=name)


def dense_decoder_head(feature_size: int, trunk_channels: int, *,
                       name: str = "head") -> keras.Sequential:
    """Dense latent vector → trunk features (inverse of :func:`dense_encoder_head`).

    Args:
        feature_size: Spatial side of the trunk features.
        trunk_channels: Channels expected by the decoder trunk.
        name: Name of the returned model.

    Returns:
        An unbuilt :class:`keras.Sequential` ending in batch norm and leaky ReLU.
    """
    reduced = _reduced_channels(trunk_channels)
    return keras.Sequential([
        keras.layers.Dense(feature_size * feature_size * reduced, name="expand"),
        keras.layers.Reshape((feature_size, feature_size, reduced)),
        *conv_block(trunk_channels, 1, 1),
    ], name=name)


def spatial_encoder_head(latent_channels: int, *, name: str = "head") -> keras.Sequential:
    """Trunk features → spatial latent feature maps (linear 1×1 convolution).

    Args:
        latent_channels: Output channels (``2 * latent_channels`` for means and
            log-variances).
        name: Name of the returned model.

    Returns:
        An unbuilt :class:`keras.Sequential`.
    """
    return keras.Sequential([keras.layers.Conv2D(latent_channels, 1, name="latent")], name=name)


def spatial_decoder_head(trunk_channels: int, *, name: str = "head") -> keras.Sequential:
    """Spatial latent feature maps → trunk features (1×1 convolution block).

    Args:
        trunk_channels: Channels expected by the decoder trunk.
        name: Name of the returned model.

    Returns:
        An unbuilt :class:`keras.Sequential` ending in batch norm and leaky ReLU.
    """
    return keras.Sequential(conv_block(trunk_channels, 1, 1), name=name)


@keras.saving.register_keras_serializable(package="tfuad")
class Discriminator(keras.layers.Layer):
    """Real/fake image classifier: convolution trunk without normalisation + dense logit.

    The flattened trunk output is the intermediate representation used for
    AnoGAN's feature-matching loss (Schlegl et al. 2017).

    Args:
        depth: Number of stride-2 convolution blocks.
        base_filters: Filters of the first block.
        max_filters: Cap on the number of filters.
        kernel_size: Square kernel side.

    Example:
        >>> disc = Discriminator(depth=2, base_filters=4, max_filters=8)
        >>> tuple(disc(keras.ops.zeros((3, 16, 16, 1))).shape)
        (3, 1)
    """

    def __init__(self, depth: int, base_filters: int = 32, max_filters: int = 128,
                 kernel_size: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.depth = check_number("depth", depth, integer=True, minimum=1)
        self.base_filters = check_number("base_filters", base_filters, integer=True, minimum=1)
        self.max_filters = check_number("max_filters", max_filters, integer=True, minimum=1)
        self.kernel_size = check_number("kernel_size", kernel_size, integer=True, minimum=1)
        self.trunk = conv_encoder(self.depth, self.base_filters, self.max_filters,
                                  self.kernel_size, batch_norm=False)
        self.flatten = keras.layers.Flatten()
        self.logit = keras.layers.Dense(1, name="logit")

    def build(self, input_shape):
        self.trunk.build(input_shape)
        side = input_shape[1] // 2 ** self.depth
        channels = trunk_filters(self.depth, self.base_filters, self.max_filters)[-1]
        self.logit.build((None, side * side * channels))

    def features(self, inputs, training: bool = False):
        """Flattened trunk output ``(B, F)`` (intermediate layer for feature matching)."""
        return self.flatten(self.trunk(inputs, training=training))

    def call(self, inputs, training: bool = False):
        """Real/fake logits of shape ``(B, 1)``."""
        return self.logit(self.features(inputs, training=training))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        config = super().get_config()
        config.update(depth=self.depth, base_filters=self.base_filters,
                      max_filters=self.max_filters, kernel_size=self.kernel_size)
        return config
