"""Convergence of MAP-TV restoration: lesion-map AUROC against the number of steps (Chen et al. Fig. 10c).

For one lesioned case, the AUROC of ``|Y - X̂|`` against the lesion labels on
brain voxels is recorded after every ``--every`` steps of the paper schedule
(0…500 steps, α = 5e-3 then 3e-3) and after every ``--fast-every`` steps of
the fast schedule (up to its ``max_steps``, stopping rule disabled so every
point is reached), plus the paper schedule's steps 5, 10 and 20; the step at which the fast schedule's
stopping rule ends
(on the same batches) is marked, and the plain reconstruction residual
``|Y - x̂|`` is drawn for reference.

Restoring a whole volume 500 times over is slow on a CPU, so the case is
subsampled: up to ``--lesion-slices`` slices containing lesion (evenly spaced
over them) plus ``--healthy-slices`` lesion-free brain slices (evenly spaced).
The subsample is recorded in the JSON and shown in the figure.

λ is the run's calibrated MAP-TV λ (``calibration-map-tv.json``) unless
``--lam`` is given.

Usage::

    python benchmarks/convergence.py --model RUN_DIR --data DATASET [--subject ID] [--protocol NAME] \\
        --out DIR [--lam L] [--lesion-slices 24] [--healthy-slices 8]

Writes ``DIR/convergence.json`` and ``DIR/convergence.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402

from tfuad.data.splits import labelled_test_subjects  # noqa: E402
from tfuad.detection.detector import Detector  # noqa: E402
from tfuad.detection.methods.residual import ResidualMethod  # noqa: E402
from tfuad.detection.restoration import (  # noqa: E402
    Restorer,
    convergence_curve,
    get_schedule,
)
from tfuad.errors import ConfigError, DatasetError  # noqa: E402
from tfuad.files import write_json  # noqa: E402
from tfuad.metrics.segmentation import auc_scores  # noqa: E402
from tfuad.reports.figures import plot_convergence  # noqa: E402

#: Extra early checkpoints of the paper schedule, where the AUROC rises fastest.
EARLY = (5, 10, 20)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="run directory of a trained model")
    p.add_argument("--data", required=True, help="dataset folder or manifest with lesion labels")
    p.add_argument("--subject", default=None, help="subject id (default: the first test subject with lesion)")
    p.add_argument("--protocol", default=None, help="assign splits from a named protocol")
    p.add_argument("--out", required=True, help="output folder for convergence.json and convergence.png")
    p.add_argument("--lam", type=float, default=None, help="λ (default: the calibrated one)")
    p.add_argument("--lesion-slices", type=int, default=24, help="slices with lesion to use (default 24)")
    p.add_argument("--healthy-slices", type=int, default=8, help="lesion-free brain slices to add (default 8)")
    p.add_argument("--every", type=int, default=25, help="paper schedule: AUROC every N steps (default 25)")
    p.add_argument("--fast-every", type=int, default=5, help="fast schedule: AUROC every N steps (default 5)")
    p.add_argument("--fast-steps", type=int, default=None,
                   help="fast schedule: steps of the curve (default: its max_steps)")
    p.add_argument("--batch-size", type=int, default=32, help="slices per restoration batch")
    return p.parse_args(argv)


def pick_subject(dataset, subject_id):
    """The requested subject, or the first labelled test subject (as ``tfuad evaluate`` picks them)."""
    if subject_id is not None:
        subject = dataset.subject(subject_id)
        subject.require_lesion_mask()
        return subject
    lesioned = [s for s in labelled_test_subjects(dataset, log=lambda msg: None) if not s.healthy]
    if not lesioned:
        raise DatasetError(dataset.root, "has no test subject with lesions for the convergence curve")
    return lesioned[0]


def evenly(indices, n):
    """Up to ``n`` entries of ``indices``, evenly spaced."""
    indices = np.asarray(indices)
    if n <= 0 or len(indices) == 0:
        return indices[:0]
    if len(indices) <= n:
        return indices
    return indices[np.linspace(0, len(indices) - 1, n).round().astype(int)]


def subsample(prep, pconfig, n_lesion, n_healthy):
    """Slice indices: slices with lesion voxels in the brain, plus lesion-free brain slices."""
    lesion_px = (prep.lesion & prep.brain).reshape(len(prep.slices), -1).sum(axis=1)
    with_lesion = np.flatnonzero(lesion_px > 0)
    if len(with_lesion) == 0:
        raise DatasetError(prep.volume.path, "lesion mask has no voxel inside the brain")
    healthy = np.setdiff1d(prep.training_indices(pconfig), with_lesion)
    return np.sort(np.concatenate([evenly(with_lesion, n_lesion), evenly(healthy, n_healthy)])), with_lesion


def main(argv=None):
    args = parse_args(argv)
    from tfuad.data.layouts import discover

    dataset = discover(args.data)
    if args.protocol:
        dataset = dataset.with_protocol(args.protocol)
    subject = pick_subject(dataset, args.subject)
    detector = Detector(args.model, "map-tv", batch_size=args.batch_size)
    detector.calibration()
    lam = args.lam if args.lam is not None else detector.method.lam
    modality = detector.config["data"]["modality"]
    prep = detector.prepare(subject.image(modality), brain_mask_path=subject.brain_mask,
                            lesion_mask_path=subject.lesion_mask)
    pick, with_lesion = subsample(prep, detector.pconfig, args.lesion_slices, args.healthy_slices)
    y, truth, brain = prep.slices[pick], prep.lesion[pick], prep.brain[pick]
    print(f"{subject.id}: {len(pick)} slices ({len(np.intersect1d(pick, with_lesion))} of {len(with_lesion)} "
          f"with lesion, {len(pick) - len(np.intersect1d(pick, with_lesion))} healthy), λ = {lam:g}")

    residual = ResidualMethod(detector.model, batch_size=args.batch_size).slice_maps(y)[0]
    residual_auroc = auc_scores(residual[brain], truth[brain])[0]
    print(f"residual |y - x̂|: AUROC {residual_auroc:.4f}")

    runs = {}
    for name, every in (("paper", args.every), ("fast", args.fast_every)):
        schedule = get_schedule(name, args.fast_steps if name == "fast" else None)
        restorer = Restorer(detector.model, lam=lam, schedule=schedule, batch_size=args.batch_size)
        t0 = time.perf_counter()
        marks = sorted(set(range(0, schedule.steps + 1, every)) | {m for m in EARLY if m <= schedule.steps})
        curve = convergence_curve(restorer, y, truth, brain, checkpoints=marks)
        curve_s = time.perf_counter() - t0
        if schedule.tol > 0:  # a stopping rule: restore once more with it
            t0 = time.perf_counter()
            stopped = auc_scores(restorer.lesion_map(y, brain)[brain], truth[brain])[0]
            run_s, taken = time.perf_counter() - t0, restorer.steps_taken_
        else:  # all steps run: the last point of the curve is the result (time includes the AUROCs)
            stopped, run_s, taken = curve[schedule.steps], curve_s, [schedule.steps]
        runs[name] = dict(schedule=dataclasses.asdict(schedule), auroc=curve, steps_taken=taken,
                          auroc_at_stop=stopped, seconds=run_s, curve_seconds=curve_s)
        print(f"{name:>5}: AUROC {stopped:.4f} after {taken} steps ({run_s:.1f} s); "
              f"curve {min(curve.values()):.4f}…{max(curve.values()):.4f}")

    out = Path(args.out)
    result = dict(
        model=str(args.model), data=str(args.data), subject=subject.id, modality=modality, lam=lam,
        slices=dict(indices=pick.tolist(), with_lesion=int(len(np.intersect1d(pick, with_lesion))),
                    lesion_slices_in_volume=int(len(with_lesion)), total_in_volume=int(len(prep.slices)),
                    rule=f"up to {args.lesion_slices} lesion slices evenly spaced + up to "
                         f"{args.healthy_slices} lesion-free brain slices"),
        pixels=dict(brain=int(brain.sum()), lesion=int((truth & brain).sum())),
        residual_auroc=residual_auroc, runs=runs,
    )
    write_json(result, out / "convergence.json")
    plot(result, out / "convergence.png")
    print(f"written: {out / 'convergence.json'}, {out / 'convergence.png'}")
    return result


def plot(result, out_png):
    """AUROC against steps for both schedules and the residual, as in the paper's Fig. 10c."""
    curves = {}
    for name, run in result["runs"].items():
        stop = max(run["steps_taken"])
        curves[f"{name} schedule (stops at {stop}: {run['auroc_at_stop']:.3f})"] = run["auroc"]
    last = max(float(k) for run in result["runs"].values() for k in run["auroc"])
    curves[f"residual |y − x̂| ({result['residual_auroc']:.3f})"] = {0: result["residual_auroc"],
                                                                    last: result["residual_auroc"]}
    s = result["slices"]
    title = (f"{result['subject']}, λ = {result['lam']:g}: {s['with_lesion']} of {s['lesion_slices_in_volume']} "
             f"lesion slices + {len(s['indices']) - s['with_lesion']} healthy")
    return plot_convergence(curves, Path(out_png), title=title, ylabel="AUROC of |y − x̂| (brain pixels)")


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, DatasetError) as err:
        sys.exit(f"error: {err}")
