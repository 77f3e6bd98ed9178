"""Atomic per-epoch checkpoints that a killed run resumes from.

After every epoch :class:`EpochCheckpoint` writes the weights (model and
optimiser state) to a new ``epoch-NNNN.weights.h5`` file through a temporary
name, then atomically replaces ``state.json`` to point at it, then deletes the
older file. A process killed at any instant leaves a ``state.json`` that names a
complete weights file; only the unfinished epoch is lost.
"""
from __future__ import annotations

import csv
from pathlib import Path

import keras

from tfuad.data.nifti import atomic_path
from tfuad.training.run import read_json, write_json

__all__ = ["EpochCheckpoint", "read_state", "restore_checkpoint"]


def read_state(checkpoint_dir) -> dict | None:
    """The last completed epoch's state, or ``None`` when there is none."""
    path = Path(checkpoint_dir) / "state.json"
    return read_json(path) if path.is_file() else None


def restore_checkpoint(model, checkpoint_dir, warmup_batch) -> dict:
    """Load the last checkpoint into ``model`` (compiled) and return its state.

    Optimisers create their variables lazily, so one training step on
    ``warmup_batch`` builds them first; every variable it touched (weights,
    batch-norm statistics, optimiser moments and iteration counters, seed
    states) is then overwritten from the checkpoint.
    """
    state = read_state(checkpoint_dir)
    if state is None:
        raise FileNotFoundError(f"{checkpoint_dir}: no checkpoint to resume from")
    model.train_on_batch(warmup_batch)
    model.load_weights(Path(checkpoint_dir) / state["weights"])
    return state


class EpochCheckpoint(keras.callbacks.Callback):
    """Write weights, ``state.json`` and ``history.csv`` after every epoch.

    Args:
        checkpoint_dir: Folder for the weights files and ``state.json``.
        history_path: CSV of one row of logged metrics per epoch.
        history: Rows of earlier epochs (when resuming).
        enabled: False on non-chief workers of a multi-worker run.
    """

    def __init__(self, checkpoint_dir, history_path, history=None, enabled: bool = True):
        super().__init__()
        self.checkpoint_dir = Path(checkpoint_dir)
        self.history_path = Path(history_path)
        self.history = list(history or [])
        self.enabled = enabled

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        self.history = [r for r in self.history if r["epoch"] < epoch + 1] + [row]
        if not self.enabled:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        with atomic_path(self.checkpoint_dir / name) as tmp:
            self.model.save_weights(tmp)
        previous = read_state(self.checkpoint_dir)
        write_json({"epoch": epoch + 1, "weights": name, "history": self.history},
                   self.checkpoint_dir / "state.json")
        if previous and previous.get("weights") != name:
            (self.checkpoint_dir / previous["weights"]).unlink(missing_ok=True)
        self._write_history()

    def _write_history(self):
        keys = sorted({k for r in self.history for k in r if k != "epoch"})
        with atomic_path(self.history_path) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["epoch", *keys])
            writer.writeheader()
            writer.writerows(self.history)
