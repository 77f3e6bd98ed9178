"""Raw scans through a run's recorded preprocessing, and template-space maps back to the scan's own grid.

A dataset made by ``tfuad preprocess`` keeps, per subject, a ``preprocess.json``
record of every step and setting (:mod:`tfuad.preprocess.pipeline`). At train
time :func:`recorded_preprocessing` reduces the records of the training
volumes to one description of what the model expects, which the run stores
under ``config.json["raw_preprocess"]`` (:data:`RUN_KEY`). At detection time
:func:`preprocess_scan` applies exactly those steps to a new raw scan
(reorientation, N4, denoising, registration, brain extraction, resampling,
standardisation with the training data's landmarks, normalisation), and
:func:`to_native` brings a map computed on the template grid back onto the
scan's own grid through the inverse of the recorded registration (linear
interpolation for maps, nearest neighbour for masks).

Example:
    >>> import numpy as np
    >>> grid = np.diag([2.0, 2.0, 2.0, 1.0]); grid[:3, 3] = (-10, -10, -10)
    >>> spot = np.zeros((10, 10, 10), np.float32); spot[5, 5, 5] = 1.0
    >>> home = np.diag([1.0, 1.0, 1.0, 1.0]); home[:3, 3] = (-10, -10, -10)
    >>> back = to_native(spot, grid, (20, 20, 20), home)       # linear: a map
    >>> [int(i) for i in np.unravel_index(np.argmax(back), back.shape)]   # world (0, 0, 0) both times
    [10, 10, 10]
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tfuad.errors import ConfigError, DataError

__all__ = ["RUN_KEY", "RECORD_NAME", "recorded_preprocessing", "options_from_record", "preprocess_scan",
           "native_transform", "to_native", "subject_outputs"]

#: Key of a run's ``config.json`` holding the raw-scan preprocessing its training data had.
RUN_KEY = "raw_preprocess"
#: The per-subject record ``tfuad preprocess`` writes beside each volume.
RECORD_NAME = "preprocess.json"
#: Options that name a cohort's splits or files, not how a scan is processed.
_NOT_PROCESSING = ("split", "calib", "standardize", "standardizer")


def _standardizer_of(record: dict) -> dict | None:
    """The landmarks a subject was standardised with (from its ``standardize`` step), or None."""
    for step in record.get("steps", []):
        if step.get("name") == "standardize":
            return {k: step[k] for k in ("method", "percentiles", "standard") if k in step} or None
    return None


def _grid_of(record: dict) -> dict | None:
    for step in record.get("steps", []):
        if step.get("name") == "resample":
            return {"shape": step.get("shape"), "affine": step.get("affine")}
    return None


def recorded_preprocessing(image_paths) -> tuple:
    """What raw-scan preprocessing a set of training volumes had, from their ``preprocess.json`` records.

    Args:
        image_paths: The training (and validation) volumes; a volume made by ``tfuad preprocess``
            has its record beside it.

    Returns:
        ``(record, note)``: ``record`` is ``None`` when no volume has a record, or when the volumes
        disagree (some without a record, or other steps, settings or standardisation landmarks);
        ``note`` then says why in one line (``None`` when no volume has a record). A record is
        ``{"made_by", "options", "standardizer", "grid", "subjects", "example"}``: the options of
        :class:`~tfuad.preprocess.pipeline.PreprocessOptions` that change a scan, the
        standardisation landmarks (or None), the template grid (shape, affine) and how many
        volumes agreed.

    Example:
        >>> recorded_preprocessing(["no/such/volume.nii.gz"])
        (None, None)
    """
    from tfuad.files import read_json

    paths = [Path(p) for p in image_paths if p]
    records = {}
    for path in paths:
        candidate = path.parent / RECORD_NAME
        if candidate.is_file():
            try:
                records[os.fspath(path)] = read_json(candidate)
            except (ConfigError, DataError):
                continue
    if not records:
        return None, None
    if len(records) < len(paths):
        missing = [os.fspath(p) for p in paths if os.fspath(p) not in records]
        return None, (f"{len(missing)} of {len(paths)} training volumes have no {RECORD_NAME} (e.g. {missing[0]}); "
                      "the run records no raw-scan preprocessing (detect --raw will refuse)")
    described = {}
    for path, record in records.items():
        options = {k: v for k, v in (record.get("options") or {}).items() if k not in _NOT_PROCESSING}
        described[path] = {"options": options, "standardizer": _standardizer_of(record), "grid": _grid_of(record)}
    first_path, first = next(iter(described.items()))
    for path, other in described.items():
        if other != first:
            what = [k for k in first if first[k] != other[k]]
            return None, (f"training volumes were preprocessed differently ({', '.join(what)} of {path} differ "
                          f"from {first_path}); the run records no raw-scan preprocessing (detect --raw will refuse)")
    return {"made_by": "tfuad preprocess", **first, "subjects": len(described), "example": first_path}, None


def options_from_record(raw: dict, *, source=None):
    """The :class:`~tfuad.preprocess.pipeline.PreprocessOptions` that repeat a run's recorded preprocessing.

    Args:
        raw: A run's ``config.json["raw_preprocess"]`` (from :func:`recorded_preprocessing`).
        source: Named in errors (the run's ``config.json``).

    Raises:
        ConfigError: the record is not one (unknown options, or standardised without landmarks).

    Example:
        >>> options_from_record({"options": {"modality": "t1", "steps": ["reorient", "normalize"]},
        ...                      "standardizer": None}).steps
        ('reorient', 'normalize')
    """
    from tfuad.preprocess.pipeline import PreprocessOptions

    where = f"{source}: " if source else ""
    options = dict(raw.get("options") or {})
    if not options:
        raise ConfigError(f"{where}{RUN_KEY!r} holds no preprocessing options")
    steps = tuple(options.pop("steps", ()) or ())
    standardize = None
    if "standardize" in steps:
        if not raw.get("standardizer"):
            raise ConfigError(f"{where}{RUN_KEY!r} has a standardize step but no landmarks")
        standardize = "apply"
    try:
        return PreprocessOptions(**options, steps=steps, standardize=standardize,
                                 standardizer=f"{source or 'the run'} ({RUN_KEY})" if standardize else None)
    except TypeError as err:
        raise ConfigError(f"{where}{RUN_KEY!r} is not a preprocessing record ({err})") from None


def subject_outputs(work_dir, subject: str, modality: str) -> dict:
    """Paths of the image, brain mask and record :func:`preprocess_scan` writes for ``subject``."""
    folder = Path(work_dir) / subject
    return {"image": folder / f"{subject}_{modality}.nii.gz", "brain_mask": folder / f"{subject}_brainmask.nii.gz",
            "record": folder / RECORD_NAME}


def preprocess_scan(image, subject: str, raw: dict, work_dir, *, brain_mask=None, source=None) -> dict:
    """Preprocess one raw scan as a run's training data were, into ``work_dir/<subject>/``.

    Args:
        image: The raw scan (NIfTI).
        subject: Its id (names the files).
        raw: A run's ``config.json["raw_preprocess"]``.
        work_dir: Folder for the outputs (a scratch folder; see :func:`subject_outputs`).
        brain_mask: The scan's own brain mask, kept instead of the atlas's; or None.
        source: Named in errors about the record (the run's ``config.json``).

    Returns:
        The subject's record (``preprocess.json``): steps, settings, input geometry and the
        transform to the template.

    Raises:
        DataError: the scan or its brain mask cannot be read (one line naming it).
        PreprocessStepError: a step failed on the scan, e.g. it cannot be registered or
            brain-extracted (one line naming it; ``step`` names the step). A registration that fails
            quality control is no error: the record comes back with its ``qc`` entry (a lesion can
            lower the similarity to the template; the caller warns).
        ConfigError: the record is not usable.
    """
    from tfuad.preprocess.pipeline import Job, run_intensity_steps, run_spatial_steps

    options = options_from_record(raw, source=source)
    work_dir = Path(work_dir)
    job = Job(subject, os.fspath(image), None if brain_mask is None else os.fspath(brain_mask), source=os.fspath(image))
    record = run_spatial_steps(job, options, work_dir)
    return run_intensity_steps(record, options, work_dir, raw.get("standardizer"))


def native_transform(record: dict):
    """The transform taking the scan's world points to template world points, or None (identity).

    Args:
        record: A subject's ``preprocess.json`` record (its ``register`` step holds the
            template-to-scan transform).
    """
    from tfuad.preprocess.registration import transform_from_record

    for step in record.get("steps", []):
        if step.get("name") == "register" and "transform" in step:
            return transform_from_record(step["transform"]).GetInverse()
    return None


def to_native(array, template_affine, native_shape, native_affine, transform=None, *,
              interpolation: str = "linear") -> np.ndarray:
    """Resample a template-grid array onto a scan's own grid.

    Each voxel of the scan's grid is taken to the template through ``transform``
    (scan world point -> template world point; :func:`native_transform`) and
    sampled there; voxels outside the template grid get 0.

    Args:
        array: 3D array on the template grid (voxel order of ``template_affine``).
        template_affine: 4x4 voxel-to-world (RAS) affine of ``array``.
        native_shape: Shape of the scan's grid.
        native_affine: 4x4 voxel-to-world (RAS) affine of the scan's grid.
        transform: A SimpleITK transform of scan points to template points (LPS), or None.
        interpolation: ``"linear"`` for maps, ``"nearest"`` for masks and labels.

    Returns:
        float32 array (``interpolation="linear"``) or the array's own type (bool for a bool mask)
        on the scan's grid.

    Example:
        >>> grid = np.eye(4); mask = np.zeros((4, 4, 4), bool); mask[1, 2, 3] = True
        >>> moved = grid.copy(); moved[:3, 3] = (1, 0, 0)      # the scan's grid starts 1 mm further right
        >>> np.argwhere(to_native(mask, grid, (4, 4, 4), moved, interpolation="nearest")).tolist()
        [[0, 2, 3]]
    """
    from tfuad.errors import ArrayError
    from tfuad.preprocess.io import from_sitk, to_sitk
    from tfuad.preprocess.registration import resample

    array = np.asarray(array)
    if array.ndim != 3 or len(tuple(native_shape)) != 3:
        raise ArrayError(f"need a 3D array and a 3D grid, got shapes {array.shape} and {tuple(native_shape)}")
    is_mask = array.dtype == bool
    source = array.astype(np.float32) if interpolation == "linear" or is_mask else array
    moving = to_sitk(source, template_affine)
    reference = to_sitk(np.zeros(tuple(int(n) for n in native_shape), np.uint8), native_affine)
    out, _ = from_sitk(resample(moving, reference, transform, interpolation=interpolation))
    if is_mask:
        return out > 0.5
    return out.astype(np.float32) if interpolation == "linear" else out
