"""Which subjects serve which purpose: train, calibration and test splits.

A dataset's subjects carry a ``split`` (``train``, ``calib`` or ``test``) from
a manifest column, the demo layout or a named protocol
(:meth:`~tfuad.data.layouts.Dataset.with_protocol`). A dataset without any
split trains on all its subjects and has no calibration subjects.

* :func:`split_subjects`: the subjects of one split;
* :func:`prepare_split`: their volumes, preprocessed as a model expects;
* :func:`labelled_test_subjects`: the subjects a report scores.

Example:
    >>> from tfuad.data.layouts import Dataset, Subject
    >>> ds = Dataset("d", "manifest", [Subject("a", {"t1": "a.nii"}, split="train"),
    ...                                 Subject("b", {"t1": "b.nii"}, split="calib")])
    >>> [s.id for s in split_subjects(ds, "calib")]
    ['b']
"""
from __future__ import annotations

import numpy as np

from tfuad.errors import DatasetError

__all__ = ["SPLITS", "split_subjects", "prepare_split", "labelled_test_subjects"]

#: The split names a dataset may use.
SPLITS = ("train", "calib", "test")


def split_subjects(dataset, name: str) -> list:
    """Subjects of a split; a dataset without splits uses all subjects for training.

    Args:
        dataset: A :class:`~tfuad.data.layouts.Dataset`.
        name: One of :data:`SPLITS`.

    Returns:
        The subjects, in the dataset's order (possibly none).
    """
    if any(s.split for s in dataset.subjects):
        return [s for s in dataset.subjects if s.split == name]
    return list(dataset.subjects) if name == "train" else []


def prepare_split(subjects, modality: str, pconfig, stats=None, *, log=print) -> tuple[list, list]:
    """Prepare every subject's volume; returns ``(prepared, skipped)`` lists.

    Subjects without a lesion mask that are not known to be healthy cannot
    provide healthy slices; they are skipped with a message.

    Args:
        subjects: :class:`~tfuad.data.layouts.Subject` objects.
        modality: The image to read.
        pconfig: The :class:`~tfuad.data.preprocessing.PreprocessConfig` of the model.
        stats: Intensity statistics of the training data (z-scoring, standardisation).
        log: Receives one line per skipped subject.
    """
    from tfuad.data.preprocessing import prepare_volume

    prepared, skipped = [], []
    for subject in subjects:
        healthy = getattr(subject, "healthy", False)
        if subject.lesion_mask is None and not healthy:
            skipped.append(subject.id)
            log(f"skipping {subject.id}: no lesion mask, so its healthy slices are unknown")
            continue
        prep = prepare_volume(subject.image(modality), pconfig, brain_mask_path=subject.brain_mask,
                              lesion_mask_path=subject.lesion_mask, stats=stats)
        if prep.lesion_mask is None:  # a healthy subject: its lesion mask is empty
            prep.lesion_mask = np.zeros_like(prep.brain_mask)
            prep.lesion = np.zeros_like(prep.brain)
        prepared.append(prep)
    return prepared, skipped


def labelled_test_subjects(dataset, log=print) -> list:
    """The subjects a report scores.

    The ``test`` split (or, without splits, every subject with a lesion mask),
    keeping only those with a lesion mask.

    Raises:
        DatasetError: no labelled test subject.
    """
    subjects = split_subjects(dataset, "test") if any(s.split for s in dataset.subjects) else [
        s for s in dataset.subjects if s.lesion_mask is not None]
    usable = [s for s in subjects if s.lesion_mask is not None]
    for s in subjects:
        if s.lesion_mask is None:
            log(f"skipping {s.id}: no lesion mask, so it cannot be scored")
    if not usable:
        raise DatasetError(dataset.root, "has no labelled test subjects to evaluate "
                           "(split 'test' with lesion masks, or subjects with lesion masks)")
    return usable
