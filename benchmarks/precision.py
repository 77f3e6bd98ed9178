"""Mixed bfloat16 against float32: training, residual maps and MAP-TV restoration, in one process.

Every figure runs both precisions on the same weights, alternating them round by round (the machine
may be shared: compare the two precisions within one run, not across runs):

* training slices/s of the paper-size prior (``vae``) and of a Baur et al. model (``--baur-model``,
  default ``sae``) at ``--image-size``, each precision's model starting from the same weights;
* residual inference slices/s of both models (:class:`tfuad.detection.methods.residual.ResidualMethod` on a
  ``--slices`` volume);
* MAP-TV milliseconds per slice-step of the prior (plain gradient steps on ``--batch-sizes`` slices);
* whole-volume seconds of the fast schedule (Adam, at most 30 steps, stopping rule) on the volume, and
  the steps it took at each precision;
* with ``--model RUN_DIR --data DATASET [--protocol NAME]`` (a trained run; λ from its MAP-TV
  calibration, else ``--lam``): the development-test pixel AUROC (brain voxels of every labelled test
  subject, pooled) of residual and fast MAP-TV maps at both precisions, and its change. The run's model
  then replaces the untrained prior in every inference figure and its first test subject is the volume.
  Without ``--model`` the inference figures come from an untrained prior and smooth noise, and AUROC is
  not measured.

Each speed-up is given twice: from wall-clock time, and from the process's CPU time. Other processes
on a shared machine inflate the wall clock; the CPU time is less disturbed by them but counts the
thread pools' spinning between short operations, so it understates the speed-up of short,
many-operation workloads. Speed-ups above 1 mean bfloat16 is faster.

TensorFlow's oneDNN kernels are turned on unless ``TF_ENABLE_ONEDNN_OPTS`` is already set: without
them bfloat16 convolutions are emulated and slower than float32 (``tfuad.precision``).

Usage::

    python benchmarks/precision.py [--rounds 3] [--quick] [--image-size 128] [--slices 155]
        [--train-batch 16] [--train-steps 20] [--batch-sizes 32,155] [--steps 4] [--baur-model sae]
        [--model RUN_DIR --data DATASET [--protocol NAME] [--lam L]] [--json benchmarks/precision.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from tfuad.detection.methods.residual import ResidualMethod  # noqa: E402
from tfuad.detection.restoration import GradientAscent, Restorer, restoration_batch_size  # noqa: E402
from tfuad.files import atomic_path  # noqa: E402
from tfuad.models import build_model  # noqa: E402
from tfuad.precision import (  # noqa: E402
    FLOAT32,
    MIXED_BFLOAT16,
    cpu_supports_bfloat16,
    onednn_enabled,
    read_cpu_flags,
    resolve_precision,
)

PRECISIONS = (FLOAT32, MIXED_BFLOAT16)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=128, help="slice side (default 128)")
    p.add_argument("--slices", type=int, default=155, help="slices of the synthetic volume (default 155)")
    p.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds (default 3)")
    p.add_argument("--quick", action="store_true", help="one round, fewer steps")
    p.add_argument("--baur-model", default="sae", help="the Baur et al. model to time (default sae)")
    p.add_argument("--train-batch", type=int, default=16, help="training batch size (default 16)")
    p.add_argument("--train-steps", type=int, default=20, help="training steps per timing (default 20)")
    p.add_argument("--batch-sizes", default="32,155", help="MAP-TV batch sizes of the per-step figure")
    p.add_argument("--steps", type=int, default=4, help="MAP-TV steps per timing (default 4)")
    p.add_argument("--model", default=None, help="trained run directory (default: untrained models)")
    p.add_argument("--data", default=None, help="with --model: the dataset holding the test subjects")
    p.add_argument("--protocol", default=None, help="with --model: split protocol applied to --data")
    p.add_argument("--lam", type=float, default=None, help="with --model: MAP-TV λ (default: the calibrated one)")
    p.add_argument("--json", default=str(Path(__file__).with_suffix(".json")), help="where to write the results")
    return p.parse_args(argv)


def synthetic_volume(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random slices (values around 0 with unit spread), ``(n, size, size, 1)``."""
    rng = np.random.default_rng(seed)
    vol = gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, 3, 3))
    return (vol / vol.std())[..., None].astype(np.float32)


def timed(fn):
    """``(wall seconds, process CPU seconds, fn())``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


class Table:
    """Measurements per figure and precision; the median over rounds, as a rate or a time.

    ``rounds`` in the summary keeps every round's ``(wall, CPU)`` figure.
    """

    def __init__(self):
        self.rows = {}  # label -> dict(unit, kind, float32=[(wall, cpu)], mixed_bfloat16=[...])

    def add(self, label, unit, kind, precision, wall, cpu, amount=1.0):
        """Record one timing; ``kind`` is ``rate`` (amount per second) or ``time`` (seconds per amount)."""
        row = self.rows.setdefault(label, dict(unit=unit, kind=kind, **{p: [] for p in PRECISIONS}))
        row[precision].append((amount / wall, amount / cpu) if kind == "rate" else (wall / amount, cpu / amount))

    def summary(self) -> list:
        out = []
        for label, row in self.rows.items():
            med = {p: [statistics.median(v[i] for v in row[p]) for i in (0, 1)] for p in PRECISIONS}
            f32, b16 = med[FLOAT32], med[MIXED_BFLOAT16]
            ratio = [b16[i] / f32[i] if row["kind"] == "rate" else f32[i] / b16[i] for i in (0, 1)]
            out.append(dict(figure=label, unit=row["unit"], float32=f32[0], mixed_bfloat16=b16[0],
                            speedup_wall=ratio[0], speedup_cpu=ratio[1], float32_cpu=f32[1],
                            mixed_bfloat16_cpu=b16[1], rounds={p: row[p] for p in PRECISIONS}))
        return out


# --------------------------------------------------------------------------- workloads
def training_models(name: str, size: int, batch: int):
    """``{precision: (model, dataset)}``: compiled models of both precisions with the same initial weights."""
    models = {}
    weights = None
    for precision in PRECISIONS:
        tf.keras.utils.set_random_seed(0)
        model = build_model(name, precision=precision, image_size=size)
        model.compile()
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        data = tf.data.Dataset.from_tensors(synthetic_volume(batch, size, seed=1)).repeat()
        model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)  # trace
        models[precision] = (model, data)
    return models


def trained_run(args):
    """``(model, λ, test volumes, description)`` of ``--model``; volumes are ``(id, slices, brain, lesion)``."""
    from tfuad.data.layouts import discover
    from tfuad.data.preprocessing import prepare_volume
    from tfuad.data.splits import labelled_test_subjects
    from tfuad.files import read_json
    from tfuad.training.run import RunDir

    if args.data is None:
        raise SystemExit("error: --model needs --data (the dataset holding the test subjects)")
    run = RunDir(args.model)
    config = run.config()
    model = run.load_model()
    lam, source = args.lam, "--lam"
    calibration = run.calibration_path("map-tv")
    if lam is None and calibration.is_file():
        lam, source = float(read_json(calibration)["extra"]["lambda"]), calibration.name
    if lam is None:
        raise SystemExit(f"error: {args.model} has no MAP-TV calibration; give --lam")
    dataset = discover(args.data)
    if args.protocol:
        dataset = dataset.with_protocol(args.protocol)
    modality = config["data"]["modality"]
    volumes = []
    for subject in labelled_test_subjects(dataset, log=lambda message: print(message)):
        prep = prepare_volume(subject.image(modality), run.preprocess_config(), brain_mask_path=subject.brain_mask,
                              lesion_mask_path=subject.lesion_mask, stats=run.intensity_stats())
        volumes.append((subject.id, prep.slices, prep.brain, prep.lesion))
    about = (f"{config['model']} run {args.model} ({modality}, trained in {model.precision}), λ = {lam:g} "
             f"({source}), test subjects {', '.join(v[0] for v in volumes)}")
    return model, lam, volumes, about


def pixel_auroc(maps, volumes) -> float:
    """AUROC of ``maps`` (one per volume) on the pooled brain voxels of ``volumes``."""
    from tfuad.metrics.segmentation import auc_scores

    scores = np.concatenate([m[brain] for m, (_, _, brain, _) in zip(maps, volumes)])
    truth = np.concatenate([lesion[brain] for _, _, brain, lesion in volumes])
    return float(auc_scores(scores, truth)[0])


# --------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.train_steps = 1, 2, 5
    size = args.image_size
    flags = read_cpu_flags()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}, "
          f"oneDNN {'on' if onednn_enabled() else 'off'}, bfloat16 CPU flags "
          f"{'yes' if cpu_supports_bfloat16(flags) else 'no'}, auto precision -> {resolve_precision('auto')}")

    if args.model:
        prior, lam, volumes, about = trained_run(args)
        size = int(prior.image_size)
        _, volume, brain, _ = volumes[0]
    else:
        tf.keras.utils.set_random_seed(0)
        prior = build_model("vae", image_size=size)
        lam, volumes, about = 1.0, [], "untrained vae prior, smooth noise"
        volume, brain = synthetic_volume(args.slices, size), None
    tf.keras.utils.set_random_seed(0)
    baur = build_model(args.baur_model, image_size=size)
    baur.build_for_inference()
    print(f"inference: {about}; volume of {len(volume)} slices of {size}²")
    table = Table()

    # ---------------------------------------------------------------- set-up (traces, compiles)
    trainers = {name: training_models(name, size, args.train_batch) for name in ("vae", args.baur_model)}
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    steppers, volume_restorers = {}, {}
    for precision in PRECISIONS:
        for model in (prior, baur):
            ResidualMethod(model, precision=precision).slice_maps(volume[:8])
        for b in batch_sizes:
            r = Restorer(prior, lam=lam, schedule=GradientAscent(steps=args.steps), batch_size=b, precision=precision)
            r.restore(volume[:2])
            steppers[(precision, b)] = r
        r = Restorer(prior, lam=lam, schedule="fast", precision=precision)
        r.restore(volume[:2])
        volume_restorers[precision] = r

    # ---------------------------------------------------------------- alternating rounds
    volume_steps = {p: [] for p in PRECISIONS}
    prior_name = type(prior).__name__
    for rnd in range(args.rounds):
        for precision in PRECISIONS if rnd % 2 == 0 else PRECISIONS[::-1]:
            for name, models in trainers.items():
                model, data = models[precision]
                wall, cpu, _ = timed(lambda: model.fit(data, epochs=1, steps_per_epoch=args.train_steps, verbose=0))
                table.add(f"training {name} {size}px, batch {args.train_batch}", "slices/s", "rate", precision,
                          wall, cpu, args.train_steps * args.train_batch)
            for label, model in ((prior_name, prior), (args.baur_model, baur)):
                wall, cpu, _ = timed(lambda: ResidualMethod(model, precision=precision).slice_maps(volume))
                table.add(f"residual maps {label}", "slices/s", "rate", precision, wall, cpu, len(volume))
            for b in batch_sizes:
                r = steppers[(precision, b)]
                wall, cpu, _ = timed(lambda: r.restore(volume[:b]))
                table.add(f"MAP-TV step {prior_name}, batch {b}", "ms/slice-step", "time", precision,
                          1e3 * wall, 1e3 * cpu, args.steps * min(b, len(volume)))
            r = volume_restorers[precision]
            wall, cpu, _ = timed(lambda: r.restore(volume, brain))
            table.add(f"whole volume, fast schedule ({len(volume)} slices)", "s", "time", precision, wall, cpu)
            volume_steps[precision].append(list(r.steps_taken_))
        print(f"round {rnd + 1}/{args.rounds} done")

    # ---------------------------------------------------------------- quality
    quality = None
    if volumes:
        quality = {}
        for precision in PRECISIONS:
            residual = [ResidualMethod(prior, precision=precision).slice_maps(v[1])[0] for v in volumes]
            restorer = volume_restorers[precision]
            restored = [np.abs(v[1] - restorer.restore(v[1], v[2])) for v in volumes]
            quality[precision] = dict(residual=pixel_auroc(residual, volumes),
                                      map_tv_fast=pixel_auroc(restored, volumes))

    # ---------------------------------------------------------------- report
    rows = table.summary()
    print(f"\n{'figure':<44} {'unit':<14} {'float32':>9} {'bfloat16':>9} {'speed-up':>9} {'(CPU time)':>10}")
    for r in rows:
        print(f"{r['figure']:<44} {r['unit']:<14} {r['float32']:>9.2f} {r['mixed_bfloat16']:>9.2f} "
              f"{r['speedup_wall']:>8.2f}x {r['speedup_cpu']:>9.2f}x")
    print(f"fast-schedule steps taken per volume: float32 {volume_steps[FLOAT32]}, "
          f"bfloat16 {volume_steps[MIXED_BFLOAT16]}")
    if quality:
        print(f"\ndev-test pixel AUROC ({len(volumes)} subjects, brain voxels pooled)")
        for key, label in (("residual", "residual"), ("map_tv_fast", "MAP-TV, fast schedule")):
            f32, b16 = quality[FLOAT32][key], quality[MIXED_BFLOAT16][key]
            print(f"  {label:<24} float32 {f32:.4f}  bfloat16 {b16:.4f}  change {b16 - f32:+.4f}")
    else:
        print("\ndev-test AUROC not measured (no --model: untrained weights, speed only)")

    result = dict(
        machine=dict(processor=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                     tensorflow=tf.__version__, python=sys.version.split()[0], onednn=onednn_enabled(),
                     bfloat16_cpu_flags=sorted(flags & {"avx512_bf16", "amx_bf16"}),
                     auto_precision=resolve_precision("auto")),
        settings=vars(args), inference=about, image_size=size, volume_slices=len(volume),
        volume_batch=restoration_batch_size(size), lam=lam,
        figures=rows, fast_schedule_steps=volume_steps, auroc=quality,
        auroc_note=None if quality else "not measured: no trained run (untrained weights, speed only)",
    )
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwritten: {args.json}")
    return result


if __name__ == "__main__":
    main()
