"""``tfuad train MODEL``: train a normative model on healthy slices."""
from __future__ import annotations

import json

import click

from tfuad.models import MODEL_NAMES


def _parse_option(ctx, param, values):
    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        try:
            out[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = raw
    return out


def _check_size(ctx, param, value):
    if value < 32 or value % 32:
        raise click.BadParameter(f"{value} is not a multiple of 32 (use 128 or 256)", ctx=ctx, param=param)
    return value


@click.command("train")
@click.argument("model", type=click.Choice(MODEL_NAMES, case_sensitive=False))
@click.option("--data", "data_path", required=True, type=click.Path(exists=True),
              help="Dataset folder (BraTS, MSLUB, IXI, demo layout; detected) or a manifest CSV.")
@click.option("--modality", default="flair", show_default=True, help="Modality to train on (flair, t2, t1, ...).")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory: config, model, checkpoints, history and TensorBoard logs go here.")
@click.option("--protocol", default=None,
              help="Assign train/calib/test splits from a named protocol (e.g. brats-healthy-slices).")
@click.option("--epochs", type=click.IntRange(min=1), default=150, show_default=True,
              help="Largest number of epochs (paper: 150); training stops earlier when the validation loss "
                   "stops improving (--patience). With --resume: the new cap; when the run has that many "
                   "epochs already, or stopped early, nothing is trained.")
@click.option("--patience", type=click.IntRange(min=0), default=10, show_default=True,
              help="Stop after this many epochs without improvement of the validation loss (the training loss "
                   "without validation slices); the learning rate is halved after half as many. The best "
                   "epoch's weights are saved. 0: no plateaus, no early stop.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Slices per batch (paper: 8).")
@click.option("--image-size", type=int, default=128, show_default=True, callback=_check_size,
              help="Side of the square slices: 128 or 256 as in the papers (any multiple of 32 works).")
@click.option("--normalization", type=click.Choice(["percentile", "zscore"]), default=None,
              help="Intensity normalisation [default: zscore for vae/gmvae (Chen), percentile for the others (Baur)].")
@click.option("--standardize/--no-standardize", default=False, show_default=True,
              help="Histogram standardisation (Nyúl-Udupa landmarks learned on the training subjects, stored "
                   "with the model): the same tissue gets the same value across subjects and scanners.")
@click.option("--seed", default=0, show_default=True, help="Seed for weights, shuffling and augmentation.")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Augment the training slices: left-right flip, rotation (±10°), scale (±10%), shift (±4%), "
                   "intensity scale (±10%) and gamma (0.8-1.25); the background is kept.")
@click.option("--figure-every", type=click.IntRange(min=0), default=10, show_default=True,
              help="Redraw RUN/reconstructions.png and RUN/loss_curves.png every N epochs (0: only at the end).")
@click.option("--clusters", type=int, default=None, help="gmvae: number of mixture components (paper: 3, 6, 9).")
@click.option("--latent-size", type=int, default=None,
              help="sae/svae/saegan/anovaegan: side of the spatial bottleneck (default image-size/16; "
                   "paper 8 or 16 at 256).")
@click.option("-O", "--model-option", "model_options", multiple=True, callback=_parse_option, metavar="KEY=VALUE",
              help="Any other model constructor argument, e.g. -O latent_channels=64 (repeatable).")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]), default="default",
              show_default=True, help="tf.distribute strategy; multiworker reads the standard TF_CONFIG.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last completed epoch (its stored settings are used; "
                   "MODEL must be the run's).")
@click.option("--overwrite", is_flag=True,
              help="Replace the tfuad run in --out (only tfuad's files are removed; a folder that is not a "
                   "tfuad run, or a symbolic link, is refused).")
def train(model, data_path, modality, run_dir, protocol, epochs, patience, batch_size, image_size, normalization,
          standardize, seed, augment, figure_every, clusters, latent_size, model_options, strategy, resume, overwrite):
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
      tfuad train svae --data demo_data --modality flair --out runs/svae --epochs 5
      tfuad train gmvae --clusters 9 --data brats18 --protocol brats-healthy-slices --out runs/gmvae
    """
    from tfuad.data.layouts import discover
    from tfuad.training import TrainConfig
    from tfuad.training import train as run_training

    kwargs = dict(model_options)
    if clusters is not None:
        kwargs["clusters"] = clusters
    if latent_size is not None:
        kwargs["latent_size"] = latent_size
    dataset = discover(data_path)
    if protocol:
        dataset = dataset.with_protocol(protocol)
    config = TrainConfig(model=model.lower(), modality=modality.lower(), epochs=epochs, batch_size=batch_size,
                         image_size=image_size, seed=seed, normalization=normalization, standardize=standardize,
                         model_kwargs=kwargs, augment=augment, strategy=strategy, patience=patience,
                         figure_every=figure_every)
    run_training(run_dir, dataset, config, resume=resume, overwrite=overwrite, log=click.echo)
    click.echo(f"saved {run_dir}/model.keras")
