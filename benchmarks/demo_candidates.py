"""Which model and scoring method the demo should use, judged on demo subjects it never sees.

Every candidate is trained on the healthy training subjects of the built-in demo dataset
(``tfuad data demo``, seed 0, the data ``make demo`` uses) and calibrated on its healthy
calibration subjects, exactly as ``scripts/demo.sh`` does. It is then scored on the test
subjects of a *second* demo dataset written with another seed (``--test-seed``, default 1:
the same generator, other anatomy deformations, lesions and noise), never on the demo's own
test subjects, so the choice is not tuned to what the demo shows.

For each candidate the table gives the mean per-subject AUROC of each lesion type, the pooled
AUROC and the mean Dice at the threshold calibrated for 5 % FPR over all test subjects, the
FPR reached there, the training epochs (run / best) and the wall time of training, calibration
and evaluation on this machine. Every step is skipped when its result is on disk, and an
interrupted training resumes from its last epoch (its time then counts from the restart), so an
interrupted run continues where it stopped.

Usage::

    python benchmarks/demo_candidates.py --out runs/demo_candidates \\
        [--candidates vae-20,vae-conv,...] [--json benchmarks/demo_candidates.json] [--figure PNG]

Writes ``OUT/table.md``, ``OUT/table.json`` and, per candidate, ``OUT/<name>/`` (run directory)
and ``OUT/<name>/report-seed<K>/`` (the ``tfuad evaluate`` report).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Lesion types of the demo's test subjects (heterotopia: the iso-intense grey-matter nodules).
TYPES = ("ms", "tumour", "cavity", "heterotopia")


@dataclass(frozen=True)
class Candidate:
    """A model trained one way and scored by one method."""

    name: str
    model: str
    method: str
    train: tuple = ()           # extra options of `tfuad train`
    calibrate: tuple = ()       # extra options of `tfuad calibrate`
    description: str = ""


#: Training budgets: the demo's own (20 epochs) and the default convergence rule with a high cap.
QUICK = ("--epochs", "20", "--patience", "6")
CONVERGED = ("--epochs", "150", "--patience", "10")

CANDIDATES = {c.name: c for c in (
    Candidate("vae-20", "vae", "residual", QUICK, description="VAE, 64 px, at most 20 epochs (patience 6), residual"),
    Candidate("vae-conv", "vae", "residual", CONVERGED,
              description="VAE, 64 px, to convergence (cap 150, patience 10), residual"),
    Candidate("vae-conv-maptv", "vae", "map-tv", CONVERGED,
              description="the same converged VAE, MAP-TV (paper schedule, 500 steps; λ from healthy slices)"),
    Candidate("vae-20-maptv", "vae", "map-tv", QUICK, ("--schedule", "fast"),
              description="the 20-epoch VAE, MAP-TV (fast schedule; λ from healthy slices)"),
    Candidate("svae-20", "svae", "residual", QUICK,
              description="sVAE (Baur), 64 px, at most 20 epochs (patience 6), residual"),
    Candidate("svae-conv", "svae", "residual", CONVERGED, description="sVAE (Baur), 64 px, to convergence, residual"),
    Candidate("vae2x2-20", "vae", "residual", QUICK + ("-O", "filters=[16,32,64,128,256]"),
              description="VAE with five encoder blocks: a 2×2 latent at 64 px, as the paper's six give at 128 px"),
    Candidate("vae-s0.25-20", "vae", "residual", QUICK + ("-O", "sigma=0.25"),
              description="VAE with likelihood σ = 0.25 (the paper's √½ weighs the KL term 8× more), 20 epochs"),
    Candidate("vae2x2-s0.25-20", "vae", "residual", QUICK + ("-O", "filters=[16,32,64,128,256]", "-O", "sigma=0.25"),
              description="the 2×2-latent VAE with likelihood σ = 0.25, 20 epochs"),
    Candidate("dvae-20", "dvae", "residual", QUICK,
              description="dVAE (Baur, dense 512-d latent), 64 px, at most 20 epochs (patience 6), residual"),
    Candidate("dae-20", "dae", "residual", QUICK,
              description="dAE (Baur, dense 512-d bottleneck), 64 px, at most 20 epochs (patience 6), residual"),
    Candidate("intensity", "vae", "intensity", QUICK,
              description="intensity threshold (same z-score normalisation; no model used)"),
)}


def _run_name(c: Candidate) -> str:
    """The run folder: the first candidate trained the same way (same model, same options) owns it."""
    return next(o.name for o in CANDIDATES.values() if (o.model, o.train) == (c.model, c.train))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="working folder (created; reruns resume)")
    p.add_argument("--candidates", default="vae-20,vae-conv,intensity",
                   help=f"comma-separated, from: {', '.join(CANDIDATES)}")
    p.add_argument("--modality", default="flair")
    p.add_argument("--test-seed", type=int, default=1, help="seed of the held-out test dataset")
    p.add_argument("--json", type=Path, help="also write the table's JSON here")
    p.add_argument("--figure", type=Path, help="also draw the table as bars into this PNG")
    return p.parse_args(argv)


def _tfuad(*args) -> float:
    """Run one tfuad command; return its wall time in seconds."""
    start = time.perf_counter()
    print("$ tfuad " + " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "tfuad.cli.main", *map(str, args)], check=True)
    return time.perf_counter() - start


def _timed(stamp: Path, *args) -> float:
    """Run a command once: its wall time is kept in ``stamp`` and read back on later runs."""
    if stamp.exists():
        return json.loads(stamp.read_text(encoding="utf-8"))["seconds"]
    seconds = _tfuad(*args)
    stamp.write_text(json.dumps({"seconds": seconds}), encoding="utf-8")
    return seconds


def _epochs(run: Path) -> tuple[int, int]:
    """Epochs run and the best epoch the training kept, from the run's checkpoint state."""
    from tfuad.training.checkpoint import read_state
    from tfuad.training.run import RunDir

    state = read_state(RunDir(run).checkpoint_dir)
    return state["epoch"], state["convergence"]["best_epoch"]


def evaluate_candidate(c: Candidate, out: Path, train_data: Path, test_data: Path, test_seed: int,
                       modality: str) -> dict:
    run = out / _run_name(c)
    run.mkdir(parents=True, exist_ok=True)
    if (run / "config.json").is_file():  # an interrupted training continues from its last epoch
        train = ("train", c.model, "--data", train_data, "--out", run, "--resume", *c.train)  # stored settings
    else:
        train = ("train", c.model, "--data", train_data, "--modality", modality, "--out", run, "--image-size", 64,
                 "--figure-every", 0, "--overwrite", *c.train)
    train_s = _timed(run / "train.time.json", *train)
    calib_s = _timed(run / f"calibrate-{c.method}.time.json", "calibrate", run, "--data", train_data,
                     "--method", c.method, "--median-size", 3, *c.calibrate)
    report = out / c.name / f"report-seed{test_seed}"
    eval_s = _timed(out / c.name / f"{report.name}.time.json", "evaluate", "--model", run, "--data", test_data,
                    "--method", c.method, "--out", report)
    summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    method = next(m for m in summary["methods"] if m["method"] == c.method)
    by_type = {t["group"]: t["auroc"] for t in summary["by_lesion_type"] if t["method"] == c.method}
    epochs, best = _epochs(run)
    if c.method == "intensity":  # the run only supplies the normalisation: no training to report
        epochs = best = train_s = None
    return {
        "name": c.name, "description": c.description, "model": c.model, "method": c.method,
        "auroc_by_type": {t: by_type.get(t) for t in TYPES},
        "auroc": method["auroc"], "dice@fpr@0.05": method["dice"]["fpr@0.05"]["mean"],
        "dice_ci": [method["dice"]["fpr@0.05"]["low"], method["dice"]["fpr@0.05"]["high"]],
        "fpr_reached@0.05": method["achieved_fpr"]["fpr@0.05"]["mean"],
        "epochs": epochs, "best_epoch": best,
        "seconds": {"train": train_s, "calibrate": calib_s, "evaluate": eval_s},
    }


def table(rows: list[dict]) -> str:
    head = ("| candidate | " + " | ".join(TYPES) + " | AUROC | DSC@5% [95 % CI] | FPR reached | epochs (best) |"
            " train / calibrate / evaluate (s) |")
    lines = [head, "|" + "---|" * (len(TYPES) + 6)]
    for r in rows:
        types = " | ".join("—" if r["auroc_by_type"][t] is None else f"{r['auroc_by_type'][t]:.3f}" for t in TYPES)
        s = r["seconds"]
        epochs = "—" if r["epochs"] is None else f"{r['epochs']} ({r['best_epoch']})"
        train = "—" if s["train"] is None else f"{s['train']:.0f}"
        lines.append(f"| {r['name']} | {types} | {r['auroc']:.3f} | {r['dice@fpr@0.05']:.3f} "
                     f"[{r['dice_ci'][0]:.3f}, {r['dice_ci'][1]:.3f}] | {r['fpr_reached@0.05']:.3f} | "
                     f"{epochs} | {train} / {s['calibrate']:.0f} / {s['evaluate']:.0f} |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: Path, title: str) -> Path:
    """Grouped bars: each candidate's mean per-subject AUROC per lesion type, and its DSC@5%."""
    import numpy as np

    from tfuad.canvas import new_figure, save_figure

    fig = new_figure(11.0, 4.6)
    ax_auc, ax_dice = fig.subplots(1, 2, gridspec_kw={"width_ratios": [len(TYPES) + 1, 1.6]})
    width = 0.8 / len(rows)
    x = np.arange(len(TYPES) + 1)
    for i, r in enumerate(rows):
        values = [r["auroc_by_type"][t] or 0.0 for t in TYPES] + [r["auroc"]]
        ax_auc.bar(x + (i - (len(rows) - 1) / 2) * width, values, width, label=r["name"])
        low, high = r["dice_ci"]
        ax_dice.bar(i, r["dice@fpr@0.05"], 0.8, yerr=[[r["dice@fpr@0.05"] - low], [high - r["dice@fpr@0.05"]]],
                    capsize=3, color=f"C{i}")
    ax_auc.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax_auc.set_xticks(x, list(TYPES) + ["all (pooled)"], fontsize=8)
    ax_auc.set_ylim(0.0, 1.0)
    ax_auc.set_ylabel("AUROC (mean per subject)")
    ax_auc.legend(fontsize=7, ncol=min(len(rows), 5), loc="upper center", bbox_to_anchor=(0.5, -0.09),
                  frameon=False)
    ax_dice.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=60, ha="right", fontsize=7)
    ax_dice.set_ylabel("Dice at 5 % FPR (95 % CI)")
    ax_dice.set_ylim(0.0, 1.0)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        print(f"error: unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    train_data, test_data = args.out / "data-seed0", args.out / f"data-seed{args.test_seed}"
    for data, seed in ((train_data, 0), (test_data, args.test_seed)):
        if not (data / "manifest.csv").exists():
            _tfuad("data", "demo", "--out", data, "--seed", seed)
    rows = [evaluate_candidate(CANDIDATES[n], args.out, train_data, test_data, args.test_seed, args.modality)
            for n in names]
    md = (f"Trained and calibrated on the demo dataset (seed 0), scored on the test subjects of seed "
          f"{args.test_seed} ({args.modality}). Per-type columns: mean per-subject AUROC.\n\n" + table(rows))
    (args.out / "table.md").write_text(md, encoding="utf-8")
    result = {"modality": args.modality, "test_seed": args.test_seed, "rows": rows}
    (args.out / "table.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.figure:
        figure(rows, args.figure, f"Demo candidates ({args.modality}): trained on the demo data, "
                                  f"scored on the test subjects of seed {args.test_seed}")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
