"""``tfuad preprocess``: raw scans into model-ready volumes, reproducibly.

Modules: SimpleITK conversion (:mod:`~tfuad.preprocess.io`), the MNI152 template
(:mod:`~tfuad.preprocess.template`), N4 (:mod:`~tfuad.preprocess.bias`), curvature
flow (:mod:`~tfuad.preprocess.denoise`), registration
(:mod:`~tfuad.preprocess.registration`), atlas-based brain extraction
(:mod:`~tfuad.preprocess.brain_extraction`), the steps and the batch
(:mod:`~tfuad.preprocess.pipeline`), QC figures (:mod:`~tfuad.preprocess.qc`).

Example:
    >>> from tfuad.preprocess import PreprocessOptions, jobs_from_inputs, run_batch
"""
from tfuad.preprocess.pipeline import (
    DEFAULT_STEPS,
    STEPS,
    BatchResult,
    Job,
    PreprocessOptions,
    jobs_from_inputs,
    parse_steps,
    run_batch,
)

__all__ = ["STEPS", "DEFAULT_STEPS", "PreprocessOptions", "Job", "BatchResult", "jobs_from_inputs", "parse_steps",
           "run_batch"]
