"""Figures of a training run: reconstructions of healthy slices and the loss curves.

Both are drawn with matplotlib on an Agg canvas (no pyplot state, no display)
and written atomically (:mod:`tfuad.canvas`):

* :func:`plot_reconstructions`: healthy slices (top row), their
  reconstructions (middle) and ``|x - x̂|`` (bottom), on one intensity scale;
* :func:`plot_loss_curves`: the curves of ``history.csv``: training and
  validation loss with the best epoch marked, validation L1/SSIM and the
  learning rate.

Slices are shown as laid out by :mod:`tfuad.data.preprocessing` (anterior up,
the patient's right on the right), so no reorientation is needed.

Example:
    >>> import numpy as np, tempfile, os
    >>> x = np.random.default_rng(0).random((3, 16, 16, 1))
    >>> plot_reconstructions(x, x * 0.9, os.path.join(tempfile.mkdtemp(), "r.png")).name
    'r.png'
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tfuad.canvas import new_figure, save_figure
from tfuad.errors import ArrayError

__all__ = ["plot_reconstructions", "plot_loss_curves", "pick_slices", "draw_run_figures"]

def pick_slices(slices, background: float, count: int = 4) -> np.ndarray:
    """Indices of ``count`` slices spread over those with the most brain (non-background) pixels.

    Example:
        >>> x = np.zeros((6, 4, 4, 1)); x[2:5, 1:3, 1:3] = 1
        >>> pick_slices(x, 0.0, 2).tolist()
        [2, 4]
    """
    slices = np.asarray(slices)
    if len(slices) == 0:
        return np.zeros(0, np.int64)
    brain = (slices != background).reshape(len(slices), -1).mean(axis=1)
    candidates = np.flatnonzero(brain >= np.median(brain))
    picks = np.linspace(0, len(candidates) - 1, min(count, len(candidates))).round().astype(int)
    return candidates[np.unique(picks)]


def plot_reconstructions(x, x_hat, out_png, *, title: str | None = None) -> Path:
    """Slices, their reconstructions and absolute differences as a 3-row grid; returns ``out_png``.

    Args:
        x: Slices ``(N, H, W, 1)``.
        x_hat: Reconstructions, same shape.
        out_png: Output PNG.
        title: Figure title.
    """
    x, x_hat = np.asarray(x, np.float32)[..., 0], np.asarray(x_hat, np.float32)[..., 0]
    if x.shape != x_hat.shape or x.ndim != 3 or len(x) == 0:
        raise ArrayError(f"x and x_hat must be non-empty (N, H, W, 1) arrays of one shape, got {x.shape}, "
                         f"{x_hat.shape}")
    lo, hi = np.percentile(x, [0.5, 99.5])
    hi = hi if hi > lo else lo + 1.0
    residual = np.abs(x - x_hat)
    rows = (("input", x, "gray", (lo, hi)), ("reconstruction", x_hat, "gray", (lo, hi)),
            ("|x - x̂|", residual, "inferno", (0.0, max(float(residual.max()), 1e-6))))
    fig = new_figure(1.9 * len(x) + 0.6, 5.9)
    axes = fig.subplots(3, len(x), squeeze=False)
    for r, (name, images, cmap, (vmin, vmax)) in enumerate(rows):
        for c in range(len(x)):
            ax = axes[r, c]
            ax.imshow(images[c], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out_png)


def _column(history, key):
    values = np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in history])
    return values


def plot_loss_curves(history, out_png, *, monitor: str | None = None, best_epoch: int | None = None,
                     title: str | None = None) -> Path:
    """Curves of per-epoch records (``history.csv`` rows); returns ``out_png``.

    Panels: ``loss`` and ``val_loss`` (log scale when positive) with
    ``monitor`` at ``best_epoch`` marked; ``val_l1`` and ``val_ssim`` (or
    ``l1``/``ssim``); ``learning_rate`` (log scale). Missing columns are left out.

    Args:
        history: Records with an ``epoch`` key.
        out_png: Output PNG.
        monitor: The watched value, marked at ``best_epoch``.
        best_epoch: The best epoch (1-based).
        title: Figure title.
    """
    history = list(history)
    if not history:
        raise ArrayError("no epochs to plot")
    epochs = np.array([int(r["epoch"]) for r in history])
    keys = {k for r in history for k in r}
    fig = new_figure(13.0, 3.6)
    ax_loss, ax_quality, ax_lr = fig.subplots(1, 3)
    for key in ("loss", "val_loss"):
        if key in keys:
            ax_loss.plot(epochs, _column(history, key), marker=".", label=key)
    if monitor and best_epoch and monitor in keys:
        value = _column(history, monitor)[epochs == best_epoch]
        if len(value):
            ax_loss.plot([best_epoch], value, "k*", markersize=12, label=f"best {monitor} (epoch {best_epoch})")
    losses = np.concatenate([_column(history, k) for k in ("loss", "val_loss") if k in keys] or [[np.nan]])
    if np.all(losses[np.isfinite(losses)] > 0) and np.isfinite(losses).any():
        ax_loss.set_yscale("log")
    ax_loss.set_title("loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend(fontsize=8)
    prefix = "val_" if "val_l1" in keys else ""
    if f"{prefix}l1" in keys:
        ax_quality.plot(epochs, _column(history, f"{prefix}l1"), "C0.-", label=f"{prefix}l1")
        ax_quality.set_ylabel(f"{prefix}l1", color="C0")
        twin = ax_quality.twinx()
        twin.plot(epochs, _column(history, f"{prefix}ssim"), "C1.-", label=f"{prefix}ssim")
        twin.set_ylabel(f"{prefix}ssim", color="C1")
    ax_quality.set_title("healthy " + ("validation" if prefix else "training") + " slices")
    ax_quality.set_xlabel("epoch")
    if "learning_rate" in keys:
        ax_lr.plot(epochs, _column(history, "learning_rate"), "C2.-")
        ax_lr.set_yscale("log")
    ax_lr.set_title("learning rate")
    ax_lr.set_xlabel("epoch")
    if title:
        fig.suptitle(title)
    return save_figure(fig, out_png)


def draw_run_figures(model, slices, history, run_dir, *, monitor=None, best_epoch=None, title=None) -> list:
    """Write ``reconstructions.png`` (``slices`` and ``model``'s reconstructions) and ``loss_curves.png``.

    Args:
        model: A model with ``reconstruct(x)``.
        slices: The healthy slices to show ``(N, H, W, 1)`` (none: no reconstruction figure).
        history: Per-epoch records.
        run_dir: The run directory.
        monitor: The watched value (marked on the curves).
        best_epoch: Its best epoch.
        title: Prefix of the figure titles.

    Returns:
        The written paths.
    """
    import tensorflow as tf

    run_dir = Path(run_dir)
    written = []
    if len(slices):
        x_hat = tf.cast(model.reconstruct(tf.constant(np.asarray(slices, np.float32)), training=False), tf.float32)
        written.append(plot_reconstructions(slices, x_hat.numpy(), run_dir / "reconstructions.png",
                                            title=f"{title}: healthy slices and reconstructions" if title else None))
    if history:
        written.append(plot_loss_curves(history, run_dir / "loss_curves.png", monitor=monitor,
                                        best_epoch=best_epoch, title=f"{title}: training curves" if title else None))
    return written
