r"""A native-space detection overlaid on its raw scan: ``tfuad detect --raw`` from a whole-head IXI T1.

Runs the documented commands end to end, then draws the figure of the README:

1. ``tfuad preprocess`` on the first ``--train`` IXI T1 scans (whole head, scanner space; the last scan
   is held out), histogram standardisation fitted; a scan failing the registration QC would be left out
   of training by ``preprocess`` itself;
2. ``tfuad train`` a model at 64 px on them (``--model``, default Chen et al.'s VAE as in ``make demo``;
   until its validation loss stops improving), ``tfuad calibrate`` it;
3. a dark ball (a synthetic T1-hypointense lesion, radius 8 mm) is put into the held-out raw scan at a known place;
4. ``tfuad detect RAW --raw --model RUN --template-space``;
5. the raw scan in its own voxel grid, with the native-space anomaly map, the lesion mask's outline
   (red) and the ball's true outline (cyan), through the ball's centre in three planes.

Usage (from the project root; about 25 minutes on 2 cores)::

    python scripts/native_space_figure.py --data ../shared/data/ixi_t1 --work runs/native_figure \
        --out docs/native_space_detection.png
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi


def tfuad(*args) -> None:
    command = [sys.executable, "-m", "tfuad.cli.main", *map(str, args)]
    print("$ tfuad " + " ".join(map(str, args)), flush=True)
    subprocess.run(command, check=True)


def insert_ball(source: Path, target: Path, radius: float = 8.0) -> np.ndarray:
    """Copy a raw scan with a dark ball inside the head; returns the ball's world centre (RAS mm)."""
    image = nib.load(source)
    data = np.asarray(image.get_fdata(), np.float32)
    head = np.argwhere(data > np.percentile(data, 75))
    centre = image.affine[:3, :3] @ (head.mean(axis=0)) + image.affine[:3, 3] + np.array([22.0, 8.0, 40.0])
    ijk = np.indices(data.shape).reshape(3, -1)
    world = image.affine[:3, :3] @ ijk + image.affine[:3, 3:4]
    ball = (np.linalg.norm(world - centre[:, None], axis=0) <= radius).reshape(data.shape)
    data[ball] = 0.15 * float(np.percentile(data[data > 0], 99))  # dark, as most lesions on T1 are
    out = nib.Nifti1Image(data, image.affine, image.header)
    out.set_data_dtype(np.float32)
    nib.save(out, target)
    return centre


def draw(raw_path: Path, folder: Path, subject: str, centre, out_png: Path, method: str) -> dict:
    from tfuad.canvas import new_figure, save_figure

    raw = nib.as_closest_canonical(nib.load(raw_path))  # display only: RAS+ voxel order
    affine = raw.affine
    data = np.asarray(raw.get_fdata(), np.float32)
    score = np.asarray(nib.as_closest_canonical(nib.load(folder / f"{subject}_anomaly.nii.gz")).get_fdata())
    mask = np.asarray(nib.as_closest_canonical(nib.load(folder / f"{subject}_lesions.nii.gz")).get_fdata()) > 0
    ijk = np.indices(data.shape).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:4]
    ball = (np.linalg.norm(world - np.asarray(centre)[:, None], axis=0) <= 8.0).reshape(data.shape)
    c = np.round(np.linalg.solve(affine[:3, :3], np.asarray(centre) - affine[:3, 3])).astype(int)
    labels, _ = ndi.label(mask)
    hit = np.bincount(labels[ball & mask]).argmax() if (ball & mask).any() else 0
    found = labels == hit if hit else np.zeros_like(mask)
    error = float(np.linalg.norm(affine[:3, :3] @ np.argwhere(found).mean(axis=0) + affine[:3, 3] - centre)) \
        if found.any() else float("nan")
    planes = [("axial", lambda a: a[:, :, c[2]]), ("coronal", lambda a: a[:, c[1], :]),
              ("sagittal", lambda a: a[c[0], :, :])]
    fig = new_figure(12.0, 4.6)
    vmax = float(np.percentile(score[score > 0], 99.9)) if (score > 0).any() else 1.0
    for k, (name, cut) in enumerate(planes):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.imshow(np.rot90(cut(data)), cmap="gray", vmax=float(np.percentile(data, 99.5)))
        shown = np.ma.masked_less_equal(np.rot90(cut(score)), 0.02 * vmax)
        ax.imshow(shown, cmap="inferno", alpha=0.55, vmin=0, vmax=vmax)
        if cut(mask).any():
            ax.contour(np.rot90(cut(mask)).astype(float), levels=[0.5], colors="red", linewidths=2.2)
        ax.contour(np.rot90(cut(ball)).astype(float), levels=[0.5], colors="cyan", linewidths=1.0,
                   linestyles="dashed")
        ax.set_title(f"{name} (raw scan grid)")
        ax.set_axis_off()
    fig.suptitle(f"tfuad detect --raw ({method}): anomaly map and lesion mask (red) on the raw scan, "
                 f"true lesion (cyan dashed); centroid error {error:.1f} mm")
    save_figure(fig, out_png)
    return {"centroid_error_mm": round(error, 2), "lesion_voxels_native": int(mask.sum()),
            "lesion_component_voxels": int(found.sum()), "ball_voxels": int(ball.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/ixi_t1", type=Path)
    parser.add_argument("--work", default="runs/native_figure", type=Path)
    parser.add_argument("--out", default="docs/native_space_detection.png", type=Path)
    parser.add_argument("--train", type=int, default=10, help="IXI scans preprocessed for training (2 calibrate)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="Epoch cap (default: tfuad train's, which stops when the validation loss stops improving)")
    parser.add_argument("--model", default="vae",
                        help="Model key (default vae: Chen et al.'s VAE, as in make demo)")
    parser.add_argument("--method", default="residual")
    args = parser.parse_args()
    scans = sorted(args.data.glob("IXI*_T1.nii.gz"))
    held_out, training = scans[-1], scans[: args.train]
    work = args.work
    prep, run = work / "prep", work / "run"
    if not (prep / "manifest.csv").is_file():
        chosen = work / "ixi_t1"  # an IXI folder of the chosen scans: its subjects are known to be healthy
        chosen.mkdir(parents=True, exist_ok=True)
        for scan in training:
            if not (chosen / scan.name).exists():
                (chosen / scan.name).symlink_to(scan.resolve())
        tfuad("preprocess", chosen, "--out", prep, "--modality", "t1", "--steps",
              "reorient,bias,register,extract,resample,normalize", "--standardize-fit", "--split", "train",
              "--calib", 2, "--jobs", 2)
    if not (run / "model.keras").is_file():
        cap = ("--epochs", args.epochs) if args.epochs else ()
        tfuad("train", args.model, "--data", prep, "--modality", "t1", "--out", run, "--image-size", 64, *cap,
              "--batch-size", 16, "--overwrite")
        tfuad("calibrate", run, "--data", prep, "--method", "residual", "--method", "intensity")
    subject = held_out.name.replace("_T1.nii.gz", "") + "_lesion"
    raw = work / f"{subject}.nii.gz"
    centre = insert_ball(held_out, raw)
    tfuad("detect", raw, "--raw", "--template-space", "--model", run, "--out", work / "detect", "--method",
          args.method, "--fpr", 0.01)
    summary = draw(raw, work / "detect" / subject, subject, centre, args.out, args.method)
    summary.update({"raw_scan": str(held_out), "ball_centre_ras_mm": [round(float(v), 2) for v in centre]})
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
