"""Residual down- and up-sampling blocks of Chen et al. 2020 (their Fig. 3).

A :class:`DownBlock` halves the spatial size::

    x ─ DS-CONV 3×3/2 ─ BN ─ lrelu ─ CONV 3×3 ─ BN ─(+)─ lrelu ─ out
    └──────────── DS-CONV 1×1/2 (shortcut) ─────────┘

An :class:`UpBlock` doubles it, with the down-sampling convolutions replaced by
up-sampling convolutions (a convolution followed by bilinear ×2 up-sampling)::

    x ─ CONV 3×3 ─ up×2 ─ BN ─ lrelu ─ CONV 3×3 ─ BN ─(+)─ lrelu ─ out
    └──────────── CONV 1×1 ─ up×2 (shortcut) ────────────┘

Both blocks use "same" padding, no convolution bias (batch norm follows) and
leaky ReLU. The paper does not give the exact order inside the block; this one
keeps the channel-changing 3×3 convolution at the lower resolution, which
halves the cost of the block compared with convolving after up-sampling.

Two implementation details make gradients with respect to the *input* cheap,
which MAP restoration needs at every step (the functions are unchanged):

* :class:`FlipGradConv2D` computes the input gradient of its convolutions
  with forward convolutions (flipped kernels for stride 1, a polyphase
  re-arrangement for stride 2); TensorFlow's CPU ``Conv2DBackpropInput`` is
  2–6× slower than its forward convolution.
* In inference mode batch normalisation is folded into the preceding
  convolution (``conv(x, W·a) + b``), removing two elementwise passes over
  every activation (forward and backward). Bilinear up-sampling commutes with
  the per-channel affine map, so the up-sampling blocks fold too.

Example:
    >>> import numpy as np
    >>> block = DownBlock(8)
    >>> block(np.zeros((2, 32, 32, 1), "float32")).shape
    TensorShape([2, 16, 16, 8])
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

__all__ = ["FlipGradConv2D", "DownBlock", "UpBlock"]


def _check_filters(filters) -> int:
    filters = int(filters)
    if filters < 1:
        raise ValueError(f"filters must be a positive integer, got {filters}")
    return filters


def _flipped(kernel):
    """Kernel of the adjoint of a stride-1 "same" correlation: flip space, swap channels."""
    return tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])


def _filter_grad(x, kernel, dy, stride):
    """Gradient of a "same" convolution with respect to its kernel.

    A 1×1 kernel reads every ``stride``-th pixel of ``x`` (no padding for even
    sizes), so its gradient is one matrix product; this also avoids a oneDNN
    ``Conv2DBackpropFilter`` kernel that corrupts memory for 1×1 stride-2
    convolutions of single-channel inputs.
    """
    if kernel.shape[0] == 1 and kernel.shape[1] == 1:
        return tf.einsum("bhwc,bhwd->cd", x[:, ::stride, ::stride, :], dy)[None, None]
    return tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=tf.shape(kernel), out_backprop=dy, strides=[1, stride, stride, 1], padding="SAME"
    )


@tf.custom_gradient
def _conv2d_same(x, kernel):
    y = tf.nn.conv2d(x, kernel, 1, "SAME")

    def grad(dy):
        return tf.nn.conv2d(dy, _flipped(kernel), 1, "SAME"), _filter_grad(x, kernel, dy, 1)

    return y, grad


def _phase_taps(k: int, pad: int):
    """Adjoint of a 1-D stride-2 correlation with ``k`` taps and ``pad`` leading zeros.

    With ``x = x_pad[pad:]`` split into phases ``x[2m + φ]``, the adjoint is a
    stride-1 correlation of the padded output gradient with one small kernel
    per phase. Returns ``(index, front, back)``: ``index[t, φ]`` is the tap of
    the original kernel used at adjoint tap ``t`` for phase ``φ`` (``k`` means
    zero), and the output gradient is padded by ``front``/``back``.
    """
    taps = {phi: [j for j in range(-k, k + 1) if 0 <= 2 * j + phi + pad < k] for phi in (0, 1)}
    offsets = [-j for js in taps.values() for j in js]
    lo, hi = min(offsets), max(offsets)
    index = np.full((hi - lo + 1, 2), k)
    for phi, js in taps.items():
        for j in js:
            index[-j - lo, phi] = 2 * j + phi + pad
    return index, -lo, hi


def _conv2d_same_stride2(x, kernel):
    """Stride-2 "same" convolution (even input sizes) with a polyphase input gradient.

    The input gradient is a stride-1 convolution of the output gradient with a
    re-arranged kernel followed by ``depth_to_space``, instead of TensorFlow's
    slow ``Conv2DBackpropInput``.
    """
    kh, kw, cin, cout = kernel.shape
    rows, pr0, pr1 = _phase_taps(kh, max(kh - 2, 0) // 2)
    cols, pc0, pc1 = _phase_taps(kw, max(kw - 2, 0) // 2)

    @tf.custom_gradient
    def conv(x, kernel):
        y = tf.nn.conv2d(x, kernel, 2, "SAME")

        def grad(dy):
            k = tf.pad(kernel, [[0, 1], [0, 1], [0, 0], [0, 0]])
            k = tf.gather(tf.gather(k, rows.reshape(-1), axis=0), cols.reshape(-1), axis=1)
            k = tf.reshape(k, [len(rows), 2, len(cols), 2, cin, cout])
            k = tf.reshape(tf.transpose(k, [0, 2, 5, 1, 3, 4]), [len(rows), len(cols), cout, 4 * cin])
            dy_pad = tf.pad(dy, [[0, 0], [pr0, pr1], [pc0, pc1], [0, 0]])
            dx = tf.nn.depth_to_space(tf.nn.conv2d(dy_pad, k, 1, "VALID"), 2)
            return dx, _filter_grad(x, kernel, dy, 2)

        return y, grad

    return conv(x, kernel)


@keras.saving.register_keras_serializable(package="tfuad")
class FlipGradConv2D(layers.Conv2D):
    """``keras.layers.Conv2D`` whose input gradient runs on forward convolutions.

    TensorFlow's CPU ``Conv2DBackpropInput`` is several times slower than its
    forward convolution. For "same" odd kernels (any 1×1 kernel) this layer
    computes the exact input gradient with forward convolutions instead:

    * stride 1: the adjoint is the same correlation with the spatially
      flipped kernel and swapped channel axes;
    * stride 2 on even input sizes: a polyphase decomposition turns the
      adjoint into a stride-1 convolution with a re-arranged kernel followed
      by ``depth_to_space``.

    Other configurations fall back to the standard implementation. Weight
    gradients are unchanged (``Conv2DBackpropFilter``).

    Example:
        >>> conv = FlipGradConv2D(8, 3, padding="same")
        >>> conv(np.zeros((1, 16, 16, 4), "float32")).shape
        TensorShape([1, 16, 16, 8])
    """

    def _adjoint_kind(self, inputs):
        plain = (
            (self.padding == "same" or tuple(self.kernel_size) == (1, 1))
            and tuple(self.dilation_rate) == (1, 1)
            and all(k % 2 == 1 for k in self.kernel_size)
            and self.data_format == "channels_last"
            and self.groups == 1
        )
        if not plain:
            return None
        if tuple(self.strides) == (1, 1):
            return "flip"
        even = all(d is not None and d % 2 == 0 for d in inputs.shape[1:3])
        if tuple(self.strides) == (2, 2) and self.padding == "same" and even:
            return "polyphase"
        return None

    def convolution_op(self, inputs, kernel):
        kind = self._adjoint_kind(inputs)
        if kind == "flip":
            return _conv2d_same(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))
        if kind == "polyphase":
            return _conv2d_same_stride2(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))
        return super().convolution_op(inputs, kernel)


def _conv_bn(conv, bn, x, training, between=None):
    """``bn(between(conv(x)))``; in inference mode with the batch norm folded into the kernel.

    ``between`` must be linear and preserve constants per channel (identity or
    bilinear up-sampling), so it commutes with the folded affine map.
    """
    between = between or (lambda t: t)
    if training:
        return bn(between(conv(x)), training=True)
    scale = bn.gamma * tf.math.rsqrt(bn.moving_variance + bn.epsilon)
    shift = bn.beta - bn.moving_mean * scale
    return between(conv.convolution_op(x, conv.kernel * scale)) + shift


def _spatial(shape, factor):
    """``(B, H, W, C)`` shape with H and W scaled by ``factor`` and C replaced later."""
    h, w = shape[1], shape[2]
    scale = (lambda v: None if v is None else int(v * factor))
    return scale(h), scale(w)


@keras.saving.register_keras_serializable(package="tfuad")
class DownBlock(layers.Layer):
    """Down-sampling residual block (stride-2 convolution, batch norm, leaky ReLU).

    Args:
        filters: Output channels.
        negative_slope: Slope of the leaky ReLU for negative inputs.
    """

    def __init__(self, filters: int, negative_slope: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.filters = _check_filters(filters)
        self.negative_slope = float(negative_slope)
        self.ds_conv = FlipGradConv2D(self.filters, 3, strides=2, padding="same", use_bias=False, name="ds_conv")
        self.bn1 = layers.BatchNormalization(name="bn1")
        self.conv = FlipGradConv2D(self.filters, 3, padding="same", use_bias=False, name="conv")
        self.bn2 = layers.BatchNormalization(name="bn2")
        self.shortcut = FlipGradConv2D(self.filters, 1, strides=2, padding="same", use_bias=False, name="shortcut")

    def build(self, input_shape):
        h, w = _spatial(input_shape, 0.5)
        inner = (input_shape[0], h, w, self.filters)
        self.ds_conv.build(input_shape)
        self.shortcut.build(input_shape)
        self.bn1.build(inner)
        self.conv.build(inner)
        self.bn2.build(inner)
        self.built = True

    def compute_output_shape(self, input_shape):
        h, w = _spatial(input_shape, 0.5)
        return (input_shape[0], h, w, self.filters)

    def call(self, x, training=False):
        h = keras.ops.leaky_relu(_conv_bn(self.ds_conv, self.bn1, x, training), self.negative_slope)
        h = _conv_bn(self.conv, self.bn2, h, training)
        return keras.ops.leaky_relu(h + self.shortcut(x), self.negative_slope)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, negative_slope=self.negative_slope)
        return config


@keras.saving.register_keras_serializable(package="tfuad")
class UpBlock(layers.Layer):
    """Up-sampling residual block (bilinear ×2 up-sampling, batch norm, leaky ReLU).

    Args:
        filters: Output channels.
        negative_slope: Slope of the leaky ReLU for negative inputs.
    """

    def __init__(self, filters: int, negative_slope: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.filters = _check_filters(filters)
        self.negative_slope = float(negative_slope)
        self.up_conv = FlipGradConv2D(self.filters, 3, padding="same", use_bias=False, name="up_conv")
        self.up = layers.UpSampling2D(2, interpolation="bilinear", name="up")
        self.bn1 = layers.BatchNormalization(name="bn1")
        self.conv = FlipGradConv2D(self.filters, 3, padding="same", use_bias=False, name="conv")
        self.bn2 = layers.BatchNormalization(name="bn2")
        self.shortcut = FlipGradConv2D(self.filters, 1, padding="same", use_bias=False, name="shortcut")

    def build(self, input_shape):
        h, w = _spatial(input_shape, 2)
        inner = (input_shape[0], h, w, self.filters)
        self.up_conv.build(input_shape)
        self.shortcut.build(input_shape)
        self.bn1.build(inner)
        self.conv.build(inner)
        self.bn2.build(inner)
        self.built = True

    def compute_output_shape(self, input_shape):
        h, w = _spatial(input_shape, 2)
        return (input_shape[0], h, w, self.filters)

    def call(self, x, training=False):
        h = _conv_bn(self.up_conv, self.bn1, x, training, between=self.up)
        h = keras.ops.leaky_relu(h, self.negative_slope)
        h = _conv_bn(self.conv, self.bn2, h, training)
        return keras.ops.leaky_relu(h + self.up(self.shortcut(x)), self.negative_slope)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, negative_slope=self.negative_slope)
        return config
