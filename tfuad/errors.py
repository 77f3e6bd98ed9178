"""Typed errors with one-line messages that name the file and the problem.

Every error raised for bad user input derives from :class:`TfuadError`; the CLI
prints ``str(err)`` on one line and exits non-zero.
"""
from __future__ import annotations

import os


class TfuadError(Exception):
    """Base class of all errors caused by user input or configuration."""


class DataError(TfuadError, ValueError):
    """A problem with one input file.

    Args:
        path: The offending file (or folder).
        problem: What is wrong with it, as a short phrase.
    """

    def __init__(self, path, problem: str):
        self.path = os.fspath(path) if path is not None else None
        self.problem = " ".join(str(problem).split())  # keep it on one line
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)


class CorruptFileError(DataError):
    """The file is missing, unreadable, truncated or not a NIfTI image."""


class DimensionError(DataError):
    """The image does not have the required number of dimensions."""


class NonFiniteError(DataError):
    """The image contains NaN or infinite voxels."""


class GeometryMismatchError(DataError):
    """A mask or label volume does not share its image's shape or affine."""


class EmptyMaskError(DataError):
    """A brain mask has no non-zero voxel."""


class MissingModalityError(DataError):
    """A subject lacks the requested modality (or lesion labels)."""


class DatasetError(DataError):
    """A dataset folder or manifest cannot be used as asked."""


class PreprocessStepError(DataError):
    """A preprocessing step failed on one scan (e.g. it cannot be registered to the template).

    Args:
        path: The scan.
        step: The step that failed, one of :data:`tfuad.preprocess.pipeline.STEPS`.
        problem: What went wrong, as a short phrase.

    Example:
        >>> err = PreprocessStepError("scan.nii.gz", "register", "cannot be registered to the template")
        >>> err.step, str(err)
        ('register', 'scan.nii.gz: cannot be registered to the template')
    """

    def __init__(self, path, step: str, problem: str):
        self.step = step
        super().__init__(path, problem)


class ArrayError(TfuadError, ValueError):
    """An array or value given to a compute function is unusable (shape, dtype, range, NaN)."""


class ConfigError(TfuadError, ValueError):
    """An unknown model name, option value or an inconsistent run directory."""
