"""Atomic per-epoch checkpoints that a killed run resumes from.

After every epoch :class:`EpochCheckpoint` writes the weights (model and
optimiser state) to a new ``epoch-NNNN.weights.h5`` file through a temporary
name, then atomically replaces ``state.json`` to point at it, then deletes the
older file. A process killed at any instant leaves a ``state.json`` that names a
complete weights file; only the unfinished epoch is lost. When an epoch is the
best so far, a copy of its weights (``best-NNNN.weights.h5``) is written before
``state.json`` names it, together with the counters of
:class:`~tfuad.training.convergence.Convergence`. What such a kill can
leave behind (temporary files, a weights file ``state.json`` does not name yet)
is removed by :func:`clean_stale_files` when the run resumes.

``state.json`` names files of the checkpoint folder only: :func:`read_state`
refuses any name that is not a plain file name there.
"""
from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import keras
import numpy as np

from tfuad.errors import ConfigError
from tfuad.files import atomic_path, check_name, read_json, write_json
from tfuad.training.run import RUN_ENTRIES, is_temporary_of

__all__ = ["EpochCheckpoint", "read_state", "restore_checkpoint", "best_weights_file", "clean_stale_files",
           "write_history", "WEIGHTS_KEYS"]

#: Keys of ``state.json`` that name weights files in the checkpoint folder.
WEIGHTS_KEYS = ("weights", "best_weights")
#: The weights files tfuad writes into the checkpoint folder.
_WEIGHTS_NAME = re.compile(r"(epoch|best)-\d{4,}\.weights\.h5")
#: Glob patterns of every file written into the checkpoint folder.
_CHECKPOINT_FILES = ("epoch-*.weights.h5", "best-*.weights.h5", "state.json")


def read_state(checkpoint_dir) -> dict | None:
    """The last completed epoch's state, or ``None`` when there is none.

    Raises:
        ConfigError: ``state.json`` is not valid, or names a file outside the
            checkpoint folder (a path, ``..``, an absolute name).
    """
    path = Path(checkpoint_dir) / "state.json"
    if not path.is_file():
        return None
    state = read_json(path)
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: not a checkpoint state (a JSON object is expected)")
    epoch = state.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ConfigError(f"{path}: 'epoch' must be a positive integer, got {epoch!r}")
    if "weights" not in state:
        raise ConfigError(f"{path}: missing key 'weights'")
    for key in WEIGHTS_KEYS:
        if key in state and state[key] is not None:
            check_name(state[key], repr(key), path)
    history = state.get("history", [])
    if not isinstance(history, list) or not all(isinstance(r, dict) and "epoch" in r for r in history):
        raise ConfigError(f"{path}: 'history' must be a list of per-epoch records")
    return state


def _weights_file(checkpoint_dir, state: dict, key: str) -> Path:
    path = Path(checkpoint_dir) / state[key]
    if not path.is_file():
        raise ConfigError(f"{Path(checkpoint_dir) / 'state.json'}: names {state[key]!r}, which is missing")
    return path


def best_weights_file(checkpoint_dir, state: dict) -> Path | None:
    """The best epoch's weights file named in ``state`` (``None`` when the run keeps no best weights).

    Raises:
        ConfigError: ``state.json`` names a missing file.
    """
    return _weights_file(checkpoint_dir, state, "best_weights") if state.get("best_weights") else None


def restore_checkpoint(model, checkpoint_dir, warmup_batch) -> dict:
    """Load the last checkpoint into ``model`` (compiled) and return its state.

    Optimisers create their variables lazily, so one training step on
    ``warmup_batch`` builds them first; every variable it touched (weights,
    batch-norm statistics, optimiser moments, iteration counters and learning
    rates) is then overwritten from the checkpoint, and the states of the
    model's Keras seed generators from ``state.json``.

    Raises:
        ConfigError: no checkpoint, or ``state.json`` is invalid or names a missing file.
    """
    state = read_state(checkpoint_dir)
    if state is None:
        raise ConfigError(f"{checkpoint_dir}: no checkpoint to resume from")
    weights = _weights_file(checkpoint_dir, state, "weights")
    model.train_on_batch(warmup_batch)
    model.load_weights(weights)
    restore_seed_states(model, state.get("seed_states"), Path(checkpoint_dir) / "state.json")
    return state


def seed_states(model) -> list:
    """The states of the model's Keras seed generators (weights files do not hold them)."""
    return [keras.ops.convert_to_numpy(v).tolist() for v in model.variables
            if v.path.endswith("seed_generator_state")]


def restore_seed_states(model, states, source) -> None:
    """Set the seed generators' states saved by :func:`seed_states` (``None``: leave them).

    Raises:
        ConfigError: the states do not fit the model (named ``source``).
    """
    if states is None:
        return
    variables = [v for v in model.variables if v.path.endswith("seed_generator_state")]
    if not isinstance(states, list) or len(states) != len(variables):
        raise ConfigError(f"{source}: 'seed_states' does not fit the model's {len(variables)} seed generator(s)")
    for variable, value in zip(variables, states):
        try:
            variable.assign(np.asarray(value, dtype=variable.dtype).reshape(variable.shape))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{source}: 'seed_states' does not fit the model ({err})") from None


def clean_stale_files(checkpoint_dir, run_dir=None) -> list:
    """Remove what a killed run left behind; returns the removed paths.

    That is every temporary file of :func:`tfuad.files.atomic_path` in the
    checkpoint folder and (for ``model.keras``, ``history.csv``, ``config.json``
    and the figures) in ``run_dir``, and every ``epoch-*``/``best-*`` weights
    file that ``state.json`` does not name.
    """
    checkpoint_dir = Path(checkpoint_dir)
    removed = []
    if checkpoint_dir.is_dir():
        state = read_state(checkpoint_dir)
        named = {state[k] for k in WEIGHTS_KEYS if state and state.get(k)}
        for entry in checkpoint_dir.iterdir():
            temporary = any(is_temporary_of(entry.name, pat) for pat in _CHECKPOINT_FILES)
            unnamed = _WEIGHTS_NAME.fullmatch(entry.name) is not None and entry.name not in named
            if (temporary or unnamed) and (entry.is_file() or entry.is_symlink()):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    if run_dir is not None and Path(run_dir).is_dir():
        for entry in Path(run_dir).iterdir():
            if any(is_temporary_of(entry.name, pat) for pat in RUN_ENTRIES) and (entry.is_file() or entry.is_symlink()):
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


class EpochCheckpoint(keras.callbacks.Callback):
    """Write weights, ``state.json`` and ``history.csv`` after every epoch.

    ``state.json`` names the last epoch's weights (``weights``) and, with a
    :class:`~tfuad.training.convergence.Convergence` callback, the best
    epoch's (``best_weights``, a copy written when an epoch improves) and the
    convergence state (``convergence``), all committed by one atomic replace.

    Args:
        checkpoint_dir: Folder for the weights files and ``state.json``.
        history_path: CSV of one row of logged metrics per epoch.
        history: Rows of earlier epochs (when resuming).
        enabled: False on non-chief workers of a multi-worker run.
        convergence: The run's :class:`~tfuad.training.convergence.Convergence`
            callback (it must run before this one), or ``None``.
    """

    def __init__(self, checkpoint_dir, history_path, history=None, enabled: bool = True, convergence=None):
        super().__init__()
        self.checkpoint_dir = Path(checkpoint_dir)
        self.history_path = Path(history_path)
        self.history = list(history or [])
        self.enabled = enabled
        self.convergence = convergence

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history = [r for r in self.history if r["epoch"] < epoch + 1] + [row]
        if not self.enabled:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        with atomic_path(self.checkpoint_dir / name) as tmp:
            self.model.save_weights(tmp)
        previous = read_state(self.checkpoint_dir) or {}
        best = previous.get("best_weights")
        state = {"epoch": epoch + 1, "weights": name, "history": self.history,
                 "seed_states": seed_states(self.model)}
        if self.convergence is not None:
            if self.convergence.improved:
                best = f"best-{epoch + 1:04d}.weights.h5"
                with atomic_path(self.checkpoint_dir / best) as tmp:
                    shutil.copyfile(self.checkpoint_dir / name, tmp)
            state.update(best_weights=best, convergence=self.convergence.state())
        write_json(state, self.checkpoint_dir / "state.json")
        for key, current in (("weights", name), ("best_weights", best)):
            if previous.get(key) and previous[key] != current:
                (self.checkpoint_dir / previous[key]).unlink(missing_ok=True)
        write_history(self.history, self.history_path)


def write_history(history: list, path) -> Path:
    """Write per-epoch records as CSV (``epoch`` first, then the other columns sorted), atomically."""
    keys = sorted({k for r in history for k in r if k != "epoch"})
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["epoch", *keys])
        writer.writeheader()
        writer.writerows(history)
    return Path(path)
