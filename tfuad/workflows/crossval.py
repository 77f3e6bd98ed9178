"""Cross-validation: every labelled case tested once, by a model that never saw it.

For each of ``k`` folds over the labelled cases (:mod:`tfuad.data.folds`): a
model is trained on the healthy slices of the other folds' training cases
(and the healthy-only subjects), calibrated on the other folds' calibration
cases (thresholds, λ), and scores the fold's own cases. One report then
merges the folds: every mean and pooled measure over all cases, with
bootstrap intervals over subjects.

Layout of the output folder::

    OUT/folds.json        the folds (subject → split per fold) and their settings
    OUT/fold-<i>/         the run of fold i (a run directory: config, model, calibrations)
    OUT/report/           the merged evaluation (summary.md, summary.json, per_subject.csv, figures)

Every step is resumable: a rerun continues unfinished training, calibrates
only what is missing or was made for other weights, and evaluates again.

Example:
    >>> cfg = TrainConfig(model="vae", modality="flair", epochs=40)                  # doctest: +SKIP
    >>> crossval(discover("brats18"), "cv/vae", cfg, k=7, methods=("map-tv",))      # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

from tfuad.data.folds import cross_validation_folds, fold_table
from tfuad.errors import ConfigError
from tfuad.files import ensure_writable_dir, read_json, write_json
from tfuad.training.run import RunDir
from tfuad.workflows.calibrate import calibrate_methods
from tfuad.workflows.evaluate import evaluate_folds

__all__ = ["crossval", "train_and_calibrate", "FOLDS_FILE"]

#: The record of the folds in the output folder.
FOLDS_FILE = "folds.json"


def _record_folds(out: Path, folds, settings: dict) -> None:
    """Write the folds, or check that an earlier run of this folder made the same ones."""
    record = {"settings": settings, "folds": fold_table(folds)}
    path = out / FOLDS_FILE
    if path.is_file():
        if read_json(path) != record:
            raise ConfigError(f"{path}: this folder holds a cross-validation with other folds or settings; "
                              "choose another --out")
        return
    write_json(record, path)


def _calibrated(run: RunDir, method: str) -> bool:
    """Whether the run holds a calibration of ``method`` made for its current weights."""
    from tfuad.detection.methods import get_method

    return run.stale_calibration(method, weighted=get_method(method).needs is not None) is None


def train_and_calibrate(run_dir, dataset, config, methods, calibration: dict | None = None, log=print) -> None:
    """Train (or resume) one run on ``dataset`` and calibrate the ``methods`` it lacks for its weights.

    One fold's work in :func:`crossval`, for studies that train on datasets of their own (subsets of a
    fold's training cases, for instance). Methods that differ only in polarity are calibrated together,
    so they search λ and restore the healthy slices once.

    Args:
        run_dir: The run directory (created, or resumed when it holds a run).
        dataset: A :class:`~tfuad.data.layouts.Dataset` with ``train`` and ``calib`` splits.
        config: The :class:`~tfuad.training.trainer.TrainConfig`.
        methods: Methods to calibrate (those calibrated for the current weights are skipped).
        calibration: Keyword arguments of :func:`~tfuad.workflows.calibrate.calibrate_methods`.
        log: Receives progress lines.
    """
    from tfuad.training.trainer import train

    run = RunDir(run_dir)
    train(run.path, dataset, config, resume=run.exists(), log=log)
    missing = [m for m in methods if not _calibrated(run, m)]
    if missing:  # together: methods that differ only in polarity search λ and restore once
        calibrate_methods(run.path, dataset, missing, log=log, **dict(calibration or {}))


def crossval(dataset, out_dir, config, *, k: int = 5, seed: int = 0, calib_per_fold: int = 1,
             healthy_calib: int = 0, methods=("residual", "intensity"), calibration: dict | None = None,
             evaluation: dict | None = None, report: str = "report", log=print) -> dict:
    """Train, calibrate and evaluate ``k`` folds; write one merged report.

    Args:
        dataset: A :class:`~tfuad.data.layouts.Dataset` with labelled cases (its own splits are replaced).
        out_dir: Output folder (see the module docstring).
        config: The :class:`~tfuad.training.trainer.TrainConfig` of every fold's model.
        k: Number of folds.
        seed: Seed of the folds.
        calib_per_fold: Labelled cases of the other folds that calibrate each fold.
        healthy_calib: Healthy-only subjects that calibrate every fold.
        methods: Methods to calibrate and evaluate (``intensity`` is the reference row).
        calibration: Keyword arguments of :func:`~tfuad.workflows.calibrate.calibrate_methods`
            (``fprs``, ``postprocess``, ``schedule``, ...).
        evaluation: Keyword arguments of :func:`~tfuad.workflows.evaluate.evaluate_folds`
            (``bootstrap``, ``batch_size``, ...).
        report: Name of the merged report's folder in ``out_dir`` (another name scores methods added
            to a finished cross-validation beside its first report).
        log: Receives progress lines.

    Returns:
        The merged report's summary.
    """
    out = ensure_writable_dir(out_dir)
    folds = cross_validation_folds(dataset, k, seed=seed, calib_per_fold=calib_per_fold,
                                   healthy_calib=healthy_calib)
    _record_folds(out, folds, {"k": k, "seed": seed, "calib_per_fold": calib_per_fold,
                               "healthy_calib": healthy_calib, "dataset": str(dataset.root)})
    runs = []
    for i, fold in enumerate(folds):
        run = RunDir(out / f"fold-{i}")
        tested = ", ".join(s.id for s in fold if s.split == "test")
        log(f"fold {i + 1} of {k}: testing {tested}")
        train_and_calibrate(run.path, fold, config, methods, calibration, log)
        runs.append((run.path, fold))
    learned = [m for m in methods if m != "intensity"]
    return evaluate_folds(runs, out / report, methods=learned or methods,
                          include_intensity="intensity" in methods, log=log, **dict(evaluation or {}))
