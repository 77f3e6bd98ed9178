"""``tfuad detect INPUT...``: anomaly maps and lesion masks for new scans."""
from __future__ import annotations

from pathlib import Path

import click

from tfuad.cli.options import batch_size_option, schedule_options


def _stem(path) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return Path(path).stem


def _inputs(paths, modality):
    """(image, brain mask or None) pairs from NIfTI files and dataset folders."""
    from tfuad.data.layouts import discover

    items = []
    for path in paths:
        if Path(path).is_dir() or str(path).endswith(".csv"):
            for subject in discover(path).subjects:
                items.append((subject.image(modality), subject.brain_mask))
        else:
            items.append((Path(path), None))
    return items


@click.command("detect")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Trained and calibrated run directory.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--method", type=click.Choice(["residual", "map-tv", "intensity"]), default="residual",
              show_default=True, help="residual: |x - reconstruction|; map-tv: |y - MAP-TV restoration|; "
                                      "intensity: thresholded normalised intensity (reference).")
@click.option("--fpr", type=float, default=None,
              help="Threshold at this calibrated FPR limit (e.g. 0.05) [default: 0.05 when calibrated].")
@click.option("--percentile", type=float, default=None, help="Use the calibrated percentile threshold instead (98).")
@click.option("--modality", default="flair", show_default=True, help="Modality to read from dataset folders.")
@click.option("--brain-mask", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Brain mask for a single input file [default: its non-zero voxels].")
@schedule_options()
@batch_size_option
def command(inputs, run_dir, out_dir, method, fpr, percentile, modality, brain_mask, schedule, max_steps,
            batch_size):
    """Detect lesions in INPUT volumes (NIfTI files or dataset folders).

    For each input writes, with the input's affine and header so they overlay
    it in ITK-SNAP or FSLeyes: <name>_anomaly.nii.gz (continuous map),
    <name>_lesions.nii.gz (binary mask at the calibrated threshold) and
    <name>_overview.png. Inputs are never modified.

    \b
    Example:
      tfuad detect sub-01_flair.nii.gz --model runs/svae --out detections --fpr 0.05
    """
    from tqdm.auto import tqdm

    from tfuad.data.nifti import save_like
    from tfuad.detection.detector import Detector
    from tfuad.reports.figures import plot_detection_overview

    if fpr is not None and percentile is not None:
        raise click.UsageError("choose one of --fpr and --percentile")
    items = _inputs(inputs, modality.lower())
    if brain_mask and len(items) != 1:
        raise click.UsageError("--brain-mask goes with a single input file")
    if brain_mask:
        items = [(items[0][0], Path(brain_mask))]
    detector = Detector(run_dir, method, batch_size=batch_size, schedule=schedule, max_steps=max_steps)
    threshold = detector.threshold(fpr=0.05 if fpr is None and percentile is None else fpr, percentile=percentile)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for image, mask in tqdm(items, desc="volumes", unit="volume", disable=len(items) < 2):
        prepared = detector.prepare(image, brain_mask_path=mask)
        result = detector.run_volume(prepared)
        lesions = detector.segment(result.map, threshold)
        stem = _stem(image)
        save_like(result.map, prepared.volume, out / f"{stem}_anomaly.nii.gz")
        save_like(lesions, prepared.volume, out / f"{stem}_lesions.nii.gz")
        plot_detection_overview(prepared.volume.data, result.map, lesions, out / f"{stem}_overview.png",
                                title=f"{stem}: {method}, threshold {threshold:.3g}")
        click.echo(f"{image}: {int(lesions.sum())} lesion voxels, {result.seconds:.2f} s "
                   f"-> {out / (stem + '_lesions.nii.gz')}")
