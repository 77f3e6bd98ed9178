"""``tfuad export RUN_DIR --out EXPORT_BASE``: a SavedModel version for TensorFlow Serving."""
from __future__ import annotations

import click

from tfuad.cli.options import FPR, method_option, schedule_options


@click.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "export_base", required=True, type=click.Path(file_okay=False),
              help="Model base folder of the server; the model goes to OUT/NAME/VERSION/.")
@click.option("--name", default=None, help="Model name [default: the run folder's name].")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="Version number [default: 1 + the highest existing version]. Never overwritten.")
@method_option(exportable=True)
@click.option("--fpr", type=FPR, default=0.05, show_default=True,
              help="Default operating point: the calibrated FPR limit whose thresholds make the 'mask' output "
                   "when a request names none.")
@click.option("--lam", type=float, default=None,
              help="Lambda of the 'restore' signature [default: the map-tv calibration's; without either, "
                   "'restore' is not exported].")
@schedule_options()
@click.option("--no-warmup", is_flag=True, help="Do not write assets.extra/tf_serving_warmup_requests.")
@click.option("--report", "report", type=click.Path(exists=True, file_okay=False), default=None,
              help="Evaluation report folder (tfuad evaluate --out) whose table goes into the model card.")
@click.option("--speed", "speed", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Speed record of benchmarks/serving_load.py --json for the model card [default: latencies "
                   "measured at export on the warmup requests].")
def command(run_dir, export_base, name, version, method, fpr, lam, schedule, max_steps, no_warmup, report, speed):
    """Export a trained, calibrated run as a TF-Serving SavedModel.

    Signatures (input 'slices': float32 [batch, S, S, 1] normalised slices):
    serving_default -> anomaly_map, mask, threshold (raw slice maps at the
    calibrated slice-level threshold of --fpr); detect_at_fpr (+ fpr) and
    detect_at_threshold (+ threshold): the same at an operating point chosen per
    request; detect_volume[_at_fpr|_at_threshold] (+ brain_mask of the volume):
    the post-processed map and lesion mask 'tfuad detect' writes; reconstruct ->
    reconstruction; restore -> restoration, lesion_map (MAP-TV, when calibrated
    for map-tv or given --lam). Also writes assets.extra/tfuad_preprocess.json
    (preprocessing contract and calibration), model_card.json/.md and warmup
    requests. See export/README.md for serving and clients.

    \b
    Example:
      tfuad export runs/svae --out serving --fpr 0.05
      docker run -p 8501:8501 -v "$PWD/serving/svae:/models/svae" -e MODEL_NAME=svae tensorflow/serving
    """
    from tfuad.export.saved_model import export_run

    exported = export_run(run_dir, export_base, name=name, version=version, method=method, fpr=fpr, lam=lam,
                          schedule=schedule, max_steps=max_steps, warmup=not no_warmup, report=report, speed=speed)
    meta = exported.metadata
    restore = meta["restore"]
    detail = f", restore: lambda={restore['lambda']:g} ({restore['schedule']})" if restore else ""
    click.echo(f"exported {exported.name} version {exported.version} -> {exported.path}")
    click.echo(f"signatures: {', '.join(exported.signatures)} ({meta['method']} map, slice threshold "
               f"{meta['slice_threshold']:.4g} at FPR {meta['fpr']:g}{detail})")
