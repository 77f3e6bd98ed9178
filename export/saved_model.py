"""Export a trained, calibrated run as a TF-Serving SavedModel version.

Layout written (TF Serving scans ``EXPORT_BASE/<name>`` for numeric folders)::

    EXPORT_BASE/<name>/<version>/saved_model.pb, variables/
    EXPORT_BASE/<name>/<version>/assets.extra/tfuad_preprocess.json
    EXPORT_BASE/<name>/<version>/assets.extra/model_card.json, model_card.md
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
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import tfuad
from tfuad.detection.restoration import get_schedule
from tfuad.errors import ConfigError
from tfuad.export.graph import INPUT_NAME, SIGNATURE_INPUTS, SIGNATURE_OUTPUTS, signature_functions
from tfuad.export.model_card import build_card, hardware, read_report, write_card
from tfuad.export.warmup import WARMUP_FILE, serving_apis, warmup_slices, warmup_volume, write_warmup_requests
from tfuad.files import ensure_writable_dir, read_json, write_json
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
    "request_inputs",
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
        "format_version": 2,
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
        "operating_points": {
            "default_fpr": plan.fpr,
            "fpr_range": list(plan.slice_curve.range),
            "interpolation": "linear in log(FPR) between the curve's levels; a level's own threshold at a level",
            "slice": plan.slice_curve.to_dict(),
            "volume": plan.volume_curve.to_dict(),
        },
        "restore": restore,
        "signatures": signatures,
        "postprocessing": "slice signatures: none (slice_thresholds are calibrated for the raw slice maps); "
                          "volume signatures: tfuad detect's (volume_postprocess) with volume_thresholds",
        "volume_postprocess": calibration.postprocess,
        "volume_thresholds": calibration.thresholds,
    }


def request_inputs(plan: ExportPlan, name: str) -> dict:
    """A small synthetic request for a signature (warmup records and the timing at export).

    Slices: two background slices with a disc of brain; volumes: eight such
    slices with their cylinder of brain; ``fpr`` and ``threshold``: the
    default operating point.
    """
    model = plan.detector.model
    size, channels = int(model.image_size), int(model.channels)
    background = plan.detector.pconfig.background_value
    inputs = {}
    if name.startswith("detect_volume"):
        inputs["slices"], inputs["brain_mask"] = warmup_volume(size, background, channels)
    else:
        inputs["slices"] = warmup_slices(size, background, channels)
    if "fpr" in SIGNATURE_INPUTS[name]:
        inputs["fpr"] = np.asarray([plan.fpr], np.float32)
    if "threshold" in SIGNATURE_INPUTS[name]:
        curve = plan.volume_curve if name.startswith("detect_volume") else plan.slice_curve
        inputs["threshold"] = np.asarray([curve.default_threshold], np.float32)
    return inputs


def _write_savedmodel(out, model, functions):
    """Trace the signature functions and save them with the model's variables (Keras ExportArchive)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, signature in functions.items():
        archive.add_endpoint(name, signature.function, input_signature=signature.specs)
    archive.write_out(str(out), verbose=False)


#: Timed calls per signature at export (after one untimed call).
TIMED_CALLS = 5
#: Signatures timed at export.
TIMED_SIGNATURES = ("serving_default", "detect_volume", "restore")


def _speed_at_export(path: Path, plan: ExportPlan) -> dict:
    """Latency of the written SavedModel on its warmup requests, one client, on this machine."""
    loaded = tf.saved_model.load(str(path))
    rows = []
    for name in TIMED_SIGNATURES:
        if name not in loaded.signatures:
            continue
        inputs = {k: tf.constant(v) for k, v in request_inputs(plan, name).items()}
        fn = loaded.signatures[name]
        fn(**inputs)
        seconds = []
        for _ in range(TIMED_CALLS):
            start = time.perf_counter()
            fn(**inputs)
            seconds.append(time.perf_counter() - start)
        shape = inputs["slices"].shape
        request = (f"volume of {shape[0]} slices {shape[1]}×{shape[2]}" if name.startswith("detect_volume")
                   else f"{shape[0]} slices {shape[1]}×{shape[2]}")
        rows.append({"signature": name, "request": request, "clients": 1,
                     "requests_per_s": 1.0 / float(np.mean(seconds)),
                     "p50_ms": 1000 * float(np.percentile(seconds, 50)),
                     "p99_ms": 1000 * float(np.percentile(seconds, 99))})
    return {"source": f"measured at export on the synthetic warmup requests ({TIMED_CALLS} calls per signature "
                      "after one untimed call, one client, tf.saved_model.load in the exporting process); "
                      "benchmarks/serving_load.py measures load",
            "hardware": hardware(), "rows": rows}


def read_speed(path) -> dict:
    """Timings written by ``benchmarks/serving_load.py --json`` for the model card.

    Raises:
        ConfigError: the file is missing or is not such a record.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such speed record (write one with benchmarks/serving_load.py --json)")
    speed = read_json(path)
    if not isinstance(speed, dict) or not isinstance(speed.get("rows"), list):
        raise ConfigError(f"{path}: not a speed record of benchmarks/serving_load.py (no 'rows' list)")
    return speed


def export_run(run_dir, export_base, *, name: str | None = None, version: int | None = None,
               method: str = "residual", fpr: float = 0.05, lam: float | None = None,
               schedule: str | None = None, max_steps: int | None = None, warmup: bool = True,
               report=None, speed=None) -> ExportedModel:
    """Export a run as ``EXPORT_BASE/<name>/<version>/`` for TensorFlow Serving.

    Args:
        run_dir: A trained run directory, calibrated for ``method``.
        export_base: The server's model base folder.
        name: Model name; default: the run folder's name.
        version: Version number; default: 1 + the highest existing one.
        method: ``residual`` or ``map-tv``: the map of the detection signatures.
        fpr: The default FPR limit (a calibrated one): its thresholds make the ``mask`` of
            ``serving_default`` and ``detect_volume``; requests may name another.
        lam: λ of the ``restore`` signature; default: the calibrated one
            (``calibration-map-tv.json``). Without either, ``restore`` is not exported.
        schedule: MAP-TV schedule name (``paper`` or ``fast``); default: the
            calibrated one, else ``paper``.
        max_steps: Step limit of the schedule; default: the calibrated one.
        warmup: Write ``assets.extra/tf_serving_warmup_requests`` (needs
            ``tensorflow-serving-api``).
        report: An evaluation report folder (``tfuad evaluate --out``) for the model card's table.
        speed: A speed record of ``benchmarks/serving_load.py --json`` for the model card;
            default: latencies measured at export on the warmup requests.

    Returns:
        An :class:`ExportedModel`.

    Raises:
        ConfigError: the run is not calibrated for ``method`` or ``fpr``, λ or
            the schedule contradicts the map-tv calibration, the name or the
            version is invalid, the version exists already, or the report or
            speed record is not readable.
    """
    if method not in EXPORT_METHODS:
        raise ConfigError(f"cannot export method {method!r}; choose one of: {', '.join(EXPORT_METHODS)}")
    if schedule is not None or max_steps is not None:
        get_schedule(schedule or "paper", max_steps)
    _check_fpr(fpr)
    if warmup:
        serving_apis()  # fail before the slow part when the protos are missing
    if report is not None:
        read_report(report)
    speed = read_speed(speed) if speed is not None else None
    run = RunDir(run_dir)
    run.config()
    name = _check_name(name if name is not None else run.path.resolve().name)
    model_dir = ensure_writable_dir(export_base) / name
    version = _free_version(model_dir, name, version)
    plan = export_plan(run.path, method=method, fpr=fpr, lam=lam, schedule=schedule, max_steps=max_steps)
    for scoring in (plan.detector.method, plan.restoration):
        if scoring is not None:
            scoring.build()  # compiled loops built before tracing, reused by the signatures
    functions = signature_functions(plan.detector.method, slice_curve=plan.slice_curve,
                                    volume_curve=plan.volume_curve, postprocess=plan.postprocess,
                                    crop_margin=plan.detector.pconfig.crop_margin, restoration=plan.restoration)
    signatures = {key: {"inputs": list(SIGNATURE_INPUTS[key]), "outputs": list(SIGNATURE_OUTPUTS[key])}
                  for key in functions}
    metadata = _metadata(name, version, plan, signatures)
    final = _write_version(model_dir, version, name, plan, functions, metadata, warmup,
                           card={"report": report, "speed": speed})
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
                   warmup: bool, card: dict) -> Path:
    """Build the version in a hidden folder beside its place, then rename it into place."""
    final = model_dir / str(version)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".{version}.{uuid.uuid4().hex}.tmp"  # not numeric: servers ignore it
    tmp.mkdir()
    try:
        _write_savedmodel(tmp, plan.detector.model, functions)
        (tmp / PREPROCESS_FILE).parent.mkdir(exist_ok=True)
        write_json(metadata, tmp / PREPROCESS_FILE)
        speed = card["speed"] or _speed_at_export(tmp, plan)
        write_card(tmp / PREPROCESS_FILE.parent, build_card(plan, metadata, report=card["report"], speed=speed))
        if warmup:
            write_warmup_requests(tmp / WARMUP_FILE, name, {key: request_inputs(plan, key) for key in functions})
        if final.exists():
            raise ConfigError(f"{final}: version {version} of model {name!r} appeared during the export")
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
