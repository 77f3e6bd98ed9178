"""Train a model of the zoo on the healthy slices of a dataset.

:func:`train` runs its steps, each its own function: :func:`_setup` checks the
run directory and the settings (and reads a stored run when resuming),
:func:`_build_model` makes the model, :func:`_training_data` prepares the
slices, :func:`_write_run_dir` records the run, :func:`_fit` trains (with the
callbacks of :func:`_watch`) and :func:`_save_model` writes ``model.keras``
and the figures.

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
import sys
from dataclasses import dataclass, field

import numpy as np

import tfuad
from tfuad.data.splits import prepare_split, split_subjects
from tfuad.errors import ConfigError, DatasetError
from tfuad.files import atomic_path, write_json
from tfuad.training.run import RunDir

__all__ = ["TrainConfig", "train"]

#: Largest number of slices whose reconstructions are measured every epoch (iterative models: fewer).
QUALITY_SLICES = {"default": 256, "iterative": 16}
_STRATEGIES = ("default", "mirrored", "multiworker")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in ``config.json``).

    Args:
        model: Registered model name (``tfuad.models.MODEL_NAMES``).
        modality: Image modality to train on (``flair``, ``t2``, ``t1`` ...).
        epochs: Largest number of epochs (paper: 150); training stops earlier
            when the watched loss stops improving (``patience``).
        batch_size: Slices per batch (paper: 8).
        image_size: Side of the square slices (128 or 256).
        seed: Seed of weights, shuffling and augmentation.
        normalization: ``percentile`` or ``zscore``; ``None`` picks the paper's choice.
        standardize: Histogram standardisation to landmarks learned on the
            training subjects (see :class:`~tfuad.data.preprocessing.PreprocessConfig`).
        model_kwargs: Extra constructor arguments of the model.
        augment: Flip, rotation, scale, shift, intensity scale and gamma of the
            training slices (:func:`~tfuad.data.pipeline.augment_brain_slice`).
        strategy: ``default``, ``mirrored`` or ``multiworker`` (``TF_CONFIG``).
        patience: Epochs without improvement of the watched loss before
            training stops; the learning rate is reduced after half as many
            (:class:`~tfuad.training.convergence.ConvergenceRule`). 0: neither.
        lr_factor: Factor of each learning-rate reduction.
        min_lr: Floor of the learning rate.
        min_delta: Relative improvement of the watched loss that counts.
        monitor: Loss term to watch (``loss``, ``rec_loss``, ``l1`` ...; its
            ``val_`` value when there are validation slices); ``None``: the
            model's ``convergence_term`` (``loss`` unless the model says otherwise);
            ``"none"``: keep the last weights, never stop early.
        precision: ``float32`` or ``mixed_bfloat16`` (:mod:`tfuad.precision`): the dtype policy the
            model is built with; losses, ELBO terms, outputs and variables stay float32.
        figure_every: Redraw ``reconstructions.png`` and ``loss_curves.png``
            every this many epochs (0: only at the end).
        bn_statistics: ``moving``: Keras' moving averages of the (augmented) training batches;
            ``recomputed``: the batch-norm statistics are recomputed on un-augmented training slices
            before every validation (:mod:`tfuad.training.batch_norm`), so the saved weights carry them.
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
    augment: bool = True
    strategy: str = "default"
    patience: int = 10
    lr_factor: float = 0.5
    min_lr: float = 1e-6
    min_delta: float = 1e-4
    monitor: str | None = None
    figure_every: int = 10
    precision: str = "float32"
    bn_statistics: str = "moving"

    def __post_init__(self):
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("image_size", 1), ("patience", 0),
                              ("figure_every", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                kind = "a positive" if minimum else "a non-negative"
                raise ConfigError(f"training setting {name} must be {kind} integer, got {value!r}")
        def number(value):
            return not isinstance(value, bool) and isinstance(value, (int, float)) and bool(np.isfinite(value))

        if not number(self.lr_factor) or not 0 < self.lr_factor < 1:
            raise ConfigError(f"training setting lr_factor must be a number in (0, 1), got {self.lr_factor!r}")
        for name in ("min_lr", "min_delta"):
            if not number(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"training setting {name} must be a number >= 0, got {getattr(self, name)!r}")
        from tfuad.training.batch_norm import BN_STATISTICS

        if self.bn_statistics not in BN_STATISTICS:
            raise ConfigError(f"training setting bn_statistics must be one of {', '.join(BN_STATISTICS)}, "
                              f"got {self.bn_statistics!r}")
        if self.strategy not in _STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose default, mirrored or multiworker")

    def watched(self, validation: bool) -> str | None:
        """The logged value the run watches (``val_loss``, ``loss`` ...), or ``None``."""
        from tfuad.models import model_class

        term = self.monitor if self.monitor is not None else model_class(self.model).convergence_term
        if str(term).lower() == "none":
            return None
        term = term[4:] if term.startswith("val_") else term
        return f"val_{term}" if validation else term

    def resolved_normalization(self) -> str:
        from tfuad.models import model_class

        return self.normalization or model_class(self.model).default_normalization

    @classmethod
    def from_stored(cls, stored, source) -> TrainConfig:
        """The config recorded in a run's ``config.json`` (``source``, named in errors).

        Settings added to tfuad after the run was made take their defaults.

        Raises:
            ConfigError: not a mapping, an unknown setting, or a bad value.
        """
        if not isinstance(stored, dict):
            raise ConfigError(f"{source}: 'training' must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(stored) - known)
        if unknown or "model" not in stored:
            problem = f"unknown setting(s) {', '.join(unknown)}" if unknown else "no 'model'"
            raise ConfigError(f"{source}: 'training' has {problem}")
        try:
            return cls(**stored)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None


@dataclass
class _Setup:
    """The validated inputs of one call of :func:`train`."""

    run: RunDir
    config: TrainConfig
    pconfig: object
    chief: bool
    resume: bool
    overwrite: bool
    stats: dict | None = None      # stored intensity statistics (resume)
    state: dict | None = None      # the checkpoint to continue from (resume)


@dataclass
class _Data:
    """Training and validation slices and what they came from."""

    x_train: np.ndarray
    x_val: np.ndarray
    stats: dict
    prepared: list
    val_prepared: list
    skipped: list


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


# --------------------------------------------------------------------------- 1. setup and validation


def _check_run_dir(run: RunDir, resume: bool, overwrite: bool):
    """Refuse, before any work, a run directory that cannot serve the request."""
    if resume and overwrite:
        raise ConfigError("choose one of --resume and --overwrite")
    if resume:
        if not run.exists():
            raise ConfigError(f"{run.path}: nothing to resume (no config.json)")
    elif run.exists():
        if not run.is_run():
            run.check_replaceable()  # names the config's missing keys
        if not overwrite:
            raise ConfigError(f"{run.path}: holds another run; pass --resume to continue it "
                              "or --overwrite to replace it")
        run.check_replaceable()
    elif not run.is_empty():
        raise ConfigError(f"{run.path}: folder is not empty and is not a tfuad run; choose another --out")
    run.check_writable()


def _setup(run_dir, dataset, config: TrainConfig, resume: bool, overwrite: bool, log) -> _Setup:
    """Check the run directory, the request and (when resuming) the stored run; nothing is written."""
    from tfuad.data.preprocessing import PreprocessConfig
    from tfuad.training.checkpoint import clean_stale_files, read_state

    run = RunDir(run_dir)
    chief = is_chief(config.strategy)
    if chief:
        _check_run_dir(run, resume, overwrite)
    setup = _Setup(run, config, None, chief, resume, overwrite)
    if resume:
        stored = run.config()
        if str(config.model).lower() != stored["model"]:
            raise ConfigError(f"{run.path}: holds a {stored['model']} run, not {config.model}; resume it with "
                              f"'tfuad train {stored['model']} --resume' or choose another --out")
        setup.config = TrainConfig.from_stored(stored["training"], run.config_path)
        setup.config.epochs = config.epochs
        setup.pconfig = run.preprocess_config()
        setup.stats = stored.get("intensity_stats") or {}
        if chief:
            for path in clean_stale_files(run.checkpoint_dir, run.path):
                log(f"removed {path.name}, left behind by an interrupted run")
        setup.state = read_state(run.checkpoint_dir)
    else:
        setup.pconfig = PreprocessConfig(image_size=config.image_size, normalization=config.resolved_normalization(),
                                         standardize=config.standardize)
    modality = setup.config.modality
    if modality not in dataset.modalities:
        raise DatasetError(dataset.root, f"has no {modality!r} images (it has: {', '.join(dataset.modalities)})")
    return setup


def _epochs_done(setup: _Setup) -> int:
    return int(setup.state["epoch"]) if setup.state else 0


# --------------------------------------------------------------------------- 2. model


def _build_model(config: TrainConfig, log):
    """The compiled, built model and its distribution strategy."""
    import keras

    from tfuad.models import model_class
    from tfuad.precision import policy_scope

    cls = model_class(config.model)
    kwargs = {"image_size": config.image_size, **config.model_kwargs}
    strategy = _strategy(config.strategy)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope(), policy_scope(config.precision):
        model = build_configured_model(cls, config.model, kwargs)
    if config.strategy == "multiworker":
        _multiworker_safe_steps(model)
    if strategy.num_replicas_in_sync > 1:
        log(f"{config.strategy} strategy: {strategy.num_replicas_in_sync} replicas in sync")
    with strategy.scope():
        model.compile()
        model.build_for_inference()
    return model, strategy, kwargs


# --------------------------------------------------------------------------- 3. data


def _training_data(setup: _Setup, dataset, log) -> _Data:
    """Healthy slices of the ``train`` subjects, and of the ``calib`` subjects for validation."""
    config, pconfig = setup.config, setup.pconfig
    train_subjects = split_subjects(dataset, "train")
    val_subjects = split_subjects(dataset, "calib")
    stats = setup.stats if setup.resume else _fit_stats(
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
    return _Data(x_train, x_val, stats, prepared, val_prepared, skipped)


# --------------------------------------------------------------------------- 4. the run directory


def _write_run_dir(setup: _Setup, dataset, data: _Data, model_kwargs: dict, log):
    """Replace an old run's files (``--overwrite``) and write ``config.json`` of a new run."""
    run, config = setup.run, setup.config
    if setup.overwrite and run.exists():  # only now that everything is validated
        kept = run.clear()
        if kept:
            log(f"--overwrite kept what is not tfuad's in {run.path}: {', '.join(kept)}")
    run.path.mkdir(parents=True, exist_ok=True)
    from tfuad.preprocess.native import RUN_KEY as RAW_KEY
    from tfuad.preprocess.native import recorded_preprocessing

    raw, note = recorded_preprocessing([p.volume.path for p in (*data.prepared, *data.val_prepared)])
    if note:
        log(f"note: {note}")
    write_json({
        "model": config.model,
        "model_kwargs": model_kwargs,
        "training": dataclasses.asdict(config),
        "preprocess": setup.pconfig.to_dict(),
        "intensity_stats": data.stats,
        "data": {"root": os.fspath(dataset.root), "layout": dataset.layout, "modality": config.modality,
                 "train_subjects": [p.volume.path for p in data.prepared],
                 "val_subjects": [p.volume.path for p in data.val_prepared], "skipped": data.skipped,
                 "n_train_slices": int(len(data.x_train)), "n_val_slices": int(len(data.x_val)),
                 # the median voxel size (mm) of the training volumes: detection warns on scans far from it
                 "voxel_size": [float(v) for v in np.median([p.volume.zooms for p in data.prepared], axis=0)]},
        # the raw-scan preprocessing the training volumes had (tfuad preprocess), for tfuad detect --raw
        RAW_KEY: raw,
        "tfuad_version": tfuad.__version__,
    }, run.config_path)


# --------------------------------------------------------------------------- 5. fit and save


@dataclass
class _Watch:
    """What a run measures and draws besides its losses."""

    convergence: object          # the Convergence callback
    quality: object              # the ReconstructionQuality callback
    figure_slices: np.ndarray    # slices shown in reconstructions.png


def _watch(model, setup: _Setup, data: _Data, stored, log) -> _Watch:
    """The convergence rule and the slices whose reconstructions are measured and drawn."""
    from tfuad.training.convergence import Convergence, ConvergenceRule, ReconstructionQuality
    from tfuad.training.figures import pick_slices

    config = setup.config
    validation = len(data.x_val) > 0
    rule = ConvergenceRule(monitor=config.watched(validation), patience=config.patience, lr_factor=config.lr_factor,
                           min_lr=config.min_lr, min_delta=config.min_delta)
    slices = data.x_val if validation else data.x_train
    limit = QUALITY_SLICES["iterative" if getattr(model, "iterative", False) else "default"]
    quality_slices = slices[np.unique(np.linspace(0, len(slices) - 1, min(limit, len(slices))).round().astype(int))]
    if not setup.state:
        where = "validation" if validation else "training"
        if rule.monitor is None:
            log(f"{config.model}: no loss measures convergence; training all {config.epochs} epochs, keeping the last "
                "weights")
        else:
            stops = (f"learning rate x{config.lr_factor:g} after {rule.lr_patience} epochs without improvement, "
                     f"stop after {rule.patience}" if rule.patience else "no plateaus or early stopping")
            log(("" if validation else "no validation slices (no 'calib' subjects): ")
                + f"best weights, plateaus and early stopping follow {rule.monitor} ({stops}); "
                + f"L1/SSIM of {len(quality_slices)} healthy {where} slices are logged every epoch")
    return _Watch(Convergence(rule, stored),
                  ReconstructionQuality(quality_slices, "val_" if validation else "", config.batch_size),
                  quality_slices[pick_slices(quality_slices, setup.pconfig.background_value, 4)])


def _callbacks(model, setup: _Setup, watch: _Watch, history: list, data: _Data) -> tuple[list, object]:
    """The callbacks of ``fit``, and the checkpoint callback among them.

    In this order, each reading what the one before set or logged: batch-norm statistics, quality,
    convergence, checkpoint; then figures and logs.
    """
    import keras

    from tfuad.training.batch_norm import RecomputedBatchNorm, batch_norm_layers
    from tfuad.training.checkpoint import EpochCheckpoint
    from tfuad.training.figures import draw_run_figures

    config, run, conv = setup.config, setup.run, watch.convergence
    ckpt = EpochCheckpoint(run.checkpoint_dir, run.history_path, history, enabled=setup.chief, convergence=conv)
    callbacks = [watch.quality, conv, ckpt]
    if config.bn_statistics == "recomputed" and batch_norm_layers(model):
        callbacks.insert(0, RecomputedBatchNorm(data.x_train, batch_size=max(config.batch_size, 32)))
    if setup.chief and config.figure_every:
        def figures(epoch, logs):
            if (epoch + 1) % config.figure_every == 0:
                draw_run_figures(model, watch.figure_slices, ckpt.history, run.path, monitor=conv.rule.monitor,
                                 best_epoch=conv.best_epoch, title=f"{config.model}, epoch {epoch + 1}")

        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=figures))
    if setup.chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.log_dir)))
    return callbacks, ckpt


def _fit(model, setup: _Setup, data: _Data, verbose, log) -> tuple[list, _Watch]:
    """Train from the last checkpoint (if any) until the epoch cap or an early stop.

    Returns:
        The per-epoch history and the run's :class:`_Watch`.
    """
    from tfuad.data.pipeline import slice_dataset, training_batches
    from tfuad.training.checkpoint import restore_checkpoint

    config, run = setup.config, setup.run
    history, initial_epoch, stored = [], 0, None
    if setup.state:
        state = restore_checkpoint(model, run.checkpoint_dir, data.x_train[: config.batch_size])
        history, initial_epoch, stored = state["history"], int(state["epoch"]), state.get("convergence")
        log(f"resuming {config.model} at epoch {initial_epoch + 1} of at most {config.epochs}")
    watch = _watch(model, setup, data, stored, log)
    watch.convergence.set_model(model)
    watch.convergence.restore_learning_rates()
    callbacks, ckpt = _callbacks(model, setup, watch, history, data)
    train_ds, steps = training_batches(data.x_train, batch_size=config.batch_size, epochs=config.epochs,
                                       first_epoch=initial_epoch, seed=config.seed, augment=config.augment,
                                       background=setup.pconfig.background_value)
    val_ds = slice_dataset(data.x_val, batch_size=config.batch_size, shuffle=False) if len(data.x_val) else None
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, initial_epoch=initial_epoch,
              steps_per_epoch=steps, callbacks=callbacks, verbose=verbose, shuffle=False)
    conv = watch.convergence
    if conv.stopped_epoch:
        log(f"stopped early after epoch {conv.stopped_epoch}: {conv.rule.monitor} has not improved for "
            f"{conv.rule.patience} epochs (best {conv.best:.6g} at epoch {conv.best_epoch})")
    return ckpt.history, watch


def _save_model(model, setup: _Setup, log, watch: _Watch | None = None, history=None):
    """Write ``model.keras`` with the best epoch's weights (else the last), then the run's figures."""
    from tfuad.training.checkpoint import best_weights_file, read_state
    from tfuad.training.figures import draw_run_figures

    run = setup.run
    state = read_state(run.checkpoint_dir) or {}
    best = best_weights_file(run.checkpoint_dir, state) if state else None
    if best is not None:
        model.load_weights(best)
        summary = state.get("convergence") or {}
        log(f"model.keras holds the weights of epoch {summary.get('best_epoch')} "
            f"(best {summary.get('monitor')} {summary.get('best', float('nan')):.6g})")
    with atomic_path(run.model_path) as tmp:
        model.save(tmp)
    if watch is not None:
        conv = watch.convergence
        draw_run_figures(model, watch.figure_slices, history, run.path, monitor=conv.rule.monitor,
                         best_epoch=conv.best_epoch, title=setup.config.model)


def _finished(setup: _Setup) -> str | None:
    """Why a resumed run has nothing left to train (``None`` when it has)."""
    if not setup.state:
        return None
    done, convergence = _epochs_done(setup), setup.state.get("convergence") or {}
    if convergence.get("stopped_epoch"):
        return (f"{setup.run.path}: stopped early after epoch {convergence['stopped_epoch']} ("
                f"{convergence.get('monitor')} did not improve for {setup.config.patience} epochs); nothing to train")
    if done >= setup.config.epochs:
        return (f"{setup.run.path}: already trained {done} epochs (--epochs {setup.config.epochs}); nothing to "
                f"train (pass --epochs above {done} to continue)")
    return None


def _nothing_to_train(setup: _Setup, reason: str, log) -> list:
    """A resumed run with nothing left to train: say so, and write ``model.keras`` if it is missing."""
    from tfuad.training.checkpoint import restore_checkpoint

    config, run = setup.config, setup.run
    log(reason)
    if setup.chief and not run.model_path.is_file():
        model, _, _ = _build_model(config, log)
        size = config.image_size
        restore_checkpoint(model, run.checkpoint_dir, np.zeros((1, size, size, model.channels), np.float32))
        _save_model(model, setup, log)
        log(f"wrote {run.model_path} from the checkpoint")
    return list(setup.state["history"])


def train(run_dir, dataset, config: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          verbose=None, log=print):
    """Train ``config.model`` on the healthy slices of ``dataset``'s training subjects.

    Subjects with split ``train`` are used for training and ``calib`` for the
    validation loss (a dataset without splits trains on all its subjects).
    Training runs to convergence: the weights of the epoch with the best
    watched loss (``val_loss`` by default, the training loss without
    validation slices) are kept and saved as ``model.keras``, the learning
    rate is reduced on plateaus and training stops after ``config.patience``
    epochs without improvement (``config.epochs`` is a cap). Every epoch logs
    the L1 and SSIM of the reconstructions of healthy validation slices; at
    the end (and every ``config.figure_every`` epochs) ``reconstructions.png``
    and ``loss_curves.png`` are drawn.

    Args:
        run_dir: Output folder (see :class:`~tfuad.training.run.RunDir`).
        dataset: A :class:`~tfuad.data.layouts.Dataset`.
        config: The :class:`TrainConfig`. When resuming, the stored config is
            used and only ``epochs`` is taken from this one; ``config.model``
            must be the stored run's model.
        resume: Continue from the last completed epoch, with the counters of
            the convergence rule and the learning rates as they were. When the
            run has ``config.epochs`` epochs already, or stopped early, nothing
            is trained (a line says so) and ``model.keras`` is written if it is
            missing.
        overwrite: Replace an existing tfuad run in ``run_dir`` (only tfuad's
            own files are removed; a folder that is not a tfuad run, or a
            symbolic link, is refused).
        verbose: Keras verbosity (default: progress bar on a terminal, one line per epoch otherwise).
        log: Receives the progress lines.

    Returns:
        The training history as a list of per-epoch dicts.

    Raises:
        ConfigError: a run directory that cannot serve the request, a bad
            setting, a damaged stored run.
        DatasetError: the dataset lacks the modality or healthy training slices.
    """
    setup = _setup(run_dir, dataset, config, resume, overwrite, log)
    reason = _finished(setup)
    if reason:
        return _nothing_to_train(setup, reason, log)
    model, _, model_kwargs = _build_model(setup.config, log)
    data = _training_data(setup, dataset, log)
    if setup.chief and not resume:
        _write_run_dir(setup, dataset, data, model_kwargs, log)
    history, watch = _fit(model, setup, data, verbose, log)
    if setup.chief:
        _save_model(model, setup, log, watch, history)
    return history
