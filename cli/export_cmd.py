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
              help="Calibrated FPR limit whose slice-level threshold makes the 'mask' output.")
@click.option("--lam", type=float, default=None,
              help="Lambda of the 'restore' signature [default: the map-tv calibration's; without either, "
                   "'restore' is not exported].")
@schedule_options()
@click.option("--no-warmup", is_flag=True, help="Do not write assets.extra/tf_serving_warmup_requests.")
def command(run_dir, export_base, name, version, method, fpr, lam, schedule, max_steps, no_warmup):
    """Export a trained, calibrated run as a TF-Serving SavedModel.

    Signatures (input 'slices': float32 [batch, S, S, 1] normalised slices):
    serving_default -> anomaly_map, mask (the calibrated slice-level threshold at
    --fpr, for raw slice maps: the 3D post-processing of 'tfuad detect' is not in
    the graph); reconstruct -> reconstruction; restore -> restoration, lesion_map
    (MAP-TV, when calibrated for map-tv or given --lam). Also writes
    assets.extra/tfuad_preprocess.json (preprocessing contract and calibration)
    and warmup requests. See export/README.md for serving and clients.

    \b
    Example:
      tfuad export runs/svae --out serving --fpr 0.05
      docker run -p 8501:8501 -v "$PWD/serving/svae:/models/svae" -e MODEL_NAME=svae tensorflow/serving
    """
    from tfuad.export.saved_model import export_run

    exported = export_run(run_dir, export_base, name=name, version=version, method=method, fpr=fpr, lam=lam,
                          schedule=schedule, max_steps=max_steps, warmup=not no_warmup)
    meta = exported.metadata
    restore = meta["restore"]
    detail = f", restore: lambda={restore['lambda']:g} ({restore['schedule']})" if restore else ""
    click.echo(f"exported {exported.name} version {exported.version} -> {exported.path}")
    click.echo(f"signatures: {', '.join(exported.signatures)} ({meta['method']} map, slice threshold "
               f"{meta['slice_threshold']:.4g} at FPR {meta['fpr']:g}{detail})")
