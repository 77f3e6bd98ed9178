"""Calibration on healthy data: thresholds for every method, λ for MAP-TV.

* 98th percentile of post-processed maps on healthy training slices (Baur et al.);
* FPR-limited thresholds: the smallest threshold whose false-positive rate on
  the healthy brain voxels of calibration slices is ≤ each limit (Chen et al.);
* λ for MAP-TV: the smallest λ minimising the mean L1 change ε(λ) on healthy
  calibration slices (Chen et al., eq. 7).

Healthy slices are those of subjects marked healthy, or the slices of lesioned
subjects with no lesion voxel within ``healthy_margin`` slices. No test label
is ever read.

Example:
    >>> calibrate_run("runs/vae", discover("demo_data"), method="map-tv")   # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np

from tfuad.detection.detector import Detector
from tfuad.detection.restoration import schedule_config
from tfuad.errors import DatasetError
from tfuad.data.splits import prepare_split, split_subjects

__all__ = ["calibrate_run", "healthy_values", "DEFAULT_FPRS", "DEFAULT_LAMBDAS"]

DEFAULT_FPRS = (0.01, 0.05, 0.10)
#: λ grid of the ε(λ) search (the paper searches a wide range; its optima lie in 1–9).
DEFAULT_LAMBDAS = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0)


def healthy_values(detector: Detector, prepared_list, *, lam=None, progress=None):
    """Map values on the brain voxels of healthy slices.

    Each volume is processed whole (the 3D median filter needs neighbours);
    only voxels of its healthy slices inside the brain mask are kept.

    Returns:
        ``(volume_values, slice_values)``: float32 values of the post-processed
        maps on the input's grid (what ``tfuad detect`` thresholds) and of the
        raw slice maps in model space (what the exported serving graph
        thresholds).
    """
    volume_values, slice_values = [], []
    for prep in prepared_list:
        result = detector.run_volume(prep, lam=lam)
        healthy = prep.training_indices(detector.pconfig)
        keep = np.zeros(prep.brain_mask.shape, bool)
        keep[:, :, healthy] = True
        volume_values.append(result.map[keep & prep.brain_mask].astype(np.float32))
        slice_values.append(result.slice_maps[healthy][prep.brain[healthy]].astype(np.float32))
        if progress is not None:
            progress.update(1)
    if not volume_values:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(volume_values), np.concatenate(slice_values)


def _healthy_slices(prepared_list, pconfig, limit, seed=0):
    """Up to ``limit`` healthy slices (and their brain masks), drawn without replacement."""
    index = [p.training_indices(pconfig) for p in prepared_list]
    slices = np.concatenate([p.slices[i] for p, i in zip(prepared_list, index)])
    brains = np.concatenate([p.brain[i] for p, i in zip(prepared_list, index)])
    if len(slices) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(slices), limit, replace=False))
        slices, brains = slices[pick], brains[pick]
    return slices, brains


def calibrate_run(run_dir, dataset, *, method: str = "residual", fprs=DEFAULT_FPRS, percentile: float = 98.0,
                  lambdas=DEFAULT_LAMBDAS, lambda_slices: int = 32, schedule="paper",
                  max_steps: int | None = None, batch_size: int | None = None, postprocess=None, log=print):
    """Calibrate ``method`` of a run on a dataset's healthy data and save it in the run.

    Args:
        run_dir: Run directory.
        dataset: :class:`~tfuad.data.layouts.Dataset` with ``train`` and ``calib``
            splits (or healthy subjects); ``calib`` gives the FPR thresholds and λ,
            ``train`` the 98th percentile (MAP-TV and AnoGAN: ``calib``, their
            per-image optimisation being costly).
        method: ``residual``, ``map-tv`` or ``intensity``.
        fprs: FPR limits.
        percentile: Percentile threshold (paper: 98).
        lambdas: λ grid for MAP-TV.
        lambda_slices: Healthy calibration slices used for the λ search.
        schedule: MAP-TV schedule (``paper`` or ``fast``); stored with the calibration, and
            used by every later detection unless it asks for another (which then fails).
        max_steps: Step limit of the MAP-TV schedule (default: the schedule's own).
        postprocess: :class:`~tfuad.postprocessing.filters.PostprocessConfig` stored with the
            calibration and used by every later detection (default: the paper's).

    Returns:
        The saved :class:`~tfuad.postprocessing.thresholds.Calibration`.
    """
    from tqdm.auto import tqdm

    from tfuad.postprocessing.thresholds import (
        Calibration,
        fpr_key,
        fpr_thresholds,
        percentile_key,
        percentile_threshold,
    )

    from tfuad.postprocessing.filters import PostprocessConfig

    detector = Detector(run_dir, method, batch_size=batch_size, schedule=schedule, max_steps=max_steps,
                        postprocess=postprocess or PostprocessConfig())
    modality = detector.config["data"]["modality"]
    calib_subjects = split_subjects(dataset, "calib")
    if not calib_subjects:
        raise DatasetError(dataset.root, "has no 'calib' subjects for calibration (use the demo layout, a "
                           "manifest with a split column, or --protocol)")
    calib, _ = prepare_split(calib_subjects, modality, detector.pconfig, detector.stats, log=log)
    if not calib:
        raise DatasetError(dataset.root, "no calibration subject has known healthy slices")
    extra = {"schedule": schedule_config(detector.schedule)} if method == "map-tv" else {}
    if method == "map-tv":
        from tfuad.detection.restoration import choose_lambda, plot_lambda_curve

        slices, brains = _healthy_slices(calib, detector.pconfig, lambda_slices)
        log(f"choosing λ on {len(slices)} healthy calibration slices over {len(lambdas)} values")
        best, curve = choose_lambda(detector.model, slices, lambdas, schedule=detector.schedule, mask=brains,
                                    batch_size=batch_size)
        extra.update({"lambda": float(best), "lambda_curve": {str(k): float(v) for k, v in curve.items()}})
        plot_lambda_curve(curve, best, detector.run.path / "lambda_curve.png")
        detector._lam = float(best)
        if float(best) == max(curve):
            log(f"warning: ε(λ) is smallest at the largest λ of the grid ({best:g}), so the curve has no "
                "interior minimum there. The better the schedule maximises the objective, the closer X̂ comes "
                "to Y as λ grows, so a wider grid (--lambdas) may only move the choice further up; check the "
                "lesion maps of a lesioned validation case (benchmarks/convergence.py --lam) before using it")
        log(f"λ = {best:g} (curve: {detector.run.path / 'lambda_curve.png'})")
    with tqdm(total=len(calib), desc=f"calibrating {method}", unit="volume") as bar:
        calib_values, calib_slice_values = healthy_values(detector, calib, progress=bar)
    if method == "map-tv" or (method == "residual" and getattr(detector.model, "iterative", False)):
        p_values, p_source = calib_values, "calib"  # restoring every training volume would be too costly
    else:
        train, _ = prepare_split(split_subjects(dataset, "train"), modality, detector.pconfig, detector.stats,
                                 log=log)
        with tqdm(total=len(train), desc="98th percentile on training data", unit="volume") as bar:
            p_values, p_source = healthy_values(detector, train, progress=bar)[0], "train"
    thresholds = {percentile_key(percentile): percentile_threshold(p_values, percentile)}
    thresholds.update({fpr_key(k): v for k, v in fpr_thresholds(calib_values, fprs).items()})
    extra.update({
        "percentile_source": p_source, "n_percentile_voxels": int(p_values.size),
        # Thresholds of the raw slice maps (no 3D post-processing), for the exported serving graph.
        "slice_thresholds": {fpr_key(k): float(v) for k, v in fpr_thresholds(calib_slice_values, fprs).items()},
    })
    calibration = Calibration(method=method, thresholds=thresholds, n_voxels=int(calib_values.size),
                              subject_ids=[p.volume.path for p in calib],
                              postprocess=detector.postprocess.to_dict(), extra=extra)
    calibration.to_json(detector.calibration_path())
    return calibration
