"""``tfuad compare``: several evaluation reports side by side, with intervals and paired tests."""
from __future__ import annotations

import click


@click.command("compare")
@click.argument("report_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for compare.md, compare.json and compare.png.")
@click.option("--metric", default="dice@fpr@0.05", show_default=True,
              help="per_subject.csv column to compare, e.g. dice@fpr@0.05, dice@p98, best_dice, auroc.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Bootstrap seed.")
@click.option("--resamples", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Bootstrap resamples of the subjects per interval.")
@click.option("--confidence", type=click.FloatRange(min=0.5, max=1.0, max_open=True), default=0.95,
              show_default=True, help="Coverage of the intervals.")
def command(report_dirs, out_dir, metric, seed, resamples, confidence):
    """Compare evaluation reports (folders written by tfuad evaluate).

    Every method of every REPORT_DIR is one row, labelled
    "<report folder name>:<method>". OUT/compare.md holds the mean of METRIC
    over subjects with a percentile-bootstrap interval per row, and for every
    pair of rows, over the subjects both scored, the mean difference with a
    paired-bootstrap interval, the fraction of resamples <= 0 and the Wilcoxon
    signed-rank p-value. OUT/compare.json has every number and
    OUT/compare.png the per-subject values as a strip plot.

    \b
    Example:
      tfuad compare reports/sae reports/vae --out comparison --metric dice@fpr@0.05
    """
    from tfuad.reports.compare import compare_reports, comparison_markdown

    result = compare_reports(report_dirs, out_dir, metric=metric, resamples=resamples, confidence=confidence,
                             seed=seed)
    click.echo(comparison_markdown(result))
