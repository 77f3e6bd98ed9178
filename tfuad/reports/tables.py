"""Evaluation numbers: one row per subject and method, one summary per method, the results table.

Per subject and method (:func:`subject_row`): AUROC, AUPRC and the oracle
best Dice over the brain voxels, and at every calibrated threshold the Dice,
the false-positive rate reached on the subject's non-lesion brain voxels, the
lesion-wise detection rate and the segmented volume. Per method
(:func:`method_summary`): Dice mean ± std over subjects, AUROC/AUPRC pooled
over the brain voxels of all subjects (Chen et al. 2020). The oracle "best
Dice" uses the test labels and is labelled as such.

Example:
    >>> print(markdown_table([]).splitlines()[0])
    | method | AUROC | AUPRC | Dice@p98 | DSC@1% | DSC@5% | DSC@10% | best Dice (oracle) | s/slice |
"""
from __future__ import annotations

import csv
import math

import numpy as np

from tfuad.files import atomic_path

__all__ = ["TABLE_COLUMNS", "markdown_table", "subject_row", "method_summary", "write_rows_csv", "fmt"]

#: Columns of the results table (README, benchmarks).
TABLE_COLUMNS = ("method", "AUROC", "AUPRC", "Dice@p98", "DSC@1%", "DSC@5%", "DSC@10%",
                 "best Dice (oracle)", "s/slice")


def fmt(x, digits: int = 3) -> str:
    """A number for a table; ``n/a`` for missing or NaN."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _mean_std(values) -> dict:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], float)
    return dict(zip(("mean", "std"), (float(arr.mean()), float(arr.std())) if arr.size else (math.nan, math.nan)))


def markdown_table(rows) -> str:
    """Markdown results table from :func:`method_summary` dicts."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for r in rows:
        def dice(key, r=r):
            d = r["dice"].get(key)
            return "n/a" if d is None else f"{fmt(d['mean'])} ± {fmt(d['std'])}"
        lines.append("| " + " | ".join([
            r["label"], fmt(r["auroc"]), fmt(r["auprc"]), dice("p98"), dice("fpr@0.01"), dice("fpr@0.05"),
            dice("fpr@0.1"), f"{fmt(r['best_dice']['mean'])} ± {fmt(r['best_dice']['std'])}",
            fmt(r["seconds_per_slice"], 4)]) + " |")
    return "\n".join(lines) + "\n"


def subject_row(subject_id: str, method: str, score_map, truth, brain, thresholds: dict, segment, *,
                slices: int, seconds: float) -> dict:
    """The numbers of one subject for one method.

    Args:
        subject_id: The subject.
        method: The scoring method's name.
        score_map: Post-processed anomaly map on the subject's grid.
        truth: Lesion mask (bool, same grid).
        brain: Brain mask (bool, same grid).
        thresholds: ``{key: threshold}`` of the calibration (``p98``, ``fpr@0.05``, ...).
        segment: ``segment(score_map, threshold) -> mask`` (threshold and post-processing).
        slices: Slices scored (for the time per slice).
        seconds: Wall time of the maps.
    """
    from tfuad.metrics.segmentation import dice, false_positive_rate, lesion_detection_rate, per_subject_metrics

    row = {"subject": subject_id, "method": method, "slices": int(slices), "seconds": float(seconds),
           "seconds_per_slice": float(seconds) / max(int(slices), 1)}
    for i, (key, threshold) in enumerate(thresholds.items()):
        pred = segment(score_map, threshold)
        if i == 0:
            base = per_subject_metrics(score_map, pred, truth, brain)
            row.update({k: base[k] for k in ("auroc", "auprc", "best_dice", "lesion_voxels")})
        row[f"dice@{key}"] = dice(pred, truth)
        row[f"fpr@{key}"] = false_positive_rate(pred, truth, brain)
        row[f"detected@{key}"] = lesion_detection_rate(pred, truth)
        row[f"voxels@{key}"] = int(pred.sum())
    return row


def method_summary(method: str, label: str, rows, thresholds: dict, pooled_curve: dict, *,
                   settings: dict | None = None) -> dict:
    """Summary of one method over subjects (the rows :func:`subject_row` made for it).

    Args:
        method: The scoring method's name.
        label: Its row label.
        rows: Its per-subject rows.
        thresholds: Its calibrated thresholds.
        pooled_curve: :func:`~tfuad.metrics.segmentation.curve_points` of the pooled brain voxels.
        settings: The method's calibrated settings (λ, schedule) to report.
    """
    keys = list(thresholds)
    settings = dict(settings or {})
    return {
        "method": method, "label": label, "thresholds": thresholds,
        "lambda": settings.get("lambda"), "schedule": settings.get("schedule"),
        "auroc": float(pooled_curve["auroc"]), "auprc": float(pooled_curve["auprc"]),
        "dice": {k: _mean_std(r[f"dice@{k}"] for r in rows) for k in keys},
        "achieved_fpr": {k: _mean_std(r[f"fpr@{k}"] for r in rows) for k in keys},
        "lesion_detection_rate": {k: _mean_std(r[f"detected@{k}"] for r in rows)["mean"] for k in keys},
        "best_dice": _mean_std(r["best_dice"] for r in rows),
        "best_dice_note": "oracle: best threshold chosen with the test labels; for comparison with the literature only",
        "per_subject_auroc": _mean_std(r["auroc"] for r in rows),
        "seconds_per_slice": float(np.mean([r["seconds_per_slice"] for r in rows])),
        "seconds_per_volume": float(np.mean([r["seconds"] for r in rows])),
    }


def write_rows_csv(rows, path) -> None:
    """Rows (dicts) as a CSV file with the union of their keys, written atomically."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
