"""Where a MAP-TV step's time goes, and whether another form of the ×2 up-sampling would be faster.

Two measurements, on an untrained paper-size ResVAE (the step's cost does not depend on the weights):

* **step**: plain gradient steps on a whole ``--slices`` volume per batch, at ``--precision``, with the
  models' up-sampling gradient and with ``ResizeBilinearGrad`` everywhere (alternating, median of
  ``--rounds``); then the step is run under the TensorFlow profiler and the time of every operation,
  summed over TensorFlow's compute threads, is grouped by kind: input-gradient convolutions, forward
  convolutions, the bilinear up-sampling (``ResizeBilinear``, its gradient and the casts and pads
  around it), leaky ReLU and its gradient, and the rest. The shares are of the summed thread time.
* **up-sampling forms**: on the shape every up-sampling block up-samples (``B × s × s × F``), forward
  and input gradient together, best of ``--rounds``:

  - ``resize``: ``ResizeBilinear`` with half-pixel centres and TensorFlow's gradient,
    ``ResizeBilinearGrad``;
  - ``transposed-conv``: a stride-2 transposed convolution with the 4 × 4 bilinear kernel on the
    edge-padded input, cropped (the same function, as one oneDNN convolution);
  - ``adjoint``: ``ResizeBilinear`` forward, with the gradient
    :func:`tfuad.models.resblocks._bilinear_adjoint` (a stride-2 depthwise convolution of the
    edge-padded output gradient).

  The models' up-sampling takes ``adjoint`` from ``ADJOINT_MIN_PIXELS`` input pixels per channel on
  and ``resize`` below (the ``model uses`` column). The alternatives are checked against ``resize``
  (largest absolute difference of forward and gradient) before they are timed.

Run on a quiet machine, or compare the forms within one run: other processes on the cores inflate every
figure.

Usage::

    python benchmarks/step_profile.py [--image-size 128] [--slices 155] [--steps 8] [--rounds 5]
        [--precision auto] [--json benchmarks/step_profile.json]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfuad.detection.restoration import GradientAscent, Restorer  # noqa: E402
from tfuad.files import atomic_path  # noqa: E402
from tfuad.models import (
    build_model,  # noqa: E402
    resblocks,  # noqa: E402
)
from tfuad.models.resblocks import _BILINEAR_TAPS, ADJOINT_MIN_PIXELS, _bilinear_adjoint, _resize2  # noqa: E402
from tfuad.precision import resolve_precision  # noqa: E402

KINDS = ("input-gradient convolutions", "forward convolutions", "bilinear up-sampling",
         "leaky ReLU", "other")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image-size", type=int, default=128, help="slice side (default 128)")
    p.add_argument("--slices", type=int, default=155, help="slices restored in one batch (default 155)")
    p.add_argument("--steps", type=int, default=8, help="MAP-TV steps profiled (default 8)")
    p.add_argument("--rounds", type=int, default=5, help="timing rounds of the up-sampling forms (default 5)")
    p.add_argument("--precision", default="auto", help="float32, mixed_bfloat16 or auto (default)")
    p.add_argument("--json", default=str(Path(__file__).with_suffix(".json")), help="where to write the results")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- profile
def kind_of(name: str) -> str:
    """Kind of a profiled operation from its ``scope/name:OpType`` label."""
    op = name.rsplit(":", 1)[-1]
    if "Conv2DBackpropInput" in op:
        return KINDS[0]
    if "Conv2D" in op or "Einsum" in op:
        return KINDS[1]
    if "ResizeBilinear" in op or "Depthwise" in op or (op in ("Cast", "MirrorPad") and "/up" in name):
        return KINDS[2]
    if "LeakyRelu" in op:
        return KINDS[3]
    return KINDS[4]


def op_times(logdir: str) -> dict:
    """Milliseconds per operation label on TensorFlow's compute threads, from the profiler's XSpace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(Path(logdir).rglob("*.xplane.pb"))
    if not files:
        raise SystemExit(f"error: the profiler wrote no trace under {logdir}")
    space = xplane_pb2.XSpace()
    space.ParseFromString(files[-1].read_bytes())
    times = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if not name.startswith("ExecutorState"):  # the executor's envelope around each operation
                    times[name] += event.duration_ps / 1e9
    return times


def restorer_for(args, precision: str, adjoint: bool):
    """A traced restorer of an untrained paper-size ResVAE; ``adjoint=False`` keeps ``ResizeBilinearGrad``."""
    tf.keras.utils.set_random_seed(0)
    model = build_model("vae", image_size=args.image_size)
    model(np.zeros((1, args.image_size, args.image_size, 1), np.float32))
    restorer = Restorer(model, lam=1.0, schedule=GradientAscent(steps=args.steps), batch_size=args.slices,
                        precision=precision)
    default = resblocks.ADJOINT_MIN_PIXELS
    resblocks.ADJOINT_MIN_PIXELS = default if adjoint else float("inf")  # read when the loop is traced
    try:
        restorer.restore(np.zeros((1, args.image_size, args.image_size, 1), np.float32))
    finally:
        resblocks.ADJOINT_MIN_PIXELS = default
    return restorer


def profile_step(args, precision: str) -> dict:
    y = np.random.default_rng(0).random((args.slices, args.image_size, args.image_size, 1)).astype(np.float32)
    restorers = {"adjoint": restorer_for(args, precision, True), "resize": restorer_for(args, precision, False)}
    times = {name: [] for name in restorers}
    for rnd in range(args.rounds):
        for name in restorers if rnd % 2 == 0 else list(restorers)[::-1]:
            start = time.perf_counter()
            restorers[name].restore(y)
            times[name].append(1e3 * (time.perf_counter() - start) / (args.slices * args.steps))
    ms = {name: statistics.median(t) for name, t in times.items()}
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        restorers["adjoint"].restore(y)
        tf.profiler.experimental.stop()
        op_ms = op_times(logdir)
    total = sum(op_ms.values())
    kinds = collections.Counter()
    for name, t in op_ms.items():
        kinds[kind_of(name)] += t
    top = [dict(op=name, ms=t, share=t / total) for name, t in op_ms.most_common(10)]
    return dict(ms_per_slice_step=ms, rounds=times, thread_ms=total,
                shares={k: kinds[k] / total for k in KINDS}, top_operations=top)


# --------------------------------------------------------------------------- up-sampling forms
def _bilinear_kernel(channels: int, dtype):
    """``4 × 4 × C × C`` kernel applying the 2-D bilinear taps to each channel alone."""
    k = np.zeros((4, 4, channels, channels), np.float32)
    k[:, :, np.arange(channels), np.arange(channels)] = np.outer(_BILINEAR_TAPS, _BILINEAR_TAPS)[:, :, None]
    return tf.constant(k, dtype)


def up_transposed_conv(x):
    """Bilinear ×2 as a transposed convolution of the edge-padded input, cropped to ``2h × 2w``."""
    b, h, w, c = x.shape
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")  # pad 1: the edge value
    y = tf.nn.conv2d_transpose(padded, _bilinear_kernel(c, x.dtype), [b, 2 * h + 6, 2 * w + 6, c],
                               strides=2, padding="VALID")
    return y[:, 3:3 + 2 * h, 3:3 + 2 * w]


def up_adjoint(x):
    """``ResizeBilinear`` forward, :func:`_bilinear_adjoint` as its gradient."""
    @tf.custom_gradient
    def up(t):
        return _resize2(t), _bilinear_adjoint

    return up(x)


FORMS = {"resize": _resize2, "transposed-conv": up_transposed_conv, "adjoint": up_adjoint}


def up_shapes(args) -> list:
    """``(B, s, s, F)`` up-sampled by each up-sampling block of the paper-size ResVAE."""
    model = build_model("vae", image_size=args.image_size)
    blocks = model.up_blocks
    first = args.image_size // 2 ** len(blocks)
    return [(args.slices, first * 2 ** i, first * 2 ** i, block.filters) for i, block in enumerate(blocks)]


def time_forms(args, dtype) -> list:
    rows = []
    for shape in up_shapes(args):
        rng = np.random.default_rng(0)
        x = tf.cast(rng.random(shape, np.float32), dtype)
        weight = tf.cast(rng.random((shape[0], 2 * shape[1], 2 * shape[2], shape[3]), np.float32), dtype)
        results = {}
        row = dict(shape=list(shape), model_uses="adjoint" if shape[1] * shape[2] >= ADJOINT_MIN_PIXELS else "resize")
        for name, form in FORMS.items():
            @tf.function
            def step(x, form=form):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = form(x)
                    objective = tf.reduce_sum(tf.cast(y * weight, tf.float32))
                return y, tape.gradient(objective, x)

            results[name] = [t.numpy().astype(np.float32) for t in step(x)]
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                step(x)[1].numpy()
                times.append(time.perf_counter() - start)
            row[f"{name}_ms"] = 1e3 * min(times)
        for name in FORMS:
            if name != "resize":
                row[f"{name}_max_difference"] = [float(np.max(np.abs(a - b))) for a, b in
                                                 zip(results[name], results["resize"])]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    precision = resolve_precision(args.precision)
    dtype = tf.bfloat16 if precision == "mixed_bfloat16" else tf.float32
    print(f"{os.cpu_count()} CPUs, TF {tf.__version__}, precision {precision}")

    profile = profile_step(args, precision)
    ms = profile["ms_per_slice_step"]
    print(f"\nMAP-TV step, {args.slices} slices of {args.image_size}² per batch, median of {args.rounds} rounds: "
          f"{ms['adjoint']:.2f} ms per slice-step with the models' up-sampling gradient, {ms['resize']:.2f} with "
          f"ResizeBilinearGrad everywhere ({ms['resize'] / ms['adjoint']:.2f}x)")
    print("  where the time goes (models' up-sampling; shares of the summed thread time):")
    for kind, share in profile["shares"].items():
        print(f"  {kind:<30} {100 * share:5.1f} %")
    print("  largest operations:")
    for op in profile["top_operations"]:
        print(f"    {100 * op['share']:5.1f} %  {op['op']}")

    forms = time_forms(args, dtype)
    print(f"\nbilinear ×2 up-sampling, forward + input gradient, {dtype.name}, best of {args.rounds} (ms)")
    print(f"  {'shape':<18}" + "".join(f"{name:>16}" for name in FORMS) + f"{'model uses':>12}"
          + "   largest |difference| from resize (fwd, grad)")
    for row in forms:
        diffs = "  ".join(f"{name}: {row[name + '_max_difference'][0]:.2g}, {row[name + '_max_difference'][1]:.2g}"
                          for name in FORMS if name != "resize")
        print(f"  {'×'.join(map(str, row['shape'])):<18}" + "".join(f"{row[name + '_ms']:>16.1f}" for name in FORMS)
              + f"{row['model_uses']:>12}   {diffs}")

    result = dict(machine=dict(cpus=os.cpu_count(), tensorflow=tf.__version__, python=sys.version.split()[0]),
                  settings=vars(args), precision=precision, profile=profile, upsampling_forms=forms)
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(f"\nwritten: {args.json}")
    return result


if __name__ == "__main__":
    main()
