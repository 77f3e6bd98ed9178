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

Several implementation details make gradients with respect to the *input*
cheap, which MAP restoration needs at every step (the functions are unchanged):

* :class:`FlipGradConv2D` computes the input gradient of its float32
  convolutions with forward convolutions (flipped kernels for stride 1, a
  polyphase re-arrangement for stride 2); TensorFlow's CPU
  ``Conv2DBackpropInput`` is 2–6× slower than its forward convolution. In
  bfloat16 (which only pays with TensorFlow's oneDNN kernels) TensorFlow's
  own input gradient is as fast or faster: summed over the convolutions of
  the 128 px prior it took 0.93–1.00× the time of the flipped kernels and
  0.76–0.94× that of the polyphase ones, so bfloat16 layers use it.
* In inference mode batch normalisation is folded into the preceding
  convolution (``conv(x, W·a) + b``), removing two elementwise passes over
  every activation (forward and backward). Bilinear up-sampling commutes with
  the per-channel affine map, so the up-sampling blocks fold too. The shift is
  a ``BiasAdd`` and the leaky ReLU's gradient reads its output, so Grappler
  fuses convolution, shift and activation into one oneDNN kernel.
* Inside :func:`loop_invariant_weights` every tensor derived from weights
  alone (folded kernels and shifts, flipped and polyphase kernels) is built
  once, in the graph that entered the context, instead of at every call: an
  optimisation loop traced in that context (MAP restoration) reads them as
  loop invariants rather than recomputing them at each step.
* The bilinear up-sampling of the larger blocks takes its input gradient
  as a stride-2 depthwise convolution (:func:`_bilinear_adjoint`), faster
  there than TensorFlow's ``ResizeBilinearGrad``.
* A convolution with one output channel (the image head) is a matrix product
  onto its ``k²`` taps followed by a shifted sum, about twice as fast on CPU
  as oneDNN's single-channel convolution (1.4–2× in bfloat16 too).
* Training-mode batch normalisation runs as one fused kernel per direction
  (:func:`_batch_norm_training`), with Keras' moving-statistics update.

Example:
    >>> import numpy as np
    >>> block = DownBlock(8)
    >>> block(np.zeros((2, 32, 32, 1), "float32")).shape
    TensorShape([2, 16, 16, 8])
"""
from __future__ import annotations

import contextlib
import threading

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from keras.src.backend import AutocastScope  # no public API reads a weight unrounded inside a mixed layer

from tfuad.errors import ConfigError

__all__ = ["FlipGradConv2D", "DownBlock", "UpBlock", "loop_invariant_weights"]


_STATE = threading.local()


@contextlib.contextmanager
def loop_invariant_weights():
    """Build tensors that depend on weights alone once per trace, not once per call.

    Inside this context, the folded batch-norm kernels and shifts and the
    flipped or polyphase kernels of :class:`FlipGradConv2D` are created on
    first use in the graph that was current when the context was entered,
    and reused afterwards. Enter it inside a ``tf.function`` just before a
    ``tf.while_loop`` whose body calls the model: the body then captures
    these tensors as loop invariants instead of recomputing them at every
    step. Only inference-mode calls use the cache; weights must not change
    while the traced function runs.

    Example:
        >>> @tf.function                                          # doctest: +SKIP
        ... def ascend(x):
        ...     with loop_invariant_weights():
        ...         return tf.while_loop(cond, body, [x])
    """
    previous = getattr(_STATE, "cache", None)
    _STATE.cache = (tf.compat.v1.get_default_graph(), {})
    try:
        yield
    finally:
        _STATE.cache = previous


def _invariant(key, make):
    """``make()``, built once per :func:`loop_invariant_weights` context (or every time outside one)."""
    cache = getattr(_STATE, "cache", None)
    if cache is None:
        return make()
    graph, values = cache
    if key not in values:
        with graph.as_default():
            values[key] = make()
    return values[key]


def _check_filters(filters) -> int:
    filters = int(filters)
    if filters < 1:
        raise ConfigError(f"filters must be a positive integer, got {filters}")
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
def _conv_flip(x, kernel, adjoint):
    """Stride-1 "same" convolution; input gradient with ``adjoint = _flipped(kernel)``."""
    y = tf.nn.conv2d(x, kernel, 1, "SAME")

    def grad(dy):
        return tf.nn.conv2d(dy, adjoint, 1, "SAME"), _filter_grad(x, kernel, dy, 1), None

    return y, grad


def _taps(kernel):
    """``(C_in, k_h·k_w)`` matrix of a single-output-channel kernel, one column per tap."""
    kh, kw, cin, _ = kernel.shape
    return tf.reshape(tf.transpose(kernel[..., 0], [2, 0, 1]), [cin, kh * kw])


def _shifted_sum(z, kh, kw):
    """``Σ_t shift_t(z[..., t])``: a "same" correlation assembled from its per-tap products."""
    h, w = z.shape[1], z.shape[2]
    h = tf.shape(z)[1] if h is None else h
    w = tf.shape(z)[2] if w is None else w
    zp = tf.pad(z, [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]])
    return tf.add_n([zp[:, i:i + h, j:j + w, i * kw + j] for i in range(kh) for j in range(kw)])[..., None]


@tf.custom_gradient
def _conv_taps(x, kernel, adjoint, taps):
    """Stride-1 "same" convolution with one output channel: a matrix product onto the taps, then a shifted sum."""
    y = _shifted_sum(tf.einsum("bhwc,ct->bhwt", x, taps), kernel.shape[0], kernel.shape[1])

    def grad(dy):
        return tf.nn.conv2d(dy, adjoint, 1, "SAME"), _filter_grad(x, kernel, dy, 1), None, None

    return y, grad


def _conv_native(x, kernel, stride: int):
    """"Same" convolution with TensorFlow's input gradient and :func:`_filter_grad`'s kernel gradient.

    The kernel gradient stays :func:`_filter_grad`'s (one matrix product for
    1×1 kernels, avoiding oneDNN's faulty 1×1 stride-2 single-channel kernel).
    """
    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                                                strides=[1, stride, stride, 1], padding="SAME")
            return dx, _filter_grad(x, kernel, dy, stride)

        return tf.nn.conv2d(x, kernel, stride, "SAME"), grad

    return conv(x, kernel)


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


def _polyphase_plan(shape):
    """Row and column plans of :func:`_phase_taps` for a stride-2 "same" kernel of ``shape``."""
    kh, kw = int(shape[0]), int(shape[1])
    return _phase_taps(kh, max(kh - 2, 0) // 2), _phase_taps(kw, max(kw - 2, 0) // 2)


def _polyphase(kernel):
    """Re-arranged kernel whose stride-1 "valid" convolution, then ``depth_to_space(2)``, is the stride-2 adjoint."""
    _, _, cin, cout = kernel.shape
    (rows, _, _), (cols, _, _) = _polyphase_plan(kernel.shape)
    k = tf.pad(kernel, [[0, 1], [0, 1], [0, 0], [0, 0]])
    k = tf.gather(tf.gather(k, rows.reshape(-1), axis=0), cols.reshape(-1), axis=1)
    k = tf.reshape(k, [len(rows), 2, len(cols), 2, cin, cout])
    return tf.reshape(tf.transpose(k, [0, 2, 5, 1, 3, 4]), [len(rows), len(cols), cout, 4 * cin])


@tf.custom_gradient
def _conv_polyphase(x, kernel, adjoint):
    """Stride-2 "same" convolution (even input sizes); input gradient with ``adjoint = _polyphase(kernel)``.

    The input gradient is a stride-1 convolution of the output gradient with
    the re-arranged kernel followed by ``depth_to_space``, instead of
    TensorFlow's slow ``Conv2DBackpropInput``.
    """
    y = tf.nn.conv2d(x, kernel, 2, "SAME")

    def grad(dy):
        (_, r0, r1), (_, c0, c1) = _polyphase_plan(kernel.shape)
        dy_pad = tf.pad(dy, [[0, 0], [r0, r1], [c0, c1], [0, 0]])
        dx = tf.nn.depth_to_space(tf.nn.conv2d(dy_pad, adjoint, 1, "VALID"), 2)
        return dx, _filter_grad(x, kernel, dy, 2), None

    return y, grad


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

    In bfloat16 (any compute dtype other than float32) the input gradient is
    TensorFlow's ``Conv2DBackpropInput``, which oneDNN runs as fast as the
    forward convolutions above or faster.

    With a single output channel and at least four input channels, the
    forward convolution is a matrix product onto the ``k²`` taps followed by a
    shifted sum (in both precisions). Other configurations fall back to the
    standard implementation. Weight gradients are unchanged (a 1×1 kernel's
    is one matrix product, see :func:`_filter_grad`).

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
        float32 = tf.as_dtype(inputs.dtype) == tf.float32
        if tuple(self.strides) == (1, 1):
            if self.filters == 1 and inputs.shape[-1] is not None and inputs.shape[-1] >= 4 \
                    and tuple(self.kernel_size) != (1, 1):
                return "taps"
            return "flip" if float32 else "native"
        even = all(d is not None and d % 2 == 0 for d in inputs.shape[1:3])
        if tuple(self.strides) == (2, 2) and self.padding == "same" and even:
            return "polyphase" if float32 else "native"
        return None

    def convolution_op(self, inputs, kernel):
        if kernel is self.kernel:  # Keras' call(): the kernel variable itself
            return self.convolve(inputs, lambda: tf.convert_to_tensor(self.kernel), "kernel")
        return self.convolve(inputs, lambda: tf.convert_to_tensor(kernel))

    def convolve(self, inputs, make_kernel, tag=None):
        """Convolve ``inputs`` with the kernel ``make_kernel()`` (shape of :attr:`kernel`).

        Args:
            inputs: ``(B, H, W, C_in)`` tensor.
            make_kernel: Builds the kernel from weights alone.
            tag: Name of this kernel within the layer; with a tag, the kernel
                and the tensors derived from it are built once inside
                :func:`loop_invariant_weights`.

        Returns:
            ``(B, H', W', filters)`` tensor (no bias, no activation).
        """
        def get(name, make):
            return make() if tag is None else _invariant((id(self), tag, name), make)

        kernel = get("kernel", make_kernel)
        kind = self._adjoint_kind(inputs)
        if kind is None:
            return super().convolution_op(inputs, kernel)
        x = tf.convert_to_tensor(inputs)
        if kind == "native":
            return _conv_native(x, kernel, self.strides[0])
        # inside loop_invariant_weights, ``kernel`` already lives in the context's graph
        if kind == "polyphase":
            return _conv_polyphase(x, kernel, get("polyphase", lambda: _polyphase(kernel)))
        adjoint = get("flipped", lambda: _flipped(kernel))
        if kind == "taps":
            return _conv_taps(x, kernel, adjoint, get("taps", lambda: _taps(kernel)))
        return _conv_flip(x, kernel, adjoint)


def _leaky_relu(x, negative_slope: float):
    """Leaky ReLU whose gradient reads its output, not its input.

    For a positive slope the output has the sign of the input, so
    ``LeakyReluGrad`` gives the same result from either. Reading the output
    leaves the pre-activation with a single consumer, which lets Grappler's
    remapper fuse convolution, shift, residual sum and activation into one
    oneDNN kernel inside restoration loops; with the input read, the remapper
    gives up on the whole loop body ("fanout ... exist for missing node").
    """
    if negative_slope <= 0:
        return keras.ops.leaky_relu(x, negative_slope)

    @tf.custom_gradient
    def lrelu(t):
        y = tf.nn.leaky_relu(t, negative_slope)

        def grad(dy):
            return tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=negative_slope)

        return y, grad

    return lrelu(x)


def _folded(conv, bn):
    """``(kernel, shift)`` of ``conv`` followed by inference-mode ``bn``, in ``conv``'s compute dtype.

    Folded in float32 from the float32 weights, then rounded once (under
    ``mixed_bfloat16`` Keras would hand the kernel over already rounded).
    """
    with AutocastScope(None):
        kernel = tf.convert_to_tensor(conv.kernel)
    scale = bn.gamma * tf.math.rsqrt(bn.moving_variance + bn.epsilon)
    dtype = conv.compute_dtype
    return tf.cast(kernel * scale, dtype), tf.cast(bn.beta - bn.moving_mean * scale, dtype)


def _batch_norm_training(bn, x):
    """Training-mode ``bn(x)`` of a ``keras.layers.BatchNormalization`` in one fused kernel each way.

    Keras' layer forms the batch moments and the normalisation from separate
    elementwise operations in float32 (casting bfloat16 activations up and
    back): with the gradient, a dozen passes over every activation, which
    made batch norm cost a training step of the priors as much as its
    convolutions. ``FusedBatchNormV3`` does each direction in one pass and
    takes bfloat16 activations with float32 statistics. The moving mean and
    variance are updated as Keras does, with the biased batch variance (the
    fused op returns the unbiased one).
    """
    gamma, beta = tf.convert_to_tensor(bn.gamma), tf.convert_to_tensor(bn.beta)  # float32 (no autocast)
    y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=bn.epsilon, is_training=True)
    n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
    variance = variance * (n - 1.0) / n
    momentum = bn.momentum
    bn.moving_mean.assign(bn.moving_mean * momentum + mean * (1.0 - momentum))
    bn.moving_variance.assign(bn.moving_variance * momentum + variance * (1.0 - momentum))
    return y


def _conv_bn(conv, bn, x, training, between=None):
    """``bn(between(conv(x)))``; in inference mode with the batch norm folded into the kernel.

    ``between`` must be linear and preserve constants per channel (identity or
    bilinear up-sampling), so it commutes with the folded affine map. In
    training mode the batch norm is fused (:func:`_batch_norm_training`).
    """
    between = between or (lambda t: t)
    if training and bn.trainable:
        return _batch_norm_training(bn, between(conv(x)))
    kernel, shift = _invariant((id(conv), id(bn), "folded"), lambda: _folded(conv, bn))
    return tf.nn.bias_add(between(conv.convolve(x, lambda: kernel, tag=f"folded:{id(bn)}")), shift)


#: Up-sampled inputs with at least this many pixels per channel take :func:`_bilinear_adjoint` as gradient.
ADJOINT_MIN_PIXELS = 32 * 32
_BILINEAR_TAPS = np.array([0.25, 0.75, 0.75, 0.25], np.float32)  # bilinear ×2, half-pixel centres, 1-D


def _bilinear_adjoint(dy):
    """Input gradient of :func:`_up2`: a stride-2 depthwise convolution of the edge-padded ``dy``.

    Bilinear ×2 up-sampling with half-pixel centres gives, along each axis,
    ``y[2i] = ¾ x[i] + ¼ x[i-1]`` and ``y[2i+1] = ¾ x[i] + ¼ x[i+1]``, with the
    edge value repeated outside the image. Its adjoint is
    ``x̄[i] = ¼ ȳ[2i-1] + ¾ ȳ[2i] + ¾ ȳ[2i+1] + ¼ ȳ[2i+2]``, the repeated edge
    becoming a repeated edge of ``ȳ`` (one pixel of ``SYMMETRIC`` padding);
    in 2-D the separable ``[¼ ¾ ¾ ¼]`` kernel, outer-producted, at stride 2.
    """
    taps = np.outer(_BILINEAR_TAPS, _BILINEAR_TAPS)[:, :, None, None]
    kernel = tf.constant(np.tile(taps, (1, 1, dy.shape[-1], 1)), dy.dtype)
    padded = tf.pad(dy, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    return tf.nn.depthwise_conv2d(padded, kernel, [1, 2, 2, 1], "VALID")


def _up2(x):
    """Bilinear ×2 up-sampling with half-pixel centres, in ``x``'s dtype (``UpSampling2D(2, "bilinear")``).

    ``ResizeBilinear`` returns float32 whatever its input; Keras' layer casts
    a bfloat16 result back with a saturating cast, whose clip puts a select,
    two comparisons, a minimum and a maximum over every up-sampled activation
    into each gradient (under ``mixed_bfloat16`` they cost a MAP-TV step as
    much time as all of its convolutions). Bilinear values are convex
    combinations of the input, so they cannot leave its range: a plain cast
    is exact. For float32 inputs this is the layer's computation.

    From :data:`ADJOINT_MIN_PIXELS` input pixels per channel on, the input
    gradient is :func:`_bilinear_adjoint` instead of ``ResizeBilinearGrad``
    (the same values). On a 2-core AVX-512 CPU, forward and gradient together
    on a 155-slice batch took 1.4× less time in bfloat16 and 1.2× less in
    float32 at 64 → 128 px, 1.4× / 1.07× less at 32 → 64 px, and as long or
    longer below; the 128 px prior's MAP-TV step took 1.08× less
    (``benchmarks/step_profile.py``).
    """
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    if h is None or w is None or c is None or h * w < ADJOINT_MIN_PIXELS:
        return _resize2(x)

    @tf.custom_gradient
    def up_adjoint(t):
        return _resize2(t), _bilinear_adjoint

    return up_adjoint(x)


def _resize2(x):
    """``ResizeBilinear`` ×2 with half-pixel centres, cast back to ``x``'s dtype (TensorFlow's gradient)."""
    size = [2 * (tf.shape(x)[i] if x.shape[i] is None else x.shape[i]) for i in (1, 2)]
    return tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)


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
        h = _leaky_relu(_conv_bn(self.ds_conv, self.bn1, x, training), self.negative_slope)
        h = _conv_bn(self.conv, self.bn2, h, training)
        return _leaky_relu(h + self.shortcut(x), self.negative_slope)

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
        # The layer is kept for its config and as the reference; ``call`` uses :func:`_up2`, the same up-sampling.
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
        h = _conv_bn(self.up_conv, self.bn1, x, training, between=_up2)
        h = _leaky_relu(h, self.negative_slope)
        h = _conv_bn(self.conv, self.bn2, h, training)
        return _leaky_relu(h + _up2(self.shortcut(x)), self.negative_slope)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, negative_slope=self.negative_slope)
        return config
