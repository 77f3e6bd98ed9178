"""Numeric precision of the networks: float32 or mixed bfloat16.

Two Keras dtype policies are supported:

* ``"float32"``: variables and computation in float32 (the default, and what
  every run trained before precision was recorded used);
* ``"mixed_bfloat16"``: variables in float32, convolutions, matrix products
  and activations in bfloat16. bfloat16 keeps float32's 8-bit exponent (no
  loss scaling is needed) and an 8-bit significand: every rounding has a
  relative error of at most 2⁻⁹ ≈ 0.2 %.

Under ``mixed_bfloat16`` the models keep in float32 what needs the range or
the resolution (:mod:`tfuad.models`): the reconstruction, posterior
parameters and logits they return, the ℓ1/ℓ2 likelihood terms, the KL terms,
the ELBO and every sum over pixels or latent cells. MAP-TV restoration
(:mod:`tfuad.detection.restoration`) keeps its iterate ``X``, the optimiser
state, the TV term and the objective ``ELBO(X) − λ‖X − Y‖_TV`` in float32;
only the network inside ``ELBO`` runs in bfloat16.

``"auto"`` picks ``mixed_bfloat16`` where the hardware computes in bfloat16
natively, and ``float32`` elsewhere (emulated bfloat16 is slower than
float32):

* with a GPU, when every visible GPU has CUDA compute capability ≥ 8.0
  (Ampere and later);
* without one, when the CPU has AVX-512 BF16 or AMX-BF16 (``avx512_bf16`` or
  ``amx_bf16`` among the ``flags`` of ``/proc/cpuinfo``) and TensorFlow runs
  its oneDNN kernels (its default on such CPUs; with
  ``TF_ENABLE_ONEDNN_OPTS=0`` bfloat16 convolutions are emulated, 1.4× slower
  than float32 on an AVX-512 BF16 CPU).

A run records the precision it was trained with; detection runs at the
precision the thresholds were calibrated with (:func:`inference_precision`).

Example:
    >>> cpu_supports_bfloat16("fpu sse2 avx512f avx512_bf16")
    True
    >>> resolve_precision("auto", cpu="fpu sse2 avx2", gpus=())
    'float32'
    >>> resolve_precision("auto", cpu="avx512f avx512_bf16", gpus=(), onednn=True)
    'mixed_bfloat16'
    >>> resolve_precision("auto", gpus=[(8, 6)])
    'mixed_bfloat16'
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tfuad.errors import ConfigError

__all__ = [
    "FLOAT32",
    "MIXED_BFLOAT16",
    "PRECISIONS",
    "CHOICES",
    "DEFAULT_PRECISION",
    "BF16_CPU_FLAGS",
    "BF16_GPU_CAPABILITY",
    "check_precision",
    "read_cpu_flags",
    "cpu_supports_bfloat16",
    "gpu_compute_capabilities",
    "onednn_enabled",
    "resolve_precision",
    "inference_precision",
    "policy_scope",
]

FLOAT32 = "float32"
MIXED_BFLOAT16 = "mixed_bfloat16"
#: Keras dtype policies the models support.
PRECISIONS = (FLOAT32, MIXED_BFLOAT16)
#: Values accepted wherever a precision is asked for (``auto`` is resolved by :func:`resolve_precision`).
CHOICES = ("auto",) + PRECISIONS
#: Precision of runs that do not record one.
DEFAULT_PRECISION = FLOAT32
#: ``/proc/cpuinfo`` flags of x86 CPUs with native bfloat16 arithmetic (AVX-512 BF16, AMX-BF16).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: Smallest CUDA compute capability with bfloat16 tensor cores (Ampere).
BF16_GPU_CAPABILITY = (8, 0)


def check_precision(precision, *, allow_auto: bool = True) -> str:
    """Validate a precision name.

    Args:
        precision: ``"float32"``, ``"mixed_bfloat16"`` or (if ``allow_auto``) ``"auto"``.
        allow_auto: Accept ``"auto"``.

    Returns:
        The name.

    Raises:
        ConfigError: for any other value.

    Example:
        >>> check_precision("mixed_bfloat16")
        'mixed_bfloat16'
    """
    choices = CHOICES if allow_auto else PRECISIONS
    if not isinstance(precision, str) or precision not in choices:
        raise ConfigError(f"unknown precision {precision!r}; choose one of: {', '.join(choices)}")
    return precision


def read_cpu_flags(cpuinfo="/proc/cpuinfo") -> frozenset:
    """CPU feature flags listed in ``cpuinfo`` (empty when the file does not exist, e.g. off Linux).

    Args:
        cpuinfo: Path of a ``/proc/cpuinfo``-style file.

    Returns:
        The union of the ``flags`` lines' words.
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    flags = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            flags.update(value.split())
    return frozenset(flags)


def cpu_supports_bfloat16(flags) -> bool:
    """True when the CPU flags include native bfloat16 arithmetic (:data:`BF16_CPU_FLAGS`).

    Args:
        flags: A ``flags`` line of ``/proc/cpuinfo`` (a string of words, with
            or without the ``flags :`` prefix) or an iterable of flag names.

    Example:
        >>> cpu_supports_bfloat16("flags : fpu avx512f avx512_vnni")
        False
        >>> cpu_supports_bfloat16(["amx_tile", "amx_bf16"])
        True
    """
    words = flags.replace(":", " ").split() if isinstance(flags, str) else list(flags)
    return bool(BF16_CPU_FLAGS & set(words))


def gpu_compute_capabilities() -> list:
    """CUDA compute capabilities ``(major, minor)`` of the GPUs TensorFlow sees (``(0, 0)`` when unknown)."""
    import tensorflow as tf

    capabilities = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capabilities.append(tuple(details.get("compute_capability") or (0, 0)))
    return capabilities


def onednn_enabled() -> bool:
    """True when TensorFlow runs its oneDNN CPU kernels (the only ones with fast bfloat16 convolutions)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # pragma: no cover - other TensorFlow builds
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")


def resolve_precision(precision="auto", *, cpu=None, gpus=None, onednn=None) -> str:
    """The precision to use: ``precision`` itself, or for ``"auto"`` what the hardware computes natively.

    Args:
        precision: ``"auto"``, ``"float32"`` or ``"mixed_bfloat16"``.
        cpu: CPU flags for ``"auto"`` (as :func:`cpu_supports_bfloat16` takes
            them); default: :func:`read_cpu_flags`.
        gpus: Compute capabilities of the GPUs for ``"auto"``; default:
            :func:`gpu_compute_capabilities`. With GPUs the CPU does not
            matter (the networks run on the GPUs).
        onednn: Whether TensorFlow's oneDNN CPU kernels are on, for
            ``"auto"`` without GPUs; default: :func:`onednn_enabled`.

    Returns:
        ``"float32"`` or ``"mixed_bfloat16"``.

    Raises:
        ConfigError: for an unknown name.

    Example:
        >>> resolve_precision("auto", gpus=[(7, 0)])        # V100: no bfloat16 tensor cores
        'float32'
        >>> resolve_precision("auto", cpu="avx512f amx_bf16", gpus=[], onednn=True)
        'mixed_bfloat16'
        >>> resolve_precision("auto", cpu="avx512f amx_bf16", gpus=[], onednn=False)
        'float32'
    """
    precision = check_precision(precision)
    if precision != "auto":
        return precision
    gpus = gpu_compute_capabilities() if gpus is None else [tuple(g) for g in gpus]
    if gpus:
        native = all(tuple(int(v) for v in g) >= BF16_GPU_CAPABILITY for g in gpus)
    else:
        native = cpu_supports_bfloat16(read_cpu_flags() if cpu is None else cpu) and (
            onednn_enabled() if onednn is None else bool(onednn))
    return MIXED_BFLOAT16 if native else FLOAT32


def inference_precision(requested=None, calibrated=None, recorded=None, *, source=None) -> str:
    """The precision detection runs at, given what was asked, calibrated and trained with.

    Anomaly maps, and so the calibrated thresholds (and MAP-TV's λ), change
    slightly with the precision. Without a request the calibrated precision is
    used, else the run's recorded training precision, else float32 (runs that
    predate recorded precisions were float32 throughout).

    Args:
        requested: ``"auto"``, ``"float32"``, ``"mixed_bfloat16"`` or ``None``.
        calibrated: The precision stored with the calibration, or ``None``.
        recorded: The precision stored with the run, or ``None``.
        source: Calibration file named in the error message.

    Returns:
        ``"float32"`` or ``"mixed_bfloat16"``.

    Raises:
        ConfigError: for an unknown name, or when the resolved precision
            differs from the calibrated one.

    Example:
        >>> inference_precision(None, None, "mixed_bfloat16")
        'mixed_bfloat16'
        >>> inference_precision()
        'float32'
    """
    if calibrated is not None:
        calibrated = check_precision(calibrated, allow_auto=False)
    if recorded is not None:
        recorded = check_precision(recorded, allow_auto=False)
    if requested is None:
        return calibrated or recorded or DEFAULT_PRECISION
    precision = resolve_precision(requested)
    if calibrated is not None and precision != calibrated:
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}the thresholds were calibrated with {calibrated} networks, not {precision}; "
                          f"calibrate again with --precision {precision}, or leave out --precision")
    return precision


@contextlib.contextmanager
def policy_scope(precision):
    """Make ``precision`` Keras' global dtype policy inside the block (models built there use it).

    Models also take the policy directly (``build_model(name, precision=...)``
    or ``dtype=``); the policy is part of their config, so a saved model
    loads with it whatever the global policy is.

    Args:
        precision: ``"auto"``, ``"float32"`` or ``"mixed_bfloat16"``.

    Example:
        >>> with policy_scope("mixed_bfloat16"):          # doctest: +SKIP
        ...     model = ResVAE(image_size=128)
        >>> model.dtype_policy.name                      # doctest: +SKIP
        'mixed_bfloat16'
    """
    import keras

    precision = resolve_precision(precision)
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        yield precision
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
