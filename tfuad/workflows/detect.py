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
from tfuad.errors import ConfigError, DatasetError, TfuadError
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


def detection_inputs(paths, modality: str, *, brain_mask=None, derivatives: str | None = None) -> list[DetectionInput]:
    """The volumes to score from NIfTI files and dataset folders or manifests.

    A file's subject id is its name without extension (a DICOM series folder: the folder's name); a
    dataset subject keeps its id.

    Args:
        paths: NIfTI files, DICOM series folders, dataset folders or manifests.
        modality: The image to read from dataset folders.
        brain_mask: The brain mask of a single input file.
        derivatives: Read a BIDS dataset's brain masks only from ``derivatives/<derivatives>``
            (:func:`tfuad.data.layouts.discover`).

    Raises:
        ConfigError: ``brain_mask`` with more than one input, an id that is no safe folder
            name, or two inputs with one id.
    """
    from tfuad.data.dicom import is_dicom_folder
    from tfuad.data.layouts import discover
    from tfuad.data.nifti import nifti_stem

    items = []
    for path in paths:
        if (Path(path).is_dir() and not is_dicom_folder(path)) or str(path).endswith(".csv"):
            items += [DetectionInput(s.id, Path(s.image(modality)), s.brain_mask and Path(s.brain_mask))
                      for s in discover(path, derivatives=derivatives).subjects]
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


def _set_layout(item: DetectionInput, modality: str, bids: bool) -> tuple[Path, dict]:
    """``(folder relative to OUT, file names)`` of a subject's set: ``<subject>/`` or a BIDS derivatives folder."""
    if not bids:
        return Path(item.subject), {"anomaly": f"{item.subject}_anomaly.nii.gz",
                                    "lesions": f"{item.subject}_lesions.nii.gz",
                                    "overview": f"{item.subject}_overview.png"}
    from tfuad.data.bids import derivative_names, derivative_prefix, modality_suffix

    folder, prefix = derivative_prefix(item.subject, item.image)
    return folder, derivative_names(prefix, modality_suffix(modality))


#: Record entries that must match for a finished set to stand on a rerun.
_SAME_SET = ("input", "brain_mask", "run", "method", "threshold", "space")


def _finished(folder: Path, record: dict) -> dict | None:
    """The record of the set in ``folder``; ``None`` unless whole and for the same input, run, method, threshold."""
    import json

    try:
        done = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict):
        return None
    names = done.get("outputs") or {}
    whole = bool(names) and all((folder / n).is_file() for n in names.values())
    return done if whole and all(done.get(k) == record[k] for k in _SAME_SET) else None


def _write_set(detector: Detector, item: DetectionInput, threshold: float, out: Path, force: bool, log,
               bids: bool = False, raw=None) -> dict:
    from tfuad.data.nifti import save_like
    from tfuad.reports.figures import plot_detection_overview

    relative, names = _set_layout(item, detector.config["data"]["modality"], bids)
    folder = out / relative
    _claim(folder, force)
    if raw is None:
        prepared = detector.prepare(item.image, brain_mask_path=item.brain_mask)
        _warn_about(prepared, item, detector, log)
        result = detector.run_volume(prepared)
        lesions = detector.segment(result.map, threshold)
    else:  # a raw scan: preprocessed as the run's data were, scored on the template grid, mapped home
        from tfuad.workflows.raw_scan import score_raw_scan

        prepared = score_raw_scan(detector, item, threshold, raw, out)
        result, lesions = prepared.result, prepared.lesions
        qc = prepared.record.get("qc")
        if qc is not None and not qc["pass"]:  # still scored: a large lesion can lower the similarity too
            from tfuad.preprocess.qc import qc_summary

            log(f"warning: {item.image}: the registration to the template failed quality control "
                f"({qc_summary(qc)}); check the overlay before trusting its map")
    staged = out / f".{item.subject}.tfuad-{uuid.uuid4().hex[:8]}.tmp"
    staged.mkdir()
    try:
        save_like(result.map, prepared.volume, staged / names["anomaly"])
        save_like(lesions, prepared.volume, staged / names["lesions"])
        plot_detection_overview(prepared.volume.data, result.map, lesions, staged / names["overview"],
                                title=f"{item.subject}: {detector.name}, threshold {threshold:.3g}")
        record = {"subject": item.subject, "input": os.fspath(Path(item.image).resolve()),
                  "brain_mask": item.brain_mask and os.fspath(Path(item.brain_mask).resolve()),
                  "run": os.fspath(detector.run.path.resolve()), "method": detector.method.describe(),
                  "threshold": threshold, "lesion_voxels": int(lesions.sum()), "seconds": result.seconds,
                  "outputs": dict(names)}
        if raw is not None:  # how the scan was brought home, and the template-grid files on request
            record.update(prepared.write(staged, names))
            record["outputs"].update(record["template_outputs"])
        if bids:
            _bids_sidecars(staged, names, record)
        write_json(record, staged / RECORD_NAME)
        folder.parent.mkdir(parents=True, exist_ok=True)
        _publish(staged, folder)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return record


def _bids_sidecars(staged: Path, names: dict, record: dict) -> None:
    from tfuad.data.bids import sidecar

    source = {"Sources": [record["input"]], "SkullStripped": False}
    sidecar(staged / names["anomaly"], {**source, "Description": f"anomaly map of tfuad ({record['method']})",
                                        "Run": record["run"]})
    sidecar(staged / names["lesions"], {**source, "Type": "Lesion", "Threshold": record["threshold"],
                                        "Description": f"lesion mask: anomaly map above {record['threshold']:.6g}"})


def detect_to_files(run_dir, inputs, out_dir, *, method: str = "residual", fpr: float | None = None,
                    percentile: float | None = None, modality: str | None = None, brain_mask=None,
                    force: bool = False, batch_size: int | None = None, log=print, shard: tuple | None = None,
                    bids_derivatives: bool = False, raw: bool = False, template_space: bool = False,
                    derivatives: str | None = None, **options) -> list[dict]:
    """Score volumes with a calibrated run and write each subject's output set into ``out_dir``.

    A subject whose set an earlier run finished for the same input, run, method and threshold is
    not redone. With ``shard=(K, N)`` only shard K of N of the inputs' subjects is scored
    (:mod:`tfuad.data.shards`), and ``OUT/shards/shard-K-of-N.json`` records it: its subjects,
    those done, those finished before, and those that failed with their error lines (a rerun
    retries these; ``tfuad merge`` lists them). With
    ``bids_derivatives`` OUT is a BIDS derivatives dataset (:mod:`tfuad.data.bids`):
    ``dataset_description.json`` and ``OUT/sub-X/[ses-Y/]anat/`` sets.

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
        shard: ``(K, N)``: score shard K (from 0) of N.
        bids_derivatives: Write OUT as a BIDS derivatives dataset.
        raw: The inputs are raw scans: each is preprocessed as the run's training data were (the
            run's ``raw_preprocess`` record), scored on the template grid, and its map and mask are
            written on the scan's own grid (:mod:`tfuad.workflows.raw_scan`); a scan that fails is
            named on one line and the others finish.
        template_space: With ``raw``, also write the template-grid map, mask, image and brain mask.
        derivatives: Read the brain masks of BIDS inputs only from their ``derivatives/<derivatives>``
            (default: every pipeline but tfuad's own outputs).
        **options: Method options (MAP-TV: ``schedule``, ``max_steps``), checked against the calibration.

    Returns:
        The per-subject records (also written as ``detection.json``).

    Raises:
        DatasetError: some raw scans failed (after the others' sets and the shard record are written).
    """
    if fpr is not None and percentile is not None:
        raise ConfigError("choose one of --fpr and --percentile")
    detector = Detector(run_dir, method, batch_size=batch_size, **options)
    trained = detector.config["data"]["modality"]
    if modality and modality.lower() != trained:
        raise ConfigError(f"{detector.run.path}: model was trained on {trained!r} images, not {modality!r}")
    threshold = detector.threshold(fpr=0.05 if fpr is None and percentile is None else fpr, percentile=percentile)
    if template_space and not raw:
        raise ConfigError("--template-space goes with --raw (without it the inputs are on the template grid already)")
    if raw:
        from tfuad.workflows.raw_scan import raw_setup

        raw = raw_setup(detector, template_space=template_space)  # refuse a run without the record before work
    items = detection_inputs(inputs, trained, brain_mask=brain_mask, derivatives=derivatives)
    if not items:
        raise DatasetError(inputs[0] if inputs else ".", "no volume to score")
    cohort = len(items)
    if shard is not None:
        from tfuad.data.shards import shard_items

        items = shard_items(items, *shard)
    out = ensure_writable_dir(out_dir)
    clean_stale(out)
    if bids_derivatives:
        _check_bids_folders(items, trained)
        import tfuad
        from tfuad.data.bids import write_dataset_description

        write_dataset_description(out, name="tfuad anomaly maps and lesion masks", version=tfuad.__version__)
    records, skipped, failed = _write_all(detector, items, threshold, out, force, log, bids_derivatives, raw or None)
    if shard is not None:
        from tfuad.data.shards import shard_label

        write_json({"command": "detect", "shard": list(shard), "cohort": cohort,
                    "subjects": sorted(i.subject for i in items), "done": sorted(r["subject"] for r in records),
                    "skipped": sorted(skipped), "failed": dict(sorted(failed.items()))},
                   out / "shards" / f"{shard_label(*shard)}.json")
    if failed:
        raise DatasetError(out, f"{len(failed)} of {len(items)} scans failed (each named above: "
                                f"{', '.join(failed)}); the other sets were written")
    return records


def _check_bids_folders(items, modality: str) -> None:
    seen = {}
    for item in items:
        folder, _ = _set_layout(item, modality, True)
        if folder in seen:
            raise ConfigError(f"{item.image}: its BIDS derivatives folder {folder} is also that of {seen[folder]}; "
                              "give each session one input")
        seen[folder] = item.image


def _write_all(detector: Detector, items, threshold: float, out: Path, force: bool, log,
               bids: bool = False, raw=None) -> tuple[list[dict], list[str], dict]:
    """Write every item's set: ``(records, skipped, failed)``.

    ``records`` are the sets written or finished before, ``skipped`` the subjects of the latter,
    and ``failed`` maps each raw scan that failed (``raw``) to its error line; without ``raw`` the
    first failure is raised.
    """
    from tfuad.workflows.progress import progress

    modality = detector.config["data"]["modality"]
    for item in items:  # refuse before any work
        _claim(out / _set_layout(item, modality, bids)[0], force)
    records, skipped, failed = [], [], {}
    method = detector.method.describe()
    with progress(len(items), desc="volumes", unit="volume", log=log, disable=len(items) < 2) as (bar, say):
        for item in items:
            folder = out / _set_layout(item, modality, bids)[0]
            same = {"input": os.fspath(Path(item.image).resolve()), "run": os.fspath(detector.run.path.resolve()),
                    "brain_mask": item.brain_mask and os.fspath(Path(item.brain_mask).resolve()),
                    "method": method, "threshold": threshold, "space": raw and raw.space}
            done = _finished(folder, same)
            if done is not None:
                say(f"{item.image}: finished before with this run, method and threshold, not redone -> {folder}")
                records.append(done)
                skipped.append(item.subject)
            else:
                try:
                    record = _write_set(detector, item, threshold, out, force, say, bids, raw)
                except TfuadError as err:  # --raw batches: one bad scan does not stop the others
                    if raw is None:
                        raise
                    failed[item.subject] = line = f"subject {item.subject}: {err}"
                    say(line)
                else:
                    say(f"{item.image}: {record['lesion_voxels']} lesion voxels, {record['seconds']:.2f} s "
                        f"-> {folder}")
                    records.append(record)
            bar.update()
    return records, skipped, failed
