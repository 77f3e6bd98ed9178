"""``tfuad calibrate RUN_DIR``: thresholds (and λ) from healthy data."""
from __future__ import annotations

import click

from tfuad.cli.options import batch_size_option, schedule_options


def parse_fprs(ctx, param, value):
    try:
        fprs = tuple(float(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers", ctx=ctx, param=param)
    if not fprs or not all(0 < f < 1 for f in fprs):
        raise click.BadParameter("FPR limits must lie strictly between 0 and 1, e.g. 0.01,0.05,0.1",
                                 ctx=ctx, param=param)
    return fprs


@click.command("calibrate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_path", required=True, type=click.Path(exists=True),
              help="Dataset with 'calib' (and 'train') subjects: demo layout, manifest with a split column, "
                   "or a folder plus --protocol.")
@click.option("--protocol", default=None, help="Assign splits from a named protocol (e.g. brats-healthy-slices).")
@click.option("--method", type=click.Choice(["residual", "map-tv", "intensity", "all"]), default="residual",
              show_default=True, help="Which detection method to calibrate (all: residual, intensity and, for "
                                      "models with an ELBO, map-tv).")
@click.option("--fprs", default="0.01,0.05,0.1", show_default=True, callback=parse_fprs,
              help="FPR limits on healthy brain voxels.")
@click.option("--lambdas", default=None, metavar="L1,L2,...",
              help="λ grid of the map-tv ε(λ) search [default: 0.25,0.5,1,2,3,4,5,6,8,12].")
@click.option("--percentile", default=98.0, show_default=True, help="Percentile threshold on healthy training maps.")
@schedule_options(default="paper")
@click.option("--median-size", default=5, show_default=True,
              help="Side of the 3D median filter on the maps (paper: 5 at about 1 mm; 1 turns it off).")
@click.option("--erosion", default=3, show_default=True, help="Voxel layers eroded from the brain mask.")
@click.option("--min-component", default=6, show_default=True,
              help="3D connected components smaller than this (voxels) are dropped from segmentations.")
@batch_size_option
def command(run_dir, data_path, protocol, method, lambdas, fprs, percentile, schedule, max_steps, median_size, erosion,
            min_component, batch_size):
    """Calibrate a trained run on healthy data; writes RUN_DIR/calibration-<method>.json.

    Thresholds never come from test labels: the 98th percentile of post-processed
    maps on healthy training slices (Baur et al.) and, for each FPR limit, the
    smallest threshold whose false-positive rate on healthy calibration brain
    voxels stays within it (Chen et al.). For map-tv, λ is chosen first as the
    smallest λ minimising the mean L1 change on healthy calibration slices, and
    the ε(λ) curve is saved as RUN_DIR/lambda_curve.png. The post-processing
    settings are stored with the calibration and reused by detect and evaluate.
    """
    from tfuad.data.layouts import discover
    from tfuad.detection.calibrate import calibrate_run
    from tfuad.training.run import RunDir

    dataset = discover(data_path)
    if protocol:
        dataset = dataset.with_protocol(protocol)
    from tfuad.postprocessing.filters import PostprocessConfig

    postprocess = PostprocessConfig(median_size=median_size, erosion_iterations=erosion,
                                    min_component_size=min_component)
    extra = {}
    if lambdas:
        try:
            extra["lambdas"] = tuple(float(v) for v in lambdas.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"{lambdas!r} is not a comma-separated list of numbers",
                                     param_hint="--lambdas") from None
    methods = [method]
    if method == "all":
        from tfuad.models import model_class

        elbo = model_class(RunDir(run_dir).config()["model"]).has_elbo
        methods = ["residual", "intensity"] + (["map-tv"] if elbo else [])
    for m in methods:
        cal = calibrate_run(run_dir, dataset, method=m, fprs=fprs, percentile=percentile, schedule=schedule,
                            max_steps=max_steps, batch_size=batch_size, postprocess=postprocess, log=click.echo,
                            **extra)
        values = ", ".join(f"{k}={v:.4g}" for k, v in cal.thresholds.items())
        lam = f", lambda={cal.extra['lambda']:g}" if "lambda" in cal.extra else ""
        click.echo(f"{m}: {values}{lam} ({cal.n_voxels} healthy calibration voxels)")
