"""How sure is a number: bootstrap intervals over subjects and paired method comparisons.

Subjects, not voxels, are the independent units of a segmentation study, so
every interval here resamples *subjects* with replacement:

* :func:`bootstrap_mean`: percentile bootstrap interval of a mean over
  subjects (e.g. mean Dice);
* :func:`bootstrap_pooled_auc`: interval of the AUROC and AUPRC pooled over
  the brain voxels of all subjects (Chen et al. 2020), resampling subjects
  and pooling the voxels of the drawn ones;
* :func:`paired_comparison`: two methods on the same subjects: paired
  bootstrap interval of the mean difference, the fraction of resamples whose
  mean difference is ≤ 0, and the Wilcoxon signed-rank test
  (:func:`scipy.stats.wilcoxon`).

All results are plain dicts (JSON-ready) that record the number of
resamples, the confidence level and the seed; the same seed gives the same
numbers. Undefined values (no subject, one subject, one class) are NaN with a
``note`` saying why.

Example:
    >>> r = bootstrap_mean([0.5, 0.6, 0.7, 0.8], resamples=1000, seed=0)
    >>> round(r["mean"], 2), r["resamples"], r["low"] <= r["mean"] <= r["high"]
    (0.65, 1000, True)
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

from tfuad.metrics.checks import (
    MetricInputError,
    as_mask,
    check_count,
    check_fraction,
    check_seed,
    finite_scores,
    same_shape,
)

__all__ = ["bootstrap_mean", "bootstrap_pooled_auc", "paired_comparison", "weighted_auc"]

#: Percentile bootstrap, subjects drawn with replacement.
METHOD = "percentile bootstrap over subjects"

# resampled means are drawn in blocks of about this many numbers, so memory stays small
_BLOCK = 2_000_000


def _values(values, name: str) -> np.ndarray:
    """1D float values; NaN marks "undefined for this subject", ±inf is refused."""
    arr = np.asarray(values)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise MetricInputError(f"{name} must be numbers, got {arr.dtype}") from None
    arr = arr.astype(np.float64, copy=False).ravel()
    n_inf = int(np.count_nonzero(np.isinf(arr)))
    if n_inf:
        raise MetricInputError(f"{name} has {n_inf} infinite values; a mean over them is undefined "
                               "(filter them and report how many)")
    return arr


def _options(resamples, confidence, seed) -> tuple:
    return (check_count(resamples, "resamples", minimum=1),
            check_fraction(confidence, "confidence"),
            check_seed(seed))


def _percentiles(values: np.ndarray, confidence: float) -> tuple:
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def _resampled_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``resamples`` samples of ``values`` drawn with replacement."""
    n = values.size
    block = max(1, _BLOCK // n)
    out = np.empty(resamples)
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        out[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return out


def bootstrap_mean(values, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Mean over subjects with a percentile bootstrap interval.

    ``resamples`` samples of the subjects are drawn with replacement by
    ``numpy.random.default_rng(seed)``; the interval is the
    ``(1 − confidence)/2`` and ``(1 + confidence)/2`` percentiles of their
    means. NaN values (a measure undefined for a subject, e.g. the Dice of a
    subject without lesion and prediction) are left out and counted in
    ``n_undefined``.

    Args:
        values: One number per subject (NaN = undefined).
        resamples: Number of bootstrap samples.
        confidence: Interval coverage, in (0, 1).
        seed: Seed of the random generator.

    Returns:
        ``{"mean", "low", "high", "n", "n_undefined", "resamples", "confidence",
        "seed", "method", "note"}``; ``low``/``high`` are NaN with fewer than
        two defined values (``note`` says so), everything is NaN with none.

    Raises:
        MetricInputError: infinite values, non-numeric input or a bad option.

    Example:
        >>> r = bootstrap_mean([1.0, 1.0, float("nan")], seed=0)
        >>> r["mean"], r["low"], r["high"], r["n"], r["n_undefined"]
        (1.0, 1.0, 1.0, 2, 1)
    """
    resamples, confidence, seed = _options(resamples, confidence, seed)
    arr = _values(values, "values")
    finite = arr[~np.isnan(arr)]
    result = {"mean": math.nan, "low": math.nan, "high": math.nan, "n": int(finite.size),
              "n_undefined": int(arr.size - finite.size), "resamples": resamples, "confidence": confidence,
              "seed": seed, "method": METHOD, "note": ""}
    if finite.size == 0:
        result["note"] = "no defined value"
        return result
    result["mean"] = float(finite.mean())
    if finite.size < 2:
        result["note"] = "one defined value: no interval"
        return result
    means = _resampled_means(finite, resamples, np.random.default_rng(seed))
    result["low"], result["high"] = _percentiles(means, confidence)
    return result


def paired_comparison(a, b, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Compare two methods scored on the same subjects (``a[i]`` and ``b[i]`` from subject ``i``).

    * Paired bootstrap: subjects are resampled with replacement (the same
      draw for both methods), giving a percentile interval of the mean
      difference ``a − b`` and ``fraction_le_0``, the fraction of resamples
      whose mean difference is ≤ 0 (a one-sided bootstrap measure of how
      often ``a`` fails to beat ``b``).
    * Wilcoxon signed-rank test, two-sided, :func:`scipy.stats.wilcoxon` with
      ``zero_method="wilcox"`` (zero differences are dropped before ranking;
      their count is reported) and ``method="auto"`` (exact for up to 50
      differences without ties or zeros, otherwise exhaustive permutations
      up to 13 and the normal approximation above).

    Pairs where either value is NaN are left out (``n_undefined``).
    With fewer than two pairs, or when every difference is zero, the
    p-value is NaN and ``note`` says why.

    Args:
        a: Per-subject values of method A (e.g. Dice).
        b: Per-subject values of method B, same subjects in the same order.
        resamples: Number of bootstrap samples.
        confidence: Interval coverage, in (0, 1).
        seed: Seed of the random generator.

    Returns:
        ``{"n", "n_undefined", "mean_a", "mean_b", "mean_difference", "low",
        "high", "fraction_le_0", "wilcoxon_statistic", "wilcoxon_p",
        "zero_differences", "resamples", "confidence", "seed", "method",
        "note"}``.

    Raises:
        MetricInputError: different lengths, infinite values or a bad option.

    Example:
        >>> r = paired_comparison([0.8, 0.7, 0.9, 0.6], [0.5, 0.6, 0.7, 0.4], seed=0)
        >>> round(r["mean_difference"], 3), r["fraction_le_0"], r["wilcoxon_p"]
        (0.2, 0.0, 0.125)
    """
    resamples, confidence, seed = _options(resamples, confidence, seed)
    a, b = _values(a, "a"), _values(b, "b")
    if a.size != b.size:
        raise MetricInputError(f"a and b must hold one value per subject each; got {a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    diff = a - b
    n = int(diff.size)
    result = {"n": n, "n_undefined": int(keep.size - n), "mean_a": math.nan, "mean_b": math.nan,
              "mean_difference": math.nan, "low": math.nan, "high": math.nan, "fraction_le_0": math.nan,
              "wilcoxon_statistic": math.nan, "wilcoxon_p": math.nan,
              "zero_differences": int(np.count_nonzero(diff == 0)), "resamples": resamples,
              "confidence": confidence, "seed": seed, "method": "paired " + METHOD + "; Wilcoxon signed-rank",
              "note": ""}
    if n == 0:
        result["note"] = "no subject scored by both"
        return result
    result.update(mean_a=float(a.mean()), mean_b=float(b.mean()), mean_difference=float(diff.mean()))
    if n < 2:
        result["note"] = "one paired subject: no interval and no test"
        return result
    means = _resampled_means(diff, resamples, np.random.default_rng(seed))
    result["low"], result["high"] = _percentiles(means, confidence)
    result["fraction_le_0"] = float(np.mean(means <= 0))
    if result["zero_differences"] == n:
        result["note"] = "every paired difference is zero: the Wilcoxon test is undefined"
        return result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided", method="auto")
    result["wilcoxon_statistic"] = float(test.statistic)
    result["wilcoxon_p"] = float(test.pvalue)
    notes = []
    if result["zero_differences"]:
        notes.append(f"{result['zero_differences']} zero differences dropped before ranking")
    if np.unique(np.abs(diff[diff != 0])).size < np.count_nonzero(diff):
        notes.append("tied differences")
    result["note"] = "; ".join(notes)
    return result


def weighted_auc(scores, truth, weights=None) -> tuple:
    """AUROC and average precision with sample weights, exactly as scikit-learn computes them.

    Tied scores form one threshold; the AUROC is the trapezoidal area under
    the ROC curve and the average precision ``Σ (R_k − R_{k−1}) P_k`` over
    decreasing thresholds, as :func:`sklearn.metrics.roc_auc_score` and
    :func:`sklearn.metrics.average_precision_score` with ``sample_weight``.

    Args:
        scores: 1D scores.
        truth: 1D binary labels.
        weights: 1D non-negative weights (default: all 1).

    Returns:
        ``(auroc, average_precision)``; NaN for both without positive or
        without negative weight.

    Example:
        >>> weighted_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        (0.75, 0.8333333333333333)
    """
    scores, truth = same_shape(scores=np.ravel(scores), truth=np.ravel(truth))
    scores, truth = finite_scores(scores, "scores"), as_mask(truth, "truth")
    w = np.ones(scores.size) if weights is None else finite_scores(np.ravel(weights), "weights")
    if w.shape != scores.shape or (w < 0).any():
        raise MetricInputError(f"weights must be {scores.size} non-negative numbers")
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    ends = np.append(np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1)
    w = w[order]
    return _sorted_auc(np.where(truth[order], w, 0.0), w, ends)


def _sorted_auc(pos_w: np.ndarray, w: np.ndarray, ends: np.ndarray) -> tuple:
    """AUROC and AP of samples sorted by decreasing score.

    ``pos_w``: weight of each sample if it is positive, else 0; ``w``: its
    weight; ``ends``: last index of each group of tied scores.
    """
    tp = np.cumsum(pos_w)[ends]
    seen = np.cumsum(w)[ends]
    fp = seen - tp
    p, n = tp[-1], fp[-1]
    if not (p > 0 and n > 0):
        return math.nan, math.nan
    d_tp = np.diff(tp, prepend=0.0)
    d_fp = np.diff(fp, prepend=0.0)
    auroc = float(d_fp @ (2.0 * tp - d_tp) / (2.0 * p * n))      # trapezoids: tp_k + tp_(k-1) = 2 tp_k - d_tp_k
    ap = float(d_tp @ (tp / np.maximum(seen, np.finfo(float).tiny)) / p)   # seen == 0 only where tp == 0
    return auroc, ap


def _brain_voxels(scores_list, truths_list, masks_list) -> list:
    lists = [list(scores_list), list(truths_list)]
    if masks_list is not None:
        lists.append(list(masks_list))
    if len({len(x) for x in lists}) != 1:
        raise MetricInputError("one score map, one lesion mask" + (" and one brain mask" if masks_list is not None
                               else "") + f" per subject are needed; got lengths {[len(x) for x in lists]}")
    if not lists[0]:
        raise MetricInputError("no subjects given")
    subjects = []
    for i, items in enumerate(zip(*lists)):
        named = {f"scores[{i}]": items[0], f"truth[{i}]": items[1]}
        if masks_list is not None:
            named[f"brain mask[{i}]"] = items[2]
        arrays = same_shape(**named)
        truth = as_mask(arrays[1], f"truth[{i}]")
        if masks_list is not None:
            brain = as_mask(arrays[2], f"brain mask[{i}]")
            subjects.append((finite_scores(arrays[0][brain], f"scores[{i}]"), truth[brain]))
        else:
            subjects.append((finite_scores(arrays[0], f"scores[{i}]").ravel(), truth.ravel()))
    return subjects


def _subsample_subject(scores, truth, limit, rng) -> tuple:
    """At most ``limit`` voxels of each class, weighted by (class size / kept)."""
    keep_s, keep_t, keep_w = [], [], []
    for cls in (True, False):
        idx = np.flatnonzero(truth == cls)
        weight = 1.0
        if limit is not None and idx.size > limit:
            weight = idx.size / limit
            idx = np.sort(rng.choice(idx, size=limit, replace=False))
        keep_s.append(scores[idx])
        keep_t.append(np.full(idx.size, cls))
        keep_w.append(np.full(idx.size, weight))
    return np.concatenate(keep_s), np.concatenate(keep_t), np.concatenate(keep_w)


def bootstrap_pooled_auc(scores_list, truths_list, masks_list=None, *, resamples: int = 1000,
                         confidence: float = 0.95, seed: int = 0, max_voxels_per_class: int | None = 10000) -> dict:
    """Pooled voxel AUROC and AUPRC with intervals from resampling subjects.

    The point values pool every (brain) voxel of every subject, exactly as
    :func:`~tfuad.metrics.pooled_auc`. For the interval, subjects are drawn
    with replacement ``resamples`` times and the voxels of the drawn subjects
    are pooled (a subject drawn twice counts twice); the interval is the
    percentile interval of the resampled AUROCs and AUPRCs.

    Efficiency: at most ``max_voxels_per_class`` lesion and as many healthy
    voxels are kept per subject, drawn once at random without replacement
    and weighted by (class voxels / kept voxels), so each subject keeps its
    true class sizes in the pooled curve. The pooled voxels are sorted once;
    each resample then costs a weighted cumulative sum. The subsample is a
    small fixed approximation inside the interval, not in the point values;
    ``max_voxels_per_class=None`` keeps every voxel.

    Args:
        scores_list: One anomaly map (or 1D brain-voxel scores) per subject.
        truths_list: One lesion mask per subject, same shapes.
        masks_list: Optional brain masks; only their voxels count.
        resamples: Number of bootstrap samples.
        confidence: Interval coverage, in (0, 1).
        seed: Seed of the random generator (voxel subsample and resamples).
        max_voxels_per_class: Voxels kept per subject and class for the
            resamples, or ``None`` for all.

    Returns:
        ``{"auroc": {"value", "low", "high"}, "auprc": {...}, "n_subjects",
        "resamples", "undefined_resamples", "confidence", "seed",
        "max_voxels_per_class", "method", "note"}``. A resample that holds
        only one class has undefined AUCs: it is left out of the percentiles
        and counted in ``undefined_resamples``.

    Raises:
        MetricInputError: mismatched lists or shapes, non-finite scores,
            non-binary masks or a bad option.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(1)
        >>> truths = [rng.random(200) < 0.2 for _ in range(5)]
        >>> scores = [t + rng.normal(0, 0.7, 200) for t in truths]
        >>> r = bootstrap_pooled_auc(scores, truths, resamples=200, seed=0)
        >>> r["auroc"]["low"] < r["auroc"]["value"] < r["auroc"]["high"]
        True
    """
    resamples, confidence, seed = _options(resamples, confidence, seed)
    if max_voxels_per_class is not None:
        max_voxels_per_class = check_count(max_voxels_per_class, "max_voxels_per_class", minimum=1)
    subjects = _brain_voxels(scores_list, truths_list, masks_list)
    all_scores = np.concatenate([s for s, _ in subjects])
    all_truth = np.concatenate([t for _, t in subjects])
    auroc, auprc = weighted_auc(all_scores, all_truth)
    del all_scores, all_truth
    result = {"auroc": {"value": auroc, "low": math.nan, "high": math.nan},
              "auprc": {"value": auprc, "low": math.nan, "high": math.nan},
              "n_subjects": len(subjects), "resamples": resamples, "undefined_resamples": 0,
              "confidence": confidence, "seed": seed, "max_voxels_per_class": max_voxels_per_class,
              "method": METHOD + ", voxels of the drawn subjects pooled", "note": ""}
    if math.isnan(auroc):
        result["note"] = "the pooled voxels hold only one class: AUROC/AUPRC undefined"
        return result
    if len(subjects) < 2:
        result["note"] = "one subject: no interval"
        return result
    rng = np.random.default_rng(seed)
    parts = [_subsample_subject(s, t, max_voxels_per_class, rng) for s, t in subjects]
    owner = np.concatenate([np.full(p[0].size, i) for i, p in enumerate(parts)])
    scores = np.concatenate([p[0] for p in parts])
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    ends = np.append(np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1)
    w_sorted = np.concatenate([p[2] for p in parts])[order]
    pos_sorted = np.where(np.concatenate([p[1] for p in parts])[order], w_sorted, 0.0)
    owner_sorted = owner[order]
    del parts, owner, scores, ranked, order
    n = len(subjects)
    values = np.empty((resamples, 2))
    for r in range(resamples):
        drawn = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)[owner_sorted]
        values[r] = _sorted_auc(pos_sorted * drawn, w_sorted * drawn, ends)
    defined = ~np.isnan(values[:, 0])
    result["undefined_resamples"] = int(resamples - defined.sum())
    if defined.sum() >= 1:
        for col, key in enumerate(("auroc", "auprc")):
            result[key]["low"], result[key]["high"] = _percentiles(values[defined, col], confidence)
    if result["undefined_resamples"]:
        result["note"] = (f"{result['undefined_resamples']} resamples drew no lesion voxel (or no healthy one) "
                          "and were left out")
    return result
