"""Decoder up-sampling: transposed convolutions against resize-then-convolve, same data and seed.

Trains one model twice with identical settings except the decoder's
``upsampling`` (``transpose``: the papers' stride-2 transposed convolutions;
``resize``: nearest-neighbour resize then a convolution), then prints the
best validation L1/SSIM of each (from the runs' ``history.csv``) and draws
the same healthy validation slices reconstructed by both, with a magnified
crop where a checkerboard shows.

Usage::

    python benchmarks/upsampling.py --data ../shared/data/brats18 --protocol brats-healthy-slices \\
        --out runs/upsampling --model svae --epochs 30 --figure docs/upsampling_svae.png

Both runs are resumable (rerunning continues them). The table is also written
to ``OUT/upsampling.json``.
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

MODES = ("transpose", "resize")


def _best(history_csv: Path) -> dict:
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    best = min(rows, key=lambda r: float(r["val_loss"]))
    return {"epochs": len(rows), "best_epoch": int(best["epoch"]) if "epoch" in best else rows.index(best) + 1,
            "val_loss": float(best["val_loss"]), "val_l1": float(best["val_l1"]), "val_ssim": float(best["val_ssim"])}


def _validation_slices(run, dataset, modality, count: int = 3) -> np.ndarray:
    from tfuad.data.pipeline import collect_slices
    from tfuad.data.splits import prepare_split, split_subjects
    from tfuad.training.figures import pick_slices

    pconfig = run.preprocess_config()
    prepared, _ = prepare_split(split_subjects(dataset, "calib"), modality, pconfig, run.intensity_stats(),
                                log=lambda *_: None)
    slices = collect_slices(prepared, lambda p: p.training_indices(pconfig))
    return slices[pick_slices(slices, pconfig.background_value, count)]


def _crop_box(image, side: int):
    """A ``side``-pixel square centred on the image's brain (its non-background pixels)."""
    ys, xs = np.nonzero(image > image.min())
    size = image.shape[0]
    cy, cx = (int(ys.mean()), int(xs.mean())) if len(ys) else (size // 2, size // 2)
    y0 = min(max(cy - side // 2, 0), size - side)
    x0 = min(max(cx - side // 2, 0), size - side)
    return slice(y0, y0 + side), slice(x0, x0 + side)


def _figure(slices, recons: dict, out: Path) -> Path:
    from tfuad.canvas import axial_to_display, new_figure, save_figure

    rows = ["input", *recons]
    n = len(slices)
    fig = new_figure(2.2 * 2 * n, 2.3 * len(rows))
    side = slices.shape[1] // 4
    for c in range(n):
        box = _crop_box(slices[c, ..., 0], side)
        lo, hi = np.percentile(slices[c, ..., 0], [0.5, 99.5])   # one grey window per column: the input's
        for r, name in enumerate(rows):
            image = (slices if name == "input" else recons[name])[c, ..., 0]
            for k, view in enumerate((image, image[box])):
                ax = fig.add_subplot(len(rows), 2 * n, r * 2 * n + 2 * c + k + 1)
                ax.imshow(axial_to_display(view), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0 and k == 0:
                    ax.set_ylabel(name if name == "input" else f"{name}\nreconstruction")
                if r == 0:
                    ax.set_title("slice" if k == 0 else "brain centre ×4", fontsize=9)
    fig.suptitle("Decoder up-sampling: the same healthy validation slices, same data, seed and epochs")
    return save_figure(fig, out)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--protocol", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="svae")
    parser.add_argument("--modality", default="flair")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", default=None, help="PNG path (default OUT/upsampling.png)")
    args = parser.parse_args(argv)

    from tfuad.data.layouts import discover
    from tfuad.files import write_json
    from tfuad.training.run import RunDir
    from tfuad.training.trainer import TrainConfig, train

    dataset = discover(args.data)
    if args.protocol:
        dataset = dataset.with_protocol(args.protocol)
    out = Path(args.out)
    results, recons, slices = {}, {}, None
    for mode in MODES:
        run = RunDir(out / mode)
        config = TrainConfig(model=args.model, modality=args.modality, epochs=args.epochs, patience=args.patience,
                             image_size=args.image_size, seed=args.seed, model_kwargs={"upsampling": mode})
        start = time.perf_counter()
        train(run.path, dataset, config, resume=run.exists(), log=lambda m, _mode=mode: print(f"[{_mode}] {m}"))
        results[mode] = {**_best(run.path / "history.csv"), "seconds_this_call": round(time.perf_counter() - start)}
        if slices is None:
            slices = _validation_slices(run, dataset, args.modality)
        model = run.load_model()
        recons[mode] = np.asarray(model.reconstruct(slices, training=False), np.float32)
    figure = _figure(slices, recons, Path(args.figure or out / "upsampling.png"))
    print("| decoder up-sampling | epochs (best) | val loss | val L1 | val SSIM |")
    print("|---|---|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {r['epochs']} ({r['best_epoch']}) | {r['val_loss']:.1f} | {r['val_l1']:.4f} | "
              f"{r['val_ssim']:.4f} |")
    print(f"figure: {figure}")
    write_json({"model": args.model, "modality": args.modality, "image_size": args.image_size,
                "epochs_cap": args.epochs, "results": results}, out / "upsampling.json")
    return results


if __name__ == "__main__":
    main()
