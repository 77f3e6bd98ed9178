"""``tfuad evaluate``: metrics, tables and figures on labelled test subjects."""
from __future__ import annotations

import click

from tfuad.cli.options import (
    batch_size_option,
    derivatives_option,
    method_option,
    precision_option,
    schedule_options,
)


@click.command("evaluate")
@click.option("--model", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Trained and calibrated run directory.")
@click.option("--data", "data_path", required=True, type=click.Path(exists=True),
              help="Dataset with labelled test subjects (split 'test', or all subjects with lesion masks).")
@derivatives_option
@click.option("--protocol", default=None, help="Assign splits from a named protocol (e.g. brats-healthy-slices).")
@click.option("--modality", default=None,
              help="Must match the modality the model was trained on [default: the model's].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Report folder.")
@method_option(multiple=True, default=("residual",))
@click.option("--resamples", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Bootstrap resamples of the subjects for every interval.")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap (recorded in summary.json).")
@schedule_options()
@precision_option
@batch_size_option
def command(run_dir, data_path, derivatives, protocol, modality, out_dir, methods, resamples, seed, schedule, max_steps,
            precision, batch_size):
    """Score a calibrated run on labelled test subjects.

    Writes OUT/summary.json (all numbers with method, model, dataset, modality and
    thresholds), OUT/per_subject.csv, OUT/summary.md (the results table) and
    figures: examples.png (input, reconstruction or restoration, map,
    segmentation, ground truth), roc_pr.png and dice_vs_lesion_size.png.
    Every mean over subjects carries a bootstrap 95 % interval over subjects
    (seeded; --resamples). Dice is per subject at the calibrated thresholds;
    AUROC/AUPRC pool the brain voxels of all test subjects (interval: subjects
    resampled); beside them, at the 5 % FPR limit: the FPR reached, HD95 and
    ASSD (mm), lesion-wise precision/recall/F1, and slice-level AUROC/AP.
    "best Dice" picks the threshold with the test labels and is reported for
    comparison with the literature only.

    Evaluation never calibrates and writes only into OUT: the intensity baseline
    row is added when the run is calibrated for it, and a method the run is not
    calibrated for is named and left out.

    \b
    Example:
      tfuad evaluate --model runs/svae --data demo_data --out report
    """
    from tfuad.data.layouts import discover
    from tfuad.reports.tables import Bootstrap, markdown_table, measures_table
    from tfuad.workflows.evaluate import evaluate_run

    dataset = discover(data_path, derivatives=derivatives)
    if protocol:
        dataset = dataset.with_protocol(protocol)
    summary = evaluate_run(run_dir, dataset, out_dir, methods=methods, modality=modality, batch_size=batch_size,
                           bootstrap=Bootstrap(resamples=resamples, seed=seed), schedule=schedule,
                           max_steps=max_steps, precision=precision, log=click.echo)
    click.echo(markdown_table(summary["methods"]))
    click.echo(measures_table(summary["methods"]))
