"""``tfuad crossval MODEL``: k-fold cross-validation over a dataset's labelled cases."""
from __future__ import annotations

import click

from tfuad.cli.options import (
    FPR,
    derivatives_option,
    schedule_options,
    train_config,
    training_options,
    weighting_option,
)
from tfuad.models import MODEL_NAMES


@click.command("crossval")
@click.argument("model", type=click.Choice(MODEL_NAMES, case_sensitive=False))
@click.option("--data", "data_path", required=True, type=click.Path(exists=True),
              help="Dataset with labelled cases (lesion masks); healthy-only subjects train every fold.")
@derivatives_option
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: folds.json, one run per fold (fold-<i>/) and the merged report (report/).")
@click.option("--folds", "k", type=click.IntRange(min=2), default=5, show_default=True, help="Number of folds.")
@click.option("--fold-seed", default=0, show_default=True, help="Seed of the folds.")
@click.option("--calib-per-fold", type=click.IntRange(min=0), default=1, show_default=True,
              help="Labelled cases of the other folds that calibrate each fold (their lesion-free slices).")
@click.option("--healthy-calib", type=click.IntRange(min=0), default=0, show_default=True,
              help="Healthy-only subjects that calibrate every fold.")
@click.option("--method", "methods", multiple=True, default=("residual", "intensity"), show_default=True,
              help="Methods to calibrate and evaluate (repeatable); intensity is the reference row.")
@click.option("--fprs", default="0.01,0.05,0.1", show_default=True, help="FPR limits on healthy brain voxels.")
@weighting_option
@click.option("--median-size", default=5, show_default=True,
              help="Side of the 3D median filter on the maps (paper: 5 at about 1 mm; 1 turns it off).")
@click.option("--resamples", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Bootstrap resamples of the subjects for every interval.")
@training_options
@schedule_options(default="fast")
def command(model, data_path, derivatives, out_dir, k, fold_seed, calib_per_fold, healthy_calib, methods, fprs,
            weighting, median_size, resamples, schedule, max_steps, **params):
    """Cross-validate MODEL: every labelled case is tested once, by a model that never saw it.

    For each fold: train MODEL on the other folds' training cases (their
    lesion-free slices) and the healthy-only subjects, calibrate it on the
    other folds' calibration cases, then score the fold's cases. One report
    (OUT/report/) merges the folds, with bootstrap 95 % intervals over all
    cases. Reruns resume: unfinished training continues, only missing or stale
    calibrations are made again.

    \b
    Example:
      tfuad crossval vae --data ../shared/data/brats18 --folds 7 --out cv/vae --method map-tv --method intensity
    """
    from tfuad.data.layouts import discover
    from tfuad.detection.methods import get_method
    from tfuad.postprocessing.filters import PostprocessConfig
    from tfuad.reports.tables import Bootstrap, markdown_table, measures_table
    from tfuad.workflows.crossval import crossval

    for method in methods:
        get_method(method)
    limits = tuple(FPR.convert(v, None, None) for v in fprs.split(",") if v.strip())
    config = train_config(model, params)
    calibration = {"fprs": limits, "postprocess": PostprocessConfig(median_size=median_size), "weighting": weighting,
                   "schedule": schedule, "max_steps": max_steps}
    dataset = discover(data_path, derivatives=derivatives)
    summary = crossval(dataset, out_dir, config, k=k, seed=fold_seed, calib_per_fold=calib_per_fold,
                       healthy_calib=healthy_calib, methods=methods, calibration=calibration,
                       evaluation={"bootstrap": Bootstrap(resamples=resamples)}, log=click.echo)
    click.echo(markdown_table(summary["methods"]))
    click.echo(measures_table(summary["methods"]))
