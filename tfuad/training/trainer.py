"""Train a model of the zoo on the healthy slices of a dataset.

Example:
    >>> from tfuad.data.layouts import discover
    >>> from tfuad.training import TrainConfig, train
    >>> cfg = TrainConfig(model="svae", modality="flair", epochs=2, image_size=64)   # doctest: +SKIP
    >>> train("runs/svae", discover("demo_data"), cfg)                              # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from dataclasses import dataclass, field

import numpy as np

import tfuad
from tfuad.data.splits import prepare_split, split_subjects
from tfuad.errors import ConfigError, DatasetError
from tfuad.training.run import RunDir, write_json

__all__ = ["TrainConfig", "train", "DEFAULT_NORMALIZATION"]

#: Intensity normalisation each paper uses: Baur scales to [0, 1], Chen z-scores.
DEFAULT_NORMALIZATION = {"vae": "zscore", "gmvae": "zscore"}


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in ``config.json``).

    Args:
        model: Registered model name (``tfuad.models.MODEL_NAMES``).
        modality: Image modality to train on (``flair``, ``t2``, ``t1`` ...).
        epochs: Total number of epochs (paper: 150).
        batch_size: Slices per batch (paper: 8).
        image_size: Side of the square slices (128 or 256).
        seed: Seed of weights, shuffling and augmentation.
        normalization: ``percentile`` or ``zscore``; ``None`` picks the paper's choice.
        standardize: Histogram standardisation to landmarks learned on the
            training subjects (see :class:`~tfuad.data.preprocessing.PreprocessConfig`).
        model_kwargs: Extra constructor arguments of the model.
        augment: Light label-free augmentation (flips, intensity jitter).
        strategy: ``default``, ``mirrored`` or ``multiworker`` (``TF_CONFIG``).
    """

    model: str
    modality: str = "flair"
    epochs: int = 150
    batch_size: int = 8
    image_size: int = 128
    seed: int = 0
    normalization: str | None = None
    standardize: bool = False
    model_kwargs: dict = field(default_factory=dict)
    augment: bool = False
    strategy: str = "default"

    def resolved_normalization(self) -> str:
        return self.normalization or DEFAULT_NORMALIZATION.get(self.model, "percentile")


def _healthy_slices(prepared, pconfig):
    from tfuad.data.pipeline import collect_slices

    if not prepared:
        return np.zeros((0, pconfig.image_size, pconfig.image_size, 1), np.float32)
    return collect_slices(prepared, lambda p: p.training_indices(pconfig))


def _fit_stats(subjects, modality, pconfig):
    from tfuad.data.nifti import load_mask, load_volume
    from tfuad.data.preprocessing import brain_mask_from_image, fit_intensity_stats

    if pconfig.normalization != "zscore" and not pconfig.standardize:
        return {}
    volumes, masks = [], []
    for s in subjects:
        vol = load_volume(s.image(modality))
        volumes.append(vol.data)
        masks.append(load_mask(s.brain_mask, vol, what="brain mask") if s.brain_mask
                     else brain_mask_from_image(vol.data))
    return fit_intensity_stats(volumes, masks, pconfig)


def is_chief(strategy: str) -> bool:
    """Whether this process writes the run directory (always, except non-chief multi-worker tasks)."""
    if strategy != "multiworker":
        return True
    if "TF_CONFIG" not in os.environ:
        raise ConfigError("--strategy multiworker needs the TF_CONFIG environment variable")
    try:
        task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    except json.JSONDecodeError as err:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({err})") from None
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in
                               json.loads(os.environ["TF_CONFIG"]).get("cluster", {}))


def _strategy(name):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        is_chief(name)  # validates TF_CONFIG
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"unknown strategy {name!r}; choose default, mirrored or multiworker")


def _multiworker_safe_steps(model):
    """Let Keras 3 reduce step results across workers.

    Under ``MultiWorkerMirroredStrategy`` Keras reduces every value a step
    returns with ``strategy.reduce("MEAN", v, axis=0)``, which fails for the
    scalar loss terms ("Invalid reduction dimension 0 for input with 0
    dimensions", tensorflow/tensorflow#72388). Giving each term a leading axis
    of length one makes that reduction the mean over workers, a scalar again.
    """
    import tensorflow as tf

    for name in ("train_step", "test_step"):
        step = getattr(model, name)

        def wrapped(data, _step=step):
            return {k: tf.reshape(v, [1]) for k, v in _step(data).items()}

        setattr(model, name, wrapped)


def build_configured_model(cls, name: str, kwargs: dict):
    """Instantiate a model; a bad constructor option becomes a one-line :class:`ConfigError`."""
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model {name!r}: {' '.join(str(err).split())}") from None


def _check_run_dir(run: RunDir, resume: bool, overwrite: bool):
    if resume and overwrite:
        raise ConfigError("choose one of --resume and --overwrite")
    if resume:
        if not run.exists():
            raise ConfigError(f"{run.path}: nothing to resume (no config.json)")
        return
    if run.exists():
        if not overwrite:
            raise ConfigError(f"{run.path}: holds another run; pass --resume to continue it or --overwrite to replace it")
    elif not run.is_empty():
        raise ConfigError(f"{run.path}: folder is not empty and is not a tfuad run; choose another --out")


def train(run_dir, dataset, config: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          verbose=None, log=print):
    """Train ``config.model`` on the healthy slices of ``dataset``'s training subjects.

    Subjects with split ``train`` are used for training and ``calib`` for the
    validation loss (a dataset without splits trains on all its subjects).

    Args:
        run_dir: Output folder (see :class:`~tfuad.training.run.RunDir`).
        dataset: A :class:`~tfuad.data.layouts.Dataset`.
        config: The :class:`TrainConfig`. When resuming, the stored config is
            used and only ``epochs`` is taken from this one.
        resume: Continue from the last completed epoch.
        overwrite: Replace an existing run in ``run_dir``.
        verbose: Keras verbosity (default: progress bar on a terminal, one line per epoch otherwise).

    Returns:
        The training history as a list of per-epoch dicts.
    """
    import keras

    from tfuad.data.pipeline import slice_dataset
    from tfuad.data.preprocessing import PreprocessConfig
    from tfuad.models import model_class
    from tfuad.training.checkpoint import EpochCheckpoint, read_state, restore_checkpoint

    run = RunDir(run_dir)
    chief = is_chief(config.strategy)
    if chief:
        _check_run_dir(run, resume, overwrite)
    if resume:
        stored = run.config()
        epochs = config.epochs
        config = TrainConfig(**stored["training"])
        config.epochs = epochs
        pconfig = PreprocessConfig.from_dict(stored["preprocess"])
    else:
        pconfig = PreprocessConfig(image_size=config.image_size, normalization=config.resolved_normalization(),
                                   standardize=config.standardize)
    cls = model_class(config.model)
    kwargs = {"image_size": config.image_size, **config.model_kwargs}
    strategy = _strategy(config.strategy)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_configured_model(cls, config.model, kwargs)
    if config.strategy == "multiworker":
        _multiworker_safe_steps(model)
    if strategy.num_replicas_in_sync > 1:
        log(f"{config.strategy} strategy: {strategy.num_replicas_in_sync} replicas in sync")
    if config.modality not in dataset.modalities:
        raise DatasetError(dataset.root, f"has no {config.modality!r} images (it has: {', '.join(dataset.modalities)})")

    train_subjects = split_subjects(dataset, "train")
    val_subjects = split_subjects(dataset, "calib")
    stats = run.config().get("intensity_stats", {}) if resume else _fit_stats(
        [s for s in train_subjects if s.lesion_mask is not None or getattr(s, "healthy", False)],
        config.modality, pconfig)
    prepared, skipped = prepare_split(train_subjects, config.modality, pconfig, stats, log=log)
    x_train = _healthy_slices(prepared, pconfig)
    if len(x_train) == 0:
        raise DatasetError(dataset.root, f"no healthy {config.modality} training slices "
                           f"(training subjects: {len(train_subjects)}, skipped: {len(skipped)})")
    val_prepared, _ = prepare_split(val_subjects, config.modality, pconfig, stats, log=log)
    x_val = _healthy_slices(val_prepared, pconfig)
    log(f"{len(x_train)} healthy training slices from {len(prepared)} subjects"
        + (f", {len(x_val)} validation slices" if len(x_val) else ""))

    if chief and overwrite and run.exists():  # only now that everything is validated
        shutil.rmtree(run.path)
    if chief and not resume:
        run.path.mkdir(parents=True, exist_ok=True)
        write_json({
            "model": config.model,
            "model_kwargs": kwargs,
            "training": dataclasses.asdict(config),
            "preprocess": pconfig.to_dict(),
            "intensity_stats": stats,
            "data": {"root": os.fspath(dataset.root), "layout": dataset.layout, "modality": config.modality,
                     "train_subjects": [p.volume.path for p in prepared],
                     "val_subjects": [p.volume.path for p in val_prepared], "skipped": skipped,
                     "n_train_slices": int(len(x_train)), "n_val_slices": int(len(x_val))},
            "tfuad_version": tfuad.__version__,
        }, run.config_path)

    train_ds = slice_dataset(x_train, batch_size=config.batch_size, shuffle=True, seed=config.seed,
                             augment=config.augment)
    val_ds = slice_dataset(x_val, batch_size=config.batch_size, shuffle=False) if len(x_val) else None
    with strategy.scope():
        model.compile()
        model.build_for_inference()
    history, initial_epoch = [], 0
    if resume and read_state(run.checkpoint_dir):
        state = restore_checkpoint(model, run.checkpoint_dir, x_train[: config.batch_size])
        history, initial_epoch = state["history"], int(state["epoch"])
        log(f"resuming {config.model} at epoch {initial_epoch + 1} of {config.epochs}")
    ckpt = EpochCheckpoint(run.checkpoint_dir, run.history_path, history, enabled=chief)
    callbacks = [ckpt]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.log_dir)))
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if initial_epoch < config.epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
    if chief:
        from tfuad.data.nifti import atomic_path

        with atomic_path(run.model_path) as tmp:
            model.save(tmp)
    return ckpt.history
