"""K-fold cross-validation over the labelled cases of a dataset.

With few labelled cases (15 BraTS volumes, 30 MSLUB patients), one fixed
test split gives a noisy number; cross-validation tests every labelled case
exactly once. For fold ``i``:

* ``test``: the labelled cases of fold ``i`` (folds are a seeded random
  partition, sizes differing by at most one);
* ``calib``: ``calib_per_fold`` labelled cases drawn (seeded, per fold) from
  the *other* folds, plus the first ``healthy_calib`` healthy-only subjects;
* ``train``: the remaining labelled cases of the other folds (their
  lesion-free slices, as in the ``brats-healthy-slices`` protocol) and the
  remaining healthy-only subjects.

A test case never trains or calibrates the model that scores it.
Healthy-only subjects (``Subject.healthy``) train or calibrate in every fold
and are never tested; subjects that are neither labelled nor healthy keep
``split=None`` and no stage uses them.

Each fold is an ordinary :class:`~tfuad.data.layouts.Dataset` whose subjects
carry ``split`` = ``train``/``calib``/``test``, so the existing train,
calibrate and evaluate steps consume it unchanged.

Example:
    >>> from tfuad.data.layouts import Dataset, Subject
    >>> cases = [Subject(f"c{i}", {"flair": f"c{i}.nii"}, lesion_mask=f"c{i}_seg.nii") for i in range(6)]
    >>> folds = cross_validation_folds(Dataset("d", "manifest", cases), k=3, seed=0)
    >>> sorted(len([s for s in f if s.split == "test"]) for f in folds)
    [2, 2, 2]
"""
from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from tfuad.data.layouts import Dataset
from tfuad.errors import ConfigError, DatasetError

__all__ = ["labelled_cases", "healthy_subjects", "cross_validation_folds", "fold_table"]


def labelled_cases(dataset) -> list:
    """The subjects that can be tested: a lesion mask and not marked healthy (dataset order).

    Example:
        >>> from tfuad.data.layouts import Dataset, Subject
        >>> ds = Dataset("d", "manifest", [Subject("a", {"t1": "a.nii"}, lesion_mask="a_seg.nii"),
        ...                                 Subject("h", {"t1": "h.nii"}, healthy=True)])
        >>> [s.id for s in labelled_cases(ds)]
        ['a']
    """
    return [s for s in dataset.subjects if s.lesion_mask is not None and not s.healthy]


def healthy_subjects(dataset) -> list:
    """The subjects marked healthy (lesion-free), in dataset order.

    Example:
        >>> from tfuad.data.layouts import Dataset, Subject
        >>> ds = Dataset("d", "manifest", [Subject("h", {"t1": "h.nii"}, healthy=True)])
        >>> [s.id for s in healthy_subjects(ds)]
        ['h']
    """
    return [s for s in dataset.subjects if s.healthy]


def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def cross_validation_folds(dataset, k: int = 5, *, seed: int = 0, calib_per_fold: int = 1,
                           healthy_calib: int = 0) -> list:
    """``k`` datasets, one per fold, whose subjects carry train/calib/test splits.

    Args:
        dataset: A :class:`~tfuad.data.layouts.Dataset` (its own splits are replaced).
        k: Number of folds, 2 .. number of labelled cases.
        seed: Seed of the partition and of the calibration draws; the same
            seed gives the same folds.
        calib_per_fold: Labelled cases of the other folds that calibrate fold
            ``i`` (thresholds, λ) instead of training it.
        healthy_calib: Healthy-only subjects that calibrate every fold (the
            same ones, drawn with the seed); the other healthy-only subjects train.

    Returns:
        A list of ``k`` :class:`~tfuad.data.layouts.Dataset` objects with the
        subjects of ``dataset`` in its order.

    Raises:
        DatasetError: fewer labelled cases than folds, or fewer healthy-only
            subjects than ``healthy_calib``.
        ConfigError: a bad ``k``, ``seed`` or count, or a fold that would
            have no training or no calibration subject.

    Example:
        >>> from tfuad.data.layouts import Dataset, Subject
        >>> cases = [Subject(f"c{i}", {"t1": f"c{i}.nii"}, lesion_mask=f"m{i}.nii") for i in range(4)]
        >>> fold = cross_validation_folds(Dataset("d", "manifest", cases), k=2, seed=1)[0]
        >>> sorted(s.split for s in fold)
        ['calib', 'test', 'test', 'train']
    """
    k = _count(k, "k (number of folds)", 2)
    seed = _count(seed, "seed", 0)
    calib_per_fold = _count(calib_per_fold, "calib_per_fold", 0)
    healthy_calib = _count(healthy_calib, "healthy_calib", 0)
    cases, healthy = labelled_cases(dataset), healthy_subjects(dataset)
    if k > len(cases):
        raise DatasetError(dataset.root, f"has {len(cases)} labelled cases (lesion mask, not marked healthy), "
                           f"fewer than the {k} folds asked for")
    if healthy_calib > len(healthy):
        raise DatasetError(dataset.root, f"has {len(healthy)} healthy-only subjects, fewer than the "
                           f"healthy_calib={healthy_calib} asked for")
    rng = np.random.default_rng(seed)
    parts = [[cases[j].id for j in part] for part in np.array_split(rng.permutation(len(cases)), k)]
    h_order = [healthy[j].id for j in rng.permutation(len(healthy))]
    h_calib, h_train = set(h_order[:healthy_calib]), set(h_order[healthy_calib:])
    smallest_rest = len(cases) - max(len(p) for p in parts)
    if calib_per_fold > smallest_rest:
        raise ConfigError(f"calib_per_fold={calib_per_fold} exceeds the {smallest_rest} labelled cases "
                          f"outside the largest fold")
    if calib_per_fold + healthy_calib == 0:
        raise ConfigError("no calibration subject: set calib_per_fold or healthy_calib to at least 1")
    if smallest_rest - calib_per_fold + len(h_train) == 0:
        raise ConfigError(f"no training subject would remain in some fold: lower calib_per_fold "
                          f"({calib_per_fold}) or k ({k})")

    folds = []
    for i, test in enumerate(parts):
        rest = [sid for j, part in enumerate(parts) if j != i for sid in part]
        draw = np.random.default_rng([seed, i]).permutation(len(rest))[:calib_per_fold]
        calib = {rest[j] for j in draw}
        split_of = {**{sid: "test" for sid in test}, **{sid: "calib" for sid in calib},
                    **{sid: "train" for sid in rest if sid not in calib},
                    **{sid: "calib" for sid in h_calib}, **{sid: "train" for sid in h_train}}
        folds.append(Dataset(dataset.root, dataset.layout,
                             [dataclasses.replace(s, split=split_of.get(s.id)) for s in dataset.subjects]))
    return folds


def fold_table(folds) -> list:
    """One row per fold and subject with a split: ``{"fold", "subject", "split"}``.

    For a record of the folds beside cross-validation results (e.g. a CSV).

    Example:
        >>> from tfuad.data.layouts import Dataset, Subject
        >>> cases = [Subject(f"c{i}", {"t1": f"c{i}.nii"}, lesion_mask=f"m{i}.nii") for i in range(3)]
        >>> rows = fold_table(cross_validation_folds(Dataset("d", "manifest", cases), k=3))
        >>> len(rows), sorted({r["split"] for r in rows})
        (9, ['calib', 'test', 'train'])
    """
    return [{"fold": i, "subject": s.id, "split": s.split}
            for i, fold in enumerate(folds) for s in fold.subjects if s.split is not None]
