"""Calibration on healthy data: thresholds for every method, and each method's own settings.

* 98th percentile of post-processed maps on healthy training slices (Baur et al.);
* FPR-limited thresholds: the smallest threshold whose false-positive rate on
  the healthy brain voxels of calibration slices is ≤ each limit (Chen et al.);
* optionally, calibration voxels weighted so that they stand for whole brains'
  axial profile (``weighting="position"``, :func:`calibration_weights`);
* the method's own settings first (MAP-TV: λ minimising the mean L1 change
  ε(λ) on healthy calibration slices, Chen et al. eq. 7), see
  :meth:`~tfuad.detection.methods.base.ScoringMethod.calibrate_settings`.

Healthy slices are those of subjects marked healthy, or the slices of lesioned
subjects with no lesion voxel within ``healthy_margin`` slices. No test label
is ever read.

Example:
    >>> calibrate_run("runs/vae", discover("demo_data"), method="map-tv")   # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np

from tfuad.data.splits import prepare_split, split_subjects
from tfuad.detection.detector import Detector
from tfuad.errors import ConfigError, DatasetError

__all__ = ["calibrate_run", "calibrate_methods", "healthy_values", "healthy_voxels", "calibration_weights", "fpr_curve",
           "DEFAULT_FPRS", "CURVE_FPRS", "WEIGHTINGS"]

DEFAULT_FPRS = (0.01, 0.05, 0.10)
#: FPR levels of the stored threshold-against-FPR curve (a served model interpolates between them).
CURVE_FPRS = tuple(float(f) for f in np.geomspace(1e-4, 0.5, 241))
#: How calibration voxels count: ``none`` (each alike, the papers') or ``position`` (weighted to the
#: brains' axial profile, :func:`calibration_weights`).
WEIGHTINGS = ("none", "position")


def fpr_curve(volume_values, slice_values, fprs=DEFAULT_FPRS, *, weights=None) -> dict:
    """Thresholds against FPR on healthy voxels, at :data:`CURVE_FPRS` and the calibrated limits.

    Args:
        volume_values: Post-processed healthy values (input grid).
        slice_values: Raw slice-map healthy values (model space).
        fprs: The calibrated limits.
        weights: Optional ``{"volume": w, "slice": w}`` from :func:`calibration_weights`.

    Returns:
        ``{"fpr": [...], "volume_threshold": [...], "slice_threshold": [...]}``, FPR ascending;
        at a calibrated limit the thresholds equal the calibrated ones.
    """
    from tfuad.postprocessing.thresholds import fpr_thresholds

    weights = weights or {}
    levels = sorted(set(CURVE_FPRS) | {float(f) for f in fprs})
    volume = fpr_thresholds(volume_values, levels, weights=weights.get("volume"))
    slices = fpr_thresholds(slice_values, levels, weights=weights.get("slice"))
    return {"fpr": levels, "volume_threshold": [volume[f] for f in levels],
            "slice_threshold": [slices[f] for f in levels]}


def healthy_voxels(prep, pconfig) -> np.ndarray:
    """The voxels a volume calibrates with: brain voxels of its healthy slices, on the input's grid.

    Args:
        prep: A :class:`~tfuad.data.preprocessing.PreparedVolume` with lesion labels.
        pconfig: The model's :class:`~tfuad.data.preprocessing.PreprocessConfig` (healthy margin,
            minimum brain fraction).

    Returns:
        numpy.ndarray of bool, the shape of ``prep.brain_mask``.
    """
    keep = np.zeros(prep.brain_mask.shape, bool)
    keep[:, :, prep.training_indices(pconfig)] = True
    return keep & prep.brain_mask


def calibration_weights(prepared_list, pconfig) -> dict:
    """Position weights of the values :func:`healthy_values` returns, for both grids.

    See :func:`~tfuad.postprocessing.thresholds.position_weights`: each healthy voxel weighs
    the share of its volumes' brain voxels at its axial position over the share of healthy
    voxels there. Only the brain masks and which slices are healthy are read.

    Args:
        prepared_list: The prepared volumes :func:`healthy_values` was given, in its order.
        pconfig: The model's :class:`~tfuad.data.preprocessing.PreprocessConfig`.

    Returns:
        ``{"volume": w, "slice": w, "coverage": c}``: weights in the order of
        :func:`healthy_values`' ``(volume_values, slice_values)``, and the share of the
        calibration volumes' brain voxels at positions their healthy slices cover.
    """
    from tfuad.postprocessing.thresholds import position_weights

    volume, coverage = position_weights([p.brain_mask for p in prepared_list],
                                        [healthy_voxels(p, pconfig) for p in prepared_list])
    chosen = []
    for prep in prepared_list:
        rows = np.zeros(prep.brain.shape[0], bool)
        rows[prep.training_indices(pconfig)] = True
        chosen.append(np.broadcast_to(rows.reshape((-1,) + (1,) * (prep.brain.ndim - 1)), prep.brain.shape))
    slices, _ = position_weights([p.brain for p in prepared_list], chosen, axis=0)
    empty = np.zeros(0)
    return {"volume": np.concatenate(volume) if volume else empty,
            "slice": np.concatenate(slices) if slices else empty, "coverage": coverage}


def healthy_values(detector, prepared_list, *, progress=None):
    """Map values on the brain voxels of healthy slices.

    Each volume is processed whole (the 3D median filter needs neighbours);
    only voxels of its healthy slices inside the brain mask are kept.

    Args:
        detector: A :class:`~tfuad.detection.detector.Detector`, or a list of them (of one run):
            detectors with the same :meth:`~tfuad.detection.detector.Detector.estimate_key`
            (e.g. ``map-tv`` and ``map-tv-positive``) then share each volume's healthy estimate.
        prepared_list: Prepared volumes.
        progress: Optional progress bar, advanced once per volume.

    Returns:
        ``(volume_values, slice_values)``: float32 values of the post-processed
        maps on the input's grid (what ``tfuad detect`` thresholds) and of the
        raw slice maps in model space (what the exported serving graph
        thresholds); for a list of detectors, a list of such pairs in its order.
    """
    detectors = list(detector) if isinstance(detector, (list, tuple)) else [detector]
    values = [([], []) for _ in detectors]
    for prep in prepared_list:
        shared = {}
        for det, (volume_values, slice_values) in zip(detectors, values):
            result = det.run_volume(prep, shared=shared)
            healthy = prep.training_indices(det.pconfig)
            volume_values.append(result.map[healthy_voxels(prep, det.pconfig)].astype(np.float32))
            slice_values.append(result.slice_maps[healthy][prep.brain[healthy]].astype(np.float32))
        if progress is not None:
            progress.update(1)
    empty = np.zeros(0, np.float32)
    pairs = [(np.concatenate(v) if v else empty, np.concatenate(s) if s else empty) for v, s in values]
    return pairs if isinstance(detector, (list, tuple)) else pairs[0]


def healthy_slices(prepared_list, pconfig, limit: int, seed: int = 0):
    """Up to ``limit`` healthy slices (and their brain masks), drawn without replacement."""
    index = [p.training_indices(pconfig) for p in prepared_list]
    slices = np.concatenate([p.slices[i] for p, i in zip(prepared_list, index)])
    brains = np.concatenate([p.brain[i] for p, i in zip(prepared_list, index)])
    if len(slices) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(slices), limit, replace=False))
        slices, brains = slices[pick], brains[pick]
    return slices, brains


def _prepared(detector: Detector, dataset, split: str, log):
    modality = detector.config["data"]["modality"]
    return prepare_split(split_subjects(dataset, split), modality, detector.pconfig, detector.stats, log=log)[0]


def _calibration_subjects(detector: Detector, dataset, log):
    if not split_subjects(dataset, "calib"):
        raise DatasetError(dataset.root, "has no 'calib' subjects for calibration (use the demo layout, a "
                           "manifest with a split column, or --protocol)")
    calib = _prepared(detector, dataset, "calib", log)
    if not calib:
        raise DatasetError(dataset.root, "no calibration subject has known healthy slices")
    return calib


def _method_settings(detector: Detector, calib, lambda_slices: int, log, chosen: dict) -> dict:
    """The method's own settings, chosen on healthy calibration slices; draws their curve.

    ``chosen`` maps :meth:`~tfuad.detection.methods.base.ScoringMethod.settings_key` to
    ``(method name, settings)`` of the methods calibrated before in the same call: a method with
    the same key takes those settings instead of searching again.
    """
    from tfuad.reports.figures import plot_selection_curve

    method = detector.method
    if not method.calibrates:
        return method.settings()
    key = method.settings_key()
    if key is not None and key in chosen:
        name, settings = chosen[key]
        method.configure(settings)
        log(f"{method.name}: the settings chosen for {name} ({', '.join(method.calibrates)}), the same search")
        return dict(settings)
    slices, brains = healthy_slices(calib, detector.pconfig, lambda_slices)
    settings = method.calibrate_settings(slices, brains, log=log)
    curve = settings.pop("curve", None)
    if curve:
        path = plot_selection_curve(curve, detector.run.curve_path(curve["setting"]))
        log(f"selection curve: {path}")
    if key is not None:
        chosen[key] = (method.name, dict(settings))
    return settings


def _percentile_values(detectors, dataset, calib_values, log):
    """Healthy values for each detector's percentile threshold: training volumes, or calibration ones when costly.

    Returns:
        ``[(values, source)]`` in the order of ``detectors``.
    """
    from tqdm.auto import tqdm

    cheap = [d for d in detectors if not d.method.costly]  # restoring every training volume would be too costly
    train_values = {}
    if cheap:
        train = _prepared(cheap[0], dataset, "train", log)
        with tqdm(total=len(train), desc="98th percentile on training data", unit="volume", disable=None) as bar:
            train_values = {id(d): v for d, (v, _) in zip(cheap, healthy_values(cheap, train, progress=bar))}
    return [(train_values[id(d)], "train") if id(d) in train_values else (c, "calib")
            for d, c in zip(detectors, calib_values)]


def calibrate_run(run_dir, dataset, *, method: str = "residual", **kwargs):
    """Calibrate ``method`` of a run on a dataset's healthy data and save it in the run.

    The one-method form of :func:`calibrate_methods` (the same arguments, ``method`` a name).

    Returns:
        The saved :class:`~tfuad.postprocessing.thresholds.Calibration`.
    """
    return calibrate_methods(run_dir, dataset, [method], **kwargs)[method]


def calibrate_methods(run_dir, dataset, methods, *, fprs=DEFAULT_FPRS, percentile: float = 98.0,
                      lambda_slices: int = 32, batch_size: int | None = None, postprocess=None,
                      weighting: str = "none", log=print, **options) -> dict:
    """Calibrate several methods of a run on a dataset's healthy data and save each in the run.

    Methods that differ only in the polarity of their map (``map-tv`` and ``map-tv-positive``)
    search their own settings once (:meth:`~tfuad.detection.methods.base.ScoringMethod.settings_key`)
    and restore each healthy volume once
    (:meth:`~tfuad.detection.detector.Detector.estimate_key`); each still gets its own thresholds.

    Args:
        run_dir: Run directory.
        dataset: :class:`~tfuad.data.layouts.Dataset` with ``train`` and ``calib``
            splits (or healthy subjects); ``calib`` gives the FPR thresholds and the
            methods' settings, ``train`` the 98th percentile (costly methods such
            as MAP-TV and AnoGAN: ``calib``).
        methods: Scoring method names (``residual``, ``map-tv``, ``intensity``, ...).
        fprs: FPR limits.
        percentile: Percentile threshold (paper: 98).
        lambda_slices: Healthy calibration slices used to choose the methods' settings.
        batch_size: Slices per batch.
        postprocess: :class:`~tfuad.postprocessing.filters.PostprocessConfig` stored with the
            calibration and used by every later detection (default: the paper's).
        weighting: One of :data:`WEIGHTINGS`: ``"position"`` weights the FPR thresholds' voxels to
            the calibration brains' axial profile (:func:`calibration_weights`); the percentile
            threshold stays unweighted.
        log: Receives progress lines.
        **options: Method options (MAP-TV: ``schedule``, ``max_steps``, ``lambdas``); stored with
            the calibration where the thresholds depend on them.

    Returns:
        ``{method: Calibration}`` (:class:`~tfuad.postprocessing.thresholds.Calibration`), each saved.

    Example:
        >>> calibrate_methods("runs/vae", discover("brats18"), ["map-tv", "map-tv-positive"])  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from tfuad.postprocessing.filters import PostprocessConfig
    from tfuad.postprocessing.thresholds import (
        Calibration,
        fpr_key,
        fpr_thresholds,
        percentile_key,
        percentile_threshold,
    )

    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ValueError("calibrate_methods needs at least one method")
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"unknown weighting {weighting!r}; choose from {', '.join(WEIGHTINGS)}")
    postprocess = postprocess or PostprocessConfig()
    detectors = [Detector(run_dir, name, batch_size=batch_size, postprocess=postprocess, calibrated=False,
                          **options) for name in methods]
    calib = _calibration_subjects(detectors[0], dataset, log)
    chosen = {}
    extras = [_method_settings(d, calib, lambda_slices, log, chosen) for d in detectors]
    with tqdm(total=len(calib), desc=f"calibrating {', '.join(methods)}", unit="volume",
              disable=None) as bar:  # terminals only
        calib_values = healthy_values(detectors, calib, progress=bar)
    percentile_values = _percentile_values(detectors, dataset, [v for v, _ in calib_values], log)
    position = calibration_weights(calib, detectors[0].pconfig) if weighting == "position" else {}
    if position:
        log(f"position weighting: the healthy slices cover {position['coverage']:.0%} of the calibration brains' "
            "voxels by axial position; the rest cannot be stood for")
    out = {}
    for detector, extra, (values, slice_values), (p_values, p_source) in zip(detectors, extras, calib_values,
                                                                             percentile_values):
        thresholds = {percentile_key(percentile): percentile_threshold(p_values, percentile)}
        thresholds.update({fpr_key(k): v for k, v in
                           fpr_thresholds(values, fprs, weights=position.get("volume")).items()})
        slice_thresholds = fpr_thresholds(slice_values, fprs, weights=position.get("slice"))
        extra.update({
            "percentile_source": p_source, "n_percentile_voxels": int(p_values.size), "weighting": weighting,
            # Thresholds of the raw slice maps (no 3D post-processing), for the exported serving graph.
            "slice_thresholds": {fpr_key(k): float(v) for k, v in slice_thresholds.items()},
            "fpr_curve": fpr_curve(values, slice_values, fprs, weights=position),
        })
        if position:
            extra["position_coverage"] = position["coverage"]
        weights = None if detector.model is None else detector.run.weights_fingerprint()
        calibration = Calibration(method=detector.method.name, thresholds=thresholds, n_voxels=int(values.size),
                                  subject_ids=[p.volume.path for p in calib],
                                  postprocess=detector.postprocess.to_dict(), extra=extra, weights=weights)
        calibration.to_json(detector.calibration_path)
        out[detector.method.name] = calibration
    return out
