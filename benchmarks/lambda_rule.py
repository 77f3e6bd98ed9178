"""Issue #15: does Chen et al.'s λ rule find a dip, and a better lesion map, with another TV region?

Chen et al. (2020, Section 2.2.2, Eq. 7) choose the smallest λ minimising::

    ε(λ) = (1/S) Σ_s ||Y_s − X̂_λ,s||₁

over healthy validation slices, and expect a dip: a small λ lets the prior
change a lot, a very large λ "may also yield changes that have low TV".
With the package's masked restoration (gradient zero outside the brain, so
``D = X − Y = 0`` there) the TV of ``D`` charges any constant offset inside
the brain at the brain border, ε(λ) falls monotonically and the rule picks the
largest λ of the grid. This study restores the same healthy calibration
slices with three TV variants:

* ``a``: the current one: TV over all pixel pairs, brain border charged
  (``tv_region="image"``, brain mask);
* ``b``: TV only over pixel pairs with both pixels inside the brain, gradient
  still zero outside (``tv_region="brain"``, brain mask): a constant offset
  inside the brain is free;
* ``c``: no mask at all: every pixel moves, background included (what an
  unmasked implementation does); ε counts every pixel of the image (the
  brain-only ε is recorded too).

For each trained fold model of a cross-validation (``--runs``, default the
128 px FLAIR VAE of ``runs/repro128``) and each variant it records ε(λ) on the
fold's healthy calibration slices (exactly the ``lambda_slices`` = 32 slices
that ``tfuad calibrate`` draws: :func:`tfuad.workflows.calibrate.healthy_slices`
with seed 0), with the schedule the fold was calibrated with
(``calibration-map-tv.json``: the fast one, Adam, 30 steps), and the λ the
rule chooses. For reporting only (never for choosing) it scores the lesion
maps ``|Y − X̂|`` and ``max(Y − X̂, 0)`` on the fold's test subjects at the
chosen λ and at ``--test-lambdas``, beside the reconstruction residual of the
same model: pixel AUROC inside the brain, pooled over the fold's test
subjects, on raw slice maps in model space (no 3D post-processing). Restoring
whole volumes for every (variant, λ) is too slow on a shared 2-core CPU, so
each test subject is subsampled: up to ``--lesion-slices`` slices containing
lesion (evenly spaced over them) plus as many lesion-free slices with at least
``min_brain_fraction`` brain (evenly spaced over them). The subsample is
recorded in ``OUT/fold-<i>/test_slices.json``.

Every result is cached as JSON (``OUT/fold-<i>/<variant>/lam-<λ>.json``), so a
rerun continues where it stopped; ε is computed for every (fold, variant) first,
then the test scores in the order of ``--test-lambdas`` ("chosen" first).

Usage::

    python benchmarks/lambda_rule.py [--runs runs/repro128/flair/vae] [--out runs/lambda_rule] \\
        [--data ../shared/data/brats18] [--folds 0,1,2] [--variants a,b,c] \\
        [--test-lambdas chosen,12,4,2,32,1,8] [--lesion-slices 12] [--plot-only]

``--schedule paper`` replaces the calibrated schedule (e.g. a probe of the
paper's 500 plain gradient steps on fewer slices: ``--schedule paper
--lambda-slices 8 --lambdas 1,2,4,8,16,32 --no-test --out
runs/lambda_rule/paper-probe``); the ε(λ) of such a probe folder (``--probe``)
is drawn in an extra column of the figure.

Writes ``OUT/summary.json``, ``OUT/summary.md`` and the figure ``--png``
(default ``docs/lambda_rule.png``): ε(λ) per variant with the chosen λ marked,
and the AUROC against λ per variant with the residual's as horizontal lines.

Findings (``docs/lambda_rule.png``; 3 folds, 32 calibration slices, fast
schedule; test AUROC on 12 lesion + 12 lesion-free slices per test subject,
means over the folds):

* ε(λ) falls monotonically over 0.25…64 for all three variants in every
  fold, so the rule picks λ = 64, the largest of the grid, every time: no
  interior minimum. Variant ``b`` changes healthy slices more than ``a`` at
  every λ (the free offset inside the brain), ``c`` more still.
* The lesion maps are best at λ = 4…12 (variant ``a``: 0.826 / 0.830 / 0.827
  for |Y − X̂| at λ = 4 / 8 / 12, 0.798 at the chosen 64); ``b`` is below
  ``a`` at every λ and fold (0.800 at best), ``c`` within 0.01 of ``a``. The
  residual of the same model: 0.742 (raw maps on the same slices; 0.706 /
  0.702 / 0.795 raw on the whole test volumes of folds 0 / 1 / 2).
* With the paper schedule (fold 0, 8 slices, λ = 1…32) both ``a`` and ``b``
  dip at λ = 4: the dip comes from the fixed-step schedule, not from the TV's
  region.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402

from tfuad.errors import ConfigError  # noqa: E402
from tfuad.files import read_json, write_json  # noqa: E402

#: The TV variants: label, ``tv_region`` of the restorer, and whether the brain mask is given.
VARIANTS = {
    "a": {"label": "(a) all pairs, brain border charged (current)", "tv_region": "image", "masked": True},
    "b": {"label": "(b) only pairs inside the brain", "tv_region": "brain", "masked": True},
    "c": {"label": "(c) no mask (whole image moves)", "tv_region": "image", "masked": False},
}
LAMBDAS = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)
COLORS = {"a": "tab:blue", "b": "tab:orange", "c": "tab:green"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs/repro128/flair/vae",
                   help="cross-validation folder (folds.json, fold-<i>/ runs, report/per_subject.csv)")
    p.add_argument("--data", default=None, help="dataset (default: the one folds.json names)")
    p.add_argument("--out", default="runs/lambda_rule", help="cache and summary folder")
    p.add_argument("--png", default="docs/lambda_rule.png", help="figure")
    p.add_argument("--folds", default=None, help="comma-separated fold numbers (default: all)")
    p.add_argument("--variants", default="a,b,c", help="comma-separated variants of " + ", ".join(VARIANTS))
    p.add_argument("--lambdas", default=",".join(f"{v:g}" for v in LAMBDAS), help="λ grid of ε(λ)")
    p.add_argument("--test-lambdas", default="chosen,12,4,2,32,1,8",
                   help="λ values scored on the test subjects, in this order ('chosen': the rule's λ)")
    p.add_argument("--lambda-slices", type=int, default=32, help="healthy calibration slices (as calibrate)")
    p.add_argument("--schedule", default=None,
                   help="restoration schedule (default: the one each fold's map-tv was calibrated with)")
    p.add_argument("--lesion-slices", type=int, default=12,
                   help="lesion slices per test subject (evenly spaced); as many lesion-free ones are added")
    p.add_argument("--no-test", action="store_true", help="only ε(λ)")
    p.add_argument("--plot-only", action="store_true", help="summarise and draw the cached results")
    p.add_argument("--probe", default="runs/lambda_rule/paper-probe",
                   help="cache folder of a run with another schedule (e.g. --schedule paper) whose ε(λ) is "
                        "drawn in an extra column when it exists")
    return p.parse_args(argv)


def _lam_key(lam: float) -> str:
    return f"lam-{float(lam):g}.json"


def evenly(indices, n):
    """Up to ``n`` entries of ``indices``, evenly spaced."""
    indices = np.asarray(indices)
    if len(indices) <= n:
        return indices
    return indices[np.linspace(0, len(indices) - 1, n).round().astype(int)]


class Fold:
    """One fold's model, schedule, healthy calibration slices and test subsample, loaded on first use."""

    def __init__(self, runs: Path, index: int, dataset, out: Path, args):
        self.index, self.run = index, runs / f"fold-{index}"
        self.dataset, self.out, self.args = dataset, out / f"fold-{index}", args
        self._detector = self._calib = self._test = None
        self._restorers = {}
        calibration = read_json(self.run / "calibration-map-tv.json")
        self.schedule = args.schedule or calibration["extra"]["schedule"]
        self.calibrated_lambda = float(calibration["extra"]["lambda"])
        self.calibrated_curve = {float(k): v for k, v in calibration["extra"]["lambda_curve"].items()}

    @property
    def detector(self):
        from tfuad.detection.detector import Detector

        if self._detector is None:
            self._detector = Detector(self.run, "map-tv", calibrated=False, schedule=self.schedule)
        return self._detector

    def _prepared(self, split: str):
        from tfuad.data.splits import prepare_split, split_subjects

        det = self.detector
        return prepare_split(split_subjects(self.dataset, split), det.config["data"]["modality"], det.pconfig,
                             det.stats, log=print)[0]

    @property
    def calib(self):
        """``(slices, brains)``: the healthy calibration slices the λ search of ``tfuad calibrate`` uses."""
        from tfuad.workflows.calibrate import healthy_slices

        if self._calib is None:
            self._calib = healthy_slices(self._prepared("calib"), self.detector.pconfig, self.args.lambda_slices)
        return self._calib

    @property
    def test(self):
        """Subsampled test slices ``dict(y, truth, brain, subject)`` and the residual maps of the same model."""
        from tfuad.detection.methods.residual import ResidualMethod

        if self._test is None:
            parts, record = [], []
            for prep in self._prepared("test"):
                z = len(prep.slices)
                lesion = prep.lesion.reshape(z, -1).any(axis=1)
                enough = prep.brain_fraction() >= self.detector.pconfig.min_brain_fraction
                with_lesion = evenly(np.flatnonzero(lesion), self.args.lesion_slices)
                healthy = evenly(np.flatnonzero(~lesion & enough), len(with_lesion))
                pick = np.sort(np.concatenate([with_lesion, healthy]))
                name = Path(prep.volume.path).name.split("_flair")[0].split(".nii")[0]
                parts.append((prep.slices[pick], prep.lesion[pick], prep.brain[pick], np.full(len(pick), len(record))))
                record.append({"subject": name, "slices": pick.tolist(), "lesion_slices": with_lesion.tolist(),
                               "lesion_slices_in_volume": int(lesion.sum()), "slices_in_volume": z})
            y, truth, brain, subject = (np.concatenate(p) for p in zip(*parts))
            residual = ResidualMethod(self.detector.model, background=self.detector.pconfig.background_value)
            estimate = residual.slice_maps(y, brain)[1]
            self._test = dict(y=y, truth=truth, brain=brain, subject=subject, names=[r["subject"] for r in record])
            write_json({"rule": f"per test subject: up to {self.args.lesion_slices} lesion slices evenly spaced "
                                "over those with lesion, plus as many lesion-free slices with at least "
                                "min_brain_fraction brain, evenly spaced", "subjects": record},
                       self.out / "test_slices.json")
            path = self.out / "residual.json"
            if not path.is_file():
                write_json(self.scores(y - estimate), path)
        return self._test

    def scores(self, diff) -> dict:
        """AUROC of ``|diff|`` and ``max(diff, 0)`` on brain pixels: pooled and per subject."""
        from tfuad.metrics.segmentation import auc_scores

        t = self.test
        out = {"pixels": int(t["brain"].sum()), "lesion_pixels": int((t["truth"] & t["brain"]).sum())}
        for name, score in (("abs", np.abs(diff)), ("positive", np.maximum(diff, 0.0))):
            out[f"auroc_{name}"] = float(auc_scores(score[t["brain"]], t["truth"][t["brain"]])[0])
            per = {}
            for k, subject in enumerate(t["names"]):
                rows = t["subject"] == k
                b, truth = t["brain"][rows], t["truth"][rows]
                per[subject] = float(auc_scores(score[rows][b], truth[b])[0])
            out[f"auroc_{name}_per_subject"] = per
        brain, truth = t["brain"], t["truth"]
        out["mean_change_lesion"] = float(np.abs(diff)[brain & truth].mean())
        out["mean_change_other_brain"] = float(np.abs(diff)[brain & ~truth].mean())
        return out

    def restorer(self, variant: str):
        from tfuad.detection.restoration import Restorer

        if variant not in self._restorers:
            self._restorers[variant] = Restorer(self.detector.model, lam=1.0, schedule=self.schedule,
                                                tv_region=VARIANTS[variant]["tv_region"])
        return self._restorers[variant]

    def restore(self, variant: str, lam: float, y, brain):
        restorer = self.restorer(variant)
        restorer.lam = lam
        start = time.perf_counter()
        x = restorer.restore(y, brain if VARIANTS[variant]["masked"] else None)
        return x, time.perf_counter() - start, list(restorer.steps_taken_)

    # -- cached steps ---------------------------------------------------------------------------
    def path(self, variant: str, lam: float) -> Path:
        return self.out / variant / _lam_key(lam)

    def epsilon(self, variant: str, lam: float) -> dict:
        path = self.path(variant, lam)
        record = read_json(path) if path.is_file() else {}
        if "eps" not in record:
            y, brain = self.calib
            x, seconds, steps = self.restore(variant, lam, y, brain)
            change = np.abs(y - x).reshape(len(y), -1)
            record.update(lam=float(lam), eps=float(change.sum(axis=1).mean()),
                          eps_brain=float((change * brain.reshape(len(y), -1)).sum(axis=1).mean()),
                          eps_slices=len(y), eps_seconds=seconds, eps_steps=steps)
            write_json(record, path)
            print(f"fold {self.index} {variant} λ={lam:g}: ε = {record['eps']:.1f} "
                  f"(brain {record['eps_brain']:.1f}), {seconds:.0f} s", flush=True)
        return record

    def test_scores(self, variant: str, lam: float) -> dict:
        path = self.path(variant, lam)
        record = read_json(path) if path.is_file() else {"lam": float(lam)}
        if "test" not in record:
            t = self.test
            x, seconds, steps = self.restore(variant, lam, t["y"], t["brain"])
            record["test"] = {**self.scores(t["y"] - x), "seconds": seconds, "steps": steps, "slices": len(x)}
            write_json(record, path)
            print(f"fold {self.index} {variant} λ={lam:g}: AUROC |Y−X̂| {record['test']['auroc_abs']:.3f}, "
                  f"positive {record['test']['auroc_positive']:.3f}, {seconds:.0f} s", flush=True)
        return record


def _cached(out: Path):
    """``{fold: {variant: {λ: record}}}`` from the cache folder."""
    results = {}
    for fold_dir in sorted(out.glob("fold-*")):
        fold = int(fold_dir.name.split("-")[1])
        for variant_dir in sorted(p for p in fold_dir.iterdir() if p.is_dir()):
            for f in variant_dir.glob("lam-*.json"):
                record = read_json(f)
                results.setdefault(fold, {}).setdefault(variant_dir.name, {})[float(record["lam"])] = record
    return results


def _chosen(records: dict, grid) -> float | None:
    from tfuad.detection.restoration import select_lambda

    curve = {lam: records[lam]["eps"] for lam in grid if lam in records and "eps" in records[lam]}
    return select_lambda(curve) if len(curve) == len(grid) else None


def _reproduction(runs: Path) -> dict:
    """Per-fold mean per-subject AUROC of the reproduction's report (whole volumes, post-processed)."""
    path = runs / "report" / "per_subject.csv"
    if not path.is_file():
        return {}
    folds = read_json(runs / "folds.json")["folds"]
    test_fold = {r["subject"]: r["fold"] for r in folds if r["split"] == "test"}
    sums = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            fold = test_fold.get(row["subject"])
            if fold is not None:
                sums.setdefault(fold, {}).setdefault(row["method"], []).append(float(row["auroc"]))
    return {fold: {m: float(np.mean(v)) for m, v in methods.items()} for fold, methods in sums.items()}


def summarise(out: Path, runs: Path, grid, variants, png: Path, probe: Path | None = None) -> dict:
    results = _cached(out)
    reproduction = _reproduction(runs)
    rows, curves = [], {}
    for fold, by_variant in sorted(results.items()):
        residual_path = out / f"fold-{fold}" / "residual.json"
        residual = read_json(residual_path) if residual_path.is_file() else None
        for variant in variants:
            records = by_variant.get(variant, {})
            chosen = _chosen(records, grid)
            eps = {lam: records[lam]["eps"] for lam in sorted(records) if "eps" in records[lam]}
            auroc = {lam: (records[lam]["test"]["auroc_abs"], records[lam]["test"]["auroc_positive"])
                     for lam in sorted(records) if "test" in records[lam]}
            curves[(fold, variant)] = dict(eps=eps, auroc=auroc, chosen=chosen,
                                           eps_brain={lam: records[lam]["eps_brain"] for lam in eps})
            at = auroc.get(chosen, (None, None))
            interior = chosen is not None and chosen not in (min(grid), max(grid))
            rows.append({"fold": fold, "variant": variant, "chosen_lambda": chosen, "interior_minimum": interior,
                         "chosen_lambda_brain_eps": _chosen({k: {"eps": v["eps_brain"]} for k, v in records.items()
                                                             if "eps_brain" in v}, grid),
                         "auroc_abs": at[0], "auroc_positive": at[1],
                         "residual_auroc_abs": residual and residual["auroc_abs"],
                         "residual_auroc_positive": residual and residual["auroc_positive"],
                         "auroc_by_lambda": {f"{k:g}": v for k, v in auroc.items()},
                         "eps": {f"{k:g}": v for k, v in eps.items()},
                         "reproduction_auroc": reproduction.get(fold)})
    slices = {r["eps_slices"] for f in results.values() for v in f.values() for r in v.values() if "eps_slices" in r}
    summary = {"grid": list(grid), "variants": {v: VARIANTS[v]["label"] for v in variants}, "rows": rows,
               "eps_slices": ", ".join(str(n) for n in sorted(slices)),
               "note": "AUROC: brain pixels of the subsampled test slices (test_slices.json), raw slice maps in "
                       "model space, pooled over the fold's test subjects; reproduction_auroc: mean per-subject "
                       "AUROC of the reproduction's report (whole volumes, post-processed, input grid)"}
    write_json(summary, out / "summary.json")
    _markdown(summary, out / "summary.md")
    if curves:
        plot(curves, summary, png, _probe(probe))
    return summary


def _probe(probe: Path | None):
    """``(title, {variant: {λ: ε}}, {variant: chosen λ})`` of the first fold of a probe cache, or ``None``."""
    results = _cached(probe) if probe is not None and probe.is_dir() else {}
    if not results:
        return None
    fold, by_variant = sorted(results.items())[0]
    any_record = next(iter(next(iter(by_variant.values())).values()))
    schedule = read_json(probe / "schedule.json")["schedule"] if (probe / "schedule.json").is_file() else "other"
    eps = {v: {lam: r["eps"] for lam, r in sorted(recs.items())} for v, recs in by_variant.items()}
    chosen = {v: _chosen(recs, sorted(recs)) for v, recs in by_variant.items()}
    title = f"fold {fold}, {schedule} schedule: ε(λ) on {any_record['eps_slices']} healthy calibration slices"
    return title, eps, chosen


def _fmt(v, spec=".3f"):
    return "–" if v is None else format(v, spec)


def _markdown(summary: dict, path: Path) -> None:
    lines = ["| fold | variant | chosen λ | interior min | AUROC abs | AUROC pos | residual abs | residual pos |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        lines.append(f"| {r['fold']} | {r['variant']} | {_fmt(r['chosen_lambda'], 'g')} | "
                     f"{'yes' if r['interior_minimum'] else 'no'} | {_fmt(r['auroc_abs'])} | "
                     f"{_fmt(r['auroc_positive'])} | {_fmt(r['residual_auroc_abs'])} | "
                     f"{_fmt(r['residual_auroc_positive'])} |")
    lines += ["", "AUROC (|Y−X̂| / positive part) against λ:", ""]
    for r in summary["rows"]:
        cells = ", ".join(f"{k}: {a:.3f}/{p:.3f}" for k, (a, p) in r["auroc_by_lambda"].items())
        lines.append(f"- fold {r['fold']} ({r['variant']}): {cells}")
    lines += ["", summary["note"], ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def plot(curves: dict, summary: dict, png: Path, probe=None) -> Path:
    from tfuad.canvas import check_png, new_figure, save_figure

    out = check_png(png)
    folds = sorted({f for f, _ in curves})
    residual = {r["fold"]: (r["residual_auroc_abs"], r["residual_auroc_positive"]) for r in summary["rows"]}
    columns = len(folds) + (probe is not None)
    fig = new_figure(4.2 * columns, 7.2)
    axes = fig.subplots(2, columns, squeeze=False)
    grid = summary["grid"]
    if probe is not None:
        title, eps, chosen = probe
        ax = axes[0, -1]
        for variant, values in eps.items():
            ax.plot(list(values), list(values.values()), "o-", ms=3, color=COLORS[variant],
                    label=summary["variants"].get(variant, variant))
            if chosen[variant] is not None:
                ax.plot([chosen[variant]], [values[chosen[variant]]], "*", ms=14, color=COLORS[variant],
                        markeredgecolor="black")
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(grid) / 1.3, max(grid) * 1.3)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.set_xlabel("λ (TV weight)")
        ax.set_title(title, fontsize=8)
        ax.legend(fontsize=6)
        axes[1, -1].axis("off")
    for col, fold in enumerate(folds):
        top, bottom = axes[0, col], axes[1, col]
        for variant, label in summary["variants"].items():
            c = curves.get((fold, variant))
            if not c or not c["eps"]:
                continue
            lams = list(c["eps"])
            top.plot(lams, list(c["eps"].values()), "o-", ms=3, color=COLORS[variant], label=label)
            if c["chosen"] is not None:
                top.plot([c["chosen"]], [c["eps"][c["chosen"]]], "*", ms=14, color=COLORS[variant],
                         markeredgecolor="black")
            if c["auroc"]:
                lams = list(c["auroc"])
                bottom.plot(lams, [v[0] for v in c["auroc"].values()], "o-", ms=3, color=COLORS[variant],
                            label=f"{variant}: |Y−X̂|")
                bottom.plot(lams, [v[1] for v in c["auroc"].values()], "s--", ms=3, color=COLORS[variant],
                            label=f"{variant}: max(Y−X̂, 0)")
                if c["chosen"] in c["auroc"]:
                    bottom.plot([c["chosen"]], [c["auroc"][c["chosen"]][0]], "*", ms=14, color=COLORS[variant],
                                markeredgecolor="black")
        abs_res, pos_res = residual.get(fold, (None, None))
        if abs_res is not None:
            bottom.axhline(abs_res, color="gray", label="residual |Y−x̂|")
            bottom.axhline(pos_res, color="gray", linestyle="--", label="residual max(Y−x̂, 0)")
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xlim(min(grid) / 1.3, max(grid) * 1.3)
            ax.set_xlabel("λ (TV weight)")
            ax.grid(alpha=0.3)
        top.set_yscale("log")
        top.set_title(f"fold {fold}, calibrated (fast) schedule: ε(λ) on {summary['eps_slices']} healthy "
                      "calibration slices (★ chosen)", fontsize=7)
        top.set_ylabel("ε(λ): mean ℓ1 change per slice")
        bottom.set_title(f"fold {fold}: test pixel AUROC in the brain (★ at chosen λ)", fontsize=8)
        bottom.set_ylabel("AUROC")
        if col == 0:
            top.legend(fontsize=6)
            if bottom.get_legend_handles_labels()[0]:
                bottom.legend(fontsize=6)
    return save_figure(fig, out)


def main(argv=None):
    args = parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    probe = Path(args.probe) if args.probe and Path(args.probe).resolve() != out.resolve() else None
    grid = sorted({float(v) for v in args.lambdas.split(",")})
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ConfigError(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if not args.plot_only:
        from tfuad.data.folds import cross_validation_folds, fold_table
        from tfuad.data.layouts import discover

        record = read_json(runs / "folds.json")
        s = record["settings"]
        dataset = discover(Path(args.data or s["dataset"]).resolve())
        folds = cross_validation_folds(dataset, s["k"], seed=s["seed"], calib_per_fold=s["calib_per_fold"],
                                       healthy_calib=s["healthy_calib"])
        if fold_table(folds) != record["folds"]:
            raise ConfigError(f"{runs / 'folds.json'}: the folds made from {dataset.root} differ from the "
                              "recorded ones")
        wanted = range(s["k"]) if args.folds is None else [int(v) for v in args.folds.split(",")]
        contexts = [Fold(runs, i, folds[i], out, args) for i in wanted]
        if args.schedule is not None:
            write_json({"schedule": args.schedule}, out / "schedule.json")
        start = time.perf_counter()
        for ctx in contexts:
            for variant in variants:
                for lam in grid:
                    ctx.epsilon(variant, lam)
            if "a" in variants and args.schedule is None and args.lambda_slices == 32:
                same = {lam: ctx.epsilon("a", lam)["eps"] for lam in grid if lam in ctx.calibrated_curve}
                worst = max(abs(v / ctx.calibrated_curve[lam] - 1) for lam, v in same.items())
                print(f"fold {ctx.index} (a): ε within {100 * worst:.2f} % of the calibration's curve", flush=True)
        print(f"ε(λ) done in {time.perf_counter() - start:.0f} s", flush=True)
        summarise(out, runs, grid, variants, Path(args.png), probe)
        if not args.no_test:
            for item in [v.strip() for v in args.test_lambdas.split(",")]:
                for ctx in contexts:
                    ctx.test  # noqa: B018  (writes test_slices.json and residual.json)
                    for variant in variants:
                        cached = _cached(out).get(ctx.index, {}).get(variant, {})
                        lam = _chosen(cached, grid) if item == "chosen" else float(item)
                        ctx.test_scores(variant, lam)
                summarise(out, runs, grid, variants, Path(args.png), probe)
            print(f"all done in {time.perf_counter() - start:.0f} s", flush=True)
    summary = summarise(out, runs, grid, variants, Path(args.png), probe)
    print((out / "summary.md").read_text())
    return summary


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        sys.exit(f"error: {err}")
