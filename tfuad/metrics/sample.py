"""Sample-level detection: does this slice (or this subject) contain a lesion?

Besides delineating lesions, an anomaly map can flag whole slices or scans,
as in the sample-level task of the MOOD challenge and the slice- and
subject-level detection of unsupervised pathology detection benchmarks. A
slice (or volume) gets one score, a reduction of the anomaly map over its
brain voxels, and the label "contains lesion voxels"; AUROC and average
precision (AP) then measure how well the scores rank abnormal samples above
normal ones.

Reductions (``reduce``) of the brain voxels of a slice or volume:

* ``"pNN"``: the NN-th percentile, e.g. ``"p99"`` (default) or ``"p99.9"``;
* ``"topNN%"``: the mean of the top NN % voxels (at least one voxel), e.g. ``"top1%"``;
* ``"max"``, ``"mean"``;
* or any callable mapping a 1D array of brain-voxel scores to a number.

``"max"`` reacts to a single noisy voxel; a high percentile or a top-k mean
is the usual, steadier choice. A slice without brain voxels has no score
(NaN) and is left out by :func:`sample_auc`.

Slices are taken along ``axis`` (default the last one: axial slices
``data[:, :, z]`` of a canonical RAS+ volume, as in :mod:`tfuad.data.nifti`).

Example:
    >>> import numpy as np
    >>> score = np.zeros((4, 4, 3)); score[1, 1, 2] = 5.0
    >>> truth = np.zeros((4, 4, 3), bool); truth[1, 1, 2] = True
    >>> slice_scores(score, reduce="max").tolist(), slice_labels(truth).tolist()
    ([0.0, 0.0, 5.0], [False, False, True])
    >>> sample_auc(slice_scores(score, reduce="max"), slice_labels(truth))["auroc"]
    1.0
"""
from __future__ import annotations

import math
import re

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from tfuad.metrics.checks import MetricInputError, as_mask, check_count, finite_scores, same_shape

__all__ = ["slice_scores", "slice_labels", "volume_score", "volume_label", "sample_auc", "sample_level_auc",
           "reduction"]

_PERCENTILE = re.compile(r"^p(\d+(?:\.\d+)?)$")
_TOP = re.compile(r"^top(\d+(?:\.\d+)?)%$")


def reduction(reduce="p99"):
    """The function that turns the brain-voxel scores of a sample into one score.

    Args:
        reduce: ``"pNN"``, ``"topNN%"``, ``"max"``, ``"mean"`` or a callable.

    Returns:
        A function of a non-empty 1D float array returning a float.

    Raises:
        MetricInputError: an unknown name or a percentage outside (0, 100].

    Example:
        >>> reduction("top50%")(np.array([1.0, 2.0, 3.0, 4.0]))
        3.5
        >>> reduction("p50")(np.array([1.0, 2.0, 3.0]))
        2.0
    """
    if callable(reduce):
        return lambda v: float(reduce(v))
    text = str(reduce).strip().lower()
    if text == "max":
        return lambda v: float(v.max())
    if text == "mean":
        return lambda v: float(v.mean())
    match = _PERCENTILE.match(text) or _TOP.match(text)
    if match:
        q = float(match.group(1))
        if not 0 < q <= 100:
            raise MetricInputError(f"reduce {reduce!r}: the percentage must be in (0, 100]")
        if text.startswith("p"):
            return lambda v: float(np.percentile(v, q))

        def top(v):
            k = max(1, math.ceil(q / 100.0 * v.size))
            return float(np.partition(v, v.size - k)[v.size - k:].mean())

        return top
    raise MetricInputError(f"unknown reduce {reduce!r}; use 'pNN' (e.g. p99), 'topNN%' (e.g. top1%), "
                           "'max', 'mean' or a function")


def _axis(axis, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise MetricInputError(f"axis must be an integer in [{-ndim}, {ndim - 1}], got {axis!r}")
    return int(axis) % ndim


def slice_scores(score_map, brain_mask=None, *, reduce="p99", axis: int = -1) -> np.ndarray:
    """One score per slice: ``reduce`` over the slice's brain voxels.

    Args:
        score_map: Anomaly map (2D or more).
        brain_mask: Binary mask, same shape; default: every voxel.
        reduce: Reduction, see :func:`reduction`.
        axis: Slice axis (default the last: axial slices of a RAS+ volume).

    Returns:
        Float array with one score per slice; NaN where the slice has no brain voxel.

    Example:
        >>> score = np.arange(8.0).reshape(2, 2, 2)
        >>> brain = np.ones((2, 2, 2), bool); brain[..., 1] = False
        >>> slice_scores(score, brain, reduce="mean").tolist()
        [3.0, nan]
    """
    score_map = np.asarray(score_map)
    if brain_mask is None:
        brain_mask = np.ones(score_map.shape, bool)
    score_map, brain = same_shape(score_map=score_map, brain_mask=brain_mask)
    if score_map.ndim < 2:
        raise MetricInputError(f"score_map must have at least 2 dimensions, got shape {score_map.shape}")
    brain = as_mask(brain, "brain_mask")
    scores = finite_scores(score_map[brain], "score_map (brain voxels)")
    full = np.zeros(score_map.shape)
    full[brain] = scores
    ax = _axis(axis, score_map.ndim)
    reduce_fn = reduction(reduce)
    full, brain = np.moveaxis(full, ax, 0), np.moveaxis(brain, ax, 0)
    out = np.full(full.shape[0], math.nan)
    for i in range(full.shape[0]):
        values = full[i][brain[i]]
        if values.size:
            out[i] = reduce_fn(values)
    return out


def slice_labels(truth, *, min_voxels: int = 1, axis: int = -1) -> np.ndarray:
    """One label per slice: True when it holds at least ``min_voxels`` lesion voxels.

    Slices with fewer lesion voxels count as normal.

    Example:
        >>> truth = np.zeros((3, 3, 3), bool); truth[0, 0, 1] = True; truth[:2, :2, 2] = True
        >>> slice_labels(truth).tolist(), slice_labels(truth, min_voxels=2).tolist()
        ([False, True, True], [False, False, True])
    """
    truth = as_mask(truth, "truth")
    if truth.ndim < 2 or truth.size == 0:
        raise MetricInputError(f"truth must be a non-empty array of at least 2 dimensions, got shape {truth.shape}")
    min_voxels = check_count(min_voxels, "min_voxels", minimum=1)
    ax = _axis(axis, truth.ndim)
    counts = np.moveaxis(truth, ax, 0).reshape(truth.shape[ax], -1).sum(axis=1)
    return counts >= min_voxels


def volume_score(score_map, brain_mask=None, *, reduce="p99") -> float:
    """One score per subject: ``reduce`` over all brain voxels of the volume.

    Returns:
        The score; NaN when the brain mask is empty.

    Example:
        >>> volume_score(np.arange(10.0).reshape(1, 10), reduce="top20%")
        8.5
    """
    score_map = np.asarray(score_map)
    if brain_mask is None:
        brain_mask = np.ones(score_map.shape, bool)
    score_map, brain = same_shape(score_map=score_map, brain_mask=brain_mask)
    values = finite_scores(score_map[as_mask(brain, "brain_mask")], "score_map (brain voxels)")
    return reduction(reduce)(values) if values.size else math.nan


def volume_label(truth, *, min_voxels: int = 1) -> bool:
    """True when the volume holds at least ``min_voxels`` lesion voxels.

    Example:
        >>> volume_label(np.zeros((2, 2, 2))), volume_label(np.ones((2, 2, 2)))
        (False, True)
    """
    truth = as_mask(truth, "truth")
    if truth.size == 0:
        raise MetricInputError("truth is empty (no voxels)")
    return bool(np.count_nonzero(truth) >= check_count(min_voxels, "min_voxels", minimum=1))


def sample_auc(scores, labels) -> dict:
    """AUROC and average precision of sample scores against sample labels.

    Samples with a NaN score (a slice without brain voxels) are left out and
    counted in ``n_undefined``. With only one class the AUROC and AP are
    undefined: NaN, and ``note`` says so.

    Args:
        scores: 1D scores (higher = more abnormal).
        labels: 1D binary labels (True = contains a lesion).

    Returns:
        ``{"auroc", "ap", "n", "positives", "n_undefined", "note"}``; ``ap`` is
        :func:`sklearn.metrics.average_precision_score`, whose chance level is
        the fraction of positives.

    Example:
        >>> sample_auc([0.1, 0.4, 0.35, 0.8, float("nan")], [0, 0, 1, 1, 1])
        {'auroc': 0.75, 'ap': 0.8333333333333333, 'n': 4, 'positives': 2, 'n_undefined': 1, 'note': ''}
    """
    scores, labels = same_shape(scores=np.ravel(np.asarray(scores, dtype=np.float64)), labels=np.ravel(labels))
    labels = as_mask(labels, "labels")
    if np.isinf(scores).any():
        raise MetricInputError("scores hold infinite values")
    defined = ~np.isnan(scores)
    scores, labels = scores[defined], labels[defined]
    positives = int(np.count_nonzero(labels))
    result = {"auroc": math.nan, "ap": math.nan, "n": int(scores.size), "positives": positives,
              "n_undefined": int(defined.size - scores.size), "note": ""}
    if positives in (0, scores.size):
        result["note"] = ("no sample with a score" if scores.size == 0 else
                          "only one class (all samples normal or all abnormal): AUROC and AP undefined")
        return result
    result["auroc"] = float(roc_auc_score(labels, scores))
    result["ap"] = float(average_precision_score(labels, scores))
    return result


def sample_level_auc(score_maps, truths, brain_masks=None, *, level: str = "slice", reduce="p99",
                     min_voxels: int = 1, axis: int = -1) -> dict:
    """Slice- or subject-level AUROC/AP over several subjects in one call.

    Args:
        score_maps: One anomaly map per subject.
        truths: One lesion mask per subject.
        brain_masks: One brain mask per subject, or ``None`` for every voxel.
        level: ``"slice"`` (every slice of every subject is a sample) or
            ``"subject"`` (every volume is one).
        reduce: Reduction, see :func:`reduction`.
        min_voxels: Lesion voxels a sample needs to count as abnormal.
        axis: Slice axis for ``level="slice"``.

    Returns:
        :func:`sample_auc`'s dict plus ``level``, ``reduce`` and ``min_voxels``.

    Example:
        >>> maps = [np.full((2, 2, 2), 1.0), np.full((2, 2, 2), 3.0)]
        >>> truths = [np.zeros((2, 2, 2), bool), np.ones((2, 2, 2), bool)]
        >>> sample_level_auc(maps, truths, level="subject")["auroc"]
        1.0
    """
    if level not in ("slice", "subject"):
        raise MetricInputError(f"level must be 'slice' or 'subject', got {level!r}")
    score_maps, truths = list(score_maps), list(truths)
    masks = [None] * len(score_maps) if brain_masks is None else list(brain_masks)
    if not (len(score_maps) == len(truths) == len(masks)) or not score_maps:
        raise MetricInputError(f"one score map, lesion mask and brain mask per subject are needed; got "
                               f"{len(score_maps)}, {len(truths)} and {len(masks)}")
    reduction(reduce)  # refuse a bad name before any work
    scores, labels = [], []
    for i, (score, truth, brain) in enumerate(zip(score_maps, truths, masks)):
        same_shape(**{f"score_maps[{i}]": np.asarray(score), f"truths[{i}]": np.asarray(truth)})
        if level == "slice":
            scores.append(slice_scores(score, brain, reduce=reduce, axis=axis))
            labels.append(slice_labels(truth, min_voxels=min_voxels, axis=axis))
        else:
            scores.append(np.array([volume_score(score, brain, reduce=reduce)]))
            labels.append(np.array([volume_label(truth, min_voxels=min_voxels)]))
    result = sample_auc(np.concatenate(scores), np.concatenate(labels))
    result.update(level=level, reduce=reduce if isinstance(reduce, str) else getattr(reduce, "__name__", "custom"),
                  min_voxels=min_voxels)
    return result
