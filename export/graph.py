"""The serving graph: pure-TensorFlow signature functions of a trained model.

Every function takes named tensors and returns a dict of named outputs; the
calibrated values (background intensity, the thresholds and their
healthy-data curve against the FPR, λ and the MAP-TV schedule, the
post-processing) are constants of the graph, so the exported SavedModel
needs nothing but TensorFlow.

Slices (``slices``: ``(N, S, S, C)`` normalised slices; brain = pixels that
differ from the background value):

* ``serving_default``: ``anomaly_map`` (the raw slice map of the exported
  method, 0 outside the brain region), ``mask`` (``anomaly_map >
  threshold``) and ``threshold`` (one per slice) at the calibrated default;
* ``detect_at_fpr`` (+ ``fpr``) and ``detect_at_threshold`` (+ ``threshold``):
  the same at an operating point chosen per request;
* ``reconstruct``: ``reconstruction``; ``restore``: ``restoration`` and
  ``lesion_map`` (MAP-TV).

Volumes (``slices`` of a whole volume and its ``brain_mask`` on the volume
grid): ``detect_volume``, ``detect_volume_at_fpr``,
``detect_volume_at_threshold`` answer what ``tfuad detect`` writes, the
post-processed ``anomaly_map`` and the lesion ``mask`` on the volume grid
(see :mod:`tfuad.export.volume`), and the ``threshold`` used.

Example:
    >>> fns = signature_functions(ResidualMethod(model), slice_curve=curve)   # doctest: +SKIP
    >>> fns["serving_default"].function(slices)["mask"]                       # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfuad.errors import ConfigError
from tfuad.export import volume as volume_ops

__all__ = [
    "INPUT_NAME",
    "SIGNATURE_INPUTS",
    "SIGNATURE_OUTPUTS",
    "Signature",
    "validate_slices",
    "brain_region",
    "curve_thresholds",
    "signature_functions",
]

#: Name of the slices input of every signature.
INPUT_NAME = "slices"
#: Input names of each signature.
SIGNATURE_INPUTS = {
    "serving_default": ("slices",),
    "detect_at_fpr": ("slices", "fpr"),
    "detect_at_threshold": ("slices", "threshold"),
    "detect_volume": ("slices", "brain_mask"),
    "detect_volume_at_fpr": ("slices", "brain_mask", "fpr"),
    "detect_volume_at_threshold": ("slices", "brain_mask", "threshold"),
    "reconstruct": ("slices",),
    "restore": ("slices",),
}
#: Output names of each signature, in the order documented in ``export/README.md``.
SIGNATURE_OUTPUTS = {
    **{name: ("anomaly_map", "mask", "threshold") for name in SIGNATURE_INPUTS
       if name.startswith(("serving", "detect"))},
    "reconstruct": ("reconstruction",),
    "restore": ("restoration", "lesion_map"),
}
#: Slices per forward pass of the volume signatures (as :mod:`tfuad.detection.methods.residual`).
FORWARD_BATCH = 32


@dataclass
class Signature:
    """A signature's Python function and the specs of its inputs, in :data:`SIGNATURE_INPUTS` order."""

    function: object
    specs: list


def validate_slices(slices, slice_shape):
    """Fail on a malformed request instead of answering it wrongly.

    The declared input spec ``(None, S, S, C)`` is not enforced by a server
    that feeds a request into the graph, and shape assertions written against
    it are resolved while tracing (``tf.debugging.assert_rank`` emits no op for
    a known rank) or folded away by the graph optimiser. ``tf.ensure_shape``
    checks the tensor actually received, at run time, and names both shapes;
    ``tf.debugging.assert_all_finite`` rejects NaN and infinite values.

    Args:
        slices: The request tensor.
        slice_shape: ``(S, S, C)``.

    Returns:
        ``slices`` with its static shape set; running it raises
        ``tf.errors.InvalidArgumentError`` for a wrong rank or slice shape
        ("Shape of tensor ... is not compatible with expected shape
        [?,S,S,C]") or for NaN/Inf values.
    """
    slices = tf.ensure_shape(slices, (None, *slice_shape))
    return tf.debugging.assert_all_finite(slices, "slices contain NaN or infinite values")


def finite(tensor, what: str):
    """``tensor``, or ``tf.errors.InvalidArgumentError`` when it holds NaN or infinite values.

    Slices far outside the training range (e.g. not normalised as the
    preprocessing contract says) can make the network or the restoration
    overflow; the request then fails instead of answering NaN.
    """
    return tf.debugging.assert_all_finite(
        tensor, f"{what} is not finite: send slices normalised as assets.extra/tfuad_preprocess.json says")


def brain_region(slices, background: float):
    """Boolean brain region of preprocessed slices: every pixel that differs from ``background``."""
    return tf.not_equal(slices, tf.constant(background, slices.dtype))


def _checked(tensor, condition, message: str):
    """``tensor``, after an assertion that fails the request with ``message`` (kept by the optimiser)."""
    check = tf.debugging.Assert(condition, [message])
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


# ------------------------------------------------------------------------------ operating points
def curve_thresholds(fpr, curve_fpr, curve_threshold):
    """Thresholds at FPR limits, interpolated on a healthy-data curve (float32 in, float32 out).

    Linear in log(FPR) between neighbouring levels of the curve; a limit equal
    to a level (a calibrated one among them) gives that level's threshold
    exactly. The threshold lies between those of the two levels around the
    limit, so its false-positive rate on the calibration voxels is at most
    that of the upper level.

    Args:
        fpr: float32 tensor of limits inside ``[curve_fpr[0], curve_fpr[-1]]``.
        curve_fpr: float32 tensor of levels, strictly ascending.
        curve_threshold: float32 tensor of their thresholds.

    Returns:
        float32 tensor of ``fpr``'s shape.
    """
    n = tf.shape(curve_fpr)[0]
    lo = tf.clip_by_value(tf.searchsorted(curve_fpr, fpr, side="right") - 1, 0, n - 1)
    hi = tf.minimum(lo + 1, n - 1)
    f_lo, f_hi = tf.gather(curve_fpr, lo), tf.gather(curve_fpr, hi)
    t_lo, t_hi = tf.gather(curve_threshold, lo), tf.gather(curve_threshold, hi)
    log = (lambda v: tf.math.log(tf.cast(v, tf.float64)))
    span = log(f_hi) - log(f_lo)
    weight = tf.math.divide_no_nan(log(fpr) - log(f_lo), span)
    between = tf.cast(tf.cast(t_lo, tf.float64) + weight * (tf.cast(t_hi, tf.float64) - tf.cast(t_lo, tf.float64)),
                      tf.float32)
    return tf.where(tf.equal(fpr, f_lo), t_lo, between)


class _Points:
    """One map kind's operating points as graph constants (see ``tfuad.workflows.export.OperatingCurve``)."""

    def __init__(self, curve):
        fprs = np.asarray(curve.fpr, np.float32)
        if len(fprs) == 0 or np.any(np.diff(fprs) <= 0):
            raise ConfigError("the FPR curve of the export must have strictly ascending float32 levels")
        self.curve = curve
        self.low, self.high = float(fprs[0]), float(fprs[-1])
        self.fprs = tf.constant(fprs)
        self.thresholds = tf.constant(np.asarray(curve.threshold, np.float32))
        self.default = float(np.float32(curve.default_threshold))

    def at_fpr(self, fpr):
        """Validated thresholds at requested FPR limits (float32 vector)."""
        fpr = _checked(fpr, tf.reduce_all(tf.math.is_finite(fpr) & (fpr > 0.0) & (fpr < 1.0)),
                       "fpr must lie in (0, 1)")
        low, high = self.low, self.high
        fpr = _checked(fpr, tf.reduce_all((fpr >= low) & (fpr <= high)),
                       f"fpr must lie within the calibrated range [{low:.6g}, {high:.6g}] of this model")
        return curve_thresholds(fpr, self.fprs, self.thresholds)


def _values(tensor, what: str, count=None):
    """A request's ``fpr`` or ``threshold`` as a float32 vector of 1 value (or ``count`` values)."""
    values = tf.reshape(tensor, [-1])
    size = tf.size(values)
    if count is None:
        return _checked(values, tf.equal(size, 1), f"{what} must hold one value")
    return _checked(values, tf.equal(size, 1) | tf.equal(size, count),
                    f"{what} must hold one value or one per slice")


def _explicit_threshold(tensor, count=None):
    values = _values(tensor, "threshold", count)
    return _checked(values, tf.reduce_all(tf.math.is_finite(values)), "threshold must be a finite number")


# ------------------------------------------------------------------------------ volumes
def _chunk_maps(method, slices, brain, indices, chunk, pad: bool):
    """Maps of ``slices[indices]`` computed ``chunk`` slices at a time and scattered back (0 elsewhere).

    Args:
        pad: Pad every chunk to ``chunk`` slices with empty ones (what the
            restoration batches do), else the last chunk is shorter.
    """
    count = tf.shape(indices)[0]

    def body(start, out):
        stop = tf.minimum(start + chunk, count)
        index = indices[start:stop]
        ys, ms = tf.gather(slices, index), tf.gather(brain, index)
        if pad:
            extra = chunk - (stop - start)
            ys = tf.pad(ys, [[0, extra], [0, 0], [0, 0], [0, 0]])
            ms = tf.pad(ms, [[0, extra], [0, 0], [0, 0], [0, 0]])
        maps, _ = method.graph_maps(ys, ms)
        return stop, tf.tensor_scatter_nd_update(out, index[:, None], maps[:stop - start])

    _, out = tf.while_loop(lambda start, out: start < count, body, (tf.constant(0), tf.zeros_like(slices)))
    return out


def _volume_slice_maps(method, slices, brain):
    """Slice maps of a whole volume, batched as :class:`~tfuad.detection.detector.Detector` batches them.

    Forward methods run every slice in batches of the method's batch size
    (:data:`FORWARD_BATCH` by default); MAP-TV restores the slices with brain
    in near-equal batches of at most the restorer's batch size, padded with
    empty slices, as ``Restorer.restore`` does. Batching matters: float
    rounding differs between batch sizes, and the restoration amplifies it.
    """
    if hasattr(method, "restorer"):
        batch = tf.constant(int(method.restorer().batch_size), tf.int32)
        active = tf.cast(tf.where(tf.reduce_any(brain, axis=[1, 2, 3]))[:, 0], tf.int32)
        count = tf.shape(active)[0]
        chunks = (count + batch - 1) // batch
        size = (count + tf.maximum(chunks, 1) - 1) // tf.maximum(chunks, 1)
        return _chunk_maps(method, slices, brain, active, tf.maximum(size, 1), pad=True)
    batch = tf.constant(int(method.batch_size or FORWARD_BATCH), tf.int32)
    return _chunk_maps(method, slices, brain, tf.range(tf.shape(slices)[0]), batch, pad=False)


def _validate_volume(slices, brain_mask, slice_shape):
    slices = validate_slices(slices, slice_shape)
    brain_mask = tf.ensure_shape(brain_mask, (None, None, None))
    brain_mask = _checked(brain_mask, tf.equal(tf.shape(slices)[0], tf.shape(brain_mask)[2]),
                          "slices must hold one slice per index of the third axis of brain_mask")
    return slices, _checked(brain_mask, tf.reduce_any(brain_mask), "brain_mask has no brain voxel")


def _volume_maps(method, slices, brain_mask, crop_margin: int, postprocess):
    """``tfuad detect``'s post-processed map on the volume grid."""
    geo = volume_ops.geometry(brain_mask, crop_margin)
    brain = volume_ops.to_slices(brain_mask, geo, slices.shape[1])[..., None]
    maps = _volume_slice_maps(method, slices, brain)
    maps = finite(tf.where(brain, maps, tf.zeros_like(maps)), "anomaly_map")
    raw = volume_ops.to_volume(maps[..., 0], geo)
    return volume_ops.postprocess_map(raw, brain_mask, postprocess.median_size, postprocess.erosion_iterations)


# ------------------------------------------------------------------------------ signatures
def signature_functions(method, *, slice_curve, volume_curve=None, postprocess=None, crop_margin: int = 0,
                        restoration=None) -> dict:
    """The serving signatures: Python functions with their input specs (trace them with the specs).

    Args:
        method: The :class:`~tfuad.detection.methods.base.ScoringMethod` of the detection signatures,
            configured from its calibration; its model gives ``reconstruct``.
        slice_curve: ``OperatingCurve`` of the raw slice maps (``tfuad.workflows.export``).
        volume_curve: ``OperatingCurve`` of the post-processed volume maps; adds the volume signatures.
        postprocess: The calibration's :class:`~tfuad.postprocessing.filters.PostprocessConfig`
            (needed with ``volume_curve``).
        crop_margin: The preprocessing's crop margin (volume signatures).
        restoration: A configured MAP-TV method of the same model; adds the ``restore`` signature.

    Returns:
        ``{signature name: Signature}``, ``serving_default`` first.
    """
    model = method.model
    if model is None:
        raise ConfigError(f"cannot export method {method.name!r}: it uses no model")
    slice_shape = (int(model.image_size), int(model.image_size), int(model.channels))
    background = method.background
    points = _Points(slice_curve)
    slices_spec = tf.TensorSpec((None, *slice_shape), tf.float32, name="slices")
    value_spec = {name: tf.TensorSpec((None,), tf.float32, name=name) for name in ("fpr", "threshold")}
    mask_spec = tf.TensorSpec((None, None, None), tf.bool, name="brain_mask")

    def detect(slices, thresholds):
        brain = brain_region(slices, background)
        maps, _ = method.graph_maps(slices, brain)
        anomaly = finite(tf.where(brain, maps, tf.zeros_like(maps)), "anomaly_map")
        per_slice = tf.broadcast_to(thresholds, tf.shape(slices)[:1])
        return {"anomaly_map": anomaly, "mask": anomaly > per_slice[:, None, None, None], "threshold": per_slice}

    def serving_default(slices):
        slices = validate_slices(slices, slice_shape)
        return detect(slices, tf.constant([points.default], tf.float32))

    def detect_at_fpr(slices, fpr):
        slices = validate_slices(slices, slice_shape)
        return detect(slices, points.at_fpr(_values(fpr, "fpr", tf.shape(slices)[0])))

    def detect_at_threshold(slices, threshold):
        slices = validate_slices(slices, slice_shape)
        return detect(slices, _explicit_threshold(threshold, tf.shape(slices)[0]))

    def reconstruct(slices):
        slices = validate_slices(slices, slice_shape)
        return {"reconstruction": finite(model.reconstruct(slices, training=False), "reconstruction")}

    def restore(slices):
        slices = validate_slices(slices, slice_shape)
        lesion_map, restored = restoration.graph_maps(slices, brain_region(slices, background))
        return {"restoration": finite(restored, "restoration"), "lesion_map": finite(lesion_map, "lesion_map")}

    functions = {
        "serving_default": Signature(serving_default, [slices_spec]),
        "detect_at_fpr": Signature(detect_at_fpr, [slices_spec, value_spec["fpr"]]),
        "detect_at_threshold": Signature(detect_at_threshold, [slices_spec, value_spec["threshold"]]),
    }
    if volume_curve is not None:
        functions.update(_volume_signatures(method, slice_shape, _Points(volume_curve), postprocess, crop_margin,
                                            slices_spec, mask_spec, value_spec))
    functions["reconstruct"] = Signature(reconstruct, [slices_spec])
    if restoration is not None:
        functions["restore"] = Signature(restore, [slices_spec])
    return functions


def _volume_signatures(method, slice_shape, points, postprocess, crop_margin, slices_spec, mask_spec,
                       value_spec) -> dict:
    if postprocess is None:
        raise ConfigError("the volume signatures need the calibration's post-processing")

    def answer(slices, brain_mask, threshold):
        score = _volume_maps(method, slices, brain_mask, crop_margin, postprocess)
        mask = volume_ops.segment(score, threshold, postprocess.min_component_size, postprocess.connectivity)
        return {"anomaly_map": score, "mask": mask, "threshold": threshold}

    def detect_volume(slices, brain_mask):
        slices, brain_mask = _validate_volume(slices, brain_mask, slice_shape)
        return answer(slices, brain_mask, tf.constant(points.default, tf.float32))

    def detect_volume_at_fpr(slices, brain_mask, fpr):
        slices, brain_mask = _validate_volume(slices, brain_mask, slice_shape)
        return answer(slices, brain_mask, points.at_fpr(_values(fpr, "fpr"))[0])

    def detect_volume_at_threshold(slices, brain_mask, threshold):
        slices, brain_mask = _validate_volume(slices, brain_mask, slice_shape)
        return answer(slices, brain_mask, _explicit_threshold(threshold)[0])

    return {
        "detect_volume": Signature(detect_volume, [slices_spec, mask_spec]),
        "detect_volume_at_fpr": Signature(detect_volume_at_fpr, [slices_spec, mask_spec, value_spec["fpr"]]),
        "detect_volume_at_threshold": Signature(detect_volume_at_threshold,
                                                [slices_spec, mask_spec, value_spec["threshold"]]),
    }

