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

Every fold's calibration thresholds and every test case's scores are cached as JSON in ``OUT``, so
a rerun continues where it stopped. Writes ``OUT/summary.json``, ``OUT/summary.md``, the ``--json``
copy and the ``--figure``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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

    from tfuad.files import atomic_path

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
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


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
    parser.add_argument("--data", required=True, help="dataset with labelled cases (BraTS folder)")
    parser.add_argument("--runs", required=True, help="cross-validation folder (folds.json, fold-<i>/)")
    parser.add_argument("--out", required=True, help="cache and summary folder (resumable)")
    parser.add_argument("--report", default=None, help="the cross-validation's kept report, to check against")
    parser.add_argument("--methods", default=",".join(METHODS), help="methods, each calibrated in every fold")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="post-processing variants")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--fold-seed", type=int, default=0)
    parser.add_argument("--calib-per-fold", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the summary here too")
    parser.add_argument("--figure", default=None, help="write the figure here too")
    args = parser.parse_args(argv)

    from tfuad.data.folds import cross_validation_folds, fold_table
    from tfuad.data.layouts import discover
    from tfuad.data.splits import labelled_test_subjects, prepare_split, split_subjects
    from tfuad.detection.detector import Detector
    from tfuad.files import read_json, write_json, write_text

    def log(msg):
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    runs, out = Path(args.runs), Path(args.out)
    folds = cross_validation_folds(discover(Path(args.data).resolve()), args.folds, seed=args.fold_seed,
                                   calib_per_fold=args.calib_per_fold)
    recorded = json.loads((runs / "folds.json").read_text(encoding="utf-8"))["folds"]
    if recorded != fold_table(folds):
        raise SystemExit(f"{runs}/folds.json: other folds than --folds/--fold-seed/--calib-per-fold make")
    methods, configs = args.methods.split(","), variant_configs(args.variants.split(","))
    cases, modality = {}, None
    for i, fold in enumerate(folds):
        run = runs / f"fold-{i}"
        detectors = {m: Detector(run, m) for m in methods}
        for det in detectors.values():
            det.calibration()  # the calibrated settings (λ, schedule) and a check that the weights match
        first = next(iter(detectors.values()))
        modality = first.config["data"]["modality"]
        cal_path = out / f"fold-{i}" / "calibration.json"
        if cal_path.is_file():
            thresholds = read_json(cal_path)
        else:
            log(f"fold {i}: calibrating {len(configs)} variants on its healthy calibration slices")
            preps = prepare_split(split_subjects(fold, "calib"), modality, first.pconfig, first.stats, log=log)[0]
            thresholds = calibrate_fold(detectors, preps, configs)
            write_json(thresholds, cal_path)
        if "paper" in configs:
            for method, det in detectors.items():
                stored = det.calibration().thresholds[_key(0.05)]
                mine = thresholds[method]["paper"][_key(0.05)]
                if not np.isclose(stored, mine, rtol=1e-4, atol=1e-6):
                    log(f"fold {i} [{method}]: paper-variant threshold {mine:.6g} differs from the calibration's "
                        f"{stored:.6g}")
        for subject in labelled_test_subjects(fold, log):
            path = out / f"fold-{i}" / f"{subject.id}.json"
            if not path.is_file():
                start = time.perf_counter()
                prep = first.prepare(subject.image(modality), brain_mask_path=subject.brain_mask,
                                     lesion_mask_path=subject.lesion_mask)
                write_json(score_subject(detectors, prep, configs, thresholds), path)
                log(f"fold {i}: {subject.id} scored in {time.perf_counter() - start:.0f} s")
            cases[subject.id] = read_json(path)
    variants = list(configs)
    title = (f"{modality.upper()}, {runs}: {len(cases)} test cases, {args.folds} folds, thresholds recalibrated "
             "per variant on healthy slices")
    summary = {"title": title, "runs": os.fspath(runs), "methods": methods, "variants": variants,
               "settings": {v: VARIANTS[v][1] for v in variants}, "means": summarise(cases, methods, variants),
               "per_case": cases}
    if args.report and "paper" in configs:
        summary["paper_against_report"] = check_against_report(cases, Path(args.report), methods, log)
    write_json(summary, out / "summary.json")
    if args.json:
        write_json(summary, args.json)
    text = _markdown(summary)
    write_text(text, out / "summary.md")
    print(text)
    if args.figure:
        _figure(summary, Path(args.figure))
        log(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
