"""Segmentation and detection metrics: Dice, FPR/TPR, lesion-wise detection, AUROC/AUPRC.

Example:
    >>> from tfuad.metrics import dice, per_subject_metrics, pooled_auc, summarize
"""
from tfuad.metrics.segmentation import (
    auc_scores,
    best_dice,
    curve_points,
    dice,
    false_positive_rate,
    lesion_detection_rate,
    per_subject_metrics,
    pool_brain_voxels,
    pooled_auc,
    pr_points,
    roc_points,
    summarize,
    true_positive_rate,
)

__all__ = [
    "dice",
    "false_positive_rate",
    "true_positive_rate",
    "best_dice",
    "lesion_detection_rate",
    "auc_scores",
    "pool_brain_voxels",
    "pooled_auc",
    "per_subject_metrics",
    "summarize",
    "roc_points",
    "pr_points",
    "curve_points",
]
