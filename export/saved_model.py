"""Export a trained, calibrated run as a TF-Serving SavedModel version.

Layout written (TF Serving scans ``EXPORT_BASE/<name>`` for numeric folders)::

    EXPORT_BASE/<name>/<version>/saved_model.pb, variables/
    EXPORT_BASE/<name>/<version>/assets.extra/tfuad_preprocess.json
    EXPORT_BASE/<name>/<version>/assets.extra/tf_serving_warmup_requests

A version is built in a hidden folder beside its final place and renamed into
place when complete, so a server polling the folder never sees half a model;
an existing version is never overwritten.

Example:
    >>> exported = export_run("runs/sae", "serving", fpr=0.05)      # doctest: +SKIP
    >>> exported.path                                               # doctest: +SKIP
    PosixPath('serving/sae/1')
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

import tfuad
from tfuad.detection.restoration import get_schedule
from tfuad.errors import ConfigError
from tfuad.export.graph import INPUT_NAME, SIGNATURE_OUTPUTS, signature_functions
from tfuad.export.warmup import WARMUP_FILE, serving_apis, warmup_slices, write_warmup_requests
from tfuad.files import ensure_writable_dir, write_json
from tfuad.postprocessing.thresholds import fpr_key
from tfuad.training.run import RunDir
from tfuad.workflows.export import EXPORT_METHODS, ExportPlan, export_plan

__all__ = [
    "EXPORT_METHODS",
    "PREPROCESS_FILE",
    "SLICE_LAYOUT",
    "ExportedModel",
    "model_versions",
    "next_version",
    "export_run",
]

#: Preprocessing contract written beside the model, relative to the version folder.
PREPROCESS_FILE = Path("assets.extra") / "tfuad_preprocess.json"
#: How a slice is laid out (see :mod:`tfuad.data.preprocessing`).
SLICE_LAYOUT = ("axial slices of the canonical (RAS+) volume, one per index of its third axis; row 0 is "
                "anterior, columns run along canonical x (the patient's right on the right)")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


@dataclass(frozen=True)
class ExportedModel:
    """What :func:`export_run` wrote.

    Attributes:
        path: The version folder ``EXPORT_BASE/<name>/<version>``.
        name: Model name (for the server's ``--model_name`` and request URLs).
        version: The numeric version.
        signatures: Signature names, ``serving_default`` first.
        metadata: Content of ``assets.extra/tfuad_preprocess.json``.
    """

    path: Path
    name: str
    version: int
    signatures: tuple
    metadata: dict


def model_versions(model_dir) -> list:
    """Numeric version folders of ``model_dir`` (ascending); other entries are ignored."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir) -> int:
    """``1 +`` the highest existing version, or 1 for a new model."""
    versions = model_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"model name {name!r} must start with a letter or digit and use only letters, "
                          "digits, '.', '_' and '-'")
    return name


def _check_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"version must be a positive integer, got {version!r}")
    return version


def _check_fpr(fpr) -> str:
    """The calibration key of an FPR limit."""
    try:
        return fpr_key(fpr)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _metadata(name: str, version: int, plan: ExportPlan, signatures: dict) -> dict:
    detector = plan.detector
    config, pconfig, model = detector.config, detector.pconfig, detector.model
    calibration = detector.calibration()
    restore = None
    if plan.restoration is not None:
        settings = plan.restoration.settings()
        schedule = dict(settings["schedule"])
        restore = {"lambda": plan.restoration.lam, "schedule": schedule.pop("name"), "schedule_settings": schedule}
    return {
        "format": "tfuad-serving",
        "format_version": 1,
        "model_name": name,
        "version": version,
        "model": config["model"],
        "modality": config.get("data", {}).get("modality"),
        "trained_with_tfuad": config.get("tfuad_version"),
        "exported_with_tfuad": tfuad.__version__,
        "input": {"name": INPUT_NAME, "dtype": "float32",
                  "shape": [None, int(model.image_size), int(model.image_size), int(model.channels)]},
        "slice_layout": SLICE_LAYOUT,
        "preprocess": pconfig.to_dict(),
        "background_value": pconfig.background_value,
        "intensity_stats": dict(detector.stats),
        "brain_region": "pixels whose value differs from background_value",
        "method": detector.name,
        "fpr": plan.fpr,
        "slice_threshold": plan.threshold,
        "slice_thresholds": plan.slice_thresholds,
        "restore": restore,
        "signatures": signatures,
        "postprocessing": "none: the 3D post-processing of tfuad detect (median filter, brain-mask erosion, "
                          "small components) is not part of the serving graph; slice_thresholds are "
                          "calibrated for these raw slice maps",
        # For clients that redo tfuad detect's 3D post-processing on the volume (see export/README.md).
        "volume_postprocess": calibration.postprocess,
        "volume_thresholds": calibration.thresholds,
    }


def _write_savedmodel(out, model, functions, slice_shape):
    """Trace the signature functions and save them with the model's variables (Keras ExportArchive)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = [tf.TensorSpec((None, *slice_shape), tf.float32, name=INPUT_NAME)]
    for name, fn in functions.items():
        archive.add_endpoint(name, fn, input_signature=spec)
    archive.write_out(str(out), verbose=False)


def export_run(run_dir, export_base, *, name: str | None = None, version: int | None = None,
               method: str = "residual", fpr: float = 0.05, lam: float | None = None,
               schedule: str | None = None, max_steps: int | None = None, warmup: bool = True) -> ExportedModel:
    """Export a run as ``EXPORT_BASE/<name>/<version>/`` for TensorFlow Serving.

    Args:
        run_dir: A trained run directory, calibrated for ``method``.
        export_base: The server's model base folder.
        name: Model name; default: the run folder's name.
        version: Version number; default: 1 + the highest existing one.
        method: ``residual`` or ``map-tv``: the map of ``serving_default``.
        fpr: FPR limit whose calibrated slice-level threshold makes the ``mask``.
        lam: λ of the ``restore`` signature; default: the calibrated one
            (``calibration-map-tv.json``). Without either, ``restore`` is not exported.
        schedule: MAP-TV schedule name (``paper`` or ``fast``); default: the
            calibrated one, else ``paper``.
        max_steps: Step limit of the schedule; default: the calibrated one.
        warmup: Write ``assets.extra/tf_serving_warmup_requests`` (needs
            ``tensorflow-serving-api``).

    Returns:
        An :class:`ExportedModel`.

    Raises:
        ConfigError: the run is not calibrated for ``method`` or ``fpr``, λ or
            the schedule contradicts the map-tv calibration, the name or the
            version is invalid, or the version exists already.
    """
    if method not in EXPORT_METHODS:
        raise ConfigError(f"cannot export method {method!r}; choose one of: {', '.join(EXPORT_METHODS)}")
    if schedule is not None or max_steps is not None:
        get_schedule(schedule or "paper", max_steps)
    _check_fpr(fpr)
    if warmup:
        serving_apis()  # fail before the slow part when the protos are missing
    run = RunDir(run_dir)
    run.config()
    name = _check_name(name if name is not None else run.path.resolve().name)
    model_dir = ensure_writable_dir(export_base) / name
    version = _free_version(model_dir, name, version)
    plan = export_plan(run.path, method=method, fpr=fpr, lam=lam, schedule=schedule, max_steps=max_steps)
    for scoring in (plan.detector.method, plan.restoration):
        if scoring is not None:
            scoring.build()  # compiled loops built before tracing, reused by the signatures
    functions = signature_functions(plan.detector.method, threshold=plan.threshold, restoration=plan.restoration)
    signatures = {key: {"inputs": [INPUT_NAME], "outputs": list(SIGNATURE_OUTPUTS[key])} for key in functions}
    metadata = _metadata(name, version, plan, signatures)
    final = _write_version(model_dir, version, name, plan, functions, metadata, warmup)
    return ExportedModel(path=final, name=name, version=version, signatures=tuple(functions), metadata=metadata)


def _free_version(model_dir: Path, name: str, version: int | None) -> int:
    """The version to write: the one asked for, or 1 + the highest; an existing one is refused."""
    version = next_version(model_dir) if version is None else _check_version(version)
    if (model_dir / str(version)).exists():
        raise ConfigError(f"{model_dir / str(version)}: version {version} of model {name!r} exists already; "
                          f"versions are never overwritten (leave out --version to write version "
                          f"{next_version(model_dir)})")
    return version


def _write_version(model_dir: Path, version: int, name: str, plan: ExportPlan, functions: dict, metadata: dict,
                   warmup: bool) -> Path:
    """Build the version in a hidden folder beside its place, then rename it into place."""
    model = plan.detector.model
    slice_shape = (int(model.image_size), int(model.image_size), int(model.channels))
    final = model_dir / str(version)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".{version}.{uuid.uuid4().hex}.tmp"  # not numeric: servers ignore it
    tmp.mkdir()
    try:
        _write_savedmodel(tmp, model, functions, slice_shape)
        (tmp / PREPROCESS_FILE).parent.mkdir(exist_ok=True)
        write_json(metadata, tmp / PREPROCESS_FILE)
        if warmup:
            batch = warmup_slices(slice_shape[0], plan.detector.pconfig.background_value, slice_shape[2])
            write_warmup_requests(tmp / WARMUP_FILE, name, {key: {INPUT_NAME: batch} for key in functions})
        if final.exists():
            raise ConfigError(f"{final}: version {version} of model {name!r} appeared during the export")
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
