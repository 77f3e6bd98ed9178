"""Speed of MAP-TV restoration with the paper-size VAE prior on this machine.

Reports, from one process (matmul and restoration measured interleaved, since
the machine may be shared):

* milliseconds per restoration step per slice for batches of slices, with and
  without XLA;
* the achieved GFLOP/s of one restoration step against the dense float32
  matmul GFLOP/s measured in the same run (``tf.linalg.matmul`` of square
  matrices);
* the time to restore one whole volume (``--slices`` slices) with the paper
  schedule (500 steps) and with the fast schedule, with and without XLA.

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

The model is an untrained ``ResVAE`` (fixed seed): speed does not depend on
the weights. The paper schedule's volume time is projected from measured
steps on the whole volume (500 × seconds per volume step) unless ``--full``
is given; the fast schedule runs for real with its stopping rule (the number
of steps it takes on a trained model is measured by the tests).

Usage::

    python benchmarks/restoration_speed.py [--image-size 128] [--slices 155] [--quick] [--no-xla]
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

from tfuad.data.nifti import atomic_path  # noqa: E402
from tfuad.detection.restoration import SCHEDULES, GradientAscent, Restorer  # noqa: E402
from tfuad.models.priors import ResVAE  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=128, help="slice side (default 128)")
    p.add_argument("--slices", type=int, default=155, help="slices in the benchmark volume (default 155)")
    p.add_argument("--batch-sizes", default="16,32,64", help="batch sizes for the per-step table")
    p.add_argument("--volume-batch", type=int, default=32, help="batch size used for whole volumes")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    p.add_argument("--steps", type=int, default=6, help="restoration steps per timing")
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the square matmul")
    p.add_argument("--quick", action="store_true", help="one round, fewer steps, no XLA fast-schedule run")
    p.add_argument("--full", action="store_true", help="run the 500-step paper schedule on the volume for real")
    p.add_argument("--no-xla", action="store_true", help="measure without XLA only")
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
    model = ResVAE(image_size=args.image_size)
    flops = 2.0 * conv_flops_per_slice(model)
    matmul = Matmul(args.matmul_size)
    volume = synthetic_volume(args.slices, args.image_size)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    onednn = bool(test_util.IsMklEnabled())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}, "
          f"oneDNN {'on' if onednn else 'off'}, threads inter-op {args.inter_op_threads or 'default'}, "
          f"intra-op {args.intra_op_threads or 'default'}")
    print(f"model: ResVAE {args.image_size}px, {model.count_params():,} parameters; "
          f"{flops / 1e9:.3f} GFLOP per slice-step (2 × forward conv FLOPs, TF profiler)")

    # ------------------------------------------------------------ per-step table
    step_rows = []
    restorers = {}
    for jit in jits:
        for b in batch_sizes:
            r = Restorer(model, lam=1.0, schedule=GradientAscent(steps=args.steps), batch_size=b, jit_compile=jit)
            r.restore(volume[:b])  # trace / compile
            restorers[(jit, b)] = r
    for rnd in range(args.rounds):
        for (jit, b), r in restorers.items():
            before = matmul.gflops()
            seconds, _ = timed(lambda: r.restore(volume[:b]))
            after = matmul.gflops()
            ms = seconds / (args.steps * b) * 1e3
            step_rows.append(dict(round=rnd, xla=jit, batch=b, ms_per_slice_step=ms, step_gflops=flops / ms / 1e6,
                                  matmul_gflops=(before + after) / 2))
    summary = []
    print("\nper restoration step (median over rounds)")
    print(f"{'XLA':>5} {'batch':>5} {'ms/slice-step':>14} {'step GFLOP/s':>13} {'matmul GFLOP/s':>15} {'% of matmul':>12}")
    for (jit, b) in restorers:
        rows = [r for r in step_rows if r["xla"] == jit and r["batch"] == b]
        med = {k: statistics.median(r[k] for r in rows) for k in ("ms_per_slice_step", "step_gflops", "matmul_gflops")}
        med["percent_of_matmul"] = statistics.median(100 * r["step_gflops"] / r["matmul_gflops"] for r in rows)
        summary.append(dict(xla=jit, batch=b, **med))
        print(f"{str(jit):>5} {b:>5} {med['ms_per_slice_step']:>14.2f} {med['step_gflops']:>13.1f} "
              f"{med['matmul_gflops']:>15.1f} {med['percent_of_matmul']:>11.0f}%")

    # ---------------------------------------------------------------- volumes
    print(f"\nwhole volume: {args.slices} slices of {args.image_size}², batch {args.volume_batch}")
    volumes = []
    paper, fast = SCHEDULES["paper"], SCHEDULES["fast"]
    for jit in jits:
        probe = Restorer(model, lam=1.0, schedule=GradientAscent(steps=args.steps), batch_size=args.volume_batch,
                         jit_compile=jit)
        probe.restore(volume[:args.volume_batch])
        seconds, _ = timed(lambda: probe.restore(volume))
        per_step = seconds / args.steps
        if args.full:
            runner = Restorer(model, lam=1.0, schedule=paper, batch_size=args.volume_batch, jit_compile=jit)
            paper_s, _ = timed(lambda: runner.restore(volume))
            paper_how = "measured"
        else:
            paper_s, paper_how = per_step * paper.steps, f"projected: {paper.steps} × {per_step:.2f} s"
        volumes.append(dict(schedule="paper", xla=jit, seconds=paper_s, steps=paper.steps, how=paper_how))
        if jit and args.quick:
            volumes.append(dict(schedule="fast", xla=jit, seconds=None, steps=None, how="skipped (--quick)"))
            continue
        runner = Restorer(model, lam=1.0, schedule=fast, batch_size=args.volume_batch, jit_compile=jit)
        runner.restore(volume[:args.volume_batch])  # trace / compile
        fast_s, _ = timed(lambda: runner.restore(volume))
        volumes.append(dict(schedule="fast", xla=jit, seconds=fast_s, steps=runner.steps_taken_, how="measured",
                            worst_case_seconds=per_step * fast.steps))
    print(f"{'schedule':>8} {'XLA':>5} {'seconds':>9} {'steps':>16}  how")
    for v in volumes:
        sec = "-" if v["seconds"] is None else f"{v['seconds']:.1f}"
        print(f"{v['schedule']:>8} {str(v['xla']):>5} {sec:>9} {str(v['steps']):>16}  {v['how']}")

    result = dict(
        machine=dict(processor=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                     tensorflow=tf.__version__, python=sys.version.split()[0], onednn=onednn),
        settings=vars(args),
        gflop_per_slice_step=flops / 1e9,
        flop_count="2 x forward Conv2D float_ops of log_density (tf.compat.v1.profiler), per slice",
        matmul_size=args.matmul_size,
        per_step=summary,
        per_step_rounds=step_rows,
        volumes=volumes,
        fast_schedule=dataclasses.asdict(fast),
    )
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwritten: {args.json}")
    return result


if __name__ == "__main__":
    main()
