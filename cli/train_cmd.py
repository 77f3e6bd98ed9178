"""``tfuad train MODEL``: train a normative model on healthy slices."""
from __future__ import annotations

import click

from tfuad.cli.options import derivatives_option, train_config, training_options
from tfuad.models import MODEL_NAMES


@click.command("train")
@click.argument("model", type=click.Choice(MODEL_NAMES, case_sensitive=False))
@click.option("--data", "data_path", required=True, type=click.Path(exists=True),
              help="Dataset folder (BraTS, MSLUB, IXI, BIDS, demo layout; detected) or a manifest CSV.")
@derivatives_option
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory: config, model, checkpoints, history, figures and TensorBoard logs go here.")
@click.option("--protocol", default=None,
              help="Assign train/calib/test splits from a named protocol (e.g. brats-healthy-slices).")
@training_options
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]), default="default",
              show_default=True, help="tf.distribute strategy; multiworker reads the standard TF_CONFIG.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last completed epoch (its stored settings are used, "
                   "--epochs is the new cap; MODEL must be the run's).")
@click.option("--include-failed-qc", is_flag=True,
              help="Also train on manifest rows marked qc=fail (a registration that failed tfuad preprocess's "
                   "quality control); by default they are left out and named.")
@click.option("--overwrite", is_flag=True,
              help="Replace the tfuad run in --out (only tfuad's files are removed; a folder that is not a "
                   "tfuad run, or a symbolic link, is refused).")
def train(model, data_path, derivatives, run_dir, protocol, strategy, resume, include_failed_qc, overwrite,
          **params):
    """Train MODEL on the healthy slices of a dataset's training subjects.

    \b
    Models (Baur et al. 2018): dae, dvae, sae, svae, saegan, anovaegan, anogan
    Priors (Chen et al. 2020):  vae, gmvae
    Healthy slices are those with no lesion voxel within a few slices (subjects
    marked healthy contribute all brain slices). With splits (demo data or
    --protocol), 'train' subjects train and 'calib' subjects give the
    validation loss. Training keeps the weights of the epoch with the best
    validation loss, halves the learning rate on plateaus and stops early
    (--patience); --epochs is a cap. Every epoch logs the L1 and SSIM of the
    reconstructions of healthy validation slices (history.csv), and the run
    gets reconstructions.png and loss_curves.png. A killed run continues
    exactly with --resume.

    \b
    Example:
      tfuad train vae --data demo_data --modality flair --out runs/vae --image-size 64 --epochs 20
      tfuad train gmvae --clusters 9 --data brats18 --protocol brats-healthy-slices --out runs/gmvae
    """
    from tfuad.data.layouts import discover
    from tfuad.training import train as run_training

    dataset = discover(data_path, derivatives=derivatives, include_failed_qc=include_failed_qc)
    if dataset.left_out:
        click.echo(f"left out {len(dataset.left_out)} subject(s) that failed registration QC "
                   f"(--include-failed-qc to train on them): {', '.join(dataset.left_out)}")
    if protocol:
        dataset = dataset.with_protocol(protocol)
    config = train_config(model, params, strategy=strategy)
    run_training(run_dir, dataset, config, resume=resume, overwrite=overwrite, log=click.echo)
    click.echo(f"saved {run_dir}/model.keras")
