"""Volumes in, anomaly maps and lesion masks out, as NIfTI files beside an overview figure.

Every subject's outputs form one set in a folder of its own::

    OUT/<subject>/<subject>_anomaly.nii.gz    continuous map (input's affine and header)
    OUT/<subject>/<subject>_lesions.nii.gz    binary mask at the calibrated threshold
    OUT/<subject>/<subject>_overview.png      slices with the largest detections
    OUT/<subject>/detection.json              what made them: run, method, threshold, input

The set is written into a hidden folder beside its final place and renamed into
place in one step, so a killed or concurrent run never leaves files of
different runs side by side. An existing set written by ``tfuad detect`` is
replaced; any other existing folder is refused unless ``force`` is given (its
other files are then kept). Subject ids become folder names only after
validation, two inputs with one id are refused, and nothing is written
outside ``OUT``.

Example:
    >>> detect_to_files("runs/svae", ["sub-01_flair.nii.gz"], "detections")   # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from tfuad.detection.detector import Detector
from tfuad.errors import ConfigError, DatasetError
from tfuad.files import check_name, ensure_writable_dir, write_json

__all__ = ["DetectionInput", "detection_inputs", "detect_to_files", "RECORD_NAME"]

#: The record that marks a folder as a detection set written by tfuad.
RECORD_NAME = "detection.json"
#: Brain masks from non-zero voxels covering more of the image than this get a warning.
FULL_MASK_FRACTION = 0.9


@dataclass(frozen=True)
class DetectionInput:
    """One volume to score.

    Attributes:
        subject: Subject id (the output folder's name).
        image: The image file.
        brain_mask: Its brain mask file, or ``None`` (non-zero voxels).
    """

    subject: str
    image: Path
    brain_mask: Path | None = None


def detection_inputs(paths, modality: str, *, brain_mask=None) -> list[DetectionInput]:
    """The volumes to score from NIfTI files and dataset folders or manifests.

    A file's subject id is its name without extension; a dataset subject keeps its id.

    Raises:
        ConfigError: ``brain_mask`` with more than one input, an id that is no safe folder
            name, or two inputs with one id.
    """
    from tfuad.data.layouts import discover
    from tfuad.data.nifti import nifti_stem

    items = []
    for path in paths:
        if Path(path).is_dir() or str(path).endswith(".csv"):
            items += [DetectionInput(s.id, Path(s.image(modality)), s.brain_mask and Path(s.brain_mask))
                      for s in discover(path).subjects]
        else:
            items.append(DetectionInput(nifti_stem(path), Path(path)))
    if brain_mask is not None:
        if len(items) != 1:
            raise ConfigError("--brain-mask goes with a single input file")
        items = [DetectionInput(items[0].subject, items[0].image, Path(brain_mask))]
    seen = {}
    for item in items:
        check_name(item.subject, "subject id", item.image)
        if item.subject in seen:
            raise ConfigError(f"{item.image}: subject id {item.subject!r} is also the id of {seen[item.subject]}; "
                              "outputs are named by subject id, so each input needs its own")
        seen[item.subject] = item.image
    return items


def _claim(folder: Path, force: bool) -> None:
    """Refuse to replace a folder tfuad detect did not write (unless forced)."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ConfigError(f"{folder}: exists and is not a folder; choose another --out")
    if folder.is_dir() and not (folder / RECORD_NAME).is_file() and not force:
        raise ConfigError(f"{folder}: exists and was not written by tfuad detect; choose another --out "
                          "or pass --force to add the outputs to it")


def clean_stale(out: Path) -> None:
    """Remove hidden folders left by killed runs (``.<subject>.*.tmp`` / ``.old``)."""
    for entry in out.glob(".*.tfuad-*"):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _publish(staged: Path, folder: Path) -> None:
    """Put a staged set in place: one rename, or a swap with the older set."""
    if not folder.exists():
        with contextlib.suppress(FileNotFoundError, OSError):
            os.rename(staged, folder)
            return
    if folder.is_dir() and (folder / RECORD_NAME).is_file():
        old = folder.parent / f".{folder.name}.tfuad-{uuid.uuid4().hex[:8]}.old"
        os.rename(folder, old)
        os.rename(staged, folder)
        shutil.rmtree(old, ignore_errors=True)
        return
    for item in staged.iterdir():  # --force into a folder tfuad did not write: other files stay
        os.replace(item, folder / item.name)
    staged.rmdir()


def _warn_about(prepared, item: DetectionInput, detector: Detector, log) -> None:
    if item.brain_mask is None:
        fraction = float(prepared.brain_mask.mean())
        if fraction > FULL_MASK_FRACTION:
            log(f"warning: {item.image}: the brain mask from its non-zero voxels covers {fraction:.0%} of the image "
                "(a background that is not zero, e.g. scl_inter ≠ 0?); pass --brain-mask or skull-strip the scan")
    trained = detector.config.get("data", {}).get("voxel_size")
    if trained:
        import numpy as np

        ratio = np.asarray(prepared.volume.zooms[:3], float) / np.asarray(trained[:3], float)
        if np.any(np.abs(np.log(ratio)) > np.log(1.25)):
            log(f"warning: {item.image}: voxel size {tuple(round(z, 2) for z in prepared.volume.zooms[:3])} mm "
                f"differs from the training data's {tuple(trained[:3])} mm; resample it (tfuad preprocess)")


def _write_set(detector: Detector, item: DetectionInput, threshold: float, out: Path, force: bool, log) -> dict:
    from tfuad.data.nifti import save_like
    from tfuad.reports.figures import plot_detection_overview

    folder = out / item.subject
    _claim(folder, force)
    prepared = detector.prepare(item.image, brain_mask_path=item.brain_mask)
    _warn_about(prepared, item, detector, log)
    result = detector.run_volume(prepared)
    lesions = detector.segment(result.map, threshold)
    staged = out / f".{item.subject}.tfuad-{uuid.uuid4().hex[:8]}.tmp"
    staged.mkdir()
    try:
        save_like(result.map, prepared.volume, staged / f"{item.subject}_anomaly.nii.gz")
        save_like(lesions, prepared.volume, staged / f"{item.subject}_lesions.nii.gz")
        plot_detection_overview(prepared.volume.data, result.map, lesions, staged / f"{item.subject}_overview.png",
                                title=f"{item.subject}: {detector.name}, threshold {threshold:.3g}")
        record = {"subject": item.subject, "input": os.fspath(Path(item.image).resolve()),
                  "brain_mask": item.brain_mask and os.fspath(Path(item.brain_mask).resolve()),
                  "run": os.fspath(detector.run.path.resolve()), "method": detector.method.describe(),
                  "threshold": threshold, "lesion_voxels": int(lesions.sum()), "seconds": result.seconds}
        write_json(record, staged / RECORD_NAME)
        _publish(staged, folder)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return record


def detect_to_files(run_dir, inputs, out_dir, *, method: str = "residual", fpr: float | None = None,
                    percentile: float | None = None, modality: str | None = None, brain_mask=None,
                    force: bool = False, batch_size: int | None = None, log=print, **options) -> list[dict]:
    """Score volumes with a calibrated run and write each subject's output set into ``out_dir``.

    Args:
        run_dir: Trained and calibrated run directory.
        inputs: NIfTI files, dataset folders or manifests.
        out_dir: Output folder (created; inputs are never modified).
        method: Scoring method name.
        fpr: Calibrated FPR limit of the threshold (default 0.05 when no percentile is given).
        percentile: Use the calibrated percentile threshold instead.
        modality: Image to read from dataset folders (default and only choice: the model's).
        brain_mask: Brain mask of a single input file.
        force: Add outputs to existing folders that tfuad did not write.
        batch_size: Slices per batch.
        log: Receives one line per volume.
        **options: Method options (MAP-TV: ``schedule``, ``max_steps``), checked against the calibration.

    Returns:
        The per-subject records (also written as ``detection.json``).
    """
    if fpr is not None and percentile is not None:
        raise ConfigError("choose one of --fpr and --percentile")
    detector = Detector(run_dir, method, batch_size=batch_size, **options)
    trained = detector.config["data"]["modality"]
    if modality and modality.lower() != trained:
        raise ConfigError(f"{detector.run.path}: model was trained on {trained!r} images, not {modality!r}")
    threshold = detector.threshold(fpr=0.05 if fpr is None and percentile is None else fpr, percentile=percentile)
    items = detection_inputs(inputs, trained, brain_mask=brain_mask)
    if not items:
        raise DatasetError(inputs[0] if inputs else ".", "no volume to score")
    out = ensure_writable_dir(out_dir)
    clean_stale(out)
    return _write_all(detector, items, threshold, out, force, log)


def _write_all(detector: Detector, items, threshold: float, out: Path, force: bool, log) -> list[dict]:
    from tqdm.auto import tqdm

    for item in items:  # refuse before any work
        _claim(out / item.subject, force)
    records = []
    for item in tqdm(items, desc="volumes", unit="volume", disable=len(items) < 2):
        record = _write_set(detector, item, threshold, out, force, log)
        log(f"{item.image}: {record['lesion_voxels']} lesion voxels, {record['seconds']:.2f} s "
            f"-> {out / item.subject}")
        records.append(record)
    return records
