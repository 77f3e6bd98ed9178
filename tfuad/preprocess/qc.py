"""Quality-control figures: one PNG per subject and a montage of a whole batch.

Each subject's figure shows axial slices through the brain and one coronal and
one sagittal slice of the preprocessed image, with the brain mask outlined in
red (and the lesion mask in cyan); the montage shows one axial and one
sagittal slice per subject, so a person can check a hundred subjects at a glance.

Example:
    >>> import numpy as np, tempfile, os
    >>> img = np.random.default_rng(0).random((20, 24, 18)); mask = img > 0.3
    >>> plot_subject_qc(img, mask, os.path.join(tempfile.mkdtemp(), "s.png")).name
    's.png'
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tfuad.canvas import axial_to_display, check_png, new_figure, save_figure
from tfuad.errors import ArrayError

__all__ = ["plot_subject_qc", "plot_montage"]


def _panels(data: np.ndarray, brain: np.ndarray, n_axial: int) -> list:
    """(title, image, mask, lesion index) panels: axial slices through the brain, mid coronal, mid sagittal."""
    inside = np.argwhere(brain) if brain.any() else np.argwhere(np.ones(brain.shape, bool))
    lo, hi = inside.min(axis=0), inside.max(axis=0)
    centre = ((lo + hi) // 2).astype(int)
    zs = np.linspace(lo[2], hi[2], n_axial + 2)[1:-1].round().astype(int) if n_axial else []
    panels = [(f"z={z}", (slice(None), slice(None), int(z))) for z in zs]
    panels.append((f"y={centre[1]}", (slice(None), int(centre[1]), slice(None))))
    panels.append((f"x={centre[0]}", (int(centre[0]), slice(None), slice(None))))
    return panels


def _draw(ax, data, brain, lesion, index, window) -> None:
    # axial_to_display turns any slice of a RAS+ volume so its last axis points up.
    ax.imshow(axial_to_display(data[index]), cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
    for mask, colour in ((brain, "red"), (lesion, "cyan")):
        if mask is not None:
            shown = axial_to_display(mask[index])
            if shown.any() and not shown.all():
                ax.contour(shown.astype(np.float32), levels=[0.5], colors=[colour], linewidths=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _window(data, brain) -> tuple:
    values = data[brain] if brain.any() else data.ravel()
    lo, hi = np.percentile(values, [0.5, 99.5])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def plot_subject_qc(data, brain, out_png, *, lesion=None, title: str | None = None, n_axial: int = 4) -> Path:
    """One subject's QC figure: ``n_axial`` axial slices, a coronal and a sagittal slice, mask outlined.

    Args:
        data: 3D image (canonical RAS+ order).
        brain: 3D boolean brain mask.
        out_png: PNG file to write (atomically).
        lesion: Optional 3D boolean lesion mask (cyan outline).
        title: Figure title.
        n_axial: Number of axial slices.

    Returns:
        The written path.
    """
    out = check_png(out_png)
    data, brain = np.asarray(data, dtype=np.float32), np.asarray(brain, dtype=bool)
    lesion = None if lesion is None else np.asarray(lesion, dtype=bool)
    panels = _panels(data, brain, n_axial)
    window = _window(data, brain)
    fig = new_figure(1.6 * len(panels), 2.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, index) in zip(axes, panels):
        _draw(ax, data, brain, lesion, index, window)
        ax.set_title(label, fontsize="x-small")
    if title:
        fig.suptitle(title, fontsize="small")
    return save_figure(fig, out)


def plot_montage(items, out_png, *, columns: int = 4, cell: float = 1.05) -> Path:
    """Montage of many subjects: an axial and a sagittal slice each, brain mask outlined.

    Args:
        items: ``(subject, paths)`` pairs with ``paths["image"]`` and ``paths["brain_mask"]``.
        out_png: PNG file to write.
        columns: Subjects per row.
        cell: Size (inches) of one slice.

    Returns:
        The written path.
    """
    from tfuad.data.nifti import load_mask, load_volume

    out = check_png(out_png)
    items = list(items)
    if not items:
        raise ArrayError("no subject to draw")
    columns = max(1, min(int(columns), len(items)))
    rows = math.ceil(len(items) / columns)
    fig = new_figure(2 * cell * columns, cell * rows + 0.3)
    axes = fig.subplots(rows, 2 * columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i, (subject, paths) in enumerate(items):
        volume = load_volume(paths["image"])
        brain = load_mask(paths["brain_mask"], volume, what="brain mask")
        panels = _panels(volume.data, brain, 0)
        axial = ("", (slice(None), slice(None), int(np.argwhere(brain)[:, 2].mean().round())))
        window = _window(volume.data, brain)
        for j, (_, index) in enumerate((axial, panels[1])):
            ax = axes[i // columns, 2 * (i % columns) + j]
            ax.set_axis_on()
            _draw(ax, volume.data, brain, None, index, window)
        axes[i // columns, 2 * (i % columns)].set_title(subject, fontsize=6, loc="left")
    return save_figure(fig, out)
