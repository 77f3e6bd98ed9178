"""What the studies on a kept cross-validation share: its folds, a cached walk over them, and the ending.

A study (``postprocessing.py``, ``calibration_transfer.py``) takes the trained, calibrated fold models
of ``benchmarks/reproduce.py``, calibrates something of its own on each fold's healthy calibration
volumes and scores each test case. :func:`run_folds` does the walk and caches both steps as JSON in
``--out``, so a rerun continues where it stopped; :func:`finish` writes the summary, its Markdown and
the figure. Scripts import it as a sibling (``import foldstudy``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path


def log(msg: str) -> None:
    """Print ``msg`` with the time of day."""
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def add_arguments(parser, *, runs: bool = True) -> None:
    """The options every study takes: the data, the cross-validation, the folds, the outputs."""
    parser.add_argument("--data", required=True, help="dataset with labelled cases (BraTS folder)")
    if runs:
        parser.add_argument("--runs", required=True, help="cross-validation folder (folds.json, fold-<i>/)")
    parser.add_argument("--out", required=True, help="cache and summary folder (resumable)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--fold-seed", type=int, default=0)
    parser.add_argument("--calib-per-fold", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the summary here too")
    parser.add_argument("--figure", default=None, help="write the figure here too")


def folds_of(args, runs=None) -> list:
    """The cross-validation folds the options make, checked against ``runs/folds.json`` if given."""
    from tfuad.data.folds import cross_validation_folds, fold_table
    from tfuad.data.layouts import discover

    folds = cross_validation_folds(discover(Path(args.data).resolve()), args.folds, seed=args.fold_seed,
                                   calib_per_fold=args.calib_per_fold)
    if runs is not None:
        recorded = json.loads((Path(runs) / "folds.json").read_text(encoding="utf-8"))["folds"]
        if recorded != fold_table(folds):
            raise SystemExit(f"{runs}/folds.json: other folds than --folds/--fold-seed/--calib-per-fold make")
    return folds


@dataclass
class Walk:
    """What :func:`run_folds` gathered: per-case results, where they are cached, per-fold calibrations."""

    modality: str = ""
    cases: dict = field(default_factory=dict)
    case_paths: dict = field(default_factory=dict)
    calibrations: list = field(default_factory=list)


def run_folds(args, methods, calibrate, score, *, pipeline: str | None = None) -> Walk:
    """Calibrate every fold once and score every test case once, each cached as JSON in ``args.out``.

    Args:
        args: Parsed :func:`add_arguments` options.
        methods: Scoring methods; each fold's run must be calibrated for them.
        calibrate: ``calibrate(detectors, preps)`` → ``{"thresholds": {method: {variant: {fpr key: t}}}, ...}``
            from the fold's calibration volumes (``detectors``: ``{method: Detector}``).
        score: ``score(detectors, prep, calibration, stem)`` → the case's JSON-able result; ``stem`` is
            its cache path without suffix, for anything else it keeps.
        pipeline: The variant that is the pipeline's own calibration; its 5 % thresholds are checked
            against the fold's stored calibration (a differing one is logged).
    """
    import numpy as np

    from tfuad.data.splits import labelled_test_subjects, prepare_split, split_subjects
    from tfuad.detection.detector import Detector
    from tfuad.files import read_json, write_json
    from tfuad.postprocessing.thresholds import fpr_key

    runs, out, walk = Path(args.runs), Path(args.out), Walk()
    for i, fold in enumerate(folds_of(args, runs)):
        detectors = {m: Detector(runs / f"fold-{i}", m) for m in methods}
        for det in detectors.values():
            det.calibration()  # the calibrated settings (λ, schedule) and a check that the weights match
        first = next(iter(detectors.values()))
        walk.modality = first.config["data"]["modality"]
        cal_path = out / f"fold-{i}" / "calibration.json"
        if not cal_path.is_file():
            log(f"fold {i}: calibrating on its healthy calibration volumes")
            preps = prepare_split(split_subjects(fold, "calib"), walk.modality, first.pconfig, first.stats,
                                  log=log)[0]
            write_json(calibrate(detectors, preps), cal_path)
        calibration = read_json(cal_path)
        walk.calibrations.append(calibration)
        for method, det in detectors.items() if pipeline else ():
            stored = det.calibration().thresholds[fpr_key(0.05)]
            mine = calibration["thresholds"][method][pipeline][fpr_key(0.05)]
            if not np.isclose(stored, mine, rtol=1e-4, atol=1e-6):
                log(f"fold {i} [{method}]: {pipeline} threshold {mine:.6g} differs from the calibration's {stored:.6g}")
        for subject in labelled_test_subjects(fold, log):
            path = out / f"fold-{i}" / f"{subject.id}.json"
            if not path.is_file():
                start = time.perf_counter()
                prep = first.prepare(subject.image(walk.modality), brain_mask_path=subject.brain_mask,
                                     lesion_mask_path=subject.lesion_mask)
                write_json(score(detectors, prep, calibration, path.with_suffix("")), path)
                log(f"fold {i}: {subject.id} scored in {time.perf_counter() - start:.0f} s")
            walk.cases[subject.id], walk.case_paths[subject.id] = read_json(path), path
    return walk


def finish(summary: dict, args, text: str, draw) -> None:
    """Write ``OUT/summary.json`` (and ``--json``), ``OUT/summary.md``, print ``text``, draw ``--figure``.

    Args:
        draw: ``draw(summary, path)``, the study's figure.
    """
    from tfuad.files import write_json, write_text

    out = Path(args.out)
    write_json(summary, out / "summary.json")
    if args.json:
        write_json(summary, args.json)
    write_text(text, out / "summary.md")
    print(text)
    if args.figure:
        draw(summary, Path(args.figure))
        log(f"wrote {args.figure}")


def save_figure(fig, path) -> None:
    """Save a matplotlib figure as PNG atomically (its folder made) and close it."""
    import matplotlib.pyplot as plt

    from tfuad.files import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
