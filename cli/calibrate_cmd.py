"""``tfuad calibrate RUN_DIR``: thresholds (and each method's own settings) from healthy data."""
from __future__ import annotations

import click

from tfuad.cli.options import (
    FPR,
    batch_size_option,
    derivatives_option,
    method_option,
    precision_option,
    schedule_options,
    weighting_option,
)


def _numbers(ctx, param, value):
    """A comma-separated list of numbers, or ``None``."""
    if value is None:
        return None
    try:
        return tuple(float(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers", ctx=ctx, param=param) from None


def parse_fprs(ctx, param, value):
    """FPR limits: a comma-separated list of numbers strictly between 0 and 1."""
    fprs = _numbers(ctx, param, value) or ()
    if not fprs:
        raise click.BadParameter("give at least one FPR limit, e.g. 0.01,0.05,0.1", ctx=ctx, param=param)
    return tuple(FPR.convert(f, param, ctx) for f in fprs)


@click.command("calibrate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_path", required=True, type=click.Path(exists=True),
              help="Dataset with 'calib' (and 'train') subjects: demo layout, manifest with a split column, "
                   "or a folder plus --protocol.")
@derivatives_option
@click.option("--protocol", default=None, help="Assign splits from a named protocol (e.g. brats-healthy-slices).")
@method_option(multiple=True, default=("residual",), extra=("all",))
@click.option("--fprs", default="0.01,0.05,0.1", show_default=True, callback=parse_fprs,
              help="FPR limits on healthy brain voxels.")
@click.option("--lambdas", default=None, metavar="L1,L2,...", callback=_numbers,
              help="λ grid of the map-tv ε(λ) search [default: 0.25,0.5,1,2,3,4,5,6,8,12].")
@weighting_option
@click.option("--percentile", default=98.0, show_default=True, help="Percentile threshold on healthy training maps.")
@schedule_options(default="paper")
@click.option("--median-size", default=5, show_default=True,
              help="Side of the 3D median filter on the maps (paper: 5 at about 1 mm; 1 turns it off).")
@click.option("--erosion", default=3, show_default=True, help="Voxel layers eroded from the brain mask.")
@click.option("--min-component", default=6, show_default=True,
              help="3D connected components smaller than this (voxels) are dropped from segmentations.")
@precision_option
@batch_size_option
def command(run_dir, data_path, derivatives, protocol, methods, lambdas, fprs, percentile, schedule, max_steps,
            median_size, erosion, min_component, weighting, precision, batch_size):
    """Calibrate a trained run on healthy data; writes RUN_DIR/calibration-<method>.json.

    Thresholds never come from test labels: the 98th percentile of post-processed
    maps on healthy training slices (Baur et al.) and, for each FPR limit, the
    smallest threshold whose false-positive rate on healthy calibration brain
    voxels stays within it (Chen et al.). For map-tv, λ is chosen first as the
    smallest λ minimising the mean L1 change on healthy calibration slices, and
    the ε(λ) curve is saved as RUN_DIR/lambda_curve.png. The post-processing
    settings and a fingerprint of the weights are stored with the calibration:
    detect, evaluate and export reuse the settings and refuse a calibration made
    for other weights. --method is repeatable; 'all' takes every method that
    suits the model. Methods that differ only in the sign of their map (map-tv
    and map-tv-positive) choose λ once and restore each healthy volume once.

    \b
    Example:
      tfuad calibrate runs/svae --data demo_data --method residual --method intensity
    """
    from tfuad.data.layouts import discover
    from tfuad.detection.methods import methods_for
    from tfuad.files import ensure_writable_dir
    from tfuad.postprocessing.filters import PostprocessConfig
    from tfuad.training.run import RunDir
    from tfuad.workflows.calibrate import calibrate_methods

    run = RunDir(run_dir)
    ensure_writable_dir(run.path)
    dataset = discover(data_path, derivatives=derivatives)
    if protocol:
        dataset = dataset.with_protocol(protocol)
    postprocess = PostprocessConfig(median_size=median_size, erosion_iterations=erosion,
                                    min_component_size=min_component)
    if "all" in methods:
        methods = methods_for(run.load_model())
    calibrations = calibrate_methods(run.path, dataset, methods, fprs=fprs, percentile=percentile, schedule=schedule,
                                     max_steps=max_steps, lambdas=lambdas, batch_size=batch_size,
                                     postprocess=postprocess, weighting=weighting, precision=precision,
                                     log=click.echo)
    for method, cal in calibrations.items():
        values = ", ".join(f"{k}={v:.4g}" for k, v in cal.thresholds.items())
        lam = f", lambda={cal.extra['lambda']:g}" if "lambda" in cal.extra else ""
        click.echo(f"{method}: {values}{lam} ({cal.n_voxels} healthy calibration voxels)")
