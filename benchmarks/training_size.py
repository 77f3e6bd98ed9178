"""How the number of healthy training subjects moves a normative model's scores (a learning curve).

The cross-validated rows (``benchmarks/reproduce.py``) train each fold's model on the lesion-free
slices of the 7–8 BraTS cases of the other folds. This study retrains the model of some folds on
nested subsets of those cases — the first ``n`` of a seeded order of the fold's training cases, so
every smaller set lies inside the larger ones — with the same settings, calibrates it on the same
calibration cases and scores the same test cases. The calibration cases also give the validation
loss, as in the cross-validation, and the intensity standardisation is fitted on the subset. If the
scores still rise from ``n`` = 2 to 4 to all cases, more healthy training data would lift the rows.

The point "all cases" is the cross-validation's own fold run when ``--full`` names that
cross-validation (its ``folds.json`` must hold the same folds); it is only read. Without ``--full``
it is trained here like the others.

Usage::

    python benchmarks/training_size.py --data ../shared/data/brats18 --out runs/training_size \\
        --model gmvae --model-kwargs '{"clusters": 3}' --sizes 2,4 --folds-used 0 \\
        --full runs/repro128/flair/gmvae-c3 --json benchmarks/training_size.json \\
        --figure docs/training_size.png

Outputs: ``OUT/n<n>/fold-<i>/`` (runs), ``OUT/n<n>/report-folds<i...>/`` (the evaluation of the
test cases of the folds used, e.g. ``report-folds012/``), the ``--json`` summary (per size: training
slices, best epoch, healthy validation L1/SSIM at it, and per method the subject AUROC and the DSC and
FPR at the 5 % FPR limit per test case and their means) and the ``--figure``. Every step resumes: a
rerun trains, calibrates and scores only what is missing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import foldstudy  # noqa: E402

#: The measures read from each report, per test case.
MEASURES = ("auroc", "dice@fpr@0.05", "fpr@fpr@0.05")


def nested_subset(fold, n: int, seed: int):
    """``fold`` with only the first ``n`` training cases of a seeded order kept in ``train``.

    The other training cases get ``split=None`` (no stage uses them); calibration and test cases
    are unchanged. ``n = 0`` keeps all of them.
    """
    import numpy as np

    train = sorted(s.id for s in fold.subjects if s.split == "train")
    order = [train[i] for i in np.random.default_rng(seed).permutation(len(train))]
    keep = set(order[:n] if n else order)
    subjects = [s if s.split != "train" or s.id in keep else dataclasses.replace(s, split=None)
                for s in fold.subjects]
    return dataclasses.replace(fold, subjects=subjects)


def _read_report(report: Path) -> dict:
    """``{method: {subject: {measure: value}}}`` from a report folder (read by ``tfuad compare``'s reader)."""
    from tfuad.reports.compare import load_report

    out: dict = {}
    for measure in MEASURES:
        for method, values in load_report(report, measure)["methods"].items():
            for subject, value in values.items():
                out.setdefault(method, {}).setdefault(subject, {})[measure] = value
    return out


def _run_facts(run: Path) -> dict:
    """Training slices, epochs run, the kept epoch (the convergence rule's record) and its validation L1/SSIM."""
    from tfuad.training.checkpoint import read_state
    from tfuad.training.run import RunDir

    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    state = read_state(RunDir(run).checkpoint_dir)
    best_epoch = state["convergence"]["best_epoch"]
    best = next(r for r in state["history"] if int(r["epoch"]) == best_epoch)
    return {"train_subjects": len(config["data"]["train_subjects"]), "train_slices": config["data"]["n_train_slices"],
            "epochs": state["epoch"], "best_epoch": best_epoch, "val_l1": float(best["val_l1"]),
            "val_ssim": float(best["val_ssim"])}


def _figure(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = summary["sizes"]
    x = [s["train_subjects"] for s in sizes]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    styles = {"residual": "C0", "map-tv": "C1", "map-tv-positive": "C3", "intensity": "0.4"}
    for ax, measure, title in ((axes[0], "auroc", "subject AUROC"), (axes[1], "dice@fpr@0.05", "DSC at 5 % FPR")):
        for method, color in styles.items():
            if not all(method in s["methods"] for s in sizes):
                continue
            means = [s["methods"][method][measure]["mean"] for s in sizes]
            ls = "--" if method == "intensity" else "-"
            ax.plot(x, means, ls, marker="o", color=color, label=method)
            for xi, s in zip(x, sizes):
                values = list(s["methods"][method][measure]["per_subject"].values())
                ax.scatter([xi] * len(values), values, s=8, color=color, alpha=0.35)
        ax.set_xlabel("healthy training cases")
        ax.set_title(title)
        ax.set_xticks(x)
    axes[0].legend(fontsize=8)
    axes[2].plot(x, [s["val_l1"] for s in sizes], marker="o", color="C2")
    axes[2].set_xlabel("healthy training cases")
    axes[2].set_title("healthy validation L1 at the kept epoch")
    axes[2].set_xticks(x)
    fig.suptitle(summary["title"], fontsize=10)
    fig.tight_layout()
    foldstudy.save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    foldstudy.add_arguments(parser, runs=False)
    parser.add_argument("--modality", default="flair")
    parser.add_argument("--model", default="gmvae")
    parser.add_argument("--model-kwargs", default='{"clusters": 3}', help="model options as JSON")
    parser.add_argument("--sizes", default="2,4", help="training cases per model (comma-separated; 0 = all)")
    parser.add_argument("--folds-used", default="0", help="which folds to retrain (comma-separated)")
    parser.add_argument("--subset-seed", type=int, default=0, help="seed of the order the subsets are cut from")
    parser.add_argument("--full", default=None, help="the cross-validation whose fold runs are the 'all cases' point")
    parser.add_argument("--methods", default="residual,map-tv,map-tv-positive,intensity")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="mixed_bfloat16", choices=("float32", "mixed_bfloat16"))
    parser.add_argument("--schedule", default="fast", choices=("paper", "fast"))
    args = parser.parse_args(argv)

    import numpy as np

    from tfuad.training import TrainConfig
    from tfuad.workflows.crossval import train_and_calibrate
    from tfuad.workflows.evaluate import evaluate_folds

    log = foldstudy.log
    out = Path(args.out)
    folds = foldstudy.folds_of(args, args.full)
    used = [int(i) for i in args.folds_used.split(",")]
    methods = args.methods.split(",")
    learned = [m for m in methods if m != "intensity"]
    sizes = [int(n) for n in args.sizes.split(",")]
    if args.full:
        sizes = [n for n in sizes if n != 0] + [0]
    config = TrainConfig(model=args.model, modality=args.modality, epochs=args.epochs, patience=args.patience,
                         batch_size=args.batch_size, image_size=args.image_size, seed=args.seed, standardize=True,
                         model_kwargs=json.loads(args.model_kwargs), precision=args.precision)
    schedule = {"schedule": args.schedule}
    results = []
    for n in sizes:
        runs = []
        for i in used:
            fold = nested_subset(folds[i], n, args.subset_seed)
            if n == 0 and args.full:
                run = Path(args.full) / f"fold-{i}"
            else:
                run = out / f"n{n or 'all'}" / f"fold-{i}"
                log(f"n = {n or 'all'}, fold {i}: training on "
                    f"{', '.join(s.id for s in fold.subjects if s.split == 'train')}")
                train_and_calibrate(run, fold, config, methods, schedule, log)
            runs.append((run, fold))
        report = out / f"n{n or 'all'}" / f"report-folds{''.join(map(str, used))}"
        if not (report / "per_subject.csv").is_file():
            evaluate_folds(runs, report, methods=learned, include_intensity="intensity" in methods, log=log,
                           **schedule)
        scores = _read_report(report)
        facts = [_run_facts(run) for run, _ in runs]
        entry = {"n": n, "train_subjects": int(np.mean([f["train_subjects"] for f in facts])),
                 "train_slices": [f["train_slices"] for f in facts], "epochs": [f["epochs"] for f in facts],
                 "best_epoch": [f["best_epoch"] for f in facts],
                 "val_l1": float(np.mean([f["val_l1"] for f in facts])),
                 "val_ssim": float(np.mean([f["val_ssim"] for f in facts])), "methods": {}}
        for method, per in scores.items():
            entry["methods"][method] = {
                m: {"mean": float(np.mean([v[m] for v in per.values()])),
                    "per_subject": {s: v[m] for s, v in per.items()}} for m in MEASURES}
        results.append(entry)
    title = (f"{args.modality.upper()}, {args.model} {args.model_kwargs}, {args.image_size} px: folds "
             f"{args.folds_used} of {args.folds}, the same test cases at every size")
    summary = {"title": title, "settings": vars(args), "sizes": results}
    lines = [f"# {title}", "", "| training cases | slices | kept epoch | val L1 | val SSIM | "
             + " | ".join(f"{m} subject AUROC | {m} DSC@5% | {m} FPR@5%" for m in methods) + " |",
             "|" + "---|" * (5 + 3 * len(methods))]
    for e in results:
        cells = [str(e["train_subjects"]), "/".join(map(str, e["train_slices"])), "/".join(map(str, e["best_epoch"])),
                 f"{e['val_l1']:.4f}", f"{e['val_ssim']:.3f}"]
        for m in methods:
            r = e["methods"].get(m)
            cells += ([f"{r['auroc']['mean']:.3f}", f"{r['dice@fpr@0.05']['mean']:.3f}",
                       f"{r['fpr@fpr@0.05']['mean']:.3f}"] if r else ["", "", ""])
        lines.append("| " + " | ".join(cells) + " |")
    foldstudy.finish(summary, args, "\n".join(lines) + "\n", _figure)


if __name__ == "__main__":
    main()
