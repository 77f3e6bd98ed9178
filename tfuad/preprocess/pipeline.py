"""Raw scans to model-ready volumes: the steps, their record, and a fault-tolerant parallel batch.

Steps, in this order, each optional (:data:`STEPS`):

``reorient``     hold the volume in canonical RAS+ voxel order (outputs not resampled to the
                 template are then written in that order, otherwise in the file's own);
``bias``         N4 bias-field correction (:mod:`tfuad.preprocess.bias`);
``denoise``      curvature-flow denoising (:mod:`tfuad.preprocess.denoise`);
``register``     rigid + affine registration to the template (:mod:`tfuad.preprocess.registration`);
``resample``     onto the template grid (1 or 2 mm), through the registration when there is one;
``extract``      atlas-based brain extraction (:mod:`tfuad.preprocess.brain_extraction`); without it
                 the brain mask is the subject's own mask file or its non-zero voxels (skull-stripped
                 input);
``standardize``  Nyúl–Udupa histogram standardisation (:mod:`tfuad.data.standardize`), learned from
                 this batch (``fit``) or read from a saved reference (``apply``);
``normalize``    final scaling of brain intensities to ``[0, 1]``-like values, background 0.

Lesion and brain masks follow the same spatial transforms with nearest-neighbour
interpolation. Output folder::

    manifest.csv                   subject, <modality>, brain_mask, lesion_mask, split, healthy, qc
    qc.csv                         every registered subject's QC scores and pass/fail
    standardizer.json              with standardisation
    <subject>/<subject>_<modality>.nii.gz, <subject>_brainmask.nii.gz, <subject>_seg.nii.gz
    <subject>/preprocess.json      every step, its parameters, the transform, versions, timings
    qc/<subject>.png, qc_montage.png

Subjects run in two phases, each over a process pool: :func:`run_spatial_steps`
(:func:`load_subject`, :func:`correct_intensities`, :func:`register_to_template`,
:func:`resample_to_template`, :func:`extract_brain`), then, once a standardiser is
fitted on the whole batch, :func:`run_intensity_steps`. A step that fails on a
scan raises :class:`~tfuad.errors.PreprocessStepError`, whose ``step`` names it; the
subject is reported on one line and left out, and the others finish.

Every registered subject gets an automatic quality score once on the template
grid (:func:`tfuad.preprocess.qc.registration_qc`): a subject that fails it is
still written, but marked ``fail`` in the manifest's ``qc`` column (which
:func:`tfuad.data.layouts.discover`, and so training, leaves out unless asked),
in ``qc.csv`` and by a red frame in the montage, and listed in
:attr:`BatchResult.qc_failed`.

Example:
    >>> options = PreprocessOptions(modality="t1", standardize="fit")          # doctest: +SKIP
    >>> result = run_batch(jobs_from_inputs(["ixi_t1"], "t1"), "prep", options)  # doctest: +SKIP
    >>> result.failed                                                          # doctest: +SKIP
    {}
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import multiprocessing
import os
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tfuad.data.nifti import nifti_stem
from tfuad.errors import ArrayError, ConfigError, DataError, DatasetError, PreprocessStepError
from tfuad.files import atomic_path, check_name, read_json, write_json

__all__ = ["STEPS", "DEFAULT_STEPS", "NORMALIZE_MODES", "PreprocessOptions", "Job", "BatchResult",
           "jobs_from_inputs", "run_batch", "parse_steps", "run_spatial_steps", "run_intensity_steps",
           "load_subject", "correct_intensities", "register_to_template", "resample_to_template", "extract_brain"]

#: Every step, in the order they run.
STEPS = ("reorient", "bias", "denoise", "register", "resample", "extract", "standardize", "normalize")
#: Steps run unless ``--steps`` says otherwise (``standardize`` runs when a standardiser is fitted or given).
DEFAULT_STEPS = ("reorient", "bias", "denoise", "register", "resample", "extract", "normalize")
#: ``unit``: standardised scale (or per-volume 0.5/99.5 percentiles) mapped to [0, 1], floor 0;
#: ``none``: intensities kept (background still 0).
NORMALIZE_MODES = ("unit", "none")


def parse_steps(text) -> tuple:
    """Steps from a comma-separated list (or ``all``), in pipeline order.

    Example:
        >>> parse_steps("resample,register")
        ('register', 'resample')
    """
    names = [s.strip().lower() for s in str(text).split(",") if s.strip()]
    if names == ["all"]:
        return STEPS
    unknown = [n for n in names if n not in STEPS]
    if unknown or not names:
        raise ConfigError(f"unknown step(s) {', '.join(unknown) or '(none given)'}; choose from: {', '.join(STEPS)}")
    return tuple(s for s in STEPS if s in names)


@dataclass
class PreprocessOptions:
    """Settings of one preprocessing run (stored in every subject's record).

    Args:
        modality: Modality to read from dataset folders and to name outputs.
        steps: Steps to run (see :data:`STEPS`).
        template: Template name.
        resolution: Template grid (mm): 1 or 2.
        registration: ``"rigid"`` or ``"affine"``.
        standardize: ``None``, ``"fit"`` (learn from this batch) or ``"apply"``.
        standardizer: Path of the saved standardiser for ``"apply"``.
        normalize: One of :data:`NORMALIZE_MODES`.
        denoise_iterations: Curvature-flow iterations.
        n4_shrink: Shrink factor of the N4 estimation.
        sampling: Fraction of voxels sampled by the registration metric.
        split: Split written for every subject (default: the input's).
        calib: This many subjects (evenly spread over the sorted ids) get split ``calib``.
        seed: Registration sampling seed.
        refine_mask: Refine the carried-over template brain mask on the
            subject's intensities (:func:`~tfuad.preprocess.brain_extraction.refine_brain_mask`).
            Off by default: on the demo data the carried mask alone matches the
            known brain mask better (Dice 0.905 against 0.890).
    """

    modality: str = "t1"
    steps: tuple = DEFAULT_STEPS
    template: str = "mni152"
    resolution: int = 2
    registration: str = "affine"
    standardize: str | None = None
    standardizer: str | None = None
    normalize: str = "unit"
    denoise_iterations: int = 3
    n4_shrink: int = 2
    sampling: float = 0.1
    split: str | None = None
    calib: int = 0
    seed: int = 0
    refine_mask: bool = False

    def __post_init__(self):
        self.steps = parse_steps(",".join(self.steps)) if self.steps else ()
        if self.standardize not in (None, "fit", "apply"):
            raise ConfigError(f"standardize must be None, 'fit' or 'apply', got {self.standardize!r}")
        if self.standardize == "apply" and not self.standardizer:
            raise ConfigError("applying a histogram standardisation needs a standardizer.json "
                              "(--standardize-reference)")
        if self.standardize and "standardize" not in self.steps:
            self.steps = parse_steps(",".join((*self.steps, "standardize")))
        if "standardize" in self.steps and not self.standardize:
            raise ConfigError("the standardize step needs --standardize-fit or --standardize-reference FILE")
        if "extract" in self.steps and "register" not in self.steps:
            raise ConfigError("brain extraction (extract) needs the register step")
        if self.normalize not in NORMALIZE_MODES:
            raise ConfigError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {self.normalize!r}")
        if self.split is not None and self.split not in ("train", "calib", "test"):
            raise ConfigError(f"split must be train, calib or test, got {self.split!r}")
        if int(self.calib) < 0:
            raise ConfigError(f"calib must be >= 0, got {self.calib!r}")


@dataclass
class Job:
    """One subject to preprocess: its files and what the manifest says about it.

    ``source`` is the manifest or folder the subject was listed in (named in errors).
    """

    subject: str
    image: str
    brain_mask: str | None = None
    lesion_mask: str | None = None
    split: str | None = None
    healthy: bool | None = None
    source: str | None = None


@dataclass
class BatchResult:
    """Outcome of :func:`run_batch`.

    Attributes:
        done: Subject -> its record (``preprocess.json`` content).
        failed: Subject -> the one-line error.
        manifest: Path of the written ``manifest.csv`` (None when nothing succeeded, or for a shard:
            ``tfuad merge`` writes the cohort's).
        seconds: Wall time of the batch.
        skipped: Subjects already finished by an earlier run with the same settings (their records are
            in ``done`` too).
        shard_record: Path of the shard's record (``shards/shard-K-of-N.json``), or None.
        qc_failed: Subject -> one line of its registration QC, for the subjects that failed it.
    """

    done: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)
    manifest: Path | None = None
    seconds: float = 0.0
    skipped: list = field(default_factory=list)
    shard_record: Path | None = None
    qc_failed: dict = field(default_factory=dict)


def jobs_from_inputs(inputs, modality: str, *, derivatives: str | None = None) -> list:
    """Jobs from NIfTI files, DICOM series folders and dataset folders / manifests.

    Dataset folders and manifests are read by :func:`tfuad.data.layouts.discover`.

    Args:
        inputs: The files and folders.
        modality: The image to read from dataset folders.
        derivatives: Read a BIDS dataset's lesion and brain masks only from ``derivatives/<derivatives>``
            (default: every pipeline but tfuad's own outputs).

    Raises:
        DatasetError: a subject id appears twice.
    """
    from tfuad.data.dicom import is_dicom_folder
    from tfuad.data.layouts import discover

    jobs = []
    for path in inputs:
        if (Path(path).is_dir() and not is_dicom_folder(path)) or str(path).lower().endswith(".csv"):
            for s in discover(path, derivatives=derivatives).subjects:
                image = s.images.get(modality)
                jobs.append(Job(s.id, os.fspath(image) if image else "", _fs(s.brain_mask), _fs(s.lesion_mask),
                                s.split, bool(s.healthy) if s.healthy else None, _fs(s.source or path)))
        else:
            jobs.append(Job(nifti_stem(path), os.fspath(path), source=os.fspath(path)))
    seen = set()
    for job in jobs:
        if job.subject in seen:
            raise DatasetError(job.image, f"subject id {job.subject!r} given twice")
        seen.add(job.subject)
    return jobs


def _fs(path):
    return None if path is None else os.fspath(path)


# --------------------------------------------------------------------------- phase 1: spatial steps

#: What the failure of each step means for the scan (the start of its error message).
_STEP_FAILURES = {"bias": "N4 bias-field correction failed", "denoise": "denoising failed",
                  "register": "cannot be registered to the template",
                  "resample": "cannot be resampled onto the template grid", "extract": "brain extraction failed",
                  "standardize": "histogram standardisation failed", "normalize": "intensity normalisation failed"}


@contextlib.contextmanager
def _step(name: str, path):
    """Run one step's work; a failure that names no file becomes a :class:`~tfuad.errors.PreprocessStepError`.

    SimpleITK's errors (``RuntimeError``) and array errors are turned into one line naming the
    scan (``path``) and the step (``name``).
    """
    try:
        yield
    except RuntimeError as err:  # SimpleITK, e.g. no overlap with the template during registration
        text = re.split(r"ERROR: \S+\(0x[0-9a-fA-F]+\): ", " ".join(str(err).split()))[-1]
        raise PreprocessStepError(path, name, f"{_STEP_FAILURES[name]} (SimpleITK: {text[:200]})") from err
    except (ArrayError, DataError) as err:
        if isinstance(err, DataError) and err.path:  # names its file already
            raise
        raise PreprocessStepError(path, name, f"{_STEP_FAILURES[name]} ({err})") from err


def _versions() -> dict:
    import SimpleITK as sitk

    import tfuad

    return {"tfuad": tfuad.__version__, "SimpleITK": sitk.Version_VersionString(), "numpy": np.__version__,
            "python": platform.python_version()}


def _out_paths(out_dir: Path, subject: str, modality: str) -> dict:
    folder = out_dir / subject
    return {"image": folder / f"{subject}_{modality}.nii.gz", "brain_mask": folder / f"{subject}_brainmask.nii.gz",
            "lesion_mask": folder / f"{subject}_seg.nii.gz", "record": folder / "preprocess.json",
            "qc": out_dir / "qc" / f"{subject}.png"}


def run_spatial_steps(job: Job, options: PreprocessOptions, out_dir: Path) -> dict:
    """Phase 1 of one subject: load, bias, denoise, register, resample, extract; writes the image and masks.

    Args:
        job: The subject.
        options: The run's settings (which steps run, and how).
        out_dir: The output folder (the subject's files go to ``out_dir/<subject>/``).

    Returns:
        The subject's record so far: inputs, steps with their settings and the transform, QC scores,
        output file names (:func:`run_intensity_steps` completes and writes it).

    Raises:
        DataError: the image or a mask cannot be read or does not fit the image.
        PreprocessStepError: a step failed on the scan (its ``step`` names it).
    """
    from tfuad.preprocess.io import to_sitk
    from tfuad.preprocess.template import load_template

    start = time.perf_counter()
    volume, brain, lesion, record = load_subject(job, options)
    image = correct_intensities(job, to_sitk(volume.data, volume.affine), brain, volume.affine, options, record)
    template = load_template(options.resolution, options.template)
    transform = register_to_template(job, image, template, options, record)
    data, brain, lesion, write_affine = resample_to_template(job, image, brain, lesion, volume.affine, template,
                                                             transform, options, record)
    brain = extract_brain(job, data, brain, image, template, transform, options, record)
    record["qc"] = _registration_qc(data, brain, template, job, options, record)
    record["outputs"] = _write_spatial(out_dir, job, options, volume, data, brain, lesion, write_affine)
    record["seconds_spatial"] = round(time.perf_counter() - start, 3)
    return record


def load_subject(job: Job, options: PreprocessOptions) -> tuple:
    """Read a subject's image (``reorient``: in canonical RAS+ voxel order) and masks, and start its record.

    Returns:
        ``(volume, brain, lesion, record)``: the :class:`~tfuad.data.nifti.Volume`, the brain mask
        (the subject's file, else its non-zero voxels; ``None`` when ``extract`` will make it), the
        lesion mask or ``None``, and the record.

    Raises:
        DataError: no image, an unreadable file, a mask that does not fit the image, or an image
            with no non-zero voxel to use as brain mask.
    """
    from tfuad.data.nifti import load_mask, load_volume
    from tfuad.data.preprocessing import brain_mask_from_image

    if not job.image:
        raise DataError(job.subject, f"no {options.modality} image")
    volume = load_volume(job.image)
    record = {"subject": job.subject, "versions": _versions(), "options": asdict(options),
              "inputs": {"image": job.image, "brain_mask": job.brain_mask, "lesion_mask": job.lesion_mask},
              "input_geometry": {"shape": list(volume.native_shape),
                                 "affine": np.round(volume.native_affine, 6).tolist()},
              "steps": []}
    if "reorient" in options.steps:
        record["steps"].append({"name": "reorient", "to": "RAS+ (canonical voxel order)"})
    brain = lesion = None
    if job.brain_mask:
        brain = load_mask(job.brain_mask, volume, what="brain mask")
    elif "extract" not in options.steps:
        brain = brain_mask_from_image(volume.data)
        if not brain.any():
            raise DataError(job.image, "image has no non-zero voxel to use as brain mask")
    if job.lesion_mask:
        lesion = load_mask(job.lesion_mask, volume, what="lesion mask", require_nonempty=False)
    return volume, brain, lesion, record


def correct_intensities(job: Job, image, brain, affine, options: PreprocessOptions, record: dict):
    """Steps ``bias`` (N4 bias-field correction) and ``denoise`` (curvature flow), as the options ask.

    Args:
        job: The subject (named in errors).
        image: Its image (SimpleITK).
        brain: Its brain mask (array on the image's grid), or ``None``: N4 then estimates over the
            whole image.
        affine: The image's voxel-to-world affine (places the mask).
        options: The run's settings.
        record: The subject's record; each step run is appended to its ``steps``.

    Returns:
        The corrected image (SimpleITK).

    Raises:
        PreprocessStepError: a step failed (``step`` is ``bias`` or ``denoise``).
    """
    from tfuad.preprocess import bias, denoise
    from tfuad.preprocess.io import to_sitk

    if "bias" in options.steps:
        with _step("bias", job.image):
            image, info = bias.n4_correct(image, None if brain is None else to_sitk(brain, affine),
                                          shrink=options.n4_shrink)
        record["steps"].append({"name": "bias", **info})
    if "denoise" in options.steps:
        with _step("denoise", job.image):
            image, info = denoise.curvature_flow(image, iterations=options.denoise_iterations)
        record["steps"].append({"name": "denoise", **info})
    return image


def _whole_head(job: Job, options: PreprocessOptions) -> bool:
    """Whether the subject is a whole-head scan: its brain mask comes from the template (``extract``)."""
    return "extract" in options.steps and not job.brain_mask


def register_to_template(job: Job, image, template, options: PreprocessOptions, record: dict):
    """Step ``register``: rigid or affine registration of the image to the template.

    A whole-head scan (its brain mask to come from the template) is registered also without its
    scalp, and the better result kept (:func:`tfuad.preprocess.registration.register`).

    Args:
        job: The subject (named in errors; whether it is a whole head).
        image: Its image (SimpleITK).
        template: The :class:`~tfuad.preprocess.template.Template`.
        options: The run's settings.
        record: The subject's record; the step, its metric and transform are appended to its ``steps``.

    Returns:
        The transform taking template points to the image's (SimpleITK), or ``None`` without the step.

    Raises:
        PreprocessStepError: the registration failed (e.g. the image and the template do not overlap).
    """
    from tfuad.preprocess import registration
    from tfuad.preprocess.io import to_sitk

    if "register" not in options.steps:
        return None
    with _step("register", job.image):
        transform, info = registration.register(image, to_sitk(template.image, template.affine),
                                                to_sitk(template.mask, template.affine), kind=options.registration,
                                                sampling=options.sampling, seed=options.seed,
                                                scalp_mm=registration.SCALP_MM if _whole_head(job, options) else 0.0)
    info["transform"] = registration.transform_record(transform)
    record["steps"].append({"name": "register", "template": f"{template.name} {template.resolution} mm", **info})
    return transform


def resample_to_template(job: Job, image, brain, lesion, affine, template, transform, options: PreprocessOptions,
                         record: dict) -> tuple:
    """Step ``resample``: the image (linear) and its masks (nearest neighbour) onto the template grid.

    Through the registration when there is one, else through world coordinates. Without the step
    everything stays on the image's own grid.

    Args:
        job: The subject (named in errors).
        image: Its image (SimpleITK).
        brain, lesion: Its masks (arrays on the image's grid), or ``None``.
        affine: The image's voxel-to-world affine.
        template: The :class:`~tfuad.preprocess.template.Template`.
        transform: From :func:`register_to_template`, or ``None``.
        options: The run's settings.
        record: The subject's record; the step and the grid are appended to its ``steps``.

    Returns:
        ``(data, brain, lesion, affine)``: the image array, the masks and the grid's affine.

    Raises:
        PreprocessStepError: the resampling failed.
    """
    from tfuad.preprocess import registration
    from tfuad.preprocess.io import from_sitk, to_sitk

    if "resample" not in options.steps:
        return from_sitk(image)[0], brain, lesion, affine
    t0 = time.perf_counter()
    with _step("resample", job.image):
        grid = to_sitk(template.image, template.affine)
        image = registration.resample(image, grid, transform, interpolation="linear")
        masks = [None if m is None else registration.resample(to_sitk(m, affine), grid, transform,
                                                               interpolation="nearest") for m in (brain, lesion)]
    brain, lesion = (None if m is None else from_sitk(m)[0] > 0 for m in masks)
    record["steps"].append({"name": "resample", "grid": f"{template.name} {template.resolution} mm",
                            "shape": list(template.shape), "affine": template.affine.tolist(),
                            "through": "registration" if transform is not None else "world coordinates",
                            "image": "linear", "masks": "nearest",
                            "seconds": round(time.perf_counter() - t0, 3)})
    return from_sitk(image)[0], brain, lesion, template.affine


def extract_brain(job: Job, data, brain, image, template, transform, options: PreprocessOptions,
                  record: dict):
    """Step ``extract``: the brain mask, the subject's own or the template's carried over (and optionally refined).

    Args:
        job: The subject (named in errors).
        data: The image array on its current grid (the template's after ``resample``).
        brain: The subject's brain mask on that grid, or ``None`` (then the template's is carried over).
        image: The image (SimpleITK) on its own grid (the mask is carried there without ``resample``).
        template: The :class:`~tfuad.preprocess.template.Template`.
        transform: From :func:`register_to_template`.
        options: The run's settings.
        record: The subject's record; the step is appended to its ``steps``.

    Returns:
        The brain mask (bool array on ``data``'s grid).

    Raises:
        PreprocessStepError: the extraction failed or found no brain (``step`` ``extract``), or the
            subject's own mask is empty once resampled (``step`` ``resample``).
    """
    from tfuad.preprocess import brain_extraction, registration
    from tfuad.preprocess.io import from_sitk, to_sitk

    if "extract" in options.steps and brain is None:
        t0 = time.perf_counter()
        with _step("extract", job.image):
            if "resample" in options.steps:
                prior = template.mask
            else:
                carried = registration.resample(to_sitk(template.mask, template.affine), image,
                                                transform.GetInverse(), interpolation="nearest")
                prior = from_sitk(carried)[0] > 0
            brain = brain_extraction.refine_brain_mask(data, prior) if options.refine_mask else np.asarray(prior, bool)
        if not brain.any():
            raise PreprocessStepError(job.image, "extract", "brain extraction found no brain")
        record["steps"].append({"name": "extract", "method": "atlas (template brain mask carried over)"
                                + (", refined" if options.refine_mask else ""),
                                "voxels": int(brain.sum()), "seconds": round(time.perf_counter() - t0, 3)})
    elif "extract" in options.steps:
        record["steps"].append({"name": "extract", "method": "kept the subject's brain mask file"})
    if not brain.any():
        raise PreprocessStepError(job.image, "resample", "brain mask is empty after resampling")
    return brain


def _registration_qc(data, brain, template, job: Job, options: PreprocessOptions, record: dict) -> dict | None:
    """The registration's QC scores on the template grid (None without registration and resampling).

    The head-agreement scores apply when the brain mask is the template's carried over onto a scan the
    registration found to be a whole head (it then also registered it without the scalp).
    """
    from tfuad.preprocess.qc import registration_qc

    if "register" not in options.steps or "resample" not in options.steps:
        return None
    step = next((s for s in record["steps"] if s.get("name") == "register"), {})
    whole_head = _whole_head(job, options) and float(step.get("scalp_mm") or 0.0) > 0
    return registration_qc(data, brain, template.image, template.mask, whole_head=whole_head,
                           voxel_mm=float(template.resolution))


def _write_spatial(out_dir: Path, job: Job, options: PreprocessOptions, volume, data, brain, lesion,
                   write_affine) -> dict:
    """Write the image and masks (on the new grid, or with the input's geometry); their file names."""
    from tfuad.data.nifti import save_like, save_volume

    paths = _out_paths(out_dir, job.subject, options.modality)
    regridded = "resample" in options.steps or "reorient" in options.steps

    def write(array, key, dtype):
        if regridded:
            save_volume(array, write_affine, paths[key], dtype=dtype)
        else:
            save_like(array, volume, paths[key], dtype=dtype)

    write(data.astype(np.float32), "image", np.float32)
    write(brain, "brain_mask", np.uint8)
    outputs = {"image": paths["image"].name, "brain_mask": paths["brain_mask"].name}
    if lesion is not None:
        write(lesion, "lesion_mask", np.uint8)
        outputs["lesion_mask"] = paths["lesion_mask"].name
    return outputs


# --------------------------------------------------------------------------- phase 2: intensity steps


def run_intensity_steps(record: dict, options: PreprocessOptions, out_dir: Path,
                        standardizer_dict: dict | None) -> dict:
    """Phase 2 of one subject: steps ``standardize`` and ``normalize``; writes the image, its QC figure and record.

    Args:
        record: The subject's record from :func:`run_spatial_steps` (its files are in ``out_dir``).
        options: The run's settings.
        out_dir: The output folder.
        standardizer_dict: The landmarks of the histogram standardisation
            (:meth:`~tfuad.data.standardize.HistogramStandardizer.to_dict`), or ``None`` without it.

    Returns:
        The completed record (also written as ``preprocess.json``).

    Raises:
        PreprocessStepError: a step failed (e.g. ``normalize`` on a brain of constant intensity).
    """
    from tfuad.data.nifti import load_mask, load_volume, save_volume
    from tfuad.data.preprocessing import PreprocessConfig, normalize_intensity
    from tfuad.data.standardize import HistogramStandardizer
    from tfuad.preprocess.qc import plot_subject_qc

    start = time.perf_counter()
    paths = _out_paths(out_dir, record["subject"], options.modality)
    volume = load_volume(paths["image"])
    brain = load_mask(paths["brain_mask"], volume, what="brain mask")
    data = volume.data.astype(np.float64)
    scale = None
    source = record["inputs"]["image"]
    if "standardize" in options.steps:
        standardizer = HistogramStandardizer.from_dict(standardizer_dict)
        with _step("standardize", source):
            data = standardizer.apply(data, brain)
        scale = (standardizer.standard[0], standardizer.standard[-1])
        record["steps"].append({"name": "standardize", "mode": options.standardize, **standardizer.to_dict(),
                                "reference": options.standardizer if options.standardize == "apply"
                                else "standardizer.json (fitted on this batch)"})
    if "normalize" in options.steps and options.normalize == "unit":
        if scale is not None:
            data = np.maximum((data - scale[0]) / (scale[1] - scale[0]), 0.0)
            how = "standard landmarks (first, last) -> (0, 1), floor 0"
        else:
            config = PreprocessConfig(percentiles=(0.5, 99.5))
            with _step("normalize", source):
                data = normalize_intensity(data, brain, config)
            how = "per-volume brain percentiles (0.5, 99.5) -> (0, 1), clipped"
        record["steps"].append({"name": "normalize", "mode": "unit", "how": how, "background": 0.0})
    data = np.where(brain, data, 0.0).astype(np.float32)
    save_volume(volume.to_native(data), volume.native_affine, paths["image"])
    lesion = None
    if "lesion_mask" in record["outputs"]:
        lesion = load_mask(paths["lesion_mask"], volume, what="lesion mask", require_nonempty=False)
    failed_qc = record.get("qc") is not None and not record["qc"]["pass"]
    plot_subject_qc(data, brain, paths["qc"], lesion=lesion, failed=failed_qc,
                    title=record["subject"] + (" (registration QC: fail)" if failed_qc else ""))
    record["outputs"]["qc"] = os.path.relpath(paths["qc"], paths["record"].parent)
    record["seconds_intensity"] = round(time.perf_counter() - start, 3)
    record["seconds"] = round(record["seconds_spatial"] + record["seconds_intensity"], 3)
    write_json(record, paths["record"])
    return record


# --------------------------------------------------------------------------- batch


def _error_line(job: Job, err: BaseException) -> str:
    if isinstance(err, DataError) and err.path:
        text = str(err)
    else:
        text = f"{job.image or job.subject}: {type(err).__name__}: {err}"
    return f"subject {job.subject}: " + " ".join(text.split())


def _init_worker(threads: int) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, int(threads)))


def _guarded(fn, job: Job, args: tuple) -> tuple:
    """``(True, fn(*args))``, or ``(False, error line)``: errors cross process boundaries as text."""
    try:
        return True, fn(*args)
    except Exception as err:  # one bad subject must not stop the batch
        return False, _error_line(job, err)


def _map(fn, items: list, jobs: int, desc: str, on_error, progress: bool) -> dict:
    """Run ``fn(*args)`` for each ``(job, args)``; returns subject -> result, reporting failures."""
    from tqdm.auto import tqdm

    results = {}
    bar = tqdm(total=len(items), desc=desc, unit="subject", disable=None if progress else True,  # terminals only
               dynamic_ncols=True)

    def collect(job, outcome):
        ok, value = outcome
        if ok:
            results[job.subject] = value
        else:
            on_error(job.subject, value, bar)
        bar.update()

    if jobs <= 1:
        for job, args in items:
            collect(job, _guarded(fn, job, args))
    else:
        context = multiprocessing.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with cf.ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                                    initargs=(threads,)) as pool:
            futures = {pool.submit(_guarded, fn, job, args): job for job, args in items}
            for future in cf.as_completed(futures):
                job = futures[future]
                try:
                    outcome = future.result()
                except Exception as err:  # the worker process itself died
                    outcome = False, _error_line(job, err)
                collect(job, outcome)
    bar.close()
    return results


def _assign_splits(jobs: list, options: PreprocessOptions) -> dict:
    splits = {j.subject: options.split or j.split for j in jobs}
    ids = sorted(splits)
    if options.calib:
        if options.calib >= len(ids):
            raise ConfigError(f"--calib {options.calib} leaves no other subject (batch of {len(ids)})")
        picks = np.linspace(0, len(ids) - 1, options.calib + 2)[1:-1].round().astype(int)
        for i in picks:
            splits[ids[i]] = "calib"
    return splits


def _write_manifest(out_dir: Path, records: dict, jobs: dict, splits: dict, modality: str) -> Path:
    from tfuad.data.layouts import MANIFEST_NAME
    from tfuad.preprocess.qc import qc_word

    columns = ["subject", modality, "brain_mask", "lesion_mask", "split", "healthy", "qc"]
    rows = []
    for subject in sorted(records):
        out = records[subject]["outputs"]
        job = jobs[subject]
        rows.append({"subject": subject, modality: f"{subject}/{out['image']}",
                     "brain_mask": f"{subject}/{out['brain_mask']}",
                     "lesion_mask": f"{subject}/{out['lesion_mask']}" if "lesion_mask" in out else "",
                     "split": splits.get(subject) or "",
                     "healthy": "" if job.healthy is None else ("1" if job.healthy else "0"),
                     "qc": qc_word(records[subject].get("qc"))})
    path = out_dir / MANIFEST_NAME
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return path


def _write_qc_table(out_dir: Path, records: dict) -> Path | None:
    """``qc.csv``: each registered subject's QC scores, thresholds and pass/fail (None without any)."""
    from tfuad.preprocess.qc import QC_THRESHOLDS, qc_word

    rows = []
    for subject in sorted(records):
        qc = records[subject].get("qc")
        if qc is not None:
            rows.append({"subject": subject, "qc": qc_word(qc),
                         **{k: "" if qc.get(k) is None else qc[k] for k in QC_THRESHOLDS},
                         "failed": " ".join(qc["failed"]),
                         "thresholds": " ".join(f"{k}={v}" for k, v in qc["thresholds"].items()),
                         "seconds": records[subject].get("seconds", "")})
    if not rows:
        return None
    path = out_dir / "qc.csv"
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return path


def _fit_standardizer(out_dir: Path, records: dict, options: PreprocessOptions) -> dict:
    from tfuad.data.nifti import load_mask, load_volume
    from tfuad.data.standardize import HistogramStandardizer

    voxels = []
    for subject in sorted(records):
        paths = _out_paths(out_dir, subject, options.modality)
        volume = load_volume(paths["image"])
        voxels.append(volume.data[load_mask(paths["brain_mask"], volume, what="brain mask")])
    standardizer = HistogramStandardizer.fit(voxels)
    standardizer.save(out_dir / "standardizer.json")
    return standardizer.to_dict()


def _valid_jobs(jobs: list, result: BatchResult, log) -> list:
    """Jobs whose subject id can name output files; the others are failures of the batch, reported on one line."""
    valid = []
    for job in jobs:
        try:
            check_name(job.subject, "subject id", job.source or job.image or None)
        except DataError as err:
            result.failed[job.subject] = line = _error_line(job, err)
            log(line)
            continue
        valid.append(job)
    return valid


#: Options that name the cohort's splits, not a subject's processing: a change does not redo a finished subject.
_SPLIT_OPTIONS = ("split", "calib")


def _finished(out_dir: Path, job: Job, options: PreprocessOptions) -> dict | None:
    """The record of a subject an earlier run finished with these settings and this input, or None."""
    import json

    path = _out_paths(out_dir, job.subject, options.modality)["record"]
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except ConfigError:
        return None
    wanted = {k: v for k, v in json.loads(json.dumps(asdict(options), default=str)).items() if k not in _SPLIT_OPTIONS}
    done = {k: v for k, v in (record.get("options") or {}).items() if k not in _SPLIT_OPTIONS}
    inputs = {"image": job.image, "brain_mask": job.brain_mask, "lesion_mask": job.lesion_mask}
    if done != wanted or record.get("inputs") != inputs:
        return None
    folder = path.parent
    if not all((folder / name).is_file() for key, name in record.get("outputs", {}).items() if key != "qc"):
        return None
    return record


def _note_split(records: dict, jobs: dict, splits: dict, out_dir: Path, options: PreprocessOptions) -> None:
    """Keep each subject's split and health in its record (``tfuad merge`` reads them back)."""
    for subject, record in records.items():
        split = splits.get(subject) or None
        healthy = jobs[subject].healthy
        if record.get("split", "missing") != split or record.get("healthy", "missing") != healthy:
            record["split"], record["healthy"] = split, healthy
            path = _out_paths(out_dir, subject, options.modality)["record"]
            if path.is_file():
                write_json(record, path)


def _write_shard_record(out_dir: Path, shard: tuple, cohort: list, jobs: list, result: BatchResult,
                        options: PreprocessOptions) -> Path:
    from tfuad.data.shards import shard_label

    path = out_dir / "shards" / f"{shard_label(*shard)}.json"
    write_json({"command": "preprocess", "shard": list(shard), "cohort": len(cohort),
                "subjects": sorted(j.subject for j in jobs), "done": sorted(result.done),
                "skipped": sorted(result.skipped), "failed": dict(sorted(result.failed.items())),
                "modality": options.modality, "seconds": result.seconds}, path)
    return path


def run_batch(jobs: list, out_dir, options: PreprocessOptions, *, workers: int = 1, progress: bool = True,
              log=print, shard: tuple | None = None) -> BatchResult:
    """Preprocess subjects, each failure isolated; writes the outputs, manifest and QC montage.

    A subject whose ``preprocess.json`` shows it finished with the same settings and input is
    not redone (its record joins the manifest), except under ``standardize="fit"``, whose
    standardiser is learned from every subject of the batch.

    With ``shard=(K, N)`` only shard K of N of the cohort ``jobs`` is run
    (:mod:`tfuad.data.shards`; splits and ``calib`` picks are still chosen over the whole
    cohort); the manifest and montage are left to ``tfuad merge``, and the shard's record goes
    to ``OUT/shards/shard-K-of-N.json``. Shards may share one ``out_dir``.

    Args:
        jobs: From :func:`jobs_from_inputs`: the whole cohort.
        out_dir: Output folder (created; never one holding an input).
        options: The run's settings.
        workers: Processes working in parallel.
        progress: Show a progress bar.
        log: Called with each error line and the summary.
        shard: ``(K, N)``: run shard K (from 0) of N.

    Returns:
        A :class:`BatchResult`.

    Raises:
        ConfigError: bad options, or every subject failed before a standardiser could be fitted, or
            a shard asked to fit a standardiser (a fit must see the whole cohort).
    """
    from tfuad.preprocess.qc import plot_montage, qc_summary

    if shard is not None and options.standardize == "fit":
        raise ConfigError("--standardize-fit learns from the whole batch and cannot run in shards: fit it on the "
                          "training subjects in one run, then give the shards --standardize-reference "
                          "OUT/standardizer.json")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = BatchResult()
    cohort = jobs
    if shard is not None:
        from tfuad.data.shards import shard_items

        splits = _assign_splits(_valid_jobs(cohort, BatchResult(), lambda line: None), options)
        jobs = _valid_jobs(shard_items(cohort, *shard), result, log)
    else:
        jobs = _valid_jobs(jobs, result, log)
        splits = _assign_splits(jobs, options)
    by_id = {j.subject: j for j in jobs}
    finished = {} if options.standardize == "fit" else {
        j.subject: record for j in jobs if (record := _finished(out_dir, j, options)) is not None}
    result.skipped = sorted(finished)
    if finished:
        log(f"{len(finished)} subject(s) already finished with these settings, not redone: "
            f"{', '.join(sorted(finished)[:5])}{' ...' if len(finished) > 5 else ''}")
    todo = [j for j in jobs if j.subject not in finished]
    standardizer = None
    if options.standardize == "apply":
        from tfuad.data.standardize import HistogramStandardizer

        standardizer = HistogramStandardizer.load(options.standardizer).to_dict()

    def on_error(subject, line, bar):
        result.failed[subject] = line
        bar.write(line) if progress else log(line)

    records = _map(run_spatial_steps, [(j, (j, options, out_dir)) for j in todo], workers, "spatial steps",
                   on_error, progress)
    if records and options.standardize == "fit":
        standardizer = _fit_standardizer(out_dir, records, options)
    for subject, record in records.items():
        record["split"], record["healthy"] = splits.get(subject) or None, by_id[subject].healthy
    records = _map(run_intensity_steps,
                   [(by_id[s], (r, options, out_dir, standardizer)) for s, r in sorted(records.items())],
                   workers, "intensity + QC", on_error, progress)
    _note_split(finished, by_id, splits, out_dir, options)
    records = dict(sorted({**records, **finished}.items()))
    result.done = records
    result.qc_failed = {s: qc_summary(r["qc"]) for s, r in records.items() if r.get("qc") and not r["qc"]["pass"]}
    if records and shard is None:
        result.manifest = _write_manifest(out_dir, records, by_id, splits, options.modality)
        _write_qc_table(out_dir, records)
        plot_montage([(s, _out_paths(out_dir, s, options.modality)) for s in sorted(records)],
                     out_dir / "qc_montage.png", failed=set(result.qc_failed))
    result.seconds = round(time.perf_counter() - start, 3)
    if shard is not None:
        result.shard_record = _write_shard_record(out_dir, shard, cohort, jobs, result, options)
    return result


def read_record(subject_dir) -> dict:
    """The ``preprocess.json`` record of one output subject folder."""
    return read_json(Path(subject_dir) / "preprocess.json")
