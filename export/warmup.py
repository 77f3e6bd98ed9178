"""TF-Serving warmup requests: ``assets.extra/tf_serving_warmup_requests``.

TensorFlow Serving replays the records of this file (a TFRecord of
``tensorflow.serving.PredictionLog`` protos) when it loads a model version, so
the first real request does not pay for graph initialisation. The protos come
from the ``tensorflow-serving-api`` package (``pip install 'tfuad[serving]'``).

Example:
    >>> write_warmup_requests("export/sae/1/assets.extra/tf_serving_warmup_requests", "sae",
    ...                       {"serving_default": {"slices": batch}})   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from tfuad.errors import ConfigError

__all__ = ["WARMUP_FILE", "serving_apis", "warmup_slices", "warmup_volume", "predict_log", "write_warmup_requests"]

#: Path of the warmup file inside a SavedModel version directory (fixed by TF Serving).
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"


def serving_apis():
    """The ``predict_pb2`` and ``prediction_log_pb2`` modules of ``tensorflow-serving-api``.

    Raises:
        ConfigError: the package is not installed.
    """
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError:
        raise ConfigError("writing TF-Serving warmup requests needs the tensorflow-serving-api package: "
                          "pip install 'tfuad[serving]' (or export with --no-warmup)") from None
    return predict_pb2, prediction_log_pb2


def warmup_slices(image_size: int, background: float, channels: int = 1, batch: int = 2) -> np.ndarray:
    """A small synthetic batch: background slices with a centred disc of brain.

    The disc lies one unit above ``background`` so it counts as brain and the
    whole graph (restoration included) runs while the server warms up.

    Returns:
        float32 array ``(batch, S, S, channels)``.
    """
    rows, cols = np.mgrid[:image_size, :image_size]
    centre = (image_size - 1) / 2.0
    disc = (rows - centre) ** 2 + (cols - centre) ** 2 <= (image_size / 3.0) ** 2
    slices = np.full((batch, image_size, image_size, channels), background, np.float32)
    slices[:, disc] = background + 1.0
    return slices


def warmup_volume(image_size: int, background: float, channels: int = 1, depth: int = 8):
    """A small synthetic volume for the volume signatures: a cylinder of brain in ``depth`` slices.

    Returns:
        ``(slices, brain_mask)``: float32 ``(depth, S, S, channels)`` slices (a disc of brain one unit
        above ``background``) and a bool ``(S, S, depth)`` brain mask on an ``S × S × depth`` grid.
    """
    slices = warmup_slices(image_size, background, channels, batch=depth)
    brain_mask = np.repeat(slices[0, :, :, 0][:, :, None] != background, depth, axis=2)
    return slices, brain_mask


def predict_log(model_name: str, signature_name: str, inputs: dict):
    """One ``PredictionLog`` holding a ``PredictRequest`` for a signature.

    Args:
        model_name: The served model's name (``model_spec.name``).
        signature_name: The signature to call.
        inputs: ``{input name: array}``.

    Returns:
        ``tensorflow.serving.PredictionLog``.
    """
    predict_pb2, prediction_log_pb2 = serving_apis()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup_requests(path, model_name: str, requests: dict) -> Path:
    """Write one warmup record per signature.

    Args:
        path: Output file (normally ``<version dir>/`` + :data:`WARMUP_FILE`).
        model_name: The served model's name.
        requests: ``{signature name: {input name: array}}``.

    Returns:
        The path written.
    """
    logs = [predict_log(model_name, name, inputs) for name, inputs in requests.items()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path
