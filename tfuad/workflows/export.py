"""What a served model needs from a run: the method, its calibration and the restoration settings.

:func:`export_plan` reads and checks everything the serving graph bakes in
(the ``serving_default`` method configured from its calibration, the
slice-level thresholds, the ``restore`` signature's λ and schedule); the
SavedModel itself is written by :mod:`tfuad.export.saved_model`.

Example:
    >>> plan = export_plan("runs/vae", method="map-tv", fpr=0.05)      # doctest: +SKIP
    >>> plan.threshold                                                 # doctest: +SKIP
    0.41
"""
from __future__ import annotations

from dataclasses import dataclass

from tfuad.detection.detector import Detector
from tfuad.detection.methods import METHODS
from tfuad.errors import ConfigError

__all__ = ["EXPORT_METHODS", "ExportPlan", "export_plan"]

#: Methods a SavedModel can serve: those computed from the model.
EXPORT_METHODS = tuple(name for name, cls in METHODS.items() if cls.needs is not None)


@dataclass
class ExportPlan:
    """A run's serving contents, read and checked.

    Attributes:
        detector: The ``serving_default`` method's detector, configured from its calibration.
        fpr: The FPR limit of ``serving_default``'s mask.
        slice_thresholds: ``{fpr key: threshold}`` for the raw slice maps.
        restoration: The MAP-TV method of the ``restore`` signature, or ``None``.
    """

    detector: Detector
    fpr: float
    slice_thresholds: dict
    restoration: object | None

    @property
    def threshold(self) -> float:
        """The slice-level threshold of ``serving_default``'s mask."""
        from tfuad.postprocessing.thresholds import fpr_key

        return self.slice_thresholds[fpr_key(self.fpr)]


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
        method: The map of ``serving_default`` (one of :data:`EXPORT_METHODS`).
        fpr: FPR limit whose calibrated slice-level threshold makes the mask.
        lam: λ of the ``restore`` signature (default: the map-tv calibration's; without either,
            ``restore`` is not exported).
        schedule: MAP-TV schedule (default: the calibrated one, else ``paper``).
        max_steps: Step limit of the schedule.

    Raises:
        ConfigError: the run is not calibrated for ``method`` or ``fpr``, or λ or the schedule
            contradicts the map-tv calibration.
    """
    if method not in EXPORT_METHODS:
        raise ConfigError(f"cannot export method {method!r}; choose one of: {', '.join(EXPORT_METHODS)}")
    detector = Detector(run_dir, method, schedule=schedule, max_steps=max_steps,
                        lam=lam if method == "map-tv" else None)
    thresholds = _slice_thresholds(detector, fpr)
    return ExportPlan(detector=detector, fpr=float(fpr), slice_thresholds=thresholds,
                      restoration=_restoration(detector, lam, schedule, max_steps))
