"""Whole volumes in, anomaly maps out: one object per trained run and scoring method.

The scoring method (:mod:`tfuad.detection.methods`) turns slices into maps;
the detector prepares a volume exactly as the model's training data, maps
the slice maps back to the input's voxel grid and post-processes them in 3D
(median filter, eroded brain mask) with the same function at calibration,
detection and evaluation time, and reads the method's calibration.

Example:
    >>> det = Detector("runs/svae", "residual")                         # doctest: +SKIP
    >>> result = det.run_volume(det.prepare("sub-01_flair.nii.gz"))     # doctest: +SKIP
    >>> mask = det.segment(result.map, det.threshold(fpr=0.05))         # doctest: +SKIP
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

import numpy as np

from tfuad.detection.methods import METHOD_NAMES, get_method
from tfuad.errors import ConfigError
from tfuad.training.run import RunDir

__all__ = ["Detector", "DetectionResult", "METHODS"]

#: The scoring method names (see :mod:`tfuad.detection.methods`).
METHODS = METHOD_NAMES


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


def _method_options(cls, options: dict) -> dict:
    """The options the method's constructor takes; ``None`` values mean "the default"."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "model", "background", "batch_size"}
    return {k: v for k, v in options.items() if v is not None and k in accepted}


class Detector:
    """Anomaly maps from a trained run.

    Args:
        run_dir: A run directory written by ``tfuad train``.
        method: A scoring method name (:data:`METHODS`).
        batch_size: Slices per forward pass or restoration batch (default: the method's).
        postprocess: A :class:`~tfuad.postprocessing.filters.PostprocessConfig` (default: the one the
            method was calibrated with, else the paper's).
        calibrated: Use the method's calibration: its file is read once, here, and checked and
            applied when its settings or thresholds are first needed. Set False while calibrating:
            the settings then come from the calibration in progress, and none is read.
        **options: Options of the method's constructor, e.g. MAP-TV's ``schedule``, ``max_steps``,
            ``lam``, ``lambdas``; options another method takes, and ``None`` values, are ignored.
    """

    def __init__(self, run_dir, method: str = "residual", *, batch_size: int | None = None, postprocess=None,
                 calibrated: bool = True, **options):
        from tfuad.postprocessing.filters import PostprocessConfig

        cls = get_method(method)
        self.run = RunDir(run_dir)
        self.config = self.run.config()
        self.pconfig = self.run.preprocess_config()
        self.stats = self.run.intensity_stats()
        self._calibration = None
        self._stored = self._read_stored(method) if calibrated else None
        stored = self._stored.postprocess if self._stored is not None else None
        self.postprocess = postprocess or (PostprocessConfig.from_dict(stored) if stored else PostprocessConfig())
        model = None if cls.needs is None else self.run.load_model()
        self.method = cls(model, background=self.pconfig.background_value, batch_size=batch_size,
                          **_method_options(cls, options))

    @property
    def name(self) -> str:
        """The scoring method's name."""
        return self.method.name

    @property
    def model(self):
        """The trained model (``None`` for methods that need none)."""
        return self.method.model

    @property
    def calibration_path(self):
        """The method's calibration file in the run."""
        return self.run.calibration_path(self.name)

    def _read_stored(self, method: str):
        """The method's calibration as stored (not yet checked), or ``None`` when the run has none."""
        from tfuad.postprocessing.thresholds import Calibration

        path = self.run.calibration_path(method)
        return Calibration.from_json(path) if path.is_file() else None

    # -- calibration ---------------------------------------------------------------------------
    def calibration(self):
        """The stored :class:`~tfuad.postprocessing.thresholds.Calibration`, checked and applied once.

        Raises:
            ConfigError: the run is not calibrated for the method, or was calibrated with other
                post-processing, other method settings, or other weights than it has now.
        """
        if self._calibration is None:
            self._calibration = self._checked_calibration()
        return self._calibration

    def _recalibrate_hint(self) -> str:
        return f"run: tfuad calibrate {self.run.path} --data DATASET --method {self.name}"

    def _checked_calibration(self):
        path = self.calibration_path
        calibration = self._stored
        if calibration is None:
            raise ConfigError(f"{self.run.path}: not calibrated for method {self.name!r}; {self._recalibrate_hint()}")
        if calibration.postprocess and calibration.postprocess != self.postprocess.to_dict():
            raise ConfigError(f"{path}: calibrated with post-processing {calibration.postprocess}, "
                              f"but detection uses {self.postprocess.to_dict()}; calibrate again")
        why = None if self.model is None else self.run.weights_mismatch(calibration.weights)
        if why is not None:
            raise ConfigError(f"{path}: {why} (the model has changed since, e.g. trained further); "
                              f"{self._recalibrate_hint()}")
        self.method.configure(calibration.extra, source=path)
        return calibration

    def threshold(self, *, fpr: float | None = None, percentile: float | None = None) -> float:
        """A calibrated threshold: an FPR limit (e.g. 0.05) or the percentile (98)."""
        return float(self.calibration().threshold_for(fpr=fpr, percentile=percentile))

    # -- maps ----------------------------------------------------------------------------------
    def prepare(self, image_path, *, brain_mask_path=None, lesion_mask_path=None):
        """Load and preprocess a volume exactly as the model's training data."""
        from tfuad.data.preprocessing import prepare_volume

        return prepare_volume(image_path, self.pconfig, brain_mask_path=brain_mask_path,
                              lesion_mask_path=lesion_mask_path, stats=self.stats)

    def _configured(self):
        """The method, with its calibrated settings (e.g. λ, the schedule) applied once they are read."""
        if self._stored is not None and self._calibration is None:
            self.calibration()
        return self.method

    def slice_maps(self, slices, brain=None):
        """Maps of ``(N, S, S, 1)`` slices in model space: ``(maps, estimate)``."""
        return self._configured().slice_maps(np.asarray(slices, np.float32), brain)

    def estimate_key(self):
        """Key of the healthy estimate this detector makes (the run and the method's key), or ``None``."""
        key = self._configured().estimate_key()  # the calibrated settings (λ, schedule) are part of it
        return None if key is None else (str(self.run.path.resolve()), key)

    def run_volume(self, prepared, shared: dict | None = None) -> DetectionResult:
        """Anomaly map of one :class:`~tfuad.data.preprocessing.PreparedVolume`.

        Args:
            prepared: The volume, prepared by :meth:`prepare`.
            shared: Optional dict kept by the caller for this one volume: a healthy estimate X̂ made
                by another detector with the same :meth:`estimate_key` (the same run and method up to
                the polarity, e.g. ``map-tv`` and ``map-tv-positive``) is reused from it instead of
                computed again, and this detector's is put there. ``seconds`` is then the time
                the shared estimate and its map took, what the method costs alone.
        """
        from tfuad.postprocessing.filters import postprocess_map

        start = time.perf_counter()
        key = None if shared is None else self.estimate_key()
        if key is not None and key in shared:
            restored, made_in = shared[key]
            maps = self.method.deviation(np.asarray(prepared.slices, np.float32), restored)
        else:
            maps, restored = self.slice_maps(prepared.slices, prepared.brain)
            made_in = None
        maps = np.where(prepared.brain, maps, 0.0).astype(np.float32)
        seconds = time.perf_counter() - start if made_in is None else made_in
        if key is not None and made_in is None and restored is not None:
            shared[key] = (restored, seconds)
        raw = prepared.to_volume(maps[..., 0]).astype(np.float32)
        final = postprocess_map(raw, prepared.brain_mask, self.postprocess).astype(np.float32)
        return DetectionResult(map=final, raw_map=raw, slice_maps=maps, restored=restored, seconds=seconds)

    def segment(self, volume_map, threshold: float):
        """Binary lesion mask: threshold, then drop small 3D components."""
        from tfuad.postprocessing.filters import segment

        return segment(volume_map, threshold, self.postprocess)
