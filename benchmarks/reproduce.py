"""Reproduce both papers' tables on real data by cross-validation, side by side, resumably.

For each modality, every model of Baur et al. (2018) and Chen et al. (2020)
is cross-validated over the labelled cases (:func:`tfuad.workflows.crossval.crossval`):
in each of ``--folds`` folds it is trained to convergence (best validation
weights, learning-rate plateaus, early stopping; ``--epochs`` is the cap) on
the lesion-free slices of the other folds' cases, calibrated (thresholds, λ) on
``--calib-per-fold`` other cases' lesion-free slices, and scores the fold's own
cases. Every case is so tested once, by models that never saw it, and every
row reports means over all cases with bootstrap 95 % intervals. Every step
leaves its result on disk and is skipped when it is there, so an interrupted
run continues where it stopped (each model runs in its own process).

Usage::

    python benchmarks/reproduce.py --data ../shared/data/brats18 --out runs/repro128 \\
        --modality flair --image-size 128 --folds 3 --epochs 60

Outputs in ``OUT``: ``<modality>/<key>/`` (one cross-validation per model: ``folds.json``,
``fold-<i>/`` runs, ``report/``), ``<modality>/table.md`` and ``table.json`` (the table with
settings and timings), ``<modality>/reconstructions.png`` (every model's reconstruction of one
lesioned slice, by the fold that tests it), and ``timings.json``.

With ``--keep DIR`` every finished model's reports (``summary.json``, ``per_subject.csv``,
``summary.md``: a few tens of kB, no volumes) are also copied to ``DIR/<modality>/<key>/<report>/``,
and the tables hold every row found in ``OUT`` or in ``DIR``. Kept reports are what the repository
holds of the runs (``benchmarks/repro128/``): a later run in another ``OUT`` adds its rows to the same
table, and ``tfuad compare`` pairs any two rows from them without the run folders.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


@dataclass(frozen=True)
class Row:
    """One line of the table: which model, trained how, scored by which method."""

    key: str          # folder of the model's cross-validation
    label: str        # table label ({z} is replaced by the latent size actually used)
    model: str        # tfuad model name
    method: str       # a scoring method (tfuad.detection.methods)
    options: dict = field(default_factory=dict)   # model constructor options; "latent_ratio" → latent_size


ROWS = (
    Row("vae", "intensity baseline", "vae", "intensity"),
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
    Row("gmvae-c3", "GMVAE c=3 (residual)", "gmvae", "residual", {"clusters": 3}),
    Row("gmvae-c3", "GMVAE c=3 (MAP-TV)", "gmvae", "map-tv", {"clusters": 3}),
    Row("gmvae-c6", "GMVAE c=6 (MAP-TV)", "gmvae", "map-tv", {"clusters": 6}),
    Row("gmvae-c9", "GMVAE c=9 (MAP-TV)", "gmvae", "map-tv", {"clusters": 9}),
)
#: With ``--positive``: the same models scored by the positive part only (hyperintense lesions).
POSITIVE_ROWS = (
    Row("svae", "sVAE (positive residual)", "svae", "residual-positive"),
    Row("vae", "VAE (MAP-TV, positive)", "vae", "map-tv-positive"),
    Row("gmvae-c3", "GMVAE c=3 (MAP-TV, positive)", "gmvae", "map-tv-positive", {"clusters": 3}),
)
#: The order models are run in: the rows the targets compare first, the slowest (AnoGAN) last.
RUN_ORDER = ("vae", "svae", "gmvae-c3", "sae-r16", "dae", "dvae", "sae-r32", "gmvae-c6", "gmvae-c9", "saegan",
             "anovaegan", "anogan")


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

    @property
    def data(self) -> dict:
        """The seconds per step as on disk now (a worker process, or the other modality's run, adds to them)."""
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def record(self, key: str, seconds: float):
        from tfuad.files import write_json

        data = self.data
        data[key] = data.get(key, 0.0) + seconds
        write_json(data, self.path)

    def laps(self, key: str, log, every: float = 60.0):
        """``log`` that first adds the seconds since the last lap to ``key``.

        A lap is taken at every progress line and, between lines (a fold's training prints none
        for many minutes), every ``every`` seconds. A run killed part-way (a session's end,
        ``kill -9``) so keeps its time up to its last lap; call the result with ``None`` at the
        end to add the rest and stop the timer.
        """
        last, lock, stop = [time.perf_counter()], threading.Lock(), threading.Event()

        def lap():
            with lock:
                now = time.perf_counter()
                self.record(key, now - last[0])
                last[0] = now

        def timed(message):
            lap()
            if message is None:
                stop.set()
            else:
                log(message)

        def beat():
            while not stop.wait(every):
                lap()

        if every:
            threading.Thread(target=beat, name=f"clock {key}", daemon=True).start()
        return timed


def _rows(args) -> list:
    wanted = set(args.rows.split(",")) if args.rows else None
    rows = ROWS + (POSITIVE_ROWS if args.positive else ())
    return [r for r in rows if not wanted or r.key in wanted]


def _keys(args) -> list:
    keys = {r.key for r in _rows(args)}
    return [k for k in RUN_ORDER if k in keys]


def _report(out: Path, modality: str, key: str) -> Path:
    return out / modality / key / "report" / "summary.json"


#: The files of a report folder that are kept: what the tables and ``tfuad compare`` read.
KEPT_FILES = ("summary.json", "per_subject.csv", "summary.md")


def _keep_reports(args, modality: str, key: str) -> None:
    """Copy the reports of one finished model into ``--keep`` (each file atomically)."""
    if not args.keep:
        return
    from tfuad.files import atomic_path

    for report in sorted((Path(args.out) / modality / key).glob("report*/")):
        if not (report / "summary.json").is_file():
            continue
        dest = Path(args.keep) / modality / key / report.name
        dest.mkdir(parents=True, exist_ok=True)
        for name in KEPT_FILES:
            if (report / name).is_file():
                with atomic_path(dest / name) as tmp:
                    Path(tmp).write_bytes((report / name).read_bytes())


def _methods(args, key: str) -> list:
    """The methods one model is scored by: its rows' and, with ``--reference``, the intensity baseline."""
    methods = [r.method for r in _rows(args) if r.key == key] + (["intensity"] if args.reference else [])
    return list(dict.fromkeys(methods))


def _methods_found(root: Path) -> set:
    """The methods that one of a model's report folders (``report*/``) holds."""
    return {m["method"] for path in root.glob("report*/summary.json")
            for m in json.loads(path.read_text(encoding="utf-8"))["methods"]}


def _key_done(args, modality: str, key: str) -> bool:
    root = Path(args.out) / modality / key
    return (root / "report" / "summary.json").is_file() and set(_methods(args, key)) <= _methods_found(root)


def _run_key(key: str, args, clock, log) -> None:
    """Cross-validate one model for all its methods (resumable).

    A model whose cross-validation is finished is not evaluated again: the methods its reports
    lack (a row added later, the intensity baseline) are calibrated on each fold and scored into
    ``report-<methods>/``, over the same subjects.
    """
    from tfuad.data.layouts import discover
    from tfuad.training import TrainConfig
    from tfuad.workflows.crossval import crossval

    rows = [r for r in _rows(args) if r.key == key]
    methods = _methods(args, key)
    root = Path(args.out) / args.modality / key
    report = "report"
    if (root / report / "summary.json").is_file():  # finished: training and calibrations are resumed as no-ops
        methods = [m for m in methods if m not in _methods_found(root)]
        report = f"report-{'+'.join(methods)}"
    config = TrainConfig(model=rows[0].model, modality=args.modality, epochs=args.epochs, patience=args.patience,
                         batch_size=args.batch_size, image_size=args.image_size, seed=args.seed,
                         standardize=args.standardize, model_kwargs=_model_kwargs(rows[0], args.image_size),
                         precision=args.precision)
    log(f"[{args.modality}/{key}] {rows[0].model} {config.model_kwargs or ''}: {', '.join(methods)} -> {report}/")
    schedule = {"schedule": args.schedule, "max_steps": args.max_steps}
    timed = clock.laps(f"{args.modality}/{key}", log)
    try:
        crossval(discover(Path(args.data).resolve()), root, config, k=args.folds, seed=args.fold_seed,
                 calib_per_fold=args.calib_per_fold, methods=methods, calibration=schedule, evaluation=schedule,
                 report=report, log=timed)
    finally:
        timed(None)


def _table_rows(args, modality: str) -> list:
    """Every row whose model has a report, whichever rows this invocation ran (the table stays whole).

    A method is read from the model's ``report/`` or, failing that, from another ``report*/`` folder
    of the same cross-validation (a method evaluated later on the finished folds, e.g. ``report-intensity``).
    """
    rows = []
    roots = [Path(args.out)] + ([Path(args.keep)] if args.keep else [])
    for row in ROWS + POSITIVE_ROWS:
        paths = []
        # the intensity baseline is the same on every model's folds: the first model that has it
        keys = RUN_ORDER if row.method == "intensity" else (row.key,)
        for key in keys:
            for root in roots:  # the run folder first, then the kept reports
                main = _report(root, modality, key)
                others = sorted(set(main.parent.parent.glob("report*/summary.json")) - {main})
                paths += [main, *others] if main.is_file() else others
        for path in paths:
            found = [m for m in json.loads(path.read_text(encoding="utf-8"))["methods"]
                     if m["method"] == row.method]
            if found:  # reports made before they recorded the precision were float32
                bf16 = found[0].get("precision") == "mixed_bfloat16"
                rows.append(dict(found[0], label=_label(row, args.image_size) + (", bfloat16" if bf16 else "")))
                break
    return rows


def _write_tables(args, modality: str, clock) -> str:
    from tfuad.files import write_json, write_text
    from tfuad.reports.tables import markdown_table, measures_table

    rows = _table_rows(args, modality)
    title = (f"{modality.upper()}, BraTS 2018, {args.folds}-fold cross-validation over the labelled cases, "
             f"{args.image_size} px, at most {args.epochs} epochs (early stopping, patience {args.patience})")
    n = sorted({r["n_subjects"] for r in rows})
    text = "\n".join([f"# {title}", "", f"Subjects per row: {', '.join(map(str, n)) or 'none yet'}; "
                      "means with bootstrap 95 % intervals over subjects.", "", markdown_table(rows).rstrip(), "",
                      "At the 5 % FPR limit:", "", measures_table(rows).rstrip(), ""])
    for out in [Path(args.out) / modality] + ([Path(args.keep) / modality] if args.keep else []):
        out.mkdir(parents=True, exist_ok=True)
        write_text(text, out / "table.md")
    out = Path(args.out) / modality
    settings = {k: v for k, v in vars(args).items() if k not in ("rows", "worker", "modality")}
    write_json({"settings": {**settings, "modality": modality}, "rows": rows, "timings": clock.data},
               out / "table.json")
    return text


def _reconstruction_figure(args, modality: str, log) -> None:
    """Every trained model's reconstruction of one lesioned slice, by the fold that tests that case."""
    import numpy as np

    from tfuad.data.folds import cross_validation_folds
    from tfuad.data.layouts import discover
    from tfuad.detection.detector import Detector
    from tfuad.reports.figures import reconstruction_comparison

    folds = cross_validation_folds(discover(Path(args.data).resolve()), args.folds, seed=args.fold_seed,
                                   calib_per_fold=args.calib_per_fold)
    subject = next(s for s in folds[0] if s.split == "test")
    image = truth = None
    recons = {}
    for key in _keys(args):
        run = Path(args.out) / modality / key / "fold-0"
        if not (run / "model.keras").is_file():
            continue
        det = Detector(run, "residual", calibrated=False)
        prep = det.prepare(subject.image(modality), brain_mask_path=subject.brain_mask,
                           lesion_mask_path=subject.lesion_mask)
        z = int(np.argmax(prep.lesion.reshape(len(prep.lesion), -1).sum(1)))
        x = prep.slices[z:z + 1]
        recon = np.asarray(det.model.reconstruct(x))[0, ..., 0]
        if image is None:
            image, truth = x[0, ..., 0], prep.lesion[z].reshape(x.shape[1:3])
        # models normalise differently (percentile vs z-score): show every reconstruction on the first
        # model's intensity scale through the affine map between the inputs' brain pixels
        brain = prep.brain[z].reshape(x.shape[1:3]).astype(bool)
        a, b = np.polyfit(x[0, ..., 0][brain], image[brain], 1)
        recons[key] = np.where(brain, a * recon + b, image)
    if recons:
        path = Path(args.out) / modality / "reconstructions.png"
        reconstruction_comparison(image, recons, truth=truth, path=path,
                                  title=f"{subject.id}, {modality}: reconstructions by the fold that tests it")
        log(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset with labelled cases (BraTS folder)")
    parser.add_argument("--out", required=True, help="output folder (resumable)")
    parser.add_argument("--modality", action="append", help="repeatable; default: flair then t2")
    parser.add_argument("--folds", type=int, default=3, help="cross-validation folds over the labelled cases")
    parser.add_argument("--fold-seed", type=int, default=0)
    parser.add_argument("--calib-per-fold", type=int, default=2,
                        help="other folds' cases whose lesion-free slices calibrate each fold")
    parser.add_argument("--epochs", type=int, default=60, help="epoch cap per model (early stopping)")
    parser.add_argument("--patience", type=int, default=10, help="epochs without improvement before stopping")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"),
                        help="training and inference precision (default float32, as every row in the README; "
                             "mixed_bfloat16 trains 1.6-1.9x faster on CPUs with AVX-512 BF16)")
    parser.add_argument("--schedule", default="fast", choices=("paper", "fast"), help="MAP-TV schedule")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="step limit of the MAP-TV schedule (default: its own; the README tables use 50)")
    parser.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=True,
                        help="histogram standardisation learned on each fold's training subjects (default on: "
                             "raw BraTS intensities differ by scanner, and fixed z-score statistics do not "
                             "transfer without it)")
    parser.add_argument("--rows", default=None,
                        help=f"comma-separated model keys (default: all): {','.join(RUN_ORDER)}")
    parser.add_argument("--positive", action="store_true",
                        help="also score sVAE, VAE and GMVAE c=3 by the positive part (residual-positive, "
                             "map-tv-positive)")
    parser.add_argument("--keep", default=None,
                        help="also copy every finished model's reports (summary.json, per_subject.csv, summary.md) "
                             "here, and build the tables from the rows found in OUT or here "
                             "(the repository keeps them in benchmarks/repro128)")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                        help="also score the intensity baseline on every model's folds (a few minutes), so "
                             "each model's rows pair with it over the same subjects; the tables show it once, "
                             "since every model's folds give the same row")
    parser.add_argument("--table-only", action="store_true", help="only rewrite the tables and figure")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)

    def log(msg):
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    modalities = list(args.modality or ["flair", "t2"])
    clock = Clock(out / "timings.json")
    if args.worker:  # one model of one modality, in its own process
        args.modality = modalities[0]
        for key in _keys(args):
            _run_key(key, args, clock, log)
        return 0

    import subprocess

    base = [a for a in argv if a not in ("--worker",)]
    base = [a for i, a in enumerate(base) if a != "--modality" and (i == 0 or base[i - 1] != "--modality")]
    base = [a for i, a in enumerate(base) if a != "--rows" and (i == 0 or base[i - 1] != "--rows")]
    failed = []
    for modality in modalities:
        for key in [] if args.table_only else _keys(args):
            if _key_done(args, modality, key):
                continue
            cmd = [sys.executable, __file__, *base, "--modality", modality, "--rows", key, "--worker"]
            for attempt in (1, 2):  # a crashed process resumes from its last checkpoint
                log(f"{modality}/{key}: {'starting' if attempt == 1 else 'retrying'}")
                if subprocess.run(cmd).returncode == 0:
                    break
            else:
                failed.append(f"{modality}/{key}")
            print(_write_tables(args, modality, clock))
        for key in _keys(args):  # also models finished before --keep was given
            if (Path(args.out) / modality / key / "report" / "summary.json").is_file():
                _keep_reports(args, modality, key)
        print(_write_tables(args, modality, clock))
        _reconstruction_figure(args, modality, log)
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
