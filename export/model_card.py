"""The model card written with every export: ``assets.extra/model_card.json`` and ``model_card.md``.

It says what the served model is and what it is not for: the model and the
scoring method, the training and calibration data, the evaluation table with
its intervals (when an evaluation report is given), the speed on the measured
hardware, the intended use and known failure modes, and the versions.

Example:
    >>> card = build_card(plan, metadata, report="reports/sae")     # doctest: +SKIP
    >>> write_card(version_dir / "assets.extra", card)               # doctest: +SKIP
"""
from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import tensorflow as tf

import tfuad
from tfuad.errors import ConfigError
from tfuad.files import read_json, write_json, write_text

__all__ = ["CARD_JSON", "CARD_MD", "INTENDED_USE", "FAILURE_MODES", "build_card", "read_report", "render_markdown",
           "write_card", "hardware"]

CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"

INTENDED_USE = (
    "Research use: flagging voxels of preprocessed brain MR volumes of the trained modality that deviate from "
    "the healthy training population, to draw a reader's attention or to compare unsupervised methods. "
    "It is not a medical device and must not be used for diagnosis or treatment decisions. Inputs must be "
    "skull-stripped and prepared exactly as the preprocessing contract (tfuad_preprocess.json) says.")
FAILURE_MODES = (
    "Small lesions: the 3D median filter and the removal of components below the minimum size erase lesions "
    "of a few voxels, and the raw slice maps of small lesions sit inside the healthy residual range.",
    "Other scanners, protocols and sites: thresholds are calibrated on healthy data of the training "
    "distribution; another scanner shifts intensities and residuals, so the false-positive rate reached can "
    "differ widely from the one requested (histogram standardisation, --standardize, reduces the shift).",
    "Lesions that are not hyperintense: the maps are absolute differences, but normative models reconstruct "
    "dark or isointense lesions (T1 hypointensities, iso-intense tumour cores) poorly and they score lower "
    "than bright ones.",
    "Anatomy absent from the training slices (slices at the top or bottom of the brain, large resections, "
    "children's brains) scores as anomalous.",
    "Images not normalised as the contract says: values far outside the training range make the request fail "
    "(non-finite outputs are refused) or give meaningless maps.",
)


def hardware() -> dict:
    """The machine a timing was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "gpus": gpus, "platform": platform.platform()}


def read_report(report_dir) -> dict:
    """An evaluation report's ``summary.json``.

    Raises:
        ConfigError: no readable ``summary.json`` with a ``methods`` list in the folder.
    """
    path = Path(report_dir) / "summary.json"
    if not path.is_file():
        raise ConfigError(f"{report_dir}: no summary.json; give the folder tfuad evaluate wrote (--out)")
    summary = read_json(path)
    if not isinstance(summary, dict) or not isinstance(summary.get("methods"), list):
        raise ConfigError(f"{path}: not an evaluation summary (no 'methods' list)")
    return summary


def _interval(stat) -> dict | None:
    """``{"mean", "low", "high"}`` of a summary statistic (``mean``/``value`` with ``low``/``high``)."""
    if not isinstance(stat, dict):
        return None
    mean = stat.get("mean", stat.get("value"))
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return None
    return {"mean": float(mean), "low": stat.get("low"), "high": stat.get("high")}


def _evaluation(summary: dict, report_dir) -> dict:
    rows = []
    for m in summary["methods"]:
        row = {"method": m.get("method"), "label": m.get("label", m.get("method")),
               "auroc": _interval(m.get("auroc_ci") or {"value": m.get("auroc")}),
               "auprc": _interval(m.get("auprc_ci") or {"value": m.get("auprc")}),
               "dice": {k: _interval(v) for k, v in (m.get("dice") or {}).items()},
               "lesion_f1": {k: _interval(v) for k, v in (m.get("lesion_f1") or {}).items()},
               "seconds_per_volume": m.get("seconds_per_volume")}
        rows.append(row)
    return {"report": os.fspath(Path(report_dir).resolve()), "dataset": summary.get("dataset"),
            "modality": summary.get("modality"), "subjects": summary.get("subjects", []),
            "folds": summary.get("folds"), "bootstrap": summary.get("bootstrap"), "created": summary.get("created"),
            "methods": rows}


def build_card(plan, metadata: dict, *, report=None, speed: dict | None = None) -> dict:
    """The card's content.

    Args:
        plan: The :class:`~tfuad.workflows.export.ExportPlan` exported.
        metadata: The preprocessing contract written beside the model.
        report: An evaluation report folder (``tfuad evaluate --out``), or ``None``.
        speed: ``{"source", "hardware", "rows"}`` timings (from ``benchmarks/serving_load.py`` or
            measured at export on the warmup requests).
    """
    detector = plan.detector
    config, calibration = detector.config, detector.calibration()
    data = config.get("data", {})
    restore = metadata.get("restore")
    card = {
        "format": "tfuad-model-card", "format_version": 1,
        "model_name": metadata["model_name"], "version": metadata["version"],
        "model": {"architecture": config["model"], "arguments": config.get("model_kwargs", {}),
                  "image_size": metadata["input"]["shape"][1], "modality": data.get("modality"),
                  "precision": config.get("training", {}).get("precision", "float32"),
                  "weights_fingerprint": calibration.weights},
        "method": {"name": detector.name, "description": detector.method.describe(),
                   "default_fpr": plan.fpr, "slice_threshold": plan.threshold,
                   "volume_threshold": plan.volume_curve.default_threshold,
                   "fpr_range": list(plan.slice_curve.range), "fpr_curve_dense": plan.slice_curve.dense,
                   "restore": restore},
        "training_data": {"dataset": data.get("root"), "layout": data.get("layout"), "modality": data.get("modality"),
                          "subjects": data.get("train_subjects", []),
                          "validation_subjects": data.get("val_subjects", []),
                          "slices": data.get("n_train_slices"), "preprocessing": config.get("preprocess"),
                          "intensity_stats": bool(config.get("intensity_stats")),
                          "training": {k: config.get("training", {}).get(k) for k in ("epochs", "batch_size", "seed",
                                                                                      "augment", "patience")}},
        "calibration_data": {"subjects": calibration.subject_ids, "healthy_voxels": calibration.n_voxels,
                             "thresholds": calibration.thresholds,
                             "slice_thresholds": calibration.extra.get("slice_thresholds"),
                             "percentile_source": calibration.extra.get("percentile_source"),
                             "weighting": calibration.extra.get("weighting", "none"),
                             "postprocess": calibration.postprocess},
        "evaluation": _evaluation(read_report(report), report) if report is not None else None,
        "speed": speed,
        "intended_use": INTENDED_USE,
        "failure_modes": list(FAILURE_MODES),
        "versions": {"tfuad_trained": config.get("tfuad_version"), "tfuad_exported": tfuad.__version__,
                     "tensorflow": tf.__version__, "python": platform.python_version()},
    }
    return card


def _fmt(stat, digits: int = 3) -> str:
    if not stat:
        return "n/a"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("low") is not None and stat.get("high") is not None:
        text += f" [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"
    return text


def _names(paths) -> str:
    names = [Path(p).name.split(".")[0] for p in paths or []]
    return f"{len(names)} ({', '.join(names)})" if names else "not recorded"


def _evaluation_md(evaluation) -> list:
    if evaluation is None:
        return ["No evaluation report was given at export (`tfuad export ... --report REPORT_DIR`, the folder "
                "`tfuad evaluate` wrote)."]
    keys = sorted({k for row in evaluation["methods"] for k in row["dice"]},
                  key=lambda k: (not k.startswith("fpr@"), float(k.split("@")[-1].lstrip("p") or 0)))
    boot = evaluation.get("bootstrap") or {}
    lines = [f"Report `{evaluation['report']}`: dataset `{evaluation['dataset']}` ({evaluation['modality']}), "
             f"{len(evaluation['subjects'])} test subjects; mean over subjects with "
             f"{boot.get('confidence', 0.95):.0%} bootstrap intervals ({boot.get('resamples', '?')} resamples); "
             "AUROC/AUPRC pool the brain voxels.", "",
             "| method | AUROC | AUPRC | " + " | ".join(f"Dice {k}" for k in keys) + " |",
             "|---" * (3 + len(keys)) + "|"]
    for row in evaluation["methods"]:
        lines.append(f"| {row['label']} | {_fmt(row['auroc'])} | {_fmt(row['auprc'])} | "
                     + " | ".join(_fmt(row["dice"].get(k)) for k in keys) + " |")
    return lines


def _speed_md(speed) -> list:
    if not speed:
        return ["Not measured."]
    hw = speed.get("hardware", {})
    lines = [f"{speed.get('source', '')}. Hardware: {hw.get('cpu')} ({hw.get('cpu_count')} logical CPUs"
             + (f", GPUs: {', '.join(hw['gpus'])}" if hw.get("gpus") else ", no GPU") + ").", "",
             "| signature | request | clients | requests/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    for r in speed.get("rows", []):
        lines.append(f"| {r['signature']} | {r['request']} | {r.get('clients', 1)} | {r['requests_per_s']:.2f} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    return lines


def render_markdown(card: dict) -> str:
    """The card as Markdown."""
    model, method, train, calib = card["model"], card["method"], card["training_data"], card["calibration_data"]
    pre = train.get("preprocessing") or {}
    restore = method.get("restore")
    lines = [
        f"# Model card: {card['model_name']} version {card['version']}", "",
        "## Model and method", "",
        f"- Architecture: `{model['architecture']}` {model['arguments']}, {model['image_size']} × "
        f"{model['image_size']} axial slices of {model['modality']}, computing in {model['precision']} "
        f"(float32 weights, fingerprint `{model['weights_fingerprint']}`).",
        f"- Scoring method: {method['description']}.",
        f"- Default operating point: FPR {method['default_fpr']:g} on healthy calibration voxels: slice threshold "
        f"{method['slice_threshold']:.6g} (raw slice maps), volume threshold {method['volume_threshold']:.6g} "
        f"(post-processed maps). Requests may name any FPR in [{method['fpr_range'][0]:g}, "
        f"{method['fpr_range'][1]:g}] (interpolated on "
        + ("the stored healthy-data curve)" if method["fpr_curve_dense"] else "the calibrated limits only)")
        + " or an explicit threshold.",
        "- MAP-TV restore: " + (f"λ = {restore['lambda']:g}, {restore['schedule']} schedule." if restore
                                else "not exported."),
        "", "## Training data", "",
        f"- Dataset: `{train['dataset']}` (layout {train['layout']}), modality {train['modality']}.",
        f"- Training subjects: {_names(train['subjects'])}; validation subjects: "
        f"{_names(train['validation_subjects'])}; {train['slices']} healthy training slices.",
        f"- Preprocessing: {pre.get('normalization')} normalisation, image size {pre.get('image_size')}, crop margin "
        f"{pre.get('crop_margin')}, histogram standardisation: {'yes' if pre.get('standardize') else 'no'} "
        "(full record: `tfuad_preprocess.json`).",
        f"- Training: {train['training']}.",
        "", "## Calibration data", "",
        f"- Subjects: {_names(calib['subjects'])}; {calib['healthy_voxels']} healthy brain voxels "
        f"(98th percentile from the {calib.get('percentile_source')} split; FPR thresholds' voxel weighting: "
        f"{calib.get('weighting', 'none')}).",
        f"- Post-processing: {calib['postprocess']}.",
        f"- Volume thresholds: {calib['thresholds']}.",
        "", "## Evaluation", "", *_evaluation_md(card.get("evaluation")),
        "", "## Speed", "", *_speed_md(card.get("speed")),
        "", "## Intended use", "", card["intended_use"],
        "", "## Known failure modes", "", *[f"- {m}" for m in card["failure_modes"]],
        "", "## Versions", "",
        "- " + ", ".join(f"{k}: {v}" for k, v in card["versions"].items()), "",
    ]
    return "\n".join(lines)


def write_card(folder, card: dict) -> tuple:
    """Write ``model_card.json`` and ``model_card.md`` into ``folder`` atomically; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(card, folder / CARD_JSON)
    write_text(render_markdown(card), folder / CARD_MD)
    return folder / CARD_JSON, folder / CARD_MD
