"""Speed of MAP-TV restoration with the paper-size VAE prior on this machine.

Reports, from one process (matmul and restoration measured interleaved, since
the machine may be shared):

* milliseconds per restoration step per slice for batches of slices, with and
  without XLA;
* the achieved GFLOP/s of one restoration step against the dense float32
  matmul GFLOP/s measured in the same run (``tf.linalg.matmul`` of square
  matrices);
* the time to restore one whole volume (``--slices`` slices) with the paper
  schedule (500 steps) and with the fast schedule, with and without XLA;
* the convolutions alone: every ``Conv2D`` of one restoration step (forward
  and input-gradient convolutions, with the step's shapes, at the largest
  batch) timed in isolation with TensorFlow's kernels, in the same rounds as
  the steps. Their summed time is a floor for a step made of these kernels,
  so their GFLOP/s (useful FLOPs, as above) is a ceiling for the step's
  figure; the table lists the layers that take most time.

The script turns TensorFlow's oneDNN kernels on unless ``TF_ENABLE_ONEDNN_OPTS``
is already set (they are off by default on some CPUs and make the step about
1.5× faster here); the JSON records which was used.

FLOP count: the forward convolution FLOPs of ``log_density`` on one slice come
from TensorFlow's profiler (``float_ops`` of the Conv2D nodes of the concrete
function's graph); a restoration step is counted as 2× that (forward pass plus
the gradient with respect to the input; weight gradients are not computed).
Bilinear resizing, batch norm, activations and the TV term are not counted,
and neither is the extra work of the polyphase input gradient of stride-2
convolutions, so the GFLOP/s figure is a conservative "useful FLOP" rate.

By default the model is an untrained ``ResVAE`` (fixed seed) and the volume is
smooth noise: the cost of a step does not depend on the weights, but the
number of steps the fast schedule's stopping rule takes does. With ``--model``
(a trained ``vae``/``gmvae`` run, calibrated for MAP-TV) the whole-volume
figures come from a real subject of ``--data`` instead: its preprocessed
slices, its brain mask (slices without brain are skipped, as ``tfuad detect``
does), the run's calibrated λ, and the lesion-map AUROC on brain voxels of
each schedule, so speed and quality are measured on the same volume. The
paper schedule's volume time is projected from measured steps on the whole
volume (500 × seconds per volume step) unless ``--full`` is given; the fast
schedule runs for real with its stopping rule (``--fast-steps`` runs it with
other step limits too).

Usage::

    python benchmarks/restoration_speed.py [--image-size 128] [--slices 155] [--quick] [--no-xla]
        [--model RUN_DIR --data DATASET [--protocol NAME] [--subject ID]] [--full] [--fast-steps 30,50]
        [--inter-op-threads N] [--intra-op-threads N] [--json out.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN kernels are off by default on some CPUs (e.g. AMD EPYC); they speed the step up by about 1.5x.
# Run with TF_ENABLE_ONEDNN_OPTS=0 to measure without them.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402
from tensorflow.python.framework import test_util  # noqa: E402

from tfuad.detection.restoration import (  # noqa: E402
    SCHEDULES,
    GradientAscent,
    Restorer,
    get_schedule,
    restoration_batch_size,
)
from tfuad.files import atomic_path  # noqa: E402
from tfuad.metrics.segmentation import auc_scores  # noqa: E402
from tfuad.models.priors import ResVAE  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=128, help="slice side (default 128)")
    p.add_argument("--slices", type=int, default=155, help="slices in the benchmark volume (default 155)")
    p.add_argument("--batch-sizes", default="16,32,64", help="batch sizes for the per-step table")
    p.add_argument("--volume-batch", type=int, default=None,
                   help="batch size used for whole volumes (default: Restorer's, the whole volume where memory allows)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    p.add_argument("--steps", type=int, default=6, help="restoration steps per timing")
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the square matmul")
    p.add_argument("--quick", action="store_true", help="one round, fewer steps, no XLA fast-schedule run")
    p.add_argument("--fast-steps", default=None,
                   help="comma-separated max_steps of the fast schedule to run on the volume (default: its own)")
    p.add_argument("--full", action="store_true", help="run the 500-step paper schedule on the volume for real")
    p.add_argument("--no-xla", action="store_true", help="measure without XLA only")
    p.add_argument("--model", default=None, help="trained vae/gmvae run directory (default: untrained ResVAE)")
    p.add_argument("--data", default=None, help="with --model: dataset holding the subject for the volume")
    p.add_argument("--protocol", default=None, help="with --model: split protocol applied to --data")
    p.add_argument("--subject", default=None, help="with --model: subject id (default: first labelled test subject)")
    p.add_argument("--inter-op-threads", type=int, default=0,
                   help="TensorFlow inter-op threads (0: TensorFlow's default)")
    p.add_argument("--intra-op-threads", type=int, default=0,
                   help="TensorFlow intra-op threads (0: TensorFlow's default)")
    p.add_argument("--json", default="benchmarks/restoration_speed.json", help="where to write the results")
    return p.parse_args(argv)


def conv_flops_per_slice(model) -> float:
    """Forward Conv2D FLOPs of ``model.log_density`` for one slice (TF profiler)."""
    spec = tf.TensorSpec((1, model.image_size, model.image_size, model.channels), tf.float32)
    graph = tf.function(lambda x: model.log_density(x), autograph=False).get_concrete_function(spec).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    opts["account_type_regexes"] = ["Conv2D"]
    return float(tf.compat.v1.profiler.profile(graph=graph, options=opts).total_float_ops)


class Matmul:
    """Dense float32 matmul throughput (best of a few runs)."""

    def __init__(self, n: int):
        self.n = n
        self.a = tf.random.normal((n, n), seed=1)
        self.b = tf.random.normal((n, n), seed=2)
        self.fn = tf.function(tf.linalg.matmul)
        self.fn(self.a, self.b).numpy()

    def gflops(self, repeats: int = 3) -> float:
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            self.fn(self.a, self.b).numpy()
            best = min(best, time.perf_counter() - t)
        return 2.0 * self.n ** 3 / best / 1e9


def step_convolutions(model, batch: int):
    """``(input shape, kernel shape, stride, padding)`` of every Conv2D of one restoration step."""
    spec = tf.TensorSpec((batch, model.image_size, model.image_size, model.channels), tf.float32)

    def step(x):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            total = tf.reduce_sum(model.log_density(x))
        return tape.gradient(total, x)

    graph = tf.function(step, autograph=False).get_concrete_function(spec).graph
    return [(tuple(op.inputs[0].shape), tuple(op.inputs[1].shape), op.get_attr("strides")[1],
             op.get_attr("padding").decode()) for op in graph.get_operations() if op.type == "Conv2D"]


def time_convolutions(convs, repeats: int = 3):
    """Best-of-``repeats`` seconds and FLOPs of each convolution run alone (random data, eager op)."""
    rows = []
    for shape, kshape, stride, padding in convs:
        x, k = tf.random.normal(shape), tf.random.normal(kshape)
        out = tf.nn.conv2d(x, k, stride, padding)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            tf.nn.conv2d(x, k, stride, padding).numpy()
            best = min(best, time.perf_counter() - t)
        flops = 2.0 * np.prod(out.shape) * kshape[0] * kshape[1] * kshape[2]
        rows.append(dict(input=list(shape), kernel=list(kshape), stride=stride, seconds=best, flops=float(flops)))
    return rows


def real_volume(args):
    """``(model, slices, brain, lesion, λ, description)`` of a subject for a trained ``--model``."""
    from convergence import pick_subject

    from tfuad.data.layouts import discover
    from tfuad.detection.detector import Detector

    if args.data is None:
        raise SystemExit("error: --model needs --data (the dataset holding the benchmark volume)")
    dataset = discover(args.data)
    if args.protocol:
        dataset = dataset.with_protocol(args.protocol)
    subject = pick_subject(dataset, args.subject)
    detector = Detector(args.model, "map-tv", batch_size=args.volume_batch)
    prep = detector.prepare(subject.image(detector.config["data"]["modality"]), brain_mask_path=subject.brain_mask,
                            lesion_mask_path=subject.lesion_mask)
    about = f"{subject.id} ({detector.config['data']['modality']}), trained {detector.config['model']} of {args.model}"
    detector.calibration()
    return detector.model, prep.slices, prep.brain, prep.lesion, detector.method.lam, about


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def synthetic_volume(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random slices (values around 0 with unit spread), ``(n, size, size, 1)``."""
    rng = np.random.default_rng(seed)
    vol = gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, 3, 3))
    vol /= vol.std()
    return vol[..., None].astype(np.float32)


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.rounds, args.steps = 1, 3
    # Thread pools must be sized before TensorFlow runs its first op.
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    jits = (False,) if args.no_xla else (False, True)
    tf.keras.utils.set_random_seed(0)
    if args.model:
        model, volume, brain, lesion, lam, about = real_volume(args)
        args.image_size, args.slices = int(model.image_size), len(volume)
    else:
        model = ResVAE(image_size=args.image_size)
        volume, brain, lesion, lam = synthetic_volume(args.slices, args.image_size), None, None, 1.0
        about = "smooth noise, untrained ResVAE"
    flops = 2.0 * conv_flops_per_slice(model)
    matmul = Matmul(args.matmul_size)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    onednn = bool(test_util.IsMklEnabled())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}, "
          f"oneDNN {'on' if onednn else 'off'}, threads inter-op {args.inter_op_threads or 'default'}, "
          f"intra-op {args.intra_op_threads or 'default'}")
    print(f"model: {type(model).__name__} {args.image_size}px, {model.count_params():,} parameters; "
          f"{flops / 1e9:.3f} GFLOP per slice-step (2 × forward conv FLOPs, TF profiler)")

    # ------------------------------------------------------------ per-step table
    step_rows = []
    restorers = {}
    for jit in jits:
        for b in batch_sizes:
            r = Restorer(model, lam=1.0, schedule=GradientAscent(steps=args.steps), batch_size=b, jit_compile=jit)
            r.restore(volume[:b])  # trace / compile
            restorers[(jit, b)] = r
    b_max = max(batch_sizes)
    convs = step_convolutions(model, b_max)
    conv_rounds = []
    for rnd in range(args.rounds):
        for (jit, b), r in restorers.items():
            before = matmul.gflops()
            seconds, _ = timed(lambda: r.restore(volume[:b]))
            after = matmul.gflops()
            ms = seconds / (args.steps * b) * 1e3
            step_rows.append(dict(round=rnd, xla=jit, batch=b, ms_per_slice_step=ms, step_gflops=flops / ms / 1e6,
                                  matmul_gflops=(before + after) / 2))
        before = matmul.gflops()
        layers = time_convolutions(convs)
        after = matmul.gflops()
        conv_s = sum(r["seconds"] for r in layers)
        step_ms = next(r["ms_per_slice_step"] for r in step_rows if r["round"] == rnd and not r["xla"]
                       and r["batch"] == b_max)
        conv_rounds.append(dict(round=rnd, layers=layers, seconds=conv_s, ms_per_slice=conv_s / b_max * 1e3,
                                useful_gflops=flops * b_max / conv_s / 1e9,
                                raw_gflops=sum(r["flops"] for r in layers) / conv_s / 1e9,
                                matmul_gflops=(before + after) / 2, share_of_step=conv_s / b_max * 1e3 / step_ms))
    summary = []
    print("\nper restoration step (median over rounds)")
    print(f"{'XLA':>5} {'batch':>5} {'ms/slice-step':>14} {'step GFLOP/s':>13} {'matmul GFLOP/s':>15} "
          f"{'% of matmul':>12}")
    for (jit, b) in restorers:
        rows = [r for r in step_rows if r["xla"] == jit and r["batch"] == b]
        med = {k: statistics.median(r[k] for r in rows) for k in ("ms_per_slice_step", "step_gflops", "matmul_gflops")}
        med["percent_of_matmul"] = statistics.median(100 * r["step_gflops"] / r["matmul_gflops"] for r in rows)
        summary.append(dict(xla=jit, batch=b, **med))
        print(f"{str(jit):>5} {b:>5} {med['ms_per_slice_step']:>14.2f} {med['step_gflops']:>13.1f} "
              f"{med['matmul_gflops']:>15.1f} {med['percent_of_matmul']:>11.0f}%")

    # ---------------------------------------------------------------- volumes
    active = len(volume) if brain is None else int(brain.reshape(len(volume), -1).any(axis=1).sum())
    print(f"\nwhole volume: {about}; {args.slices} slices of {args.image_size}², {active} with brain, "
          f"batch {restoration_batch_size(args.image_size, args.volume_batch)}, λ = {lam:g}")
    volumes = []
    paper, fast = SCHEDULES["paper"], SCHEDULES["fast"]
    fast_schedules = [fast] if not args.fast_steps else [
        get_schedule("fast", int(n)) for n in args.fast_steps.split(",")]

    def auroc(restored):
        if lesion is None or not (lesion & brain).any():
            return None
        return float(auc_scores(np.abs(volume - restored)[brain], lesion[brain])[0])

    for jit in jits:
        probe = Restorer(model, lam=lam, schedule=GradientAscent(steps=args.steps), batch_size=args.volume_batch,
                         jit_compile=jit)
        probe.restore(volume[:probe.batch_size])
        seconds, _ = timed(lambda: probe.restore(volume, brain))
        per_step = seconds / args.steps
        if args.full:
            runner = Restorer(model, lam=lam, schedule=paper, batch_size=args.volume_batch, jit_compile=jit)
            paper_s, restored = timed(lambda: runner.restore(volume, brain))
            paper_how, paper_auroc = "measured", auroc(restored)
        else:
            paper_s, paper_how = per_step * paper.steps, f"projected: {paper.steps} × {per_step:.2f} s"
            paper_auroc = None
        volumes.append(dict(schedule="paper", xla=jit, seconds=paper_s, steps=paper.steps, how=paper_how,
                            auroc=paper_auroc))
        if jit and args.quick:
            volumes.append(dict(schedule="fast", xla=jit, seconds=None, steps=None, how="skipped (--quick)"))
            continue
        for schedule in fast_schedules:
            runner = Restorer(model, lam=lam, schedule=schedule, batch_size=args.volume_batch, jit_compile=jit)
            runner.restore(volume[:runner.batch_size])  # trace / compile
            fast_s, restored = timed(lambda: runner.restore(volume, brain))
            name = "fast" if schedule == fast else f"fast, max_steps={schedule.max_steps}"
            volumes.append(dict(schedule=name, xla=jit, seconds=fast_s, steps=runner.steps_taken_, how="measured",
                                worst_case_seconds=per_step * schedule.steps, auroc=auroc(restored)))
    print(f"{'schedule':>22} {'XLA':>5} {'seconds':>9} {'AUROC':>6} {'steps':>16}  how")
    for v in volumes:
        sec = "-" if v["seconds"] is None else f"{v['seconds']:.1f}"
        auc = "-" if v.get("auroc") is None else f"{v['auroc']:.3f}"
        print(f"{v['schedule']:>22} {str(v['xla']):>5} {sec:>9} {auc:>6} {str(v['steps']):>16}  {v['how']}")

    # ------------------------------------------------------- convolutions alone
    keys = ("ms_per_slice", "useful_gflops", "raw_gflops", "matmul_gflops", "share_of_step")
    ceiling = {k: statistics.median(r[k] for r in conv_rounds) for k in keys}
    ceiling["percent_of_matmul"] = statistics.median(100 * r["useful_gflops"] / r["matmul_gflops"] for r in conv_rounds)
    ceiling.update(batch=b_max, convolutions=len(convs))
    conv_rows = [dict(conv_rounds[0]["layers"][i], seconds=min(r["layers"][i]["seconds"] for r in conv_rounds))
                 for i in range(len(convs))]
    print(f"\nconvolutions alone: the {len(convs)} Conv2D of one step at batch {b_max}, each timed in isolation "
          f"(median over rounds)")
    print(f"  {ceiling['ms_per_slice']:.2f} ms per slice ({100 * ceiling['share_of_step']:.0f} % of the step's time "
          f"in the same round); {ceiling['useful_gflops']:.1f} useful GFLOP/s = "
          f"{ceiling['percent_of_matmul']:.0f} % of matmul ({ceiling['matmul_gflops']:.1f}); "
          f"{ceiling['raw_gflops']:.1f} GFLOP/s counting every multiply-add they run")
    print(f"  {'input':>20} {'kernel':>18} {'stride':>6} {'ms':>7} {'GFLOP/s':>8}")
    for r in sorted(conv_rows, key=lambda r: -r["seconds"])[:8]:
        print(f"  {str(tuple(r['input'])):>20} {str(tuple(r['kernel'])):>18} {r['stride']:>6} "
              f"{r['seconds'] * 1e3:>7.2f} {r['flops'] / r['seconds'] / 1e9:>8.1f}")

    result = dict(
        machine=dict(processor=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                     tensorflow=tf.__version__, python=sys.version.split()[0], onednn=onednn),
        settings=vars(args),
        volume=dict(about=about, slices=len(volume), with_brain=active, lam=lam),
        gflop_per_slice_step=flops / 1e9,
        flop_count="2 x forward Conv2D float_ops of log_density (tf.compat.v1.profiler), per slice",
        matmul_size=args.matmul_size,
        per_step=summary,
        per_step_rounds=step_rows,
        volumes=volumes,
        convolutions_alone=dict(ceiling, layers=conv_rows,
                                rounds=[{k: v for k, v in r.items() if k != "layers"} for r in conv_rounds]),
        fast_schedule=dataclasses.asdict(fast),
    )
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwritten: {args.json}")
    return result


if __name__ == "__main__":
    main()
