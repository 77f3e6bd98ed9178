"""Command-line options shared by several ``tfuad`` commands."""
from __future__ import annotations

import json
import math

import click

__all__ = ["schedule_options", "batch_size_option", "precision_option", "method_option", "derivatives_option",
           "weighting_option", "FPR", "training_options", "train_config", "TRAINING_PARAMS"]


class _Fraction(click.ParamType):
    """A finite number strictly between 0 and 1 (an FPR limit)."""

    name = "fraction"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or not 0.0 < number < 1.0:
            self.fail(f"{value!r} is not an FPR limit: give a number strictly between 0 and 1, e.g. 0.05", param, ctx)
        return number


#: The parameter type of FPR limits.
FPR = _Fraction()


def method_option(*, multiple: bool = False, default="residual", exportable: bool = False, extra=()):
    """``--method``: a scoring method, with the choices and their summaries taken from the registry.

    Args:
        multiple: Repeatable option.
        default: Default method name(s).
        exportable: Offer only the methods a SavedModel can serve.
        extra: More choices (e.g. ``"all"``).
    """
    from tfuad.detection.methods import METHODS

    names = [n for n, cls in METHODS.items() if not exportable or cls.needs is not None]
    described = "; ".join(f"{n}: {METHODS[n].summary}" for n in names)
    return click.option("--method", "methods" if multiple else "method", multiple=multiple,
                        type=click.Choice([*names, *extra]), default=default, show_default=True,
                        help=f"Scoring method{' (repeatable)' if multiple else ''}. {described}.")


def schedule_options(default=None):
    """``--schedule`` and ``--max-steps``: the MAP-TV optimisation schedule and its step limit.

    Args:
        default: Default schedule name; ``None`` means "the one the run was
            calibrated with" (commands that read a calibration).

    Returns:
        A decorator adding both options.
    """
    if default is None:
        schedule_help = ("MAP-TV schedule: paper (500 gradient steps, as Chen et al.) or fast (Adam, 30 steps) "
                         "[default: the one map-tv was calibrated with].")
        steps_help = "Step limit of the MAP-TV schedule [default: the calibrated one]."
    else:
        schedule_help = ("MAP-TV schedule: paper (500 gradient steps, as Chen et al.) or fast (Adam, 30 steps: "
                         "the paper's lesion-map quality in a fraction of the time; see README).")
        steps_help = ("Step limit of the MAP-TV schedule [default: 500 for paper, 30 for fast]; more fast steps "
                      "raise the lesion-map AUROC further at proportional cost.")

    def decorate(command):
        command = click.option("--max-steps", type=click.IntRange(min=1), default=None, help=steps_help)(command)
        return click.option("--schedule", type=click.Choice(["paper", "fast"]), default=default,
                            show_default=default is not None, help=schedule_help)(command)

    return decorate


def precision_option(command):
    """``--precision``: the network precision of detection (default: the calibrated one)."""
    return click.option("--precision", type=click.Choice(["auto", "float32", "mixed_bfloat16"]), default=None,
                        help="Network precision [default: the one the method was calibrated with, else the "
                             "model's own]; thresholds depend on it, so another one than calibrated is "
                             "refused.")(command)


def weighting_option(command):
    """``--weighting``: how healthy calibration voxels count for the FPR thresholds."""
    from tfuad.workflows.calibrate import WEIGHTINGS

    return click.option("--weighting", type=click.Choice(WEIGHTINGS), default="none", show_default=True,
                        help="How healthy calibration voxels count for the FPR thresholds: each alike (the "
                             "papers'), or 'position': weighted to the calibration brains' axial profile, so that "
                             "healthy slices from the top and bottom of lesioned brains stand for the whole brain "
                             "a threshold meets.")(command)


def derivatives_option(command):
    """``--derivatives-pipeline NAME``: the one BIDS derivatives pipeline a dataset's masks are read from."""
    return click.option("--derivatives-pipeline", "derivatives", default=None, metavar="NAME",
                        help="For a BIDS dataset: read the lesion and brain masks only from derivatives/NAME/ "
                             "(e.g. one rater's or one segmentation tool's folder) [default: from every folder "
                             "under derivatives/ except tfuad's own outputs; a subject with masks in two of "
                             "them is refused, naming both files].")(command)


def batch_size_option(command):
    """``--batch-size``: slices per forward pass, or per MAP-TV restoration batch."""
    return click.option("--batch-size", type=click.IntRange(min=1), default=None,
                        help="Slices per batch [default: 32; map-tv: a whole volume at once where memory "
                             "allows, up to 160 slices of 128 × 128 pixels].")(command)


def _parse_model_options(ctx, param, values):
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


#: The options that define a model and its training, shared by ``train`` and ``crossval``.
_TRAINING_OPTIONS = (
    click.option("--modality", default="flair", show_default=True, help="Modality to train on (flair, t2, t1, ...)."),
    click.option("--epochs", type=click.IntRange(min=1), default=150, show_default=True,
                 help="Largest number of epochs (paper: 150); training stops earlier when the validation loss "
                      "stops improving (--patience). With --resume: the new cap; when the run has that many "
                      "epochs already, or stopped early, nothing is trained."),
    click.option("--patience", type=click.IntRange(min=0), default=10, show_default=True,
                 help="Stop after this many epochs without improvement of the validation loss (the training loss "
                      "without validation slices); the learning rate is halved after half as many. The best "
                      "epoch's weights are saved. 0: no plateaus, no early stop."),
    click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
                 help="Slices per batch (paper: 8)."),
    click.option("--image-size", type=int, default=128, show_default=True, callback=_check_size,
                 help="Side of the square slices: 128 or 256 as in the papers (any multiple of 32 works)."),
    click.option("--normalization", type=click.Choice(["percentile", "zscore"]), default=None,
                 help="Intensity normalisation [default: the model's: zscore for vae/gmvae (Chen), percentile for "
                      "the others (Baur)]."),
    click.option("--standardize/--no-standardize", default=False, show_default=True,
                 help="Histogram standardisation (Nyúl-Udupa landmarks learned on the training subjects, stored "
                      "with the model): the same tissue gets the same value across subjects and scanners."),
    click.option("--seed", default=0, show_default=True, help="Seed for weights, shuffling and augmentation."),
    click.option("--augment/--no-augment", default=True, show_default=True,
                 help="Augment the training slices: left-right flip, rotation (±10°), scale (±10%), shift (±4%), "
                      "intensity scale (±10%) and gamma (0.8-1.25); the background is kept."),
    click.option("--bn-statistics", type=click.Choice(["moving", "recomputed"]), default="moving",
                 show_default=True,
                 help="Batch-norm statistics the model keeps: Keras' moving averages of the augmented training "
                      "batches, or recomputed on un-augmented training slices before every validation (healthy "
                      "reconstructions of the spatial models improve, see README)."),
    click.option("--figure-every", type=click.IntRange(min=0), default=10, show_default=True,
                 help="Redraw RUN/reconstructions.png and RUN/loss_curves.png every N epochs (0: only at the end)."),
    click.option("--precision", type=click.Choice(["auto", "float32", "mixed_bfloat16"]), default="auto",
                 show_default=True,
                 help="Network precision: mixed_bfloat16 computes in bfloat16 with float32 variables, losses and "
                      "outputs (about 2x faster training where the CPU or GPU has bfloat16 units); auto picks it "
                      "where the hardware supports it, float32 elsewhere. Stored with the run."),
    click.option("--clusters", type=int, default=None, help="gmvae: number of mixture components (paper: 3, 6, 9)."),
    click.option("--latent-size", type=int, default=None,
                 help="sae/svae/saegan/anovaegan: side of the spatial bottleneck (default image-size/16; paper 8 "
                      "or 16 at 256)."),
    click.option("-O", "--model-option", "model_options", multiple=True, callback=_parse_model_options,
                 metavar="KEY=VALUE", help="Any other model constructor argument, e.g. -O latent_channels=64 "
                                           "(repeatable)."),
)
#: The parameter names :func:`training_options` adds.
TRAINING_PARAMS = ("modality", "epochs", "patience", "batch_size", "image_size", "normalization", "standardize",
                   "seed", "augment", "bn_statistics", "figure_every", "precision", "clusters", "latent_size",
                   "model_options")


def training_options(command):
    """The options of a model and its training (see :func:`train_config`)."""
    for option in reversed(_TRAINING_OPTIONS):
        command = option(command)
    return command


def train_config(model: str, params: dict, **extra):
    """The :class:`~tfuad.training.trainer.TrainConfig` of ``model`` from :func:`training_options` values.

    Args:
        model: Model name.
        params: The command's parameters; the :data:`TRAINING_PARAMS` are taken from it.
        **extra: Further ``TrainConfig`` fields (e.g. ``strategy``).
    """
    from tfuad.precision import resolve_precision
    from tfuad.training import TrainConfig

    kwargs = dict(params["model_options"])
    for key in ("clusters", "latent_size"):
        if params[key] is not None:
            kwargs[key] = params[key]
    fields = {k: params[k] for k in TRAINING_PARAMS if k not in ("model_options", "clusters", "latent_size")}
    fields["modality"] = fields["modality"].lower()
    fields["precision"] = resolve_precision(fields["precision"])
    return TrainConfig(model=model.lower(), model_kwargs=kwargs, **fields, **extra)
