"""What a served model needs from a run: the method, its calibration and the restoration settings.

:func:`export_plan` reads and checks everything the serving graph bakes in
(the detection method configured from its calibration, the operating curves
of the slice-level and volume-level thresholds against the FPR, the
post-processing, the ``restore`` signature's λ and schedule); the SavedModel
itself is written by :mod:`tfuad.export.saved_model`.

Example:
    >>> plan = export_plan("runs/vae", method="map-tv", fpr=0.05)      # doctest: +SKIP
    >>> plan.threshold, plan.slice_curve.at(0.02)                      # doctest: +SKIP
    (0.41, 0.47)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tfuad.detection.detector import Detector
from tfuad.detection.methods import METHODS
from tfuad.errors import ConfigError

__all__ = ["EXPORT_METHODS", "ExportPlan", "OperatingCurve", "export_plan"]

#: Methods a SavedModel can serve: those computed from the model.
EXPORT_METHODS = tuple(name for name, cls in METHODS.items() if cls.needs is not None)


@dataclass(frozen=True)
class OperatingCurve:
    """Thresholds against FPR limits on healthy calibration voxels, for one kind of map.

    Attributes:
        fpr: FPR levels, strictly ascending (float32-distinct).
        threshold: The threshold of each level (non-increasing).
        default_fpr: The FPR limit used when a request names none.
        default_threshold: Its threshold.
        dense: True for the curve stored by ``tfuad calibrate`` (a few hundred levels), False when
            the calibration predates it and only the calibrated limits are known.
    """

    fpr: tuple
    threshold: tuple
    default_fpr: float
    default_threshold: float
    dense: bool

    @property
    def range(self) -> tuple:
        """``(lowest, highest)`` FPR limit a request may name."""
        return self.fpr[0], self.fpr[-1]

    def at(self, fpr: float) -> float:
        """The threshold at ``fpr``, interpolated linearly in log(FPR) as the serving graph does it.

        Computed in float32 levels and float64 arithmetic like the graph, so a
        limit equal to a level gives its threshold exactly.

        Raises:
            ConfigError: ``fpr`` outside :attr:`range`.
        """
        levels = np.asarray(self.fpr, np.float32)
        thresholds = np.asarray(self.threshold, np.float32)
        f = np.float32(fpr)
        if not levels[0] <= f <= levels[-1]:
            raise ConfigError(f"FPR {fpr:g} is outside the calibrated range [{self.fpr[0]:g}, {self.fpr[-1]:g}]")
        lo = min(int(np.searchsorted(levels, f, side="right")) - 1, len(levels) - 1)
        if f == levels[lo]:
            return float(thresholds[lo])
        w = (math.log(float(f)) - math.log(float(levels[lo]))) / (
            math.log(float(levels[lo + 1])) - math.log(float(levels[lo])))
        return float(np.float32(float(thresholds[lo]) + w * (float(thresholds[lo + 1]) - float(thresholds[lo]))))

    def to_dict(self) -> dict:
        """JSON-ready form (written into the model's contract and card)."""
        return {"fpr": list(self.fpr), "threshold": list(self.threshold), "default_fpr": self.default_fpr,
                "default_threshold": self.default_threshold, "dense": self.dense}


@dataclass
class ExportPlan:
    """A run's serving contents, read and checked.

    Attributes:
        detector: The detection signatures' detector, configured from its calibration.
        fpr: The default FPR limit (a calibrated one).
        slice_thresholds: ``{fpr key: threshold}`` for the raw slice maps.
        restoration: The MAP-TV method of the ``restore`` signature, or ``None``.
        slice_curve: :class:`OperatingCurve` of the raw slice maps.
        volume_curve: :class:`OperatingCurve` of the post-processed volume maps.
    """

    detector: Detector
    fpr: float
    slice_thresholds: dict
    restoration: object | None
    slice_curve: OperatingCurve | None = None
    volume_curve: OperatingCurve | None = None

    @property
    def threshold(self) -> float:
        """The slice-level threshold of ``serving_default``'s mask."""
        from tfuad.postprocessing.thresholds import fpr_key

        return self.slice_thresholds[fpr_key(self.fpr)]

    @property
    def postprocess(self):
        """The :class:`~tfuad.postprocessing.filters.PostprocessConfig` the thresholds were calibrated with."""
        return self.detector.postprocess


def _slice_thresholds(detector: Detector, fpr: float) -> dict:
    from tfuad.postprocessing.thresholds import fpr_key

    path = detector.calibration_path
    thresholds = detector.calibration().extra.get("slice_thresholds")
    if not thresholds:
        raise ConfigError(f"{path}: has no slice-level thresholds (extra.slice_thresholds) for the serving "
                          "graph; run tfuad calibrate again")
    try:
        key = fpr_key(fpr)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if key not in thresholds:
        raise ConfigError(f"FPR limit {fpr:g} has no slice-level threshold in {path}; "
                          f"calibrated: {', '.join(sorted(thresholds))}")
    return {str(k): float(v) for k, v in thresholds.items()}


def _points(thresholds: dict) -> dict:
    """``{fpr: threshold}`` of the ``fpr@…`` entries of a thresholds dict."""
    return {float(k[4:]): float(v) for k, v in thresholds.items() if k.startswith("fpr@")}


def _curve(levels, values, calibrated: dict, fpr: float, dense: bool, source) -> OperatingCurve:
    """Check a stored curve, drop levels that coincide in float32, and set the default."""
    levels, values = [float(f) for f in levels], [float(t) for t in values]
    ok = (len(levels) == len(values) >= 1 and all(0.0 < f < 1.0 for f in levels)
          and all(math.isfinite(t) for t in values)
          and all(a < b for a, b in zip(levels, levels[1:])) and all(a >= b for a, b in zip(values, values[1:])))
    if not ok:
        raise ConfigError(f"{source}: the FPR curve (extra.fpr_curve) is damaged; run tfuad calibrate again")
    kept_f, kept_t = [], []
    for f, t in zip(levels, values):
        if kept_f and np.float32(f) == np.float32(kept_f[-1]):
            if f in calibrated:  # a calibrated limit wins over a grid level of the same float32 value
                kept_f[-1], kept_t[-1] = f, t
            continue
        kept_f.append(f)
        kept_t.append(t)
    return OperatingCurve(tuple(kept_f), tuple(kept_t), float(fpr), float(calibrated[fpr]), dense)


def _operating_curves(detector: Detector, fpr: float, slice_thresholds: dict):
    """The slice-level and volume-level curves: stored by calibration, or the calibrated points alone."""
    calibration = detector.calibration()
    path = detector.calibration_path
    slice_points, volume_points = _points(slice_thresholds), _points(calibration.thresholds)
    if float(fpr) not in volume_points:
        raise ConfigError(f"FPR limit {fpr:g} has no volume threshold in {path}; run tfuad calibrate again")
    stored = calibration.extra.get("fpr_curve")
    if isinstance(stored, dict):
        try:
            levels = stored["fpr"]
            slice_values, volume_values = stored["slice_threshold"], stored["volume_threshold"]
        except KeyError:
            raise ConfigError(f"{path}: the FPR curve (extra.fpr_curve) is damaged; "
                              "run tfuad calibrate again") from None
        return (_curve(levels, slice_values, slice_points, fpr, True, path),
                _curve(levels, volume_values, volume_points, fpr, True, path))
    curves = []
    for points in (slice_points, volume_points):
        levels = sorted(points)
        curves.append(_curve(levels, [points[f] for f in levels], points, fpr, False, path))
    return tuple(curves)


def _restoration(detector: Detector, lam, schedule, max_steps):
    """The ``restore`` signature's MAP-TV method: the served one, or one from the map-tv calibration or λ."""
    if detector.name == "map-tv":
        calibrated = detector.calibration().extra["lambda"]
        if lam is not None and float(lam) != float(calibrated):
            raise ConfigError(f"the map-tv thresholds were calibrated with lambda={calibrated:g}; "
                              f"--lam {float(lam):g} would make them wrong (calibrate again with it)")
        return detector.method
    if detector.run.calibration_path("map-tv").is_file():
        tv = Detector(detector.run.path, "map-tv", lam=lam, schedule=schedule, max_steps=max_steps)
        tv.calibration()
        return tv.method
    if lam is None:
        return None
    from tfuad.detection.methods.map_tv import MapTVMethod

    return MapTVMethod(detector.model, schedule=schedule, max_steps=max_steps, lam=lam,
                       background=detector.pconfig.background_value)


def export_plan(run_dir, *, method: str = "residual", fpr: float = 0.05, lam: float | None = None,
                schedule=None, max_steps: int | None = None) -> ExportPlan:
    """Read and check what the SavedModel of a run will bake in.

    Args:
        run_dir: A trained run directory, calibrated for ``method``.
        method: The map of the detection signatures (one of :data:`EXPORT_METHODS`).
        fpr: The default FPR limit (calibrated): its thresholds make the mask when a request names none.
        lam: λ of the ``restore`` signature (default: the map-tv calibration's; without either,
            ``restore`` is not exported).
        schedule: MAP-TV schedule (default: the calibrated one, else ``paper``).
        max_steps: Step limit of the schedule.

    Raises:
        ConfigError: the run is not calibrated for ``method`` or ``fpr``, or λ or the schedule
            contradicts the map-tv calibration, or the stored FPR curve is damaged.
    """
    if method not in EXPORT_METHODS:
        raise ConfigError(f"cannot export method {method!r}; choose one of: {', '.join(EXPORT_METHODS)}")
    detector = Detector(run_dir, method, schedule=schedule, max_steps=max_steps,
                        lam=lam if method == "map-tv" else None)
    thresholds = _slice_thresholds(detector, fpr)
    slice_curve, volume_curve = _operating_curves(detector, float(fpr), thresholds)
    return ExportPlan(detector=detector, fpr=float(fpr), slice_thresholds=thresholds,
                      restoration=_restoration(detector, lam, schedule, max_steps),
                      slice_curve=slice_curve, volume_curve=volume_curve)
