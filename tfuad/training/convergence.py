"""Training to convergence: best weights, learning-rate plateaus, early stopping, reconstruction quality.

* :class:`ConvergenceRule`: what is watched and how long to wait;
* :class:`Convergence`: a Keras callback applying the rule after every epoch;
  its whole state (best value and epoch, both counters, learning rates, why
  training stopped) is a small dict that :class:`~tfuad.training.checkpoint.EpochCheckpoint`
  stores in ``state.json``, so a resumed run continues the counters exactly;
* :class:`ReconstructionQuality`: L1 and SSIM (``tf.image.ssim``) of the
  reconstructions of fixed healthy slices, logged every epoch
  (``val_l1``/``val_ssim`` on validation slices, ``l1``/``ssim`` on training
  slices when there are none).

The rule, per epoch: the watched value improves when it falls below
``best - min_delta · |best|``. Otherwise both counters grow; after
``lr_patience`` epochs without improvement every optimiser's learning rate is
multiplied by ``lr_factor`` (not below ``min_lr``) and that counter restarts;
after ``patience`` epochs without improvement training stops. ``patience = 0``
turns plateaus and early stopping off (the best weights are still kept).

Example:
    >>> rule = ConvergenceRule(monitor="val_loss", patience=4)
    >>> rule.lr_patience
    2
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

from tfuad.errors import ConfigError

__all__ = ["ConvergenceRule", "Convergence", "ReconstructionQuality", "optimizers_of"]


@dataclass
class ConvergenceRule:
    """What :class:`Convergence` watches and how long it waits.

    Args:
        monitor: Logged value to minimise (``val_loss``, ``loss``, ``val_rec_loss`` ...);
            ``None`` keeps the last weights and never stops early.
        patience: Epochs without improvement before training stops (0: never).
        lr_patience: Epochs without improvement before the learning rate is
            reduced; ``None``: half of ``patience`` (at least 1).
        lr_factor: Factor of each reduction.
        min_lr: Floor of the learning rate.
        min_delta: Relative improvement that counts.
    """

    monitor: str | None = "val_loss"
    patience: int = 10
    lr_patience: int | None = None
    lr_factor: float = 0.5
    min_lr: float = 1e-6
    min_delta: float = 1e-4

    def __post_init__(self):
        if self.lr_patience is None:
            self.lr_patience = max(1, math.ceil(self.patience / 2))


def optimizers_of(model) -> dict:
    """Attribute name -> optimiser, for every optimiser the model trains with."""
    names = getattr(model, "optimizer_names", ("optimizer",))
    return {name: getattr(model, name) for name in names if getattr(model, name, None) is not None}


def _learning_rate(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class Convergence(keras.callbacks.Callback):
    """Apply a :class:`ConvergenceRule` after every epoch; the state survives ``kill -9`` through ``state.json``.

    After ``on_epoch_end`` the attribute :attr:`improved` says whether this
    epoch is the new best (its weights are then kept by the checkpoint), and
    ``logs["learning_rate"]`` holds the learning rate the epoch trained with.

    Args:
        rule: The :class:`ConvergenceRule`.
        state: The stored state of a resumed run (:meth:`state`), or ``None``.
    """

    def __init__(self, rule: ConvergenceRule, state: dict | None = None):
        super().__init__()
        self.rule = rule
        state = dict(state or {})
        self.best = state.get("best")
        self.best_epoch = int(state.get("best_epoch", 0))
        self.wait = int(state.get("wait", 0))
        self.lr_wait = int(state.get("lr_wait", 0))
        self.lr_reductions = list(state.get("lr_reductions", []))
        self.stopped_epoch = state.get("stopped_epoch")
        self.learning_rates = dict(state.get("learning_rates", {}))
        self.improved = False

    def state(self) -> dict:
        """JSON-serialisable state (stored in ``state.json``)."""
        return {"monitor": self.rule.monitor, "best": self.best, "best_epoch": self.best_epoch,
                "wait": self.wait, "lr_wait": self.lr_wait, "lr_reductions": self.lr_reductions,
                "stopped_epoch": self.stopped_epoch, "learning_rates": self.learning_rates}

    def restore_learning_rates(self):
        """Set the stored learning rates on the model's optimisers (after a resume)."""
        for name, optimizer in optimizers_of(self.model).items():
            if name in self.learning_rates:
                optimizer.learning_rate = self.learning_rates[name]

    def _improves(self, value) -> bool:
        if value is None or not np.isfinite(value):
            return False
        return self.best is None or value < self.best - self.rule.min_delta * abs(self.best)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizers = optimizers_of(self.model)
        if "optimizer" in optimizers:
            logs["learning_rate"] = _learning_rate(optimizers["optimizer"])
        rule = self.rule
        if rule.monitor is None:
            self.improved = False
        else:
            if rule.monitor not in logs:
                raise ConfigError(f"training monitor {rule.monitor!r} is not logged; choose one of: "
                                  f"{', '.join(sorted(logs))}")
            value = float(logs[rule.monitor])
            self.improved = self._improves(value)
            if self.improved:
                self.best, self.best_epoch, self.wait, self.lr_wait = value, epoch + 1, 0, 0
            else:
                self.wait += 1
                self.lr_wait += 1
                if rule.patience and self.lr_wait >= rule.lr_patience:
                    self._reduce(optimizers, epoch)
                if rule.patience and self.wait >= rule.patience:
                    self.stopped_epoch = epoch + 1
                    self.model.stop_training = True
        self.learning_rates = {name: _learning_rate(opt) for name, opt in optimizers.items()}

    def _reduce(self, optimizers, epoch):
        self.lr_wait = 0
        reduced = False
        for optimizer in optimizers.values():
            old = _learning_rate(optimizer)
            new = max(old * self.rule.lr_factor, self.rule.min_lr)
            if new < old:
                optimizer.learning_rate = new
                reduced = True
        if reduced:
            self.lr_reductions.append(epoch + 1)


class ReconstructionQuality(keras.callbacks.Callback):
    """Log the L1 and SSIM of the reconstructions of fixed healthy slices after every epoch.

    ``l1`` is the mean absolute difference per pixel; ``ssim`` the mean of
    ``tf.image.ssim`` per slice with ``max_val`` the intensity range of the
    slices. Both are computed with :meth:`reconstruct` in inference mode
    (posterior means, batch-norm statistics).

    Args:
        slices: Array ``(N, H, W, C)`` of the slices to reconstruct (keep it
            small for models whose reconstruction is an optimisation, AnoGAN).
        prefix: Prefix of the logged names (``"val_"`` for validation slices).
        batch_size: Slices per reconstruction call.
    """

    def __init__(self, slices, prefix: str = "val_", batch_size: int = 32):
        super().__init__()
        self.slices = np.asarray(slices, np.float32)
        self.prefix = prefix
        self.batch_size = int(batch_size)
        self.max_val = float(max(self.slices.max() - self.slices.min(), 1e-6)) if len(self.slices) else 1.0
        self._reconstruct = None

    def measure(self, model) -> dict:
        """``{prefix + "l1": ..., prefix + "ssim": ...}`` for ``model`` now."""
        import tensorflow as tf

        if self._reconstruct is None:
            self._reconstruct = tf.function(lambda x: tf.cast(model.reconstruct(x, training=False), tf.float32))
        l1, ssim = [], []
        for start in range(0, len(self.slices), self.batch_size):
            x = tf.constant(self.slices[start:start + self.batch_size])
            x_hat = self._reconstruct(x)
            l1.append(tf.reduce_mean(tf.abs(x - x_hat), axis=[1, 2, 3]).numpy())
            side = min(11, int(x.shape[1]), int(x.shape[2]))  # the usual 11 x 11 window, smaller for tiny slices
            ssim.append(tf.image.ssim(x, x_hat, max_val=self.max_val, filter_size=side).numpy())
        return {f"{self.prefix}l1": float(np.mean(np.concatenate(l1))),
                f"{self.prefix}ssim": float(np.mean(np.concatenate(ssim)))}

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and len(self.slices):
            logs.update(self.measure(self.model))
