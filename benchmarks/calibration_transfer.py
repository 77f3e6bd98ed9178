"""Why do thresholds set on healthy slices not hold on test volumes, and what fixes it on healthy data?

A threshold is calibrated on the brain voxels of healthy slices. In a cross-validation on BraTS those
are the tumour-free top and bottom of the calibration cases' brains, while a test volume is thresholded
everywhere: mid-brain slices, slices beside the tumour, tissue the restoration changed around it. This
study keeps the trained, calibrated fold models of a cross-validation (``benchmarks/reproduce.py``),
makes every method's post-processed map once per volume, and calibrates its FPR thresholds in each way
of :data:`VARIANTS`:

* ``slices``: the healthy slices' brain voxels, each alike (what ``tfuad calibrate`` does);
* ``position``: the same voxels, each weighted by ``p(bin) / q(bin)``, where ``bin`` is its axial
  position relative to its brain's extent (10 bins), ``p`` the share of all brain voxels of the
  calibration volumes in that bin and ``q`` the healthy voxels' share: the healthy voxels stand for
  the whole brain's axial profile as far as they cover it (bins without a healthy voxel are left
  out). Only which slices are healthy is read, as before; this is ``tfuad calibrate --weighting
  position`` (:func:`tfuad.postprocessing.thresholds.position_weights`);
* ``subject``: every map normalised per volume, ``(s − median) / IQR`` over the volume's eroded brain
  (all its slices; no label), at calibration and at test, then calibrated as ``slices``;
* ``subject+position``: both;
* ``voxels`` (a diagnostic, not a healthy-slice pipeline): every non-lesion brain voxel of the
  calibration volumes, so it reads their lesion labels voxel by voxel. It shows how far the limit
  would hold if calibration saw what a test volume holds, e.g. whole healthy brains.

Each variant is scored on the test cases: the FPR reached at the 1 / 5 / 10 % limits (over all healthy
brain voxels, and at 5 % by region: far slices, lesion slices more than 10 mm from the lesion, within
10 mm; see :func:`tfuad.metrics.segmentation.false_positive_regions`), the Dice there, and the pooled
AUROC over the test cases (which the per-volume normalisation changes; weights do not). The test labels
only score; nothing here chooses a setting. The ``slices`` thresholds are checked against the fold
calibrations, so the study's default row is the pipeline's.

Usage::

    python benchmarks/calibration_transfer.py --data ../shared/data/brats18 \\
        --runs runs/repro128/flair/gmvae-c3 --out runs/calibration_transfer/flair \\
        --json benchmarks/calibration_transfer_flair.json --figure docs/calibration_transfer_flair.png

Fold thresholds and per-case scores are cached in ``OUT`` (JSON, and each case's brain-voxel scores
as ``.npz`` for the pooled AUROC), so a rerun continues where it stopped.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import foldstudy  # noqa: E402
import numpy as np  # noqa: E402

#: Calibration variants: name → description.
VARIANTS = {
    "slices": "healthy slices, every voxel alike (the pipeline)",
    "position": "healthy slices, weighted to the brain's axial profile",
    "subject": "map normalised per volume, (s - median) / IQR",
    "subject+position": "normalised per volume and weighted to the axial profile",
    "voxels": "diagnostic: every non-lesion voxel of the calibration cases",
}
FPRS = (0.01, 0.05, 0.10)
METHODS = ("residual", "map-tv", "map-tv-positive", "intensity")
REGION_FPR = 0.05


def _key(fpr: float) -> str:
    from tfuad.postprocessing.thresholds import fpr_key

    return fpr_key(fpr)


def normalise(score, brain_mask, config) -> np.ndarray:
    """``(score − median) / IQR`` over the eroded brain (the voxels the post-processing keeps)."""
    from tfuad.postprocessing.filters import erode_mask

    inside = erode_mask(brain_mask, config.erosion_iterations)
    values = score[inside] if inside.any() else score[np.asarray(brain_mask, bool)]
    q25, q50, q75 = np.percentile(values, (25, 50, 75))
    scale = q75 - q25 if q75 > q25 else (np.abs(values - q50).max() or 1.0)
    out = ((score - q50) / scale).astype(np.float32)
    out[~inside] = out[inside].min() if inside.any() else out.min()
    return out


def calibrate_fold(detectors: dict, preps, variants) -> dict:
    """``{"thresholds": {method: {variant: {fpr key: t}}}, "coverage": float}`` from the calibration volumes."""
    from tfuad.postprocessing.thresholds import fpr_thresholds
    from tfuad.workflows.calibrate import calibration_weights, healthy_voxels

    values = {m: {"raw": [], "norm": [], "all": []} for m in detectors}
    for prep in preps:
        shared = {}
        for method, det in detectors.items():
            score = det.run_volume(prep, shared=shared).map
            keep = healthy_voxels(prep, det.pconfig)
            values[method]["raw"].append(score[keep])
            values[method]["norm"].append(normalise(score, prep.brain_mask, det.postprocess)[keep])
            values[method]["all"].append(score[prep.brain_mask & ~prep.lesion_mask.astype(bool)])
    # tfuad calibrate --weighting position
    position = calibration_weights(preps, next(iter(detectors.values())).pconfig)
    weights = position["volume"]
    out = {}
    for method, per in values.items():
        raw, norm = np.concatenate(per["raw"]), np.concatenate(per["norm"])
        picks = {"slices": (raw, None), "position": (raw, weights), "subject": (norm, None),
                 "subject+position": (norm, weights), "voxels": (np.concatenate(per["all"]), None)}
        out[method] = {}
        for variant in variants:
            data, w = picks[variant]
            thresholds = fpr_thresholds(data, FPRS, weights=w)
            out[method][variant] = {_key(f): float(thresholds[f]) for f in FPRS}
    return {"thresholds": out, "coverage": position["coverage"]}


def score_subject(detectors: dict, prep, variants, thresholds: dict) -> tuple:
    """``({method: {variant: {measure: value}}}, {method: {"raw"|"norm": brain-voxel scores}})``."""
    from tfuad.metrics.segmentation import dice, false_positive_rate, false_positive_regions, rate_in
    from tfuad.postprocessing.filters import segment

    truth, brain = prep.lesion_mask.astype(bool), prep.brain_mask.astype(bool)
    regions = false_positive_regions(truth, brain, spacing=prep.volume.zooms)
    shared, out, voxels = {}, {}, {}
    for method, det in detectors.items():
        score = det.run_volume(prep, shared=shared).map
        maps = {"raw": score, "norm": normalise(score, brain, det.postprocess)}
        voxels[method] = {k: v[brain] for k, v in maps.items()}
        out[method] = {}
        for variant in variants:
            s = maps["norm" if variant.startswith("subject") else "raw"]
            row = {}
            for fpr in FPRS:
                key = _key(fpr)
                pred = segment(s, thresholds[method][variant][key], det.postprocess)
                row[f"dice@{key}"] = dice(pred, truth)
                row[f"fpr@{key}"] = false_positive_rate(pred, truth, brain)
                if fpr == REGION_FPR:
                    row.update({f"fpr_{r}@{key}": rate_in(pred, m) for r, m in regions.items()})
            out[method][variant] = row
    return out, voxels


def pooled_auroc(cases, methods) -> dict:
    """``{method: {"raw"|"norm": AUROC}}`` over the brain voxels of the cached cases (``.npz`` paths)."""
    from tfuad.metrics.segmentation import auc_scores

    result = {}
    for method in methods:
        result[method] = {}
        for kind in ("raw", "norm"):
            scores, truths = [], []
            for path in cases:
                with np.load(path) as z:
                    scores.append(z[f"{method}:{kind}"])
                    truths.append(z["truth"])
            result[method][kind] = float(auc_scores(np.concatenate(scores), np.concatenate(truths))[0])
    return result


def summarise(cases: dict, methods, variants) -> dict:
    """Means over the test cases (NaN-aware: a region may be empty): ``{method: {variant: {measure: mean}}}``."""
    out = {}
    for method in methods:
        out[method] = {}
        for variant in variants:
            rows = [c[method][variant] for c in cases.values()]
            out[method][variant] = {m: float(np.nanmean([r[m] for r in rows])) for m in rows[0]}
    return out


def _markdown(summary: dict) -> str:
    variants, methods, means = summary["variants"], summary["methods"], summary["means"]
    k = _key(REGION_FPR)
    lines = [f"# {summary['title']}", "",
             f"Axial-position coverage of the healthy calibration slices: {summary['coverage']}.", "",
             "Means over the test cases. FPR reached at 1 / 5 / 10 %; at 5 %: far / beside / near; DSC@5%.", "",
             "| method | variant | FPR reached 1 / 5 / 10 % | at 5 %: far / beside / near | DSC@5% |",
             "|---|---|---|---|---|"]
    for m in methods:
        for v in variants:
            r = means[m][v]
            reached = " / ".join(f"{r[f'fpr@{_key(f)}']:.3f}" for f in FPRS)
            where = " / ".join(f"{r[f'fpr_{region}@{k}']:.3f}" for region in ("far", "beside", "near"))
            lines.append(f"| {m} | {v} | {reached} | {where} | {r[f'dice@{k}']:.3f} |")
    if summary.get("pooled_auroc"):
        lines += ["", "| method | pooled AUROC, map | normalised per volume |", "|---|---|---|"]
        for m, a in summary["pooled_auroc"].items():
            lines.append(f"| {m} | {a['raw']:.3f} | {a['norm']:.3f} |")
    return "\n".join(lines) + "\n"


def _figure(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants, methods, means = summary["variants"], summary["methods"], summary["means"]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 4.0), sharey=True)
    x = np.arange(len(FPRS))
    width = 0.8 / len(variants)
    for ax, method in zip(np.atleast_1d(axes), methods):
        ax.plot(x, FPRS, "k--", lw=0.8, label="limit")
        for j, v in enumerate(variants):
            ax.bar(x + (j - (len(variants) - 1) / 2) * width, [means[method][v][f"fpr@{_key(f)}"] for f in FPRS],
                   width, color=f"C{j}", label=v)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{f:.0%}" for f in FPRS])
        ax.set_title(method)
        ax.set_xlabel("FPR limit")
    np.atleast_1d(axes)[0].set_ylabel("FPR reached on the test volumes")
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(variants) + 1, fontsize=9, frameon=False)
    fig.suptitle(summary["title"], fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    foldstudy.save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    foldstudy.add_arguments(parser)
    parser.add_argument("--methods", default=",".join(METHODS), help="methods, each calibrated in every fold")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="calibration variants")
    args = parser.parse_args(argv)

    from tfuad.files import atomic_path

    methods, variants = args.methods.split(","), args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    def score(detectors, prep, calibration, stem):
        scores, voxels = score_subject(detectors, prep, variants, calibration["thresholds"])
        flat = {f"{m}:{k}": v for m, per in voxels.items() for k, v in per.items()}
        with atomic_path(stem.with_suffix(".npz")) as tmp, open(tmp, "wb") as f:
            np.savez(f, truth=prep.lesion_mask.astype(bool)[prep.brain_mask.astype(bool)], **flat)
        return scores

    walk = foldstudy.run_folds(args, methods, lambda detectors, preps: calibrate_fold(detectors, preps, variants),
                               score, pipeline="slices" if "slices" in variants else None)
    title = (f"{walk.modality.upper()}, {args.runs}: {len(walk.cases)} test cases, {args.folds} folds, FPR "
             "thresholds calibrated on the folds' calibration cases in each way")
    arrays = [path.with_suffix(".npz") for path in walk.case_paths.values()]
    summary = {"title": title, "runs": os.fspath(args.runs), "methods": methods, "variants": variants,
               "descriptions": {v: VARIANTS[v] for v in variants},
               "coverage": [round(c["coverage"], 3) for c in walk.calibrations],
               "means": summarise(walk.cases, methods, variants), "pooled_auroc": pooled_auroc(arrays, methods),
               "per_case": walk.cases}
    foldstudy.finish(summary, args, _markdown(summary), _figure)


if __name__ == "__main__":
    main()
