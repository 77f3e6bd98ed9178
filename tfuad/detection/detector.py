"""Whole volumes in, anomaly maps out: one object per trained run and method.

Methods:

* ``residual``  |x − x̂| of the model's reconstruction (Baur et al. 2018);
* ``map-tv``    |y − x̂| of the MAP-TV restoration under the model's ELBO
  (Chen et al. 2020), λ from calibration;
* ``intensity`` the normalised intensity itself: the non-learned reference that
  thresholds hyperintense FLAIR/T2 voxels.

Every map is computed on slices, mapped back to the input's voxel grid and
post-processed in 3D (median filter, eroded brain mask) by the same function
at calibration, detection and evaluation time.

Example:
    >>> det = Detector("runs/svae", method="residual")                 # doctest: +SKIP
    >>> result = det.run(det.prepare("sub-01_flair.nii.gz"))            # doctest: +SKIP
    >>> mask = det.segment(result.map, det.threshold(fpr=0.05))         # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from tfuad.detection.restoration import calibrated_schedule, get_schedule
from tfuad.errors import ConfigError
from tfuad.training.run import RunDir

__all__ = ["Detector", "DetectionResult", "METHODS"]

METHODS = ("residual", "map-tv", "intensity")


@dataclass
class DetectionResult:
    """Outputs for one volume.

    Attributes:
        map: Post-processed anomaly map on the input's grid (canonical order).
        raw_map: The map before post-processing (on the input's grid).
        slice_maps: ``(Z, S, S, 1)`` maps in model space.
        restored: ``(Z, S, S, 1)`` reconstruction or restoration in model space (``None`` for intensity).
        seconds: Wall time of the model part (slices → maps).
    """

    map: np.ndarray
    raw_map: np.ndarray
    slice_maps: np.ndarray
    restored: np.ndarray | None
    seconds: float


class Detector:
    """Anomaly maps from a trained run.

    Args:
        run_dir: A run directory written by ``tfuad train``.
        method: One of :data:`METHODS`.
        batch_size: Slices per forward pass (default 32) or per restoration batch (default: a whole
            volume where memory allows, see :class:`~tfuad.detection.restoration.Restorer`).
        schedule: MAP-TV schedule (``paper``, ``fast``, or a schedule object); default: the
            one ``map-tv`` was calibrated with, else ``paper``.
        max_steps: Step limit of the MAP-TV schedule; default: the schedule's own.
        lam: MAP-TV weight λ; default: the calibrated value.
        postprocess: A :class:`~tfuad.postprocessing.filters.PostprocessConfig` (default: the one the
            method was calibrated with, else the paper's).
    """

    def __init__(self, run_dir, method: str = "residual", *, batch_size: int | None = None, schedule=None,
                 max_steps: int | None = None, lam: float | None = None, postprocess=None):
        from tfuad.postprocessing.filters import PostprocessConfig

        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
        self.run = RunDir(run_dir)
        self.config = self.run.config()
        self.method = method
        self.batch_size = None if batch_size is None else int(batch_size)
        self._schedule_request = (schedule, max_steps)
        get_schedule(schedule or "paper", max_steps)  # fail early on a bad name or step limit
        self.pconfig = self.run.preprocess_config()
        self.stats = self.run.intensity_stats()
        stored = self._stored("postprocess")
        self.postprocess = postprocess or (PostprocessConfig.from_dict(stored) if stored else PostprocessConfig())
        self.model = None if method == "intensity" else self.run.load_model()
        self._lam = lam
        self._restorer = None

    # -- calibration ---------------------------------------------------------------------------
    def calibration_path(self, method: str | None = None):
        return self.run.path / f"calibration-{method or self.method}.json"

    def _stored(self, *keys, method: str | None = None):
        """``calibration[keys[0]][keys[1]]…`` of an existing calibration (of ``method``), or ``None``."""
        import json

        path = self.calibration_path(method)
        value = json.loads(path.read_text()) if path.is_file() else None
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def calibration(self):
        """The stored :class:`~tfuad.postprocessing.thresholds.Calibration` of this method."""
        from tfuad.postprocessing.thresholds import Calibration

        path = self.calibration_path()
        if not path.is_file():
            raise ConfigError(f"{self.run.path}: not calibrated for method {self.method!r}; "
                              f"run: tfuad calibrate {self.run.path} --data DATASET --method {self.method}")
        calibration = Calibration.from_json(path)
        if calibration.postprocess and calibration.postprocess != self.postprocess.to_dict():
            raise ConfigError(f"{path}: calibrated with post-processing {calibration.postprocess}, "
                              f"but detection uses {self.postprocess.to_dict()}; calibrate again")
        if self.method == "map-tv":
            calibrated_schedule(*self._schedule_request, calibration.extra.get("schedule"), source=path)
        return calibration

    @property
    def schedule(self):
        """The MAP-TV schedule: as requested, else the calibrated one, else ``paper``."""
        requested, max_steps = self._schedule_request
        if requested is None:
            requested = self._stored("extra", "schedule", method="map-tv")
        return get_schedule(requested or "paper", max_steps)

    def threshold(self, *, fpr: float | None = None, percentile: float | None = None) -> float:
        """A calibrated threshold: an FPR limit (e.g. 0.05) or the percentile (98)."""
        return float(self.calibration().threshold_for(fpr=fpr, percentile=percentile))

    @property
    def lam(self) -> float:
        """MAP-TV weight: given, or the calibrated one."""
        if self._lam is None:
            self._lam = float(self.calibration().extra["lambda"])
        return self._lam

    # -- maps ----------------------------------------------------------------------------------
    def prepare(self, image_path, *, brain_mask_path=None, lesion_mask_path=None):
        """Load and preprocess a volume exactly as the model's training data."""
        from tfuad.data.preprocessing import prepare_volume

        return prepare_volume(image_path, self.pconfig, brain_mask_path=brain_mask_path,
                              lesion_mask_path=lesion_mask_path, stats=self.stats)

    def restorer(self, lam: float | None = None):
        """The MAP-TV :class:`~tfuad.detection.restoration.Restorer` (compiled once, reused)."""
        from tfuad.detection.restoration import Restorer

        lam = self.lam if lam is None else float(lam)
        if self._restorer is None:
            self._restorer = Restorer(self.model, lam=lam, schedule=self.schedule, batch_size=self.batch_size)
        self._restorer.lam = lam
        return self._restorer

    def slice_maps(self, slices, brain=None, *, lam: float | None = None):
        """Maps of ``(N, S, S, 1)`` slices in model space: ``(maps, restored)``."""
        slices = np.asarray(slices, np.float32)
        if self.method == "intensity":
            maps = slices - self.pconfig.background_value
            return maps, None
        if self.method == "residual":
            from tfuad.detection.residual import residual_maps

            return residual_maps(self.model, slices, self.batch_size or 32)
        restored = self.restorer(lam).restore(slices, mask=brain)
        return np.abs(slices - restored), restored

    def run_volume(self, prepared, *, lam: float | None = None) -> DetectionResult:
        """Anomaly map of one :class:`~tfuad.data.preprocessing.PreparedVolume`."""
        from tfuad.postprocessing.filters import postprocess_map

        start = time.perf_counter()
        maps, restored = self.slice_maps(prepared.slices, prepared.brain, lam=lam)
        maps = np.where(prepared.brain, maps, 0.0).astype(np.float32)
        seconds = time.perf_counter() - start
        raw = prepared.to_volume(maps[..., 0]).astype(np.float32)
        final = postprocess_map(raw, prepared.brain_mask, self.postprocess).astype(np.float32)
        return DetectionResult(map=final, raw_map=raw, slice_maps=maps, restored=restored, seconds=seconds)

    def segment(self, volume_map, threshold: float):
        """Binary lesion mask: threshold, then drop small 3D components."""
        from tfuad.postprocessing.filters import segment

        return segment(volume_map, threshold, self.postprocess)
