"""Lesion-wise detection: connected components matched between prediction and truth.

Lesions and predicted regions are the 3D connected components of the two
masks (26-connectivity in 3D by default: ``connectivity=None`` means ``ndim``). The matching rule:

* a **true lesion is detected** when the predicted mask covers at least
  ``max(1, min_overlap × |lesion|)`` of its voxels (default: one voxel);
* a **predicted component is a true positive** when at least
  ``max(1, min_overlap × |component|)`` of its voxels are lesion voxels,
  otherwise it is a false positive.

Then ``recall = detected lesions / true lesions``, ``precision = true-positive
components / predicted components`` and ``f1`` their harmonic mean. The two
counts differ on purpose: one predicted component that spans two lesions
detects both, and two components on one lesion are both true positives.

Undefined values are NaN: precision without any predicted component, recall
without any true lesion. ``f1`` is NaN only when neither mask has a
component; when exactly one side has components nothing correct was found
and ``f1`` is 0 (the limit of ``2 TP / (2 TP + FP + FN)``).

Example:
    >>> import numpy as np
    >>> truth = np.zeros((9, 9, 9), bool); truth[1:3, 1:3, 1:3] = True; truth[6:8, 6:8, 6:8] = True
    >>> pred = np.zeros_like(truth); pred[2, 2, 2] = True; pred[4, 0, 8] = True
    >>> r = lesion_detection(pred, truth)
    >>> r["recall"], r["precision"], r["f1"]
    (0.5, 0.5, 0.5)
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import ndimage as ndi

from tfuad.metrics.checks import MetricInputError, as_mask, check_fraction, same_shape

__all__ = ["label_components", "lesion_detection", "lesion_table"]


def _structure(connectivity, ndim: int) -> np.ndarray:
    if connectivity is None:
        connectivity = ndim
    if isinstance(connectivity, bool) or not isinstance(connectivity, numbers.Integral) \
            or not 1 <= connectivity <= ndim:
        raise MetricInputError(f"connectivity must be an integer between 1 and {ndim}, got {connectivity!r}")
    return ndi.generate_binary_structure(ndim, int(connectivity))


def label_components(mask, connectivity: int | None = None) -> tuple:
    """Connected components of a binary mask.

    Args:
        mask: Binary array.
        connectivity: ``1`` .. ``ndim``; in 3D, 1 = 6-, 2 = 18-, 3 = 26-connectivity;
            default ``ndim`` (26-connected in 3D, 8-connected in 2D).

    Returns:
        ``(labels, sizes)``: an int array with 0 for background and ``1..n``
        for the components, and the voxel count of each component (``sizes[i]``
        belongs to label ``i + 1``).

    Example:
        >>> labels, sizes = label_components([[1, 0, 1, 1]])
        >>> labels.tolist(), sizes.tolist()
        ([[1, 0, 2, 2]], [1, 2])
    """
    mask = as_mask(mask, "mask")
    if mask.size == 0:
        raise MetricInputError("mask is empty (no voxels)")
    labels, n = ndi.label(mask, structure=_structure(connectivity, mask.ndim))
    return labels, np.bincount(labels.ravel(), minlength=n + 1)[1:]


def _overlaps(pred, truth, connectivity, min_overlap):
    pred, truth = same_shape(pred=pred, truth=truth)
    pred, truth = as_mask(pred, "pred"), as_mask(truth, "truth")
    min_overlap = check_fraction(min_overlap, "min_overlap", include_low=True, include_high=True)
    t_labels, t_sizes = label_components(truth, connectivity)
    p_labels, p_sizes = label_components(pred, connectivity)
    both = pred & truth
    t_covered = np.bincount(t_labels[both], minlength=t_sizes.size + 1)[1:]
    p_inside = np.bincount(p_labels[both], minlength=p_sizes.size + 1)[1:]
    detected = t_covered >= np.maximum(1.0, min_overlap * t_sizes)
    true_pos = p_inside >= np.maximum(1.0, min_overlap * p_sizes)
    return t_sizes, t_covered, detected, p_sizes, true_pos


def lesion_detection(pred, truth, *, connectivity: int | None = None, min_overlap: float = 0.0) -> dict:
    """Lesion-wise precision, recall, F1 and counts (matching rule in the module docstring).

    Args:
        pred: Binary segmentation.
        truth: Binary lesion mask, same shape.
        connectivity: Component connectivity, ``1`` .. ``ndim``; default ``ndim``
            (26-connected in 3D).
        min_overlap: Fraction in [0, 1] of a lesion (or predicted component)
            that must overlap the other mask; 0 means one voxel.

    Returns:
        ``{"true_lesions", "predicted_components", "detected_lesions",
        "missed_lesions", "true_positive_components",
        "false_positive_components"}`` (ints) and ``"precision"``,
        ``"recall"``, ``"f1"`` (floats, NaN when undefined).

    Raises:
        MetricInputError: different shapes, non-binary masks or bad options.

    Example:
        >>> truth = np.zeros((5, 5, 5), bool); truth[1:4, 1:4, 1:4] = True   # 27 voxels
        >>> pred = np.zeros_like(truth); pred[1, 1, 1:4] = True             # covers 3 of them
        >>> lesion_detection(pred, truth)["recall"], lesion_detection(pred, truth, min_overlap=0.5)["recall"]
        (1.0, 0.0)
    """
    t_sizes, _, detected, p_sizes, true_pos = _overlaps(pred, truth, connectivity, min_overlap)
    n_true, n_pred = int(t_sizes.size), int(p_sizes.size)
    n_detected, n_tp = int(detected.sum()), int(true_pos.sum())
    recall = n_detected / n_true if n_true else math.nan
    precision = n_tp / n_pred if n_pred else math.nan
    if n_true == 0 and n_pred == 0:
        f1 = math.nan
    elif n_true == 0 or n_pred == 0 or precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2.0 * precision * recall / (precision + recall)
    return {"true_lesions": n_true, "predicted_components": n_pred, "detected_lesions": n_detected,
            "missed_lesions": n_true - n_detected, "true_positive_components": n_tp,
            "false_positive_components": n_pred - n_tp, "precision": precision, "recall": recall, "f1": f1}


def lesion_table(pred, truth, spacing=None, *, connectivity: int | None = None, min_overlap: float = 0.0) -> list:
    """One row per true lesion: its size, how much of it is covered, whether it is detected.

    For detection rate against lesion size (e.g. small MS lesions).

    Args:
        pred: Binary segmentation.
        truth: Binary lesion mask, same shape.
        spacing: Voxel size per axis in mm, for ``volume_mm3`` (default 1).
        connectivity: Component connectivity.
        min_overlap: As in :func:`lesion_detection`.

    Returns:
        ``[{"lesion", "voxels", "volume_mm3", "covered_voxels", "detected"}, ...]``
        in label order (``lesion`` = 1, 2, …).

    Example:
        >>> truth = np.zeros((1, 1, 6), bool); truth[..., 0:2] = True; truth[..., 4] = True
        >>> pred = np.zeros_like(truth); pred[..., 1] = True
        >>> [(r["voxels"], r["detected"]) for r in lesion_table(pred, truth)]
        [(2, True), (1, False)]
    """
    t_sizes, t_covered, detected, _, _ = _overlaps(pred, truth, connectivity, min_overlap)
    ndim = np.ndim(truth)
    if spacing is None:
        voxel = 1.0
    else:
        try:
            sp = np.asarray(spacing, dtype=float).ravel()
        except (TypeError, ValueError):
            raise MetricInputError(f"spacing must be {ndim} positive numbers (mm), got {spacing!r}") from None
        if sp.size == 1:
            sp = np.repeat(sp, ndim)
        if sp.size != ndim or not np.isfinite(sp).all() or (sp <= 0).any():
            raise MetricInputError(f"spacing must be {ndim} positive numbers (mm), got {spacing!r}")
        voxel = float(np.prod(sp))
    return [{"lesion": i + 1, "voxels": int(size), "volume_mm3": float(size * voxel),
             "covered_voxels": int(cov), "detected": bool(det)}
            for i, (size, cov, det) in enumerate(zip(t_sizes, t_covered, detected))]
