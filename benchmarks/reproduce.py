"""Reproduce both papers' tables on real data, side by side, resumably.

For each modality, every method of Baur et al. (2018) and Chen et al. (2020)
is trained on the healthy slices of the protocol's training subjects,
calibrated on healthy calibration data only, and evaluated on the test
subjects; FLAIR models are also evaluated on a second dataset (MSLUB) to show
cross-dataset behaviour. Every step leaves its result on disk and is skipped
when it is there, so an interrupted run continues where it stopped and a
finished row is never recomputed (raising ``--epochs`` continues training).

Usage::

    python benchmarks/reproduce.py --data ../shared/data/brats18 --out runs/reproduce \\
        --modality flair --image-size 64 --epochs 10 --mslub ../shared/data/mslub

Outputs in ``OUT``: ``<modality>/<row>/run`` (run directory), ``<modality>/<row>/report``
(``summary.json`` …), ``<modality>/table.md`` and ``table.json`` (the table with settings and
timings), ``<modality>/mslub_table.md``, ``<modality>/reconstructions.png`` (every model's
reconstruction of one test slice), and ``timings.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


@dataclass(frozen=True)
class Row:
    """One line of the table: which model, trained how, scored by which method."""

    key: str          # folder name of the run it uses
    label: str        # table label ({z} is replaced by the latent size actually used)
    model: str        # tfuad model name
    method: str       # residual | map-tv | intensity
    options: dict = field(default_factory=dict)   # model constructor options; "latent_ratio" → latent_size


ROWS = (
    Row("svae", "intensity baseline", "svae", "intensity"),
    Row("dae", "dAE", "dae", "residual"),
    Row("sae-r32", "sAE (8×8×64 at 256; here {z})", "sae", "residual", {"latent_ratio": 32}),
    Row("sae-r16", "sAE (16×16×64 at 256; here {z})", "sae", "residual", {"latent_ratio": 16}),
    Row("dvae", "dVAE", "dvae", "residual"),
    Row("svae", "sVAE", "svae", "residual"),
    Row("saegan", "sAE-GAN", "saegan", "residual"),
    Row("anovaegan", "AnoVAEGAN", "anovaegan", "residual"),
    Row("anogan", "AnoGAN", "anogan", "residual"),
    Row("vae", "VAE (residual)", "vae", "residual"),
    Row("vae", "VAE (MAP-TV)", "vae", "map-tv"),
    Row("gmvae-c3", "GMVAE c=3 (MAP-TV)", "gmvae", "map-tv", {"clusters": 3}),
    Row("gmvae-c6", "GMVAE c=6 (MAP-TV)", "gmvae", "map-tv", {"clusters": 6}),
    Row("gmvae-c9", "GMVAE c=9 (MAP-TV)", "gmvae", "map-tv", {"clusters": 9}),
)


def _model_kwargs(row: Row, image_size: int) -> dict:
    kwargs = {k: v for k, v in row.options.items() if k != "latent_ratio"}
    if "latent_ratio" in row.options:
        kwargs["latent_size"] = max(image_size // row.options["latent_ratio"], 1)
    return kwargs


def _label(row: Row, image_size: int) -> str:
    z = _model_kwargs(row, image_size).get("latent_size")
    return row.label.format(z=f"{z}×{z}×64" if z else "")


class Clock:
    """Wall-clock seconds per step, kept in ``timings.json`` across restarts."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def record(self, key: str, seconds: float):
        self.data[key] = self.data.get(key, 0.0) + seconds
        from tfuad.files import write_json

        write_json(self.data, self.path)


def _train(row, folder, dataset, args, clock, log):
    from tfuad.training import TrainConfig, train
    from tfuad.training.checkpoint import read_state
    from tfuad.training.run import RunDir

    run = RunDir(folder / "run")
    state = read_state(run.checkpoint_dir) if run.exists() else None
    done = int(state["epoch"]) if state else 0
    if run.model_path.is_file() and done >= args.epochs:
        return run
    config = TrainConfig(model=row.model, modality=args.modality, epochs=args.epochs, batch_size=args.batch_size,
                         image_size=args.image_size, seed=args.seed, standardize=args.standardize,
                         model_kwargs=_model_kwargs(row, args.image_size))
    log(f"[{row.key}] training {row.model} {config.model_kwargs or ''} from epoch {done + 1} to {args.epochs}")
    start = time.perf_counter()
    train(run.path, dataset, config, resume=run.exists(), log=log, verbose=2)
    clock.record(f"{args.modality}/{row.key}/train", time.perf_counter() - start)
    return run


def _calibrate(row, run, dataset, args, clock, log):
    from tfuad.workflows.calibrate import calibrate_run

    if run.calibration_path(row.method).is_file():
        return
    log(f"[{row.key}] calibrating {row.method}")
    start = time.perf_counter()
    calibrate_run(run.path, dataset, method=row.method, schedule=args.schedule, max_steps=args.max_steps, log=log)
    clock.record(f"{args.modality}/{row.key}/calibrate-{row.method}", time.perf_counter() - start)


def _evaluate(row, run, dataset, out, args, clock, log, tag=""):
    from tfuad.workflows.evaluate import evaluate_run

    summary_path = out / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    log(f"[{row.key}] evaluating {row.method}{tag}")
    start = time.perf_counter()
    methods = () if row.method == "intensity" else (row.method,)
    summary = evaluate_run(run.path, dataset, out, methods=methods, include_intensity=row.method == "intensity",
                           schedule=args.schedule, max_steps=args.max_steps, log=log)
    clock.record(f"{args.modality}/{row.key}/evaluate-{row.method}{tag}", time.perf_counter() - start)
    return summary


def _table(results, args, title):
    from tfuad.reports.tables import markdown_table

    lines = [f"# {title}\n", "", markdown_table([dict(r, label=label) for label, r in results]).rstrip(), ""]
    return "\n".join(lines)


def _reconstruction_figure(runs, dataset, args, path, log):
    """Every model's reconstruction of one test slice (the one with the most lesion)."""
    import numpy as np

    from tfuad.data.splits import labelled_test_subjects
    from tfuad.detection.detector import Detector
    from tfuad.reports import figures

    if not hasattr(figures, "reconstruction_comparison") or not runs:
        log("reconstruction figure skipped: tfuad.reports.figures.reconstruction_comparison is not available")
        return
    subject = labelled_test_subjects(dataset, log)[0]
    image = truth = None
    recons = {}
    for label, run in runs.items():
        det = Detector(run.path, "residual")
        prep = det.prepare(subject.image(args.modality), brain_mask_path=subject.brain_mask,
                           lesion_mask_path=subject.lesion_mask)
        z = int(np.argmax(prep.lesion.reshape(len(prep.lesion), -1).sum(1)))
        x = prep.slices[z:z + 1]
        recon = np.asarray(det.model.reconstruct(x))[0, ..., 0]
        if image is None:
            image, truth = x[0, ..., 0], prep.lesion[z].reshape(x.shape[1:3])
        # models normalise differently (percentile vs z-score): show every reconstruction on the
        # first model's intensity scale, through the affine map between the two inputs' brain pixels;
        # outside the brain (never scored) the input is shown
        brain = prep.brain[z].reshape(x.shape[1:3]).astype(bool)
        a, b = np.polyfit(x[0, ..., 0][brain], image[brain], 1)
        recons[label] = np.where(brain, a * recon + b, image)
    figures.reconstruction_comparison(image, recons, truth=truth, path=path,
                                      title=f"{subject.id}, {args.modality}, one axial slice")
    log(f"wrote {path}")


def _dataset(args):
    from tfuad.data.layouts import discover

    dataset = discover(args.data)
    return dataset if args.protocol == "none" else dataset.with_protocol(args.protocol)


def _rows(args):
    wanted = set(args.rows.split(",")) if args.rows else None
    return [r for r in ROWS if not wanted or r.key in wanted]


def _row_done(row, folder, modality, mslub) -> bool:
    done = (folder / f"report-{row.method}" / "summary.json").is_file()
    if mslub and modality == "flair":
        done = done and (folder / f"mslub-{row.method}" / "summary.json").is_file()
    return done


def _run_row(row, args, dataset, mslub, clock, log):
    """Train, calibrate and evaluate one row (each step skipped when its result exists)."""
    folder = Path(args.out) / args.modality / row.key
    run = _train(row, folder, dataset, args, clock, log)
    _calibrate(row, run, dataset, args, clock, log)
    _evaluate(row, run, dataset, folder / f"report-{row.method}", args, clock, log)
    if mslub is not None and args.modality == "flair":
        _evaluate(row, run, mslub, folder / f"mslub-{row.method}", args, clock, log, tag=" on MSLUB")


def _write_tables(args, modality, log):
    from tfuad.training.run import RunDir

    out = Path(args.out) / modality
    results, cross, runs = [], [], {}
    for row in _rows(args):
        folder = out / row.key
        label = _label(row, args.image_size)
        for name, bucket in ((f"report-{row.method}", results), (f"mslub-{row.method}", cross)):
            path = folder / name / "summary.json"
            if path.is_file():
                bucket.append((label, json.loads(path.read_text())["methods"][0]))
        if row.method == "residual" or row.model == "gmvae":
            run = RunDir(folder / "run")
            if run.model_path.is_file():
                z = _model_kwargs(row, args.image_size).get("latent_size")
                name = f"sAE {z}×{z}" if row.model == "sae" else label.split(" (")[0]
                runs.setdefault(name, run)
    settings = {k: v for k, v in vars(args).items() if k not in ("rows", "worker")}
    settings["modality"] = modality
    title = f"{modality.upper()}, {args.protocol}, image {args.image_size}, {args.epochs} epochs"
    (out / "table.md").write_text(_table(results, args, title))
    (out / "table.json").write_text(json.dumps(
        {"settings": settings, "rows": [{"label": lb, **r} for lb, r in results],
         "timings": Clock(Path(args.out) / "timings.json").data}, indent=2, default=str))
    if cross:
        (out / "mslub_table.md").write_text(_table(cross, args, f"{modality.upper()} models on MSLUB ({title})"))
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BraTS folder (the protocol assigns splits)")
    parser.add_argument("--protocol", default="brats-healthy-slices",
                        help="split protocol applied to --data ('none': use the dataset's own splits)")
    parser.add_argument("--out", required=True, help="output folder (resumable)")
    parser.add_argument("--modality", action="append", help="repeatable; default: flair then t2")
    parser.add_argument("--epochs", type=int, default=150, help="training epochs per model (papers: 150)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedule", default="fast", choices=("paper", "fast"), help="MAP-TV schedule")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="step limit of the MAP-TV schedule (default: its own; the README tables use 50)")
    parser.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=True,
                        help="histogram standardisation learned on the training subjects (default on)")
    parser.add_argument("--rows", default=None,
                        help=f"comma-separated row keys (default: all): {','.join(dict.fromkeys(r.key for r in ROWS))}")
    parser.add_argument("--mslub", default=None, help="MSLUB folder: also evaluate the FLAIR models there")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    def log(msg):
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    modalities = list(args.modality or ["flair", "t2"])
    if args.worker:  # one row of one modality, in its own process
        from tfuad.data.layouts import discover

        mslub = discover(args.mslub) if args.mslub else None
        args.modality = modalities[0]
        for row in _rows(args):
            _run_row(row, args, _dataset(args), mslub, Clock(out / "timings.json"), log)
        return 0

    import subprocess

    base = [a for a in argv if a not in ("--worker",)]
    base = [a for i, a in enumerate(base) if a != "--modality" and (i == 0 or base[i - 1] != "--modality")]
    base = [a for i, a in enumerate(base) if a != "--rows" and (i == 0 or base[i - 1] != "--rows")]
    failed = []
    for modality in modalities:
        keys = list(dict.fromkeys(r.key for r in _rows(args)))
        for key in keys:
            rows = [r for r in _rows(args) if r.key == key]
            if all(_row_done(r, out / modality / key, modality, args.mslub) for r in rows):
                continue
            cmd = [sys.executable, __file__, *base, "--modality", modality, "--rows", key, "--worker"]
            for attempt in (1, 2):  # a crashed process resumes from its last checkpoint
                log(f"{modality}/{key}: {'starting' if attempt == 1 else 'retrying'}")
                if subprocess.run(cmd).returncode == 0:
                    break
            else:
                failed.append(f"{modality}/{key}")
        runs = _write_tables(args, modality, log)
        args.modality = modality
        _reconstruction_figure(runs, _dataset(args), args, out / modality / "reconstructions.png", log)
        args.modality = None
        print((out / modality / "table.md").read_text())
    if failed:
        log(f"failed rows: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
