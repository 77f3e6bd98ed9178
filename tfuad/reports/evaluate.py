"""Evaluation on labelled test subjects: numbers, tables and figures.

For every method (the learned one(s) and always the non-learned intensity
reference) and every labelled test subject: anomaly map → calibrated
thresholds (98th percentile, FPR limits) → binary masks → metrics. Writes
``summary.json``, ``per_subject.csv``, ``summary.md`` and figures into the
report folder.

Thresholds come from the run's calibration files; test labels are used only
to score, and the oracle "best Dice" is labelled as such.

Example:
    >>> evaluate_run("runs/svae", discover("demo_data"), "report")   # doctest: +SKIP
"""
from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import numpy as np

from tfuad.data.nifti import atomic_path
from tfuad.detection.calibrate import calibrate_run
from tfuad.detection.detector import Detector
from tfuad.detection.restoration import schedule_config
from tfuad.data.splits import labelled_test_subjects
from tfuad.training.run import write_json

__all__ = ["evaluate_run", "labelled_test_subjects", "markdown_table", "TABLE_COLUMNS"]

#: Columns of the results table (README, benchmarks).
TABLE_COLUMNS = ("method", "AUROC", "AUPRC", "Dice@p98", "DSC@1%", "DSC@5%", "DSC@10%",
                 "best Dice (oracle)", "s/slice")

METHOD_LABELS = {"residual": "residual", "map-tv": "MAP-TV", "intensity": "intensity baseline"}


def _fmt(x, digits=3):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _mean_std(values):
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], float)
    return (float(arr.mean()), float(arr.std())) if arr.size else (math.nan, math.nan)


def markdown_table(rows) -> str:
    """Markdown results table from :func:`evaluate_run` method summaries."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for r in rows:
        def dice(key):
            d = r["dice"].get(key)
            return "n/a" if d is None else f"{_fmt(d['mean'])} ± {_fmt(d['std'])}"
        lines.append("| " + " | ".join([
            r["label"], _fmt(r["auroc"]), _fmt(r["auprc"]), dice("p98"), dice("fpr@0.01"), dice("fpr@0.05"),
            dice("fpr@0.1"), f"{_fmt(r['best_dice']['mean'])} ± {_fmt(r['best_dice']['std'])}",
            _fmt(r["seconds_per_slice"], 4)]) + " |")
    return "\n".join(lines) + "\n"


def evaluate_run(run_dir, dataset, out_dir, *, methods=("residual",), include_intensity: bool = True,
                 schedule=None, max_steps: int | None = None, batch_size: int | None = None, n_examples: int = 4,
                 log=print) -> dict:
    """Evaluate a calibrated run on the labelled test subjects of ``dataset``.

    Args:
        run_dir: Trained and calibrated run directory.
        dataset: :class:`~tfuad.data.layouts.Dataset`; its ``test`` split (or,
            without splits, every subject with a lesion mask) is scored.
        out_dir: Report folder.
        methods: Learned methods to score (``residual``, ``map-tv``).
        include_intensity: Add the intensity-threshold reference row
            (calibrated on the dataset's healthy data when not yet calibrated).
        schedule: MAP-TV schedule; default: the calibrated one.
        max_steps: Step limit of the MAP-TV schedule; default: the calibrated one.
        batch_size: Slices per batch.
        n_examples: Slices in the example grid.

    Returns:
        The summary dict also written to ``summary.json``.
    """
    from tqdm.auto import tqdm

    from tfuad.metrics.segmentation import (
        curve_points,
        dice,
        false_positive_rate,
        lesion_detection_rate,
        per_subject_metrics,
        pool_brain_voxels,
    )
    from tfuad.reports.figures import plot_dice_vs_lesion_size, plot_example_grid, plot_roc_pr

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    methods = list(dict.fromkeys([*methods, *(["intensity"] if include_intensity else [])]))
    detectors, calibrations = {}, {}
    for method in methods:
        det = Detector(run_dir, method, batch_size=batch_size, schedule=schedule, max_steps=max_steps)
        if method == "intensity" and not det.calibration_path().is_file():
            log("calibrating the intensity baseline on the dataset's healthy data")
            same = detectors[methods[0]].postprocess if detectors else None  # same post-processing as compared row
            calibrate_run(run_dir, dataset, method="intensity", batch_size=batch_size, postprocess=same, log=log)
            det = Detector(run_dir, method, batch_size=batch_size, schedule=schedule, max_steps=max_steps)
        calibrations[method] = det.calibration()  # read once; fails early, naming the command to run
        detectors[method] = det
    first = detectors[methods[0]]
    modality = first.config["data"]["modality"]
    subjects = labelled_test_subjects(dataset, log)

    rows, pooled, examples = [], {m: ([], [], []) for m in methods}, []
    for subject in tqdm(subjects, desc="evaluating", unit="subject"):
        prep = first.prepare(subject.image(modality), brain_mask_path=subject.brain_mask,
                             lesion_mask_path=subject.lesion_mask)
        truth, brain = prep.lesion_mask, prep.brain_mask
        for method, det in detectors.items():
            cal = calibrations[method]
            result = det.run_volume(prep)
            row = {"subject": subject.id, "method": method, "slices": int(prep.slices.shape[0]),
                   "seconds": result.seconds, "seconds_per_slice": result.seconds / prep.slices.shape[0]}
            for key, threshold in cal.thresholds.items():
                pred = det.segment(result.map, threshold)
                if key == next(iter(cal.thresholds)):
                    base = per_subject_metrics(result.map, pred, truth, brain)
                    row.update({k: base[k] for k in ("auroc", "auprc", "best_dice", "lesion_voxels")})
                row[f"dice@{key}"] = dice(pred, truth)
                row[f"fpr@{key}"] = false_positive_rate(pred, truth, brain)
                row[f"detected@{key}"] = lesion_detection_rate(pred, truth)
                row[f"voxels@{key}"] = int(pred.sum())
            rows.append(row)
            for bucket, arr in zip(pooled[method], (result.map, truth, brain)):
                bucket.append(arr)
            if method == methods[0] and len(examples) < n_examples and truth.any():
                examples.extend(_example_rows(prep, result, det, cal, n_examples - len(examples), subject.id))
            log(f"{subject.id} [{method}]: AUROC {_fmt(row['auroc'])}, best Dice {_fmt(row['best_dice'])}, "
                f"{result.seconds:.1f} s")

    summaries, curves = [], {}
    for method, cal in calibrations.items():
        mrows = [r for r in rows if r["method"] == method]
        scores, truths = pool_brain_voxels(*pooled[method])
        points = curve_points(scores, truths)
        curves[METHOD_LABELS[method]] = points
        keys = list(cal.thresholds)
        summaries.append({
            "method": method, "label": METHOD_LABELS[method],
            "thresholds": cal.thresholds,
            "lambda": cal.extra.get("lambda"),
            "schedule": schedule_config(detectors[method].schedule) if method == "map-tv" else None,
            "auroc": float(points["auroc"]), "auprc": float(points["auprc"]),
            "dice": {k: dict(zip(("mean", "std"), _mean_std(r[f"dice@{k}"] for r in mrows)))
                     for k in keys},
            "achieved_fpr": {k: dict(zip(("mean", "std"), _mean_std(r[f"fpr@{k}"] for r in mrows))) for k in keys},
            "lesion_detection_rate": {k: _mean_std(r[f"detected@{k}"] for r in mrows)[0] for k in keys},
            "best_dice": dict(zip(("mean", "std"), _mean_std(r["best_dice"] for r in mrows))),
            "best_dice_note": "oracle: best threshold chosen with the test labels; for comparison with the literature only",
            "per_subject_auroc": dict(zip(("mean", "std"), _mean_std(r["auroc"] for r in mrows))),
            "seconds_per_slice": float(np.mean([r["seconds_per_slice"] for r in mrows])),
            "seconds_per_volume": float(np.mean([r["seconds"] for r in mrows])),
        })
    summary = {
        "run": os.fspath(run_dir), "model": first.config["model"], "dataset": os.fspath(dataset.root),
        "layout": dataset.layout, "modality": modality, "subjects": [s.id for s in subjects],
        "methods": summaries, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json(summary, out / "summary.json")
    _write_csv(rows, out / "per_subject.csv")
    table = markdown_table(summaries)
    header = (f"# {first.config['model']} on {dataset.root} ({modality}, {len(subjects)} test subjects)\n\n"
              "Dice: mean ± std over subjects at calibrated thresholds (98th percentile of healthy training "
              "maps; FPR limits on healthy calibration voxels). best Dice uses the test labels (oracle).\n\n")
    with atomic_path(out / "summary.md") as tmp:
        Path(tmp).write_text(header + table)
    plot_roc_pr(curves, out / "roc_pr.png", title=f"{first.config['model']}: pooled brain voxels")
    plot_dice_vs_lesion_size([{**r, "dice": r[f"dice@{list(calibrations[methods[0]].thresholds)[-1]}"]}
                              for r in rows if r["method"] == methods[0]], out / "dice_vs_lesion_size.png",
                             title=f"{METHOD_LABELS[methods[0]]}: Dice per subject")
    if examples:
        plot_example_grid([e[0] for e in examples], out / "examples.png",
                          columns=("input", "reconstruction", "residual", "segmentation", "ground truth"),
                          row_labels=[e[1] for e in examples])
    log(f"wrote {out / 'summary.md'}")
    return summary


def _example_rows(prep, result, det, cal, n, subject_id):
    """Slices with the most lesion voxels: input, restoration, map, segmentation, truth."""
    lesion_per_slice = prep.lesion_mask.sum(axis=(0, 1))
    order = np.argsort(-lesion_per_slice)[:n]
    recon = prep.to_volume(result.restored[..., 0]) if result.restored is not None else prep.to_volume(
        prep.slices[..., 0])
    image = prep.to_volume(prep.slices[..., 0])
    key = next((k for k in cal.thresholds if k.startswith("fpr@0.05")), next(iter(cal.thresholds)))
    seg = det.segment(result.map, cal.thresholds[key])
    return [({"input": image[:, :, z], "reconstruction": recon[:, :, z], "residual": result.map[:, :, z],
              "segmentation": seg[:, :, z], "ground truth": prep.lesion_mask[:, :, z]},
             f"{subject_id} z={z}") for z in sorted(order) if lesion_per_slice[z] > 0]


def _write_csv(rows, path):
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
