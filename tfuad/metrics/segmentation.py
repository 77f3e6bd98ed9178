"""Segmentation and detection metrics for anomaly maps.

* Per subject (:func:`per_subject_metrics`): Dice, false- and true-positive
  rates, lesion-wise detection rate, and the threshold-free AUROC, AUPRC and
  oracle best Dice over the brain voxels.
* Over a data set: AUROC/AUPRC pooled over the brain voxels of all subjects
  (:func:`pooled_auc`, Chen et al. 2020) and Dice mean ± std over subjects
  (:func:`summarize`, Baur et al. 2018).

Undefined values are NaN, never silently 0 or 1: the Dice of two empty masks,
the true-positive rate of a subject without lesion, the AUROC of a single class.

Example:
    >>> import numpy as np
    >>> truth = np.zeros((4, 4, 4), bool); truth[1:3, 1:3, 1:3] = True
    >>> pred = np.zeros_like(truth); pred[1:3, 1:3, 1] = True
    >>> round(dice(pred, truth), 4)
    0.6667
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from tfuad.arrays import check_real_finite
from tfuad.errors import ArrayError

__all__ = [
    "FPR_REGIONS",
    "false_positive_regions",
    "rate_in",
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


def _as_arrays(named: Mapping) -> list:
    """Validate same-shaped, non-empty arrays given as ``{name: array}``."""
    arrays = {name: np.asarray(a) for name, a in named.items()}
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise ArrayError("shape mismatch: " + ", ".join(f"{n} {s}" for n, s in shapes.items()))
    first = next(iter(arrays))
    if arrays[first].size == 0:
        raise ArrayError(f"empty arrays: {first} has shape {shapes[first]}")
    return list(arrays.values())


def _as_scores(scores, name: str = "scores") -> np.ndarray:
    return check_real_finite(scores, name)


def _connectivity_structure(connectivity, ndim: int) -> np.ndarray:
    if isinstance(connectivity, bool) or not isinstance(connectivity, numbers.Integral) \
            or not 1 <= connectivity <= ndim:
        raise ArrayError(f"connectivity must be an integer between 1 and {ndim}, got {connectivity!r}")
    return ndi.generate_binary_structure(ndim, int(connectivity))


def dice(pred, truth) -> float:
    """Dice similarity coefficient ``2|P∩T| / (|P| + |T|)`` of two binary masks.

    Args:
        pred, truth: Non-zero entries are foreground.

    Returns:
        float: In [0, 1]; NaN when both masks are empty (the Dice is undefined there).

    Example:
        >>> dice([1, 1, 0, 0], [1, 0, 0, 0])
        0.6666666666666666
        >>> dice([0, 0], [0, 0])
        nan
    """
    pred, truth = (a.astype(bool, copy=False) for a in _as_arrays({"pred": pred, "truth": truth}))
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return math.nan
    return 2.0 * int(np.count_nonzero(pred & truth)) / total


def false_positive_rate(pred, truth, brain_mask) -> float:
    """Fraction of healthy brain voxels (in ``brain_mask``, outside ``truth``) predicted positive.

    Returns NaN if there is no healthy brain voxel.

    Example:
        >>> false_positive_rate([1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1])
        0.3333333333333333
    """
    pred, truth, brain = (a.astype(bool, copy=False) for a in
                          _as_arrays({"pred": pred, "truth": truth, "brain mask": brain_mask}))
    negatives = brain & ~truth
    n = int(np.count_nonzero(negatives))
    return math.nan if n == 0 else int(np.count_nonzero(pred & negatives)) / n


#: The healthy-voxel regions of :func:`false_positive_regions`, in report order.
FPR_REGIONS = ("far", "beside", "near")


def false_positive_regions(truth, brain_mask, *, spacing=None, near_mm: float = 10.0, margin: int = 3) -> dict:
    """Healthy brain voxels split by where they lie relative to the lesion, for a per-region FPR.

    A threshold chosen on lesion-free slices (the calibration slices of a
    lesioned subject lie far from its lesion) may not hold its FPR elsewhere.
    The three regions tell where the false positives come from:

    * ``near``: healthy voxels within ``near_mm`` of the lesion (3D, in mm);
    * ``far``: the other voxels of axial slices with no lesion voxel within
      ``margin`` slices (the kind of slice the calibration saw);
    * ``beside``: the rest: voxels of lesion slices farther than ``near_mm``
      from the lesion.

    Args:
        truth: Lesion mask ``(X, Y, Z)`` (Z axial).
        brain_mask: Brain mask of the same shape.
        spacing: Voxel sizes in mm (default 1 mm).
        near_mm: Distance that counts as near the lesion.
        margin: Axial slices around a lesion slice that do not count as far.

    Returns:
        ``{region: bool mask}`` for the regions of :data:`FPR_REGIONS`; they
        partition the healthy brain voxels.

    Example:
        >>> truth = np.zeros((1, 30, 20), bool); truth[0, :2, 10] = True
        >>> regions = false_positive_regions(truth, np.ones_like(truth), near_mm=5, margin=2)
        >>> [int(regions[r].sum()) for r in FPR_REGIONS]
        [424, 119, 55]
    """
    truth, brain = (a.astype(bool, copy=False) for a in _as_arrays({"truth": truth, "brain mask": brain_mask}))
    if truth.ndim != 3:
        raise ArrayError(f"expected 3D masks, got shape {truth.shape}")
    healthy = brain & ~truth
    lesion_slices = truth.any(axis=(0, 1))
    near_slices = ndi.binary_dilation(lesion_slices, structure=np.ones(2 * int(margin) + 1, bool)) \
        if lesion_slices.any() else lesion_slices
    if truth.any():
        distance = ndi.distance_transform_edt(~truth, sampling=spacing)
        near = healthy & (distance <= near_mm)
    else:
        near = np.zeros_like(healthy)
    far = healthy & ~near_slices[None, None, :] & ~near
    return {"far": far, "beside": healthy & ~far & ~near, "near": near}


def rate_in(pred, region) -> float:
    """Fraction of ``region`` voxels predicted positive (NaN for an empty region).

    Example:
        >>> rate_in(np.array([1, 0, 1, 0], bool), np.array([1, 1, 0, 0], bool))
        0.5
    """
    n = int(np.count_nonzero(region))
    return math.nan if n == 0 else int(np.count_nonzero(np.asarray(pred, bool) & region)) / n


def true_positive_rate(pred, truth) -> float:
    """Fraction of lesion voxels predicted positive (sensitivity); NaN without lesion voxels.

    Example:
        >>> true_positive_rate([1, 1, 0, 0], [1, 0, 0, 1])
        0.5
    """
    pred, truth = (a.astype(bool, copy=False) for a in _as_arrays({"pred": pred, "truth": truth}))
    n = int(np.count_nonzero(truth))
    return math.nan if n == 0 else int(np.count_nonzero(pred & truth)) / n


def best_dice(scores, truth) -> float:
    """Oracle best Dice of ``scores > t`` over all thresholds ``t``.

    This uses the test labels to pick the threshold, so it is an upper bound
    for threshold selection, not an unsupervised result. It is exact: the
    voxels are sorted by decreasing score once (``O(n log n)``) and the Dice of
    every distinct cut (tied scores are always kept together) is evaluated
    from cumulative true-positive counts. Small components are not removed.

    Args:
        scores: Anomaly scores (any shape, e.g. the brain voxels of a subject).
        truth: Array_like of bool, same shape.

    Returns:
        float: NaN if ``truth`` has no positive voxel (Dice undefined or 0 for every cut).

    Example:
        >>> best_dice([0.1, 0.9, 0.8, 0.3], [0, 1, 0, 0])
        1.0
    """
    scores, truth = _as_arrays({"scores": scores, "truth": truth})
    scores = _as_scores(scores).ravel()
    truth = truth.astype(bool, copy=False).ravel()
    positives = int(np.count_nonzero(truth))
    if positives == 0:
        return math.nan
    order = np.argsort(scores, kind="stable")[::-1]
    ranked = scores[order]
    true_pos = np.cumsum(truth[order])
    ends = np.append(np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1)
    return float(np.max(2.0 * true_pos[ends] / (ends + 1 + positives)))


def lesion_detection_rate(pred, truth, connectivity: int = 3) -> float:
    """Fraction of ground-truth lesions (connected components) hit by at least one predicted voxel.

    Args:
        pred, truth: Array_like of bool, same shape.
        connectivity: ``1`` .. ``ndim``; for 3D, ``3`` means 26-connected lesions
            (see :func:`scipy.ndimage.generate_binary_structure`).

    Returns:
        float: NaN if ``truth`` has no lesion.

    Example:
        >>> import numpy as np
        >>> truth = np.zeros((6, 6, 6), bool)
        >>> truth[0, 0, 0] = truth[4, 4, 4] = True   # two lesions
        >>> pred = np.zeros_like(truth); pred[4, 4, 4] = True
        >>> lesion_detection_rate(pred, truth)
        0.5
    """
    from tfuad.metrics.lesionwise import lesion_detection

    pred, truth = (a.astype(bool, copy=False) for a in _as_arrays({"pred": pred, "truth": truth}))
    _connectivity_structure(connectivity, truth.ndim)  # the same refusal of a bad connectivity as before
    return lesion_detection(pred, truth, connectivity=connectivity)["recall"]


def auc_scores(scores, truth) -> tuple:
    """Area under the ROC curve and average precision (AUPRC) with scikit-learn.

    Args:
        scores: Array_like.
        truth: Array_like of bool, same shape; must contain both classes.

    Returns:
        (float, float): ``(auroc, auprc)``.

    Example:
        >>> auc_scores([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        (0.75, 0.8333333333333333)
    """
    scores, truth = _as_arrays({"scores": scores, "truth": truth})
    scores = _as_scores(scores).ravel()
    truth = truth.astype(bool, copy=False).ravel()
    n_pos = int(np.count_nonzero(truth))
    if n_pos in (0, truth.size):
        raise ArrayError(f"AUROC/AUPRC need both lesion and healthy voxels; got {n_pos} lesion "
                         f"voxels out of {truth.size}")
    return float(roc_auc_score(truth, scores)), float(average_precision_score(truth, scores))


def pool_brain_voxels(scores_list, truths_list, masks_list) -> tuple:
    """Concatenate the brain voxels of several subjects (for pooled curves).

    Args:
        scores_list, truths_list, masks_list: One score map, lesion mask and brain mask per subject; shapes must
            match within a subject.

    Returns:
        (numpy.ndarray, numpy.ndarray): 1D scores and boolean labels of all brain voxels.

    Example:
        >>> s, t = pool_brain_voxels([[0.2, 0.9]], [[0, 1]], [[1, 1]])
        >>> s.tolist(), t.tolist()
        ([0.2, 0.9], [False, True])
    """
    lists = [list(scores_list), list(truths_list), list(masks_list)]
    if len({len(x) for x in lists}) != 1:
        raise ArrayError(f"got {len(lists[0])} score maps, {len(lists[1])} lesion masks and "
                         f"{len(lists[2])} brain masks; one of each per subject is needed")
    if not lists[0]:
        raise ArrayError("no subjects given")
    scores, truths = [], []
    for i, (s, t, m) in enumerate(zip(*lists)):
        s, t, m = _as_arrays({f"scores[{i}]": s, f"truth[{i}]": t, f"brain mask[{i}]": m})
        m = m.astype(bool, copy=False)
        scores.append(_as_scores(s, f"scores[{i}]")[m])
        truths.append(t.astype(bool, copy=False)[m])
    return np.concatenate(scores), np.concatenate(truths)


def pooled_auc(scores_list, truths_list, masks_list) -> tuple:
    """AUROC and AUPRC over the brain voxels of all subjects together (Chen et al. 2020).

    Example:
        >>> pooled_auc([[0.1, 0.8], [0.3, 0.2]], [[0, 1], [1, 0]], [[1, 1], [1, 1]])
        (1.0, 1.0)
    """
    return auc_scores(*pool_brain_voxels(scores_list, truths_list, masks_list))


def per_subject_metrics(score_map, pred, truth, brain_mask, *, connectivity: int = 3) -> dict:
    """All metrics of one subject.

    Threshold-dependent metrics (``dice``, ``tpr``, lesion detection) use the
    whole volume; ``fpr`` counts brain voxels outside the lesion mask; the
    threshold-free ``auroc``, ``auprc`` and oracle ``best_dice`` use the
    brain voxels of ``score_map``. Undefined entries are NaN (e.g. ``dice``
    and ``tpr`` of a subject without lesion and without prediction).

    Args:
        score_map: Continuous anomaly map.
        pred: Binary segmentation.
        truth: Lesion mask.
        brain_mask: Array_like of bool.
        connectivity: Lesion connectivity, see :func:`lesion_detection_rate`.

    Returns:
        dict: ``dice``, ``fpr``, ``tpr``, ``lesion_detection_rate``, ``auroc``,
            ``auprc``, ``best_dice`` (floats), ``lesion_voxels``,
            ``predicted_voxels`` (ints).

    Example:
        >>> import numpy as np
        >>> truth = np.zeros((5, 5, 5), bool); truth[1:3, 1:3, 1:3] = True
        >>> score = truth.astype(np.float32)
        >>> m = per_subject_metrics(score, score > 0.5, truth, np.ones_like(truth))
        >>> m["dice"], m["fpr"], m["lesion_voxels"]
        (1.0, 0.0, 8)
    """
    score_map, pred, truth, brain = _as_arrays(
        {"score map": score_map, "pred": pred, "truth": truth, "brain mask": brain_mask})
    pred, truth, brain = (a.astype(bool, copy=False) for a in (pred, truth, brain))
    scores_in, truth_in = _as_scores(score_map, "score map")[brain], truth[brain]
    n_pos = int(np.count_nonzero(truth_in))
    if 0 < n_pos < truth_in.size:
        auroc, auprc = auc_scores(scores_in, truth_in)
    else:
        auroc = auprc = math.nan
    return {
        "dice": dice(pred, truth),
        "fpr": false_positive_rate(pred, truth, brain),
        "tpr": true_positive_rate(pred, truth),
        "lesion_detection_rate": lesion_detection_rate(pred, truth, connectivity),
        "auroc": auroc,
        "auprc": auprc,
        "best_dice": best_dice(scores_in, truth_in) if truth_in.size else math.nan,
        "lesion_voxels": int(np.count_nonzero(truth)),
        "predicted_voxels": int(np.count_nonzero(pred)),
    }


def _stats(values) -> dict:
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "n": int(finite.size)}


def summarize(per_subject_rows: Sequence[Mapping]) -> dict:
    """Mean ± std over subjects, with lesion-free subjects reported apart.

    Subjects with lesion voxels (``lesion_voxels > 0``) give the Dice mean ±
    standard deviation (population std, ``ddof=0``) of Baur et al. (2018) and
    the same statistics for every other numeric metric. Subjects without
    lesion voxels have no defined Dice; they are counted separately with
    their false-positive rate and predicted volume, never as Dice 0 or 1.

    Each statistic is ``{"mean", "std", "n"}`` over the subjects where the
    metric is defined (finite); ``n`` says how many.

    Args:
        per_subject_rows: Rows of :func:`per_subject_metrics`, optionally with a ``"subject"`` id.

    Returns:
        dict: ``{"n_subjects", "with_lesions": {"n", "subjects", <metric>: stats, ...},
            "without_lesions": {"n", "subjects", "fpr": stats, "predicted_voxels": stats}}``.

    Example:
        >>> rows = [{"subject": "a", "dice": 0.5, "fpr": 0.01, "lesion_voxels": 10, "predicted_voxels": 9},
        ...         {"subject": "b", "dice": 0.7, "fpr": 0.03, "lesion_voxels": 20, "predicted_voxels": 25},
        ...         {"subject": "c", "dice": float("nan"), "fpr": 0.02, "lesion_voxels": 0, "predicted_voxels": 4}]
        >>> s = summarize(rows)
        >>> round(s["with_lesions"]["dice"]["mean"], 3), round(s["with_lesions"]["dice"]["std"], 3)
        (0.6, 0.1)
        >>> s["without_lesions"]["n"], s["without_lesions"]["fpr"]["mean"]
        (1, 0.02)
    """
    rows = list(per_subject_rows)
    if not rows:
        raise ArrayError("no per-subject rows to summarize")
    for i, row in enumerate(rows):
        missing = [k for k in ("dice", "fpr", "lesion_voxels") if k not in row]
        if missing:
            raise ArrayError(f"row {i} lacks {missing}")
    with_lesions = [r for r in rows if r["lesion_voxels"] > 0]
    without = [r for r in rows if not r["lesion_voxels"] > 0]
    numeric = [k for k, v in rows[0].items()
               if isinstance(v, numbers.Real) and not isinstance(v, bool) and k != "lesion_voxels"]
    numeric.insert(0, "lesion_voxels")
    summary = {
        "n_subjects": len(rows),
        "with_lesions": {"n": len(with_lesions), "subjects": [r.get("subject") for r in with_lesions]},
        "without_lesions": {"n": len(without), "subjects": [r.get("subject") for r in without]},
    }
    for key in numeric:
        summary["with_lesions"][key] = _stats([r.get(key, math.nan) for r in with_lesions])
    for key in ("fpr", "predicted_voxels"):
        summary["without_lesions"][key] = _stats([r.get(key, math.nan) for r in without])
    return summary


def _subsample(arrays, max_points: int) -> tuple:
    if isinstance(max_points, bool) or not isinstance(max_points, numbers.Integral) or max_points < 2:
        raise ArrayError(f"max_points must be an integer >= 2, got {max_points!r}")
    n = arrays[0].size
    if n <= max_points:
        return tuple(arrays)
    keep = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
    return tuple(a[keep] for a in arrays)


def roc_points(scores, truth, max_points: int = 2000) -> tuple:
    """ROC curve ``(fpr, tpr)`` from :func:`sklearn.metrics.roc_curve`, for plotting.

    If the curve has more than ``max_points`` points, evenly spaced points
    (always including both ends) are kept.

    Example:
        >>> fpr, tpr = roc_points([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    scores, truth = _pool_for_curve(scores, truth)
    fpr, tpr, _ = roc_curve(truth, scores)
    return _subsample((fpr, tpr), max_points)


def pr_points(scores, truth, max_points: int = 2000) -> tuple:
    """Precision-recall curve ``(recall, precision)`` from :func:`sklearn.metrics.precision_recall_curve`.

    Subsampled like :func:`roc_points`.

    Example:
        >>> recall, precision = pr_points([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        >>> recall.tolist()
        [1.0, 1.0, 0.5, 0.5, 0.0]
    """
    scores, truth = _pool_for_curve(scores, truth)
    precision, recall, _ = precision_recall_curve(truth, scores)
    return _subsample((recall, precision), max_points)


def _pool_for_curve(scores, truth) -> tuple:
    scores, truth = _as_arrays({"scores": scores, "truth": truth})
    truth = truth.astype(bool, copy=False).ravel()
    n_pos = int(np.count_nonzero(truth))
    if n_pos in (0, truth.size):
        raise ArrayError(f"curves need both lesion and healthy voxels; got {n_pos} lesion voxels "
                         f"out of {truth.size}")
    return _as_scores(scores).ravel(), truth


def curve_points(scores, truth, max_points: int = 2000) -> dict:
    """ROC and PR points with AUROC, AUPRC and prevalence, ready for :func:`~tfuad.reports.plot_roc_pr`.

    Returns:
        dict: ``fpr``, ``tpr``, ``recall``, ``precision`` (arrays) and ``auroc``,
            ``auprc``, ``prevalence`` (floats).

    Example:
        >>> c = curve_points([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        >>> c["auroc"], c["prevalence"]
        (0.75, 0.5)
    """
    scores, truth = _pool_for_curve(scores, truth)
    fpr, tpr = roc_points(scores, truth, max_points)
    recall, precision = pr_points(scores, truth, max_points)
    auroc, auprc = auc_scores(scores, truth)
    return {"fpr": fpr, "tpr": tpr, "recall": recall, "precision": precision,
            "auroc": auroc, "auprc": auprc, "prevalence": float(truth.mean())}
