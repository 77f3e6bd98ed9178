"""``tfuad detect --raw``: a raw scan preprocessed as the run's training data were, scored, and mapped home.

The run's ``config.json["raw_preprocess"]`` (:mod:`tfuad.preprocess.native`) says
which steps and settings its training data had. Each raw scan is put through
them in a hidden scratch folder inside ``OUT`` (removed afterwards, or by the
next run after a kill), scored on the template grid exactly as a preprocessed
volume is, and its anomaly map (linear interpolation) and lesion mask
(thresholded on the template grid, then nearest neighbour) are resampled onto
the scan's own grid through the inverse of its registration. The outputs keep
the scan's affine and header. With ``template_space`` the template-grid map,
mask, preprocessed image and brain mask are written beside them.

Example:
    >>> raw = raw_setup(detector, template_space=True)                       # doctest: +SKIP
    >>> scored = score_raw_scan(detector, item, threshold, raw, out_dir)     # doctest: +SKIP
    >>> extra = scored.write(staged_folder, names)                           # doctest: +SKIP
"""
from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfuad.errors import ConfigError

__all__ = ["RawSetup", "RawScored", "raw_setup", "score_raw_scan", "template_names"]


@dataclass(frozen=True)
class RawSetup:
    """What ``--raw`` needs from the run.

    Attributes:
        record: The run's ``config.json["raw_preprocess"]``.
        source: The run's ``config.json`` (named in errors).
        template_space: Also write the template-grid outputs.
    """

    record: dict
    source: str
    template_space: bool = False

    @property
    def space(self) -> str:
        """Where the set's files lie (``detection.json["space"]``): ``native`` or ``native+template``."""
        return "native+template" if self.template_space else "native"


def raw_setup(detector, *, template_space: bool = False) -> RawSetup:
    """The run's recorded raw-scan preprocessing, checked before any scan is read.

    Raises:
        ConfigError: the run records none (trained before tfuad recorded it, or on data not made
            by ``tfuad preprocess``), in one line saying so and what to do instead.
    """
    from tfuad.preprocess.native import RUN_KEY, options_from_record

    source = str(detector.run.config_path)
    record = detector.config.get(RUN_KEY)
    if not record:
        raise ConfigError(f"{source}: records no raw-scan preprocessing ({RUN_KEY!r}: the run was trained before "
                          "tfuad recorded it, or on data not made by tfuad preprocess); preprocess the scan as the "
                          "training data were (tfuad preprocess) and detect on the result without --raw")
    options_from_record(record, source=source)  # refuse a broken record before any work
    return RawSetup(record, source, bool(template_space))


def template_names(names: dict) -> dict:
    """File names of the template-space outputs, derived from the native set's names.

    Example:
        >>> template_names({"anomaly": "s_anomaly.nii.gz", "lesions": "s_lesions.nii.gz"})["anomaly"]
        's_anomaly_template.nii.gz'
    """
    def beside(name: str, word: str | None = None) -> str:
        stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name
        return f"{stem.replace('anomaly', word) if word else stem}_template.nii.gz"

    return {"anomaly_template": beside(names["anomaly"]), "lesions_template": beside(names["lesions"]),
            "image_template": beside(names["anomaly"], "preprocessed"),
            "brain_mask_template": beside(names["anomaly"], "brainmask")}


@dataclass
class RawScored:
    """A raw scan's detection on its own grid, with its template-grid counterpart.

    Attributes:
        volume: The raw scan (its grid, affine and header).
        result: The :class:`~tfuad.detection.detector.DetectionResult` with ``map`` on the scan's grid.
        lesions: The lesion mask on the scan's grid.
        template: The prepared template-grid volume (``PreparedVolume``).
        template_map, template_lesions: Map and mask on the template grid.
        record: The scan's preprocessing record (steps, settings, transform).
        template_space: Whether :meth:`write` adds the template-grid files.
    """

    volume: object
    result: object
    lesions: np.ndarray
    template: object
    template_map: np.ndarray
    template_lesions: np.ndarray
    record: dict
    template_space: bool = False

    def write(self, folder: Path, names: dict) -> dict:
        """Write the template-grid files (when asked) into ``folder``; the entries for ``detection.json``."""
        from tfuad.data.nifti import save_like

        outputs = {}
        if self.template_space:
            files = template_names(names)
            save_like(self.template_map, self.template.volume, folder / files["anomaly_template"])
            save_like(self.template_lesions, self.template.volume, folder / files["lesions_template"])
            save_like(self.template.volume.data, self.template.volume, folder / files["image_template"])
            save_like(self.template.brain_mask, self.template.volume, folder / files["brain_mask_template"])
            outputs = files
        steps = [s.get("name") for s in self.record.get("steps", [])]
        return {"space": "native+template" if self.template_space else "native",
                "preprocess": {"steps": steps, "record": self.record,
                               "template_grid": {"shape": list(self.template.volume.shape),
                                                 "affine": np.round(self.template.volume.affine, 6).tolist()},
                               "interpolation": {"anomaly": "linear", "lesions": "nearest"}},
                "template_outputs": outputs}


def score_raw_scan(detector, item, threshold: float, raw: RawSetup, out: Path) -> RawScored:
    """Preprocess, score and map one raw scan home (nothing is written outside ``out``'s scratch folder).

    Args:
        detector: The :class:`~tfuad.detection.detector.Detector`.
        item: The :class:`~tfuad.workflows.detect.DetectionInput` (its brain mask, if any, is the scan's own).
        threshold: The calibrated threshold.
        raw: From :func:`raw_setup`.
        out: The output folder (holds the scratch folder while the scan is preprocessed).

    Raises:
        DataError: the scan cannot be read, or a preprocessing step failed on it
            (:class:`~tfuad.errors.PreprocessStepError`, naming the step); one line naming the scan.
    """
    from tfuad.data.nifti import load_volume
    from tfuad.detection.detector import DetectionResult
    from tfuad.preprocess.native import native_transform, preprocess_scan, subject_outputs, to_native

    volume = load_volume(item.image)  # one-line errors for unreadable files before any work
    scratch = Path(out) / f".{item.subject}.tfuad-{uuid.uuid4().hex[:8]}.prep"
    try:
        record = preprocess_scan(item.image, item.subject, raw.record, scratch, brain_mask=item.brain_mask,
                                 source=raw.source)
        files = subject_outputs(scratch, item.subject, raw.record["options"].get("modality", "t1"))
        prepared = detector.prepare(files["image"], brain_mask_path=files["brain_mask"])
        result = detector.run_volume(prepared)
        lesions = detector.segment(result.map, threshold)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    transform = native_transform(record)
    grid = (prepared.volume.affine, volume.shape, volume.affine, transform)
    native_map = to_native(result.map, *grid, interpolation="linear")
    native_lesions = to_native(np.asarray(lesions, bool), *grid, interpolation="nearest")
    native = DetectionResult(map=native_map, raw_map=to_native(result.raw_map, *grid, interpolation="linear"),
                             slice_maps=result.slice_maps, restored=result.restored, seconds=result.seconds)
    return RawScored(volume, native, native_lesions, prepared, result.map, np.asarray(lesions, bool), record,
                     raw.template_space)
