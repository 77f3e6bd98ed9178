"""Evaluation numbers: one row per subject and method, one summary per method, the results tables.

Per subject and method (:func:`subject_row`): AUROC, AUPRC and the oracle
best Dice over the brain voxels; at every calibrated threshold the Dice, the
false-positive rate reached on the subject's non-lesion brain voxels, the
boundary distances HD95 and ASSD (mm), lesion-wise precision, recall and F1
(3D components, a lesion counts as found when one predicted voxel touches it)
and the segmented volume.

Per method (:func:`method_summary`): every mean over subjects carries a
percentile-bootstrap 95 % interval over subjects; AUROC/AUPRC pool the brain
voxels of all subjects (Chen et al. 2020) with an interval from resampling
subjects; slice-level AUROC/AP score each axial slice by the 99th percentile
of its brain voxels (label: it holds lesion voxels), as sample-level
benchmarks (MOOD, UPD) do. The oracle "best Dice" uses the test labels and
is labelled as such.

Example:
    >>> print(markdown_table([]).splitlines()[0])
    | method | AUROC | AUPRC | Dice@p98 | DSC@1% | DSC@5% | DSC@10% | best Dice (oracle) | s/slice |
"""
from __future__ import annotations

import csv
import math

import numpy as np

from tfuad.files import atomic_path

__all__ = ["TABLE_COLUMNS", "MEASURE_COLUMNS", "GROUP_COLUMNS", "Bootstrap", "markdown_table", "measures_table",
           "subject_row", "method_summary", "group_summaries", "group_table", "write_rows_csv", "fmt",
           "TRANSFER_COLUMNS", "transfer_table"]

#: Columns of the results table (README, benchmarks).
TABLE_COLUMNS = ("method", "AUROC", "AUPRC", "Dice@p98", "DSC@1%", "DSC@5%", "DSC@10%",
                 "best Dice (oracle)", "s/slice")
#: Columns of the table of other measures, at the 5 % FPR limit.
MEASURE_COLUMNS = ("method", "FPR reached (limit 5 %)", "HD95 mm", "ASSD mm", "lesion precision", "lesion recall",
                   "lesion F1", "slice AUROC", "slice AP")
#: Columns of the table by subject group (e.g. lesion type), at the 5 % FPR limit.
GROUP_COLUMNS = ("lesion type", "subjects", "method", "AUROC", "AUPRC", "DSC@5%", "lesion recall", "FPR reached")
#: Columns of the table of where false positives lie, for every FPR limit.
TRANSFER_COLUMNS = ("method", "FPR limit", "FPR reached", "far slices", "lesion slices, > 10 mm",
                    "within 10 mm of the lesion")
#: Distance from the lesion (mm) within which healthy voxels count as near it.
NEAR_MM = 10.0
#: The threshold the measures table reports.
MEASURE_KEY = "fpr@0.05"
#: Per-threshold measures of a row, ``{row key prefix: summary name}``.
_PER_THRESHOLD = {"dice": "dice", "fpr": "achieved_fpr", "hd95": "hd95", "assd": "assd",
                  "lesion_precision": "lesion_precision", "lesion_recall": "lesion_recall", "lesion_f1": "lesion_f1",
                  "fpr_far": "fpr_far", "fpr_beside": "fpr_beside", "fpr_near": "fpr_near"}


class Bootstrap:
    """How intervals are drawn: resamples, confidence and seed (recorded with every summary).

    Args:
        resamples: Bootstrap samples of the subjects.
        confidence: Interval coverage.
        seed: Seed of the random generator.
    """

    def __init__(self, resamples: int = 2000, confidence: float = 0.95, seed: int = 0):
        self.resamples, self.confidence, self.seed = int(resamples), float(confidence), int(seed)

    def to_dict(self) -> dict:
        return {"resamples": self.resamples, "confidence": self.confidence, "seed": self.seed,
                "method": "percentile bootstrap over subjects"}

    def mean(self, values) -> dict:
        """Mean with interval; infinite values (e.g. HD95 of an empty prediction) are left out and counted."""
        from tfuad.metrics.uncertainty import bootstrap_mean

        arr = np.asarray([math.nan if v is None else float(v) for v in values], float)
        infinite = int(np.isinf(arr).sum())
        result = bootstrap_mean(arr[~np.isinf(arr)], resamples=self.resamples, confidence=self.confidence,
                                seed=self.seed)
        result["n_infinite"] = infinite
        return result


def fmt(x, digits: int = 3) -> str:
    """A number for a table; ``n/a`` for missing or NaN."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _with_interval(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None or math.isnan(stat["mean"]):
        return "n/a"
    low, high = stat.get("low", math.nan), stat.get("high", math.nan)
    interval = "" if math.isnan(low) else f" [{low:.{digits}f}, {high:.{digits}f}]"
    return f"{stat['mean']:.{digits}f}{interval}"


def _value_interval(stat: dict | None) -> str:
    if not stat:
        return "n/a"
    return _with_interval({"mean": stat["value"], "low": stat.get("low", math.nan), "high": stat.get("high", math.nan)})


def markdown_table(rows) -> str:
    """Markdown results table from :func:`method_summary` dicts: mean [95 % interval]."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for r in rows:
        dice = [_with_interval(r["dice"].get(k)) for k in ("p98", "fpr@0.01", "fpr@0.05", "fpr@0.1")]
        auc = [_value_interval(r[f"{name}_ci"]) if f"{name}_ci" in r else fmt(r[name]) for name in ("auroc", "auprc")]
        lines.append("| " + " | ".join([r["label"], *auc, *dice, _with_interval(r["best_dice"]),
                                        fmt(r["seconds_per_slice"], 4)]) + " |")
    return "\n".join(lines) + "\n"


def measures_table(rows) -> str:
    """Markdown table of the other measures at the 5 % FPR limit, from :func:`method_summary` dicts."""
    lines = ["| " + " | ".join(MEASURE_COLUMNS) + " |", "|" + "---|" * len(MEASURE_COLUMNS)]
    for r in rows:
        def at(name, digits=3, r=r):
            return _with_interval(r.get(name, {}).get(MEASURE_KEY), digits)
        slices = r.get("slice_level") or {}
        lines.append("| " + " | ".join([r["label"], at("achieved_fpr", 4), at("hd95", 1), at("assd", 2),
                                        at("lesion_precision"), at("lesion_recall"), at("lesion_f1"),
                                        fmt(slices.get("auroc")), fmt(slices.get("ap"))]) + " |")
    return "\n".join(lines) + "\n"


def transfer_table(rows) -> str:
    """Markdown table: the FPR reached at every limit, overall and by region (where the false positives lie).

    Regions (:func:`tfuad.metrics.segmentation.false_positive_regions`): *far slices* have no lesion voxel
    within a few slices, like the lesion-free slices a calibration sees; *lesion slices, > 10 mm* are the
    rest of the lesion slices; *within 10 mm* surrounds the lesion.
    """
    lines = ["| " + " | ".join(TRANSFER_COLUMNS) + " |", "|" + "---|" * len(TRANSFER_COLUMNS)]
    for r in rows:
        for key in r["thresholds"]:
            if not key.startswith("fpr@") or key not in r.get("fpr_far", {}):
                continue
            cells = [_with_interval(r[name].get(key), 4) for name in ("achieved_fpr", "fpr_far", "fpr_beside",
                                                                        "fpr_near")]
            lines.append("| " + " | ".join([r["label"], f"{float(key[4:]):.0%}", *cells]) + " |")
    return "\n".join(lines) + "\n"


def group_summaries(rows, groups: dict, labels: dict) -> list:
    """Per-subject means by group and method, at the 5 % FPR limit.

    Args:
        rows: Per-subject rows (:func:`subject_row`).
        groups: ``{subject: group name}``; subjects without a group are left out.
        labels: ``{method: row label}``, in the order the methods are reported.

    Returns:
        ``[{"group", "method", "label", "subjects", "auroc", "auprc", "dice", "lesion_recall", "fpr"}]``,
        groups in order of first appearance, methods in the order of ``labels``.

    Example:
        >>> rows = [{"subject": "a", "method": "residual", "auroc": 0.9, "auprc": 0.5, "dice@fpr@0.05": 0.4,
        ...          "lesion_recall@fpr@0.05": 1.0, "fpr@fpr@0.05": 0.05}]
        >>> group_summaries(rows, {"a": "dark"}, {"residual": "residual"})[0]["dice"]
        0.4
    """
    order = list(dict.fromkeys(groups[r["subject"]] for r in rows if r["subject"] in groups))
    out = []
    for group in order:
        for method, label in labels.items():
            mine = [r for r in rows if r["method"] == method and groups.get(r["subject"]) == group]
            if not mine:
                continue

            def mean(key, mine=mine):
                values = [float(r[key]) for r in mine if r.get(key) is not None and not math.isnan(float(r[key]))]
                return float(np.mean(values)) if values else math.nan

            out.append({"group": group, "method": method, "label": label, "subjects": len(mine),
                        "auroc": mean("auroc"), "auprc": mean("auprc"), "dice": mean(f"dice@{MEASURE_KEY}"),
                        "lesion_recall": mean(f"lesion_recall@{MEASURE_KEY}"), "fpr": mean(f"fpr@{MEASURE_KEY}")})
    return out


def group_table(summaries, descriptions: dict | None = None) -> str:
    """Markdown table of :func:`group_summaries`: one row per group and method (means over its subjects).

    Args:
        summaries: Output of :func:`group_summaries`.
        descriptions: ``{group: text}`` shown instead of the group name.
    """
    descriptions = descriptions or {}
    lines = ["| " + " | ".join(GROUP_COLUMNS) + " |", "|" + "---|" * len(GROUP_COLUMNS)]
    for g in summaries:
        lines.append("| " + " | ".join([descriptions.get(g["group"], g["group"]), str(g["subjects"]), g["label"],
                                        fmt(g["auroc"]), fmt(g["auprc"]), fmt(g["dice"]), fmt(g["lesion_recall"]),
                                        fmt(g["fpr"], 4)]) + " |")
    return "\n".join(lines) + "\n"


def subject_row(subject_id: str, method: str, score_map, truth, brain, thresholds: dict, segment, *,
                slices: int, seconds: float, spacing=None, regions: dict | None = None) -> dict:
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
        spacing: Voxel sizes (mm) for the boundary distances.
        regions: The subject's :func:`~tfuad.metrics.segmentation.false_positive_regions` (computed
            here when not given; pass them to score several methods of one subject without recomputing).
    """
    from tfuad.metrics.boundary import boundary_metrics
    from tfuad.metrics.lesionwise import lesion_detection
    from tfuad.metrics.segmentation import (
        dice,
        false_positive_rate,
        false_positive_regions,
        per_subject_metrics,
        rate_in,
    )

    row = {"subject": subject_id, "method": method, "slices": int(slices), "seconds": float(seconds),
           "seconds_per_slice": float(seconds) / max(int(slices), 1)}
    if regions is None:
        regions = false_positive_regions(truth, brain, spacing=spacing, near_mm=NEAR_MM)
    for i, (key, threshold) in enumerate(thresholds.items()):
        pred = segment(score_map, threshold)
        if i == 0:
            base = per_subject_metrics(score_map, pred, truth, brain)
            row.update({k: base[k] for k in ("auroc", "auprc", "best_dice", "lesion_voxels")})
        boundary = boundary_metrics(pred, truth, spacing)
        lesions = lesion_detection(pred, truth)
        row.update({f"dice@{key}": dice(pred, truth), f"fpr@{key}": false_positive_rate(pred, truth, brain),
                    f"hd95@{key}": boundary["hd95"], f"assd@{key}": boundary["assd"],
                    f"lesion_precision@{key}": lesions["precision"], f"lesion_recall@{key}": lesions["recall"],
                    f"lesion_f1@{key}": lesions["f1"], f"voxels@{key}": int(pred.sum())})
        row.update({f"fpr_{region}@{key}": rate_in(pred, mask) for region, mask in regions.items()})
    return row


def method_summary(method: str, label: str, rows, thresholds: dict, pooled, *, settings: dict | None = None,
                   bootstrap: Bootstrap | None = None) -> dict:
    """Summary of one method over subjects (the rows :func:`subject_row` made for it).

    Args:
        method: The scoring method's name.
        label: Its row label.
        rows: Its per-subject rows.
        thresholds: Its calibrated thresholds.
        pooled: ``(maps, truths, brains)``: one volume of each per subject, for the pooled and
            slice-level measures.
        settings: The method's calibrated settings (λ, schedule, the network's precision) to report.
        bootstrap: How intervals are drawn (default: 2000 resamples, 95 %, seed 0).
    """
    from tfuad.metrics.sample import sample_level_auc
    from tfuad.metrics.uncertainty import bootstrap_pooled_auc

    boot = bootstrap or Bootstrap()
    settings = dict(settings or {})
    maps, truths, brains = pooled
    pooled_auc = bootstrap_pooled_auc(maps, truths, brains, resamples=boot.resamples, confidence=boot.confidence,
                                      seed=boot.seed)
    summary = {
        "method": method, "label": label, "thresholds": thresholds,
        "lambda": settings.get("lambda"), "schedule": settings.get("schedule"),
        "precision": settings.get("precision"),
        "auroc": float(pooled_auc["auroc"]["value"]), "auprc": float(pooled_auc["auprc"]["value"]),
        "auroc_ci": pooled_auc["auroc"], "auprc_ci": pooled_auc["auprc"],
        "slice_level": sample_level_auc(maps, truths, brains, level="slice", reduce="p99"),
        "best_dice": boot.mean(r["best_dice"] for r in rows),
        "best_dice_note": "oracle: best threshold chosen with the test labels; for comparison with the literature only",
        "per_subject_auroc": boot.mean(r["auroc"] for r in rows),
        "seconds_per_slice": float(np.mean([r["seconds_per_slice"] for r in rows])),
        "seconds_per_volume": float(np.mean([r["seconds"] for r in rows])),
        "bootstrap": boot.to_dict(),
        "n_subjects": len(rows),
    }
    for prefix, name in _PER_THRESHOLD.items():
        summary[name] = {k: boot.mean(r[f"{prefix}@{k}"] for r in rows) for k in thresholds}
    return summary


def write_rows_csv(rows, path) -> None:
    """Rows (dicts) as a CSV file with the union of their keys, written atomically."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
