"""Evaluation of a calibrated run on labelled subjects: numbers, tables and figures.

For every requested method the run was calibrated for (and the non-learned
intensity reference when it was calibrated too) and every labelled test
subject: anomaly map → calibrated thresholds (98th percentile, FPR limits) →
binary masks → metrics. Evaluation never calibrates and never writes outside
the report folder: a method without a calibration is named in one line and
left out, so any labelled dataset can be evaluated, with or without a
calibration split. Writes ``summary.json``, ``per_subject.csv``, ``summary.md``
and figures into the report folder.

Thresholds come from the run's calibration files; test labels are used only
to score, and the oracle "best Dice" is labelled as such.

Example:
    >>> evaluate_run("runs/svae", discover("demo_data"), "report")   # doctest: +SKIP
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from tfuad.data.demo import LESION_DESCRIPTIONS, demo_lesion_types
from tfuad.data.splits import labelled_test_subjects
from tfuad.detection.detector import Detector
from tfuad.errors import ConfigError
from tfuad.files import ensure_writable_dir, write_json, write_text
from tfuad.metrics.segmentation import false_positive_regions
from tfuad.reports.tables import (
    NEAR_MM,
    Bootstrap,
    group_summaries,
    group_table,
    markdown_table,
    measures_table,
    method_summary,
    subject_row,
    transfer_table,
    write_rows_csv,
)

__all__ = ["evaluate_run", "evaluate_folds", "calibrated_detectors"]

#: The reference row added whenever the run was calibrated for it.
REFERENCE_METHOD = "intensity"
#: Column of the example grid holding the reference's segmentation.
REFERENCE_COLUMN = "intensity threshold"


def calibrated_detectors(run_dir, methods, *, include_reference: bool = True, batch_size: int | None = None,
                         log=print, **options) -> dict:
    """``{method: Detector}`` for the requested methods the run is calibrated for.

    A requested method without a calibration is named in one line and left
    out (so is the reference row); stale or mismatched calibrations raise.

    Raises:
        ConfigError: when no requested method is calibrated.
    """
    from tfuad.training.run import RunDir

    run = RunDir(run_dir)
    wanted = list(dict.fromkeys([*methods, *([REFERENCE_METHOD] if include_reference else [])]))
    detectors = {}
    for method in wanted:
        if not run.calibration_path(method).is_file():
            log(f"leaving out {method}: {run.path} is not calibrated for it "
                f"(tfuad calibrate {run.path} --data DATASET --method {method})")
            continue
        detector = Detector(run.path, method, batch_size=batch_size, **options)
        detector.calibration()  # read once; fails early on a stale or mismatched calibration
        detectors[method] = detector
    if not detectors or (methods and not any(m in detectors for m in methods)):
        raise ConfigError(f"{run.path}: not calibrated for {', '.join(wanted)}; nothing to evaluate "
                          f"(tfuad calibrate {run.path} --data DATASET --method {wanted[0]})")
    return detectors


def _check_modality(detectors: dict, modality: str | None) -> str:
    trained = next(iter(detectors.values())).config["data"]["modality"]
    if modality and modality.lower() != trained:
        run = next(iter(detectors.values())).run.path
        raise ConfigError(f"{run}: model was trained on {trained!r}, not {modality!r}")
    return trained


def _score_subjects(detectors: dict, subjects, modality: str, n_examples: int, log, rows, pooled, examples,
                    groups: dict | None = None):
    """Append per-subject rows, pooled volumes per method, and example slices of the first method.

    With ``groups`` (``{subject: lesion type}``), the examples show one slice of the first subject of
    every type; otherwise the slices with the most lesion voxels of the first lesioned subjects.
    """
    from tfuad.workflows.progress import progress

    with progress(len(subjects), desc="evaluating", unit="subject", log=log) as (bar, say):
        for subject in subjects:
            _score_subject(detectors, subject, modality, n_examples, say, rows, pooled, examples, groups)
            bar.update()


def _score_subject(detectors: dict, subject, modality: str, n_examples: int, log, rows, pooled, examples,
                   groups: dict | None):
    """Score one subject with every method; append its rows, pooled volumes and example slices."""
    first_name = next(iter(detectors))
    first = detectors[first_name]
    prep = first.prepare(subject.image(modality), brain_mask_path=subject.brain_mask,
                         lesion_mask_path=subject.lesion_mask)
    results, estimates = {}, {}  # estimates: X̂ shared by methods that differ only in polarity
    regions = false_positive_regions(prep.lesion_mask, prep.brain_mask, spacing=prep.volume.zooms,
                                     near_mm=NEAR_MM)  # once per subject, for every method
    for method, det in detectors.items():
        cal = det.calibration()
        result = results[method] = det.run_volume(prep, shared=estimates)
        row = subject_row(subject.id, method, result.map, prep.lesion_mask, prep.brain_mask, cal.thresholds,
                          det.segment, slices=prep.slices.shape[0], seconds=result.seconds,
                          spacing=prep.volume.zooms, regions=regions)
        rows.append(row)
        for bucket, arr in zip(pooled[method], (result.map, prep.lesion_mask, prep.brain_mask)):
            bucket.append(arr)
        log(f"{subject.id} [{method}]: AUROC {row['auroc']:.3f}, best Dice {row['best_dice']:.3f}, "
            f"{result.seconds:.1f} s")
    group = (groups or {}).get(subject.id)
    shown = {(groups or {}).get(label.split(":")[0]) for _, label in examples}  # labels: "<subject>: ..."
    if len(examples) < n_examples and prep.lesion_mask.any() and not (groups and group in shown):
        reference = None
        if first_name != REFERENCE_METHOD and REFERENCE_METHOD in detectors:
            reference = (detectors[REFERENCE_METHOD], results[REFERENCE_METHOD])
        name = f"{subject.id}: {group}" if groups else subject.id
        examples.extend(_example_rows(prep, results[first_name], first, 1 if groups else
                                      n_examples - len(examples), name, reference))


def _summaries(detectors: dict, rows, pooled, bootstrap: Bootstrap):
    """One summary per method over every subject of every fold (thresholds: the first fold's keys)."""
    from tfuad.metrics.segmentation import curve_points, pool_brain_voxels

    summaries, curves = [], {}
    for method, det in detectors.items():
        curves[det.method.label] = curve_points(*pool_brain_voxels(*pooled[method]))
        summaries.append(method_summary(method, det.method.label, [r for r in rows if r["method"] == method],
                                        det.calibration().thresholds, pooled[method],
                                        settings=det.method.settings(), bootstrap=bootstrap))
    return summaries, curves


def _write_report(out: Path, summary: dict, rows, curves, examples, detectors: dict, log) -> None:
    from tfuad.reports.figures import plot_dice_vs_lesion_size, plot_example_grid, plot_roc_pr

    first_name, first = next(iter(detectors.items()))
    model = summary["model"]
    write_json(summary, out / "summary.json")
    write_rows_csv(rows, out / "per_subject.csv")
    boot = summary["bootstrap"]
    header = (f"# {model} on {summary['dataset']} ({summary['modality']}, {len(summary['subjects'])} test "
              f"subjects)\n\nMean over subjects [{boot['confidence']:.0%} interval: percentile bootstrap over "
              f"subjects, {boot['resamples']} resamples, seed {boot['seed']}]. Dice at calibrated thresholds (98th "
              "percentile of healthy training maps; FPR limits on healthy calibration voxels); AUROC/AUPRC pool "
              "the brain voxels of all subjects, their interval resamples subjects. best Dice uses the test "
              "labels (oracle).\n\n")
    measures = ("\n## At the 5 % FPR limit\n\nFPR reached on the test subjects' non-lesion brain voxels, "
                "boundary distances (mm; subjects without a segmentation are left out), lesion-wise scores (3D "
                "components; a lesion is found when a segmented voxel touches it), and slice-level detection "
                "(each slice scored by the 99th percentile of its brain voxels).\n\n")
    by_type = ""
    if summary.get("by_lesion_type"):
        by_type = ("\n## By lesion type (demo dataset)\n\nMeans over each type's subjects at the 5 % FPR limit; "
                   "AUROC/AUPRC per subject over its brain voxels. Too few subjects per type for intervals.\n\n"
                   + group_table(summary["by_lesion_type"], LESION_DESCRIPTIONS))
    transfer = ("\n## Where the false positives lie\n\nFPR reached at each limit on all non-lesion brain voxels "
                "and by region: far slices (no lesion voxel within 3 slices, the kind of slice the calibration "
                "sees), the other lesion-slice voxels more than 10 mm from the lesion, and within 10 mm of it. A "
                "threshold that transfers reaches its limit in every region.\n\n"
                + transfer_table(summary["methods"]))
    write_text(header + markdown_table(summary["methods"]) + measures + measures_table(summary["methods"])
               + transfer + by_type, out / "summary.md")
    plot_roc_pr(curves, out / "roc_pr.png", title=f"{model}: pooled brain voxels")
    last_key = list(first.calibration().thresholds)[-1]
    plot_dice_vs_lesion_size([{**r, "dice": r[f"dice@{last_key}"]} for r in rows if r["method"] == first_name],
                             out / "dice_vs_lesion_size.png", title=f"{first.method.label}: Dice per subject")
    if examples:
        columns = ["input", "reconstruction", "residual", "segmentation", "ground truth"]
        if all(REFERENCE_COLUMN in e[0] for e in examples):
            columns.insert(4, REFERENCE_COLUMN)
        plot_example_grid([e[0] for e in examples], out / "examples.png", columns=columns,
                          row_labels=[e[1] for e in examples])
    log(f"wrote {out / 'summary.md'}")


def evaluate_run(run_dir, dataset, out_dir, **kwargs) -> dict:
    """Evaluate a calibrated run on the labelled test subjects of ``dataset``.

    Args:
        run_dir: Trained and calibrated run directory.
        dataset: :class:`~tfuad.data.layouts.Dataset`; its ``test`` split (or,
            without splits, every subject with a lesion mask) is scored.
        out_dir: Report folder (the only place written to).
        **kwargs: As :func:`evaluate_folds`.

    Returns:
        The summary dict also written to ``summary.json``.
    """
    return evaluate_folds([(run_dir, dataset)], out_dir, **kwargs)


def evaluate_folds(folds, out_dir, *, methods=("residual",), include_intensity: bool = True,
                   modality: str | None = None, batch_size: int | None = None, n_examples: int = 4,
                   bootstrap: Bootstrap | None = None, log=print, **options) -> dict:
    """One report over several runs, each scoring the test subjects of its own dataset (cross-validation).

    Args:
        folds: ``[(run_dir, dataset)]``; every labelled test subject of a fold's dataset is scored by
            that fold's run only (a subject tested by two folds is refused).
        out_dir: Report folder (the only place written to).
        methods: Methods to score; those a run is not calibrated for are left out with a message.
        include_intensity: Add the intensity-threshold reference row when the runs are calibrated for it.
        modality: Must match the models' modality (default: the models').
        batch_size: Slices per batch.
        n_examples: Slices in the example grid.
        bootstrap: How intervals are drawn (default: 2000 resamples, 95 %, seed 0).
        log: Receives progress lines.
        **options: Method options (MAP-TV: ``schedule``, ``max_steps``); they must agree with the calibration.

    Returns:
        The summary dict also written to ``summary.json``.
    """
    out = ensure_writable_dir(out_dir)
    plans = _plans(folds, methods, include_intensity, batch_size, log, options)
    modality = _check_modality(plans[0][0], modality)
    rows, pooled, examples = [], {m: ([], [], []) for m in plans[0][0]}, []
    lesion_types = {k: v for _, dataset in folds for k, v in demo_lesion_types(dataset.root).items()}
    for detectors, subjects in plans:
        _score_subjects(detectors, subjects, modality, n_examples, log, rows, pooled, examples, lesion_types)
    bootstrap = bootstrap or Bootstrap()
    first = plans[0][0]
    summaries, curves = _summaries(first, rows, pooled, bootstrap)
    runs = [os.fspath(run_dir) for run_dir, _ in folds]
    datasets = sorted({os.fspath(dataset.root) for _, dataset in folds})
    summary = {
        "run": runs[0] if len(runs) == 1 else runs, "model": next(iter(first.values())).config["model"],
        "dataset": datasets[0] if len(datasets) == 1 else datasets, "layout": folds[0][1].layout,
        "modality": modality, "subjects": [s.id for _, subjects in plans for s in subjects],
        "folds": len(folds), "methods": summaries, "bootstrap": bootstrap.to_dict(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if lesion_types:  # the demo dataset: where a threshold is enough and where it is not
        labels = {method: det.method.label for method, det in first.items()}
        summary["by_lesion_type"] = group_summaries(rows, lesion_types, labels)
    _write_report(out, summary, rows, curves, examples, first, log)
    return summary


def _plans(folds, methods, include_intensity, batch_size, log, options) -> list:
    """``[(detectors, test subjects)]`` per fold, checked to score the same methods and distinct subjects."""
    plans, seen = [], {}
    for run_dir, dataset in folds:
        detectors = calibrated_detectors(run_dir, methods, include_reference=include_intensity,
                                         batch_size=batch_size, log=log, **options)
        subjects = labelled_test_subjects(dataset, log)
        if plans and list(detectors) != list(plans[0][0]):
            raise ConfigError(f"{run_dir}: calibrated for {', '.join(detectors)}, but the first fold for "
                              f"{', '.join(plans[0][0])}; calibrate every fold alike")
        for s in subjects:
            if s.id in seen:
                raise ConfigError(f"{dataset.root}: subject {s.id!r} is tested by two folds ({seen[s.id]} and "
                                  f"{run_dir})")
            seen[s.id] = run_dir
        plans.append((detectors, subjects))
    return plans


def _example_rows(prep, result, det, n, subject_id, reference=None):
    """The slices with the most lesion voxels, each row saying how many: input, estimate, map, mask, truth.

    ``reference``: ``(detector, result)`` of the intensity baseline, whose segmentation is added as a column.
    """
    lesion_per_slice = prep.lesion_mask.sum(axis=(0, 1))
    order = np.argsort(-lesion_per_slice)[:n]
    estimate = result.restored if result.restored is not None else prep.slices
    recon = prep.to_volume(estimate[..., 0])
    image = prep.to_volume(prep.slices[..., 0])
    segs = {"segmentation": _segment_at_5(det, result)}
    if reference is not None:
        segs[REFERENCE_COLUMN] = _segment_at_5(*reference)
    return [({"input": image[:, :, z], "reconstruction": recon[:, :, z], "residual": result.map[:, :, z],
              **{k: seg[:, :, z] for k, seg in segs.items()}, "ground truth": prep.lesion_mask[:, :, z]},
             f"{subject_id} z={z}: {int(lesion_per_slice[z])} lesion voxels") for z in sorted(order)
            if lesion_per_slice[z] > 0]


def _segment_at_5(det, result):
    """The segmentation at the 5 % FPR threshold (or the first calibrated one)."""
    thresholds = det.calibration().thresholds
    key = next((k for k in thresholds if k.startswith("fpr@0.05")), next(iter(thresholds)))
    return det.segment(result.map, thresholds[key])
