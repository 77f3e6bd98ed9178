"""``tfuad merge SHARD_OUT...``: one manifest and QC table from the outputs of sharded runs."""
from __future__ import annotations

import sys

import click


@click.command("merge")
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Where manifest.csv, qc.csv, qc_montage.png and detections.csv go (may be a shard's folder).")
@click.option("--montage/--no-montage", default=True, show_default=True,
              help="Draw the QC montage of every preprocessed subject.")
def command(folders, out_dir, montage):
    """Merge the records of 'preprocess --shard' and 'detect --shard' runs.

    FOLDERS are the shards' --out folders (one shared folder, or one per
    shard). Writes OUT/manifest.csv (the preprocessed dataset, paths relative
    to OUT: train, calibrate and evaluate read it directly), OUT/qc.csv (one
    row per subject: status, shard, split, seconds, registration metric and QC
    numbers, or the error of a failed subject), OUT/qc_montage.png and, for
    detect shards, OUT/detections.csv (one row per scan: its set, or the error
    of a scan that failed). Shards that left no record and failed subjects are
    named; the exit code is then 1.

    \b
    Example (a SLURM array of 10 tasks, --array=0-9, each with --shard $SLURM_ARRAY_TASK_ID/10):
      tfuad merge prep/cohort --out prep/cohort
    """
    from tfuad.workflows.merge import merge_shards

    result = merge_shards(folders, out_dir, montage=montage)
    parts = []
    if result.subjects:
        parts.append(f"{len(result.subjects)} preprocessed subjects")
    if result.detections:
        parts.append(f"{len(result.detections)} detection sets")
    click.echo(f"merged {' and '.join(parts)}; wrote {', '.join(str(p) for p in result.written)}")
    if result.missing_shards:
        click.echo(f"shards without a record (not run, or still running): {', '.join(result.missing_shards)}",
                   err=True)
    if result.failed:
        tables = " and ".join(p.name for p in result.written if p.name in ("qc.csv", "detections.csv"))
        click.echo(f"{len(result.failed)} failed: {', '.join(sorted(result.failed))} (errors in {tables})", err=True)
    if result.missing_shards or result.failed:
        sys.exit(1)
