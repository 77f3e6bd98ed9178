"""How much of each row is the 3D post-processing? The same maps under other post-processing settings.

Baur et al.'s post-processing (5×5×5 median filter, brain mask eroded by 3 voxels, 3D components of
fewer than 6 voxels dropped) is applied to every method's map, at calibration and at detection. This
study keeps the trained, calibrated fold models of a cross-validation (``benchmarks/reproduce.py``)
and each method's calibrated settings (λ and the schedule for MAP-TV), makes every raw map once, and
then post-processes it with each variant of :data:`VARIANTS`. For every variant the FPR-limited
thresholds are recalibrated on the fold's healthy calibration slices exactly as ``tfuad calibrate``
does (the same cases, slices and voxels), so each variant is a complete, healthy-data-only pipeline;
the test cases are then scored with it: subject AUROC on the brain voxels, and the Dice and the FPR
reached at the 1 / 5 / 10 % limits. The test labels only score; nothing here chooses a setting. The
``paper`` variant is the cross-validation's own pipeline: its thresholds and scores are checked
against the fold calibrations and the kept report (``--report``), so the study and the table measure
the same thing.

Usage::

    python benchmarks/postprocessing.py --data ../shared/data/brats18 --runs runs/repro128/flair/gmvae-c3 \\
        --report benchmarks/repro128/flair/gmvae-c3/report --out runs/postprocessing/flair \\
        --json benchmarks/postprocessing_flair.json --figure docs/postprocessing_flair.png

Every fold's calibration thresholds and every test case's scores are cached as JSON in ``OUT``
(:func:`foldstudy.run_folds`), so a rerun continues where it stopped. Writes ``OUT/summary.json``,
``OUT/summary.md``, the ``--json`` copy and the ``--figure``.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import foldstudy  # noqa: E402
import numpy as np  # noqa: E402

#: Post-processing variants: name → (description, PostprocessConfig fields).
VARIANTS = {
    "none": ("no post-processing", dict(median_size=1, erosion_iterations=0, min_component_size=0)),
    "erosion": ("eroded mask only", dict(median_size=1, erosion_iterations=3, min_component_size=0)),
    "median": ("5³ median only", dict(median_size=5, erosion_iterations=0, min_component_size=0)),
    "median3": ("3³ median, erosion, components", dict(median_size=3, erosion_iterations=3, min_component_size=6)),
    "paper": ("5³ median, erosion, components (Baur)", dict(median_size=5, erosion_iterations=3,
                                                            min_component_size=6)),
    "median7": ("7³ median, erosion, components", dict(median_size=7, erosion_iterations=3, min_component_size=6)),
}
FPRS = (0.01, 0.05, 0.10)
METHODS = ("residual", "map-tv", "map-tv-positive", "intensity")


def _key(fpr: float) -> str:
    from tfuad.postprocessing.thresholds import fpr_key

    return fpr_key(fpr)


def variant_configs(names):
    """``{name: PostprocessConfig}`` of the variants named."""
    from tfuad.postprocessing.filters import PostprocessConfig

    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return {n: PostprocessConfig(**VARIANTS[n][1]) for n in names}


def calibrate_fold(detectors: dict, preps, configs: dict) -> dict:
    """``{method: {variant: {fpr key: threshold}}}`` from the fold's healthy calibration volumes."""
    from tfuad.postprocessing.filters import postprocess_map
    from tfuad.postprocessing.thresholds import fpr_thresholds
    from tfuad.workflows.calibrate import healthy_voxels

    values = {m: {v: [] for v in configs} for m in detectors}
    for prep in preps:
        shared = {}
        for method, det in detectors.items():
            raw = det.run_volume(prep, shared=shared).raw_map
            keep = healthy_voxels(prep, det.pconfig)
            for variant, config in configs.items():
                values[method][variant].append(postprocess_map(raw, prep.brain_mask, config)[keep])
    out = {}
    for method, per in values.items():
        out[method] = {}
        for variant, parts in per.items():
            thresholds = fpr_thresholds(np.concatenate(parts).astype(np.float32), FPRS)
            out[method][variant] = {_key(f): float(thresholds[f]) for f in FPRS}
    return out


def score_subject(detectors: dict, prep, configs: dict, thresholds: dict) -> dict:
    """``{method: {variant: {measure: value}}}`` of one labelled test volume."""
    from tfuad.metrics.segmentation import auc_scores, dice, false_positive_rate
    from tfuad.postprocessing.filters import postprocess_map, segment

    shared, out = {}, {}
    truth, brain = prep.lesion_mask.astype(bool), prep.brain_mask.astype(bool)
    for method, det in detectors.items():
        raw = det.run_volume(prep, shared=shared).raw_map
        out[method] = {}
        for variant, config in configs.items():
            score = postprocess_map(raw, brain, config)
            row = {"auroc": float(auc_scores(score[brain], truth[brain])[0])}
            for fpr in FPRS:
                key = _key(fpr)
                pred = segment(score, thresholds[method][variant][key], config)
                row[f"dice@{key}"] = dice(pred, truth)
                row[f"fpr@{key}"] = false_positive_rate(pred, truth, brain)
            out[method][variant] = row
    return out


def summarise(cases: dict, methods, variants) -> dict:
    """Means over the test cases: ``{method: {variant: {measure: mean}}}``."""
    out = {}
    for method in methods:
        out[method] = {}
        for variant in variants:
            per = {s: c[method][variant] for s, c in cases.items()}
            measures = next(iter(per.values())).keys()
            out[method][variant] = {m: float(np.mean([v[m] for v in per.values()])) for m in measures}
    return out


def check_against_report(cases: dict, report: Path, methods, log) -> dict:
    """Largest |difference| between the ``paper`` variant and the kept report, per method and measure."""
    from tfuad.reports.compare import load_report

    checks = {}
    for measure in ("auroc", "dice@fpr@0.05", "fpr@fpr@0.05"):
        kept = load_report(report, measure)["methods"]
        for method in methods:
            if method not in kept:
                continue
            diffs = [abs(c[method]["paper"][measure] - kept[method][s]) for s, c in cases.items() if s in kept[method]]
            checks.setdefault(method, {})[measure] = float(max(diffs)) if diffs else None
    log(f"paper variant against {report}: largest per-case difference {json.dumps(checks)}")
    return checks


def _figure(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants, methods = summary["variants"], summary["methods"]
    means = summary["means"]
    colors = {"residual": "C0", "map-tv": "C1", "map-tv-positive": "C3", "intensity": "0.45"}
    panels = (("auroc", "subject AUROC"), ("dice@fpr@0.05", "DSC at the 5 % FPR limit"),
              ("fpr@fpr@0.05", "FPR reached at the 5 % limit"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    width = 0.8 / len(methods)
    x = np.arange(len(variants))
    for ax, (measure, title) in zip(axes, panels):
        for j, method in enumerate(methods):
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, [means[method][v][measure] for v in variants],
                   width, color=colors.get(method, f"C{j}"), label=method)
        if measure.startswith("fpr@"):
            ax.axhline(0.05, color="k", lw=0.8, ls="--")
        ax.set_xticks(x)
        ax.set_xticklabels(variants, rotation=20)
        ax.set_title(title)
    axes[0].set_ylim(0.5, 1.0)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(methods), fontsize=9, frameon=False)
    fig.suptitle(summary["title"], fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    foldstudy.save_figure(fig, path)


def _markdown(summary: dict) -> str:
    variants, methods, means = summary["variants"], summary["methods"], summary["means"]
    lines = [f"# {summary['title']}", "", "Means over the test cases: subject AUROC / DSC@5% / FPR reached at 5 %.",
             "", "| variant | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for v in variants:
        cells = [f"{means[m][v]['auroc']:.3f} / {means[m][v]['dice@fpr@0.05']:.3f} / {means[m][v]['fpr@fpr@0.05']:.3f}"
                 for m in methods]
        lines.append(f"| {v}: {VARIANTS[v][0]} | " + " | ".join(cells) + " |")
    if "map-tv" in methods and "residual" in methods:
        lines += ["", "| variant | MAP-TV − residual, subject AUROC | DSC@5% |", "|---|---|---|"]
        for v in variants:
            lines.append(f"| {v} | {means['map-tv'][v]['auroc'] - means['residual'][v]['auroc']:+.3f} | "
                         f"{means['map-tv'][v]['dice@fpr@0.05'] - means['residual'][v]['dice@fpr@0.05']:+.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    foldstudy.add_arguments(parser)
    parser.add_argument("--report", default=None, help="the cross-validation's kept report, to check against")
    parser.add_argument("--methods", default=",".join(METHODS), help="methods, each calibrated in every fold")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="post-processing variants")
    args = parser.parse_args(argv)

    methods, configs = args.methods.split(","), variant_configs(args.variants.split(","))
    walk = foldstudy.run_folds(
        args, methods, lambda detectors, preps: {"thresholds": calibrate_fold(detectors, preps, configs)},
        lambda detectors, prep, calibration, _: score_subject(detectors, prep, configs, calibration["thresholds"]),
        pipeline="paper" if "paper" in configs else None)
    variants = list(configs)
    title = (f"{walk.modality.upper()}, {args.runs}: {len(walk.cases)} test cases, {args.folds} folds, thresholds "
             "recalibrated per variant on healthy slices")
    summary = {"title": title, "runs": os.fspath(args.runs), "methods": methods, "variants": variants,
               "settings": {v: VARIANTS[v][1] for v in variants}, "means": summarise(walk.cases, methods, variants),
               "per_case": walk.cases}
    if args.report and "paper" in configs:
        summary["paper_against_report"] = check_against_report(walk.cases, Path(args.report), methods,
                                                               foldstudy.log)
    foldstudy.finish(summary, args, _markdown(summary), _figure)


if __name__ == "__main__":
    main()
