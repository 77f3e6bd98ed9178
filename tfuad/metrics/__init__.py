"""Segmentation and detection metrics, and how sure they are.

* :mod:`~tfuad.metrics.segmentation`: Dice, FPR/TPR, lesion detection rate,
  AUROC/AUPRC, oracle Dice, summaries and curves;
* :mod:`~tfuad.metrics.boundary`: HD95, Hausdorff distance and ASSD in mm;
* :mod:`~tfuad.metrics.lesionwise`: lesion-wise precision, recall and F1;
* :mod:`~tfuad.metrics.sample`: slice- and subject-level detection AUROC/AP;
* :mod:`~tfuad.metrics.uncertainty`: bootstrap intervals over subjects and
  paired comparisons of two methods.

Example:
    >>> from tfuad.metrics import dice, per_subject_metrics, pooled_auc, summarize
    >>> from tfuad.metrics import bootstrap_mean, hd95, lesion_detection, sample_auc
"""
from tfuad.metrics.boundary import (
    average_surface_distance,
    boundary_metrics,
    hausdorff_distance,
    hd95,
    surface_distances,
)
from tfuad.metrics.checks import MetricInputError
from tfuad.metrics.lesionwise import label_components, lesion_detection, lesion_table
from tfuad.metrics.sample import (
    sample_auc,
    sample_level_auc,
    slice_labels,
    slice_scores,
    volume_label,
    volume_score,
)
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
from tfuad.metrics.uncertainty import bootstrap_mean, bootstrap_pooled_auc, paired_comparison, weighted_auc

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
    "MetricInputError",
    "surface_distances",
    "hd95",
    "hausdorff_distance",
    "average_surface_distance",
    "boundary_metrics",
    "label_components",
    "lesion_detection",
    "lesion_table",
    "slice_scores",
    "slice_labels",
    "volume_score",
    "volume_label",
    "sample_auc",
    "sample_level_auc",
    "bootstrap_mean",
    "bootstrap_pooled_auc",
    "paired_comparison",
    "weighted_auc",
]
