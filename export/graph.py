"""The serving graph: pure-TensorFlow signature functions of a trained model.

Every function takes a batch of normalised slices ``(N, S, S, 1)`` float32 and
returns a dict of named outputs; the calibrated values (background intensity,
slice-level threshold, λ and the MAP-TV schedule) are baked in as constants,
so the exported SavedModel needs nothing but TensorFlow.

* ``serving_default``: ``anomaly_map`` (the raw slice map of the exported
  method, 0 outside the brain region) and ``mask`` (``anomaly_map >
  threshold``);
* ``reconstruct``: ``reconstruction``;
* ``restore``: ``restoration`` and ``lesion_map`` (MAP-TV).

The brain region of a slice is where it differs from the preprocessing
background value: the client sends nothing but the slices.

Example:
    >>> fns = signature_functions(ResidualMethod(model), threshold=0.8)   # doctest: +SKIP
    >>> fns["serving_default"](slices)["mask"]                            # doctest: +SKIP
"""
from __future__ import annotations

import tensorflow as tf

from tfuad.errors import ConfigError

__all__ = [
    "INPUT_NAME",
    "SIGNATURE_OUTPUTS",
    "validate_slices",
    "brain_region",
    "signature_functions",
]

#: Name of the single input of every signature.
INPUT_NAME = "slices"
#: Output names of each signature, in the order documented in ``export/README.md``.
SIGNATURE_OUTPUTS = {
    "serving_default": ("anomaly_map", "mask"),
    "reconstruct": ("reconstruction",),
    "restore": ("restoration", "lesion_map"),
}


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


def signature_functions(method, *, threshold: float, restoration=None) -> dict:
    """The Python functions of the serving signatures (trace them with an input spec).

    Args:
        method: The :class:`~tfuad.detection.methods.base.ScoringMethod` of ``serving_default``,
            configured from its calibration; its model gives ``reconstruct``.
        threshold: Slice-level threshold of ``serving_default``'s ``mask``.
        restoration: A configured MAP-TV method of the same model; adds the ``restore`` signature.

    Returns:
        ``{signature name: function(slices) -> {output name: tensor}}``.
    """
    model = method.model
    if model is None:
        raise ConfigError(f"cannot export method {method.name!r}: it uses no model")
    slice_shape = (int(model.image_size), int(model.image_size), int(model.channels))
    background = method.background
    threshold = float(threshold)

    def reconstruct(slices):
        slices = validate_slices(slices, slice_shape)
        return {"reconstruction": finite(model.reconstruct(slices, training=False), "reconstruction")}

    def restore(slices):
        slices = validate_slices(slices, slice_shape)
        lesion_map, restored = restoration.graph_maps(slices, brain_region(slices, background))
        return {"restoration": finite(restored, "restoration"), "lesion_map": finite(lesion_map, "lesion_map")}

    def serving_default(slices):
        slices = validate_slices(slices, slice_shape)
        brain = brain_region(slices, background)
        maps, _ = method.graph_maps(slices, brain)
        anomaly = finite(tf.where(brain, maps, tf.zeros_like(maps)), "anomaly_map")
        return {"anomaly_map": anomaly, "mask": anomaly > threshold}

    functions = {"serving_default": serving_default, "reconstruct": reconstruct}
    if restoration is not None:
        functions["restore"] = restore
    return functions
