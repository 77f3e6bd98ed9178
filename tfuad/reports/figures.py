"""Report figures written as PNG files (matplotlib, Agg canvas, no pyplot state).

* :func:`plot_roc_pr`: ROC and precision-recall curves of several methods
  (Chen et al. 2020, Fig. 4);
* :func:`plot_dice_vs_lesion_size`: per-subject Dice against lesion volume
  (Chen et al. 2020, Fig. 7);
* :func:`plot_example_grid`: input, reconstruction, residual and
  segmentations of a few slices (Baur et al. 2018, Fig. 5; Chen et al. 2020,
  Fig. 5);
* :func:`plot_overlay`: an anomaly map and a segmentation over one slice;
* :func:`plot_detection_overview`: input, anomaly map and segmentation of a
  volume on a few axial slices;
* :func:`reconstruction_comparison`: one slice reconstructed by several models
  and their residuals side by side (Baur et al. 2018, Fig. 5);
* :func:`plot_convergence`: AUROC of MAP-TV lesion maps against the number of
  restoration steps (Chen et al. 2020, Fig. 10c);
* :func:`plot_selection_curve`: a setting chosen on healthy data (MAP-TV's
  ε(λ), Chen et al. 2020, Fig. 10a) with the choice marked.

Slices are axial cuts ``data[:, :, z]`` of canonical RAS+ volumes
(see :mod:`tfuad.data.nifti`); :func:`axial_to_display` is the one place where
they are oriented for display. Every function writes its PNG atomically and
returns the path (:func:`reconstruction_comparison` returns the figure and
writes the PNG when given a path).

Example:
    >>> import numpy as np, tempfile, os
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.random(500) < 0.1
    >>> scores = rng.random(500) + truth
    >>> out = plot_roc_pr({"ae": (scores, truth)}, os.path.join(tempfile.mkdtemp(), "roc.png"))
    >>> out.name
    'roc.png'
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from itertools import cycle
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tfuad.canvas import axial_to_display, check_png, new_figure, save_figure
from tfuad.errors import ArrayError, ConfigError
from tfuad.metrics.segmentation import curve_points

__all__ = [
    "axial_to_display",
    "plot_roc_pr",
    "plot_dice_vs_lesion_size",
    "plot_example_grid",
    "plot_overlay",
    "plot_detection_overview",
    "overview_slices",
    "reconstruction_comparison",
    "plot_convergence",
    "plot_selection_curve",
    "check_png",
    "new_figure",
    "save_figure",
]

#: Colour maps of non-binary grid columns other than grey.
DEFAULT_CMAPS = {"residual": "inferno"}
#: Colours of the contours drawn for binary columns, in column order.
CONTOUR_COLOURS = ("red", "lime", "cyan", "yellow", "magenta", "orange")


def _slice(array, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or array.size == 0:
        raise ArrayError(f"{what} must be a non-empty 2D slice, got shape {array.shape}")
    if array.dtype != bool and not np.isfinite(array).all():
        raise ArrayError(f"{what} contains NaN/Inf values")
    return array


def _draw_contour(ax, mask2d: np.ndarray, colour: str) -> None:
    """Outline a displayed binary mask (nothing to draw when it is empty or full)."""
    if mask2d.any() and not mask2d.all():
        ax.contour(mask2d.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.0)


def _set_title(ax, title: str) -> None:
    """Axes title wrapped at 60 characters, so long titles stay inside the figure."""
    ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize="medium")


def _blank_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _curve(name: str, curve, max_points: int) -> Mapping:
    if isinstance(curve, Mapping):
        missing = [k for k in ("fpr", "tpr", "recall", "precision") if k not in curve]
        if missing:
            raise ArrayError(f"curve {name!r} lacks {missing}; give (scores, truth) or curve_points(...)")
        return curve
    if isinstance(curve, Sequence) and len(curve) == 2:
        return curve_points(curve[0], curve[1], max_points)
    raise ArrayError(f"curve {name!r} must be (scores, truth) or a dict of points, got {type(curve).__name__}")


def plot_roc_pr(curves: Mapping, out_png, *, title: str | None = None, max_points: int = 2000) -> Path:
    """ROC (left) and precision-recall (right) curves of several methods.

    Args:
        curves: ``{name: (scores, truth)}`` (e.g. from
            :func:`~tfuad.metrics.pool_brain_voxels`) or ``{name: points}`` with
            points from :func:`~tfuad.metrics.curve_points` (``auroc``, ``auprc``
            and ``prevalence`` are shown when present).
        out_png: Path.
        title: Str.
        max_points: Points kept per curve when computed here.

    Returns:
        pathlib.Path

    Example:
        >>> import numpy as np, tempfile, os
        >>> truth = np.arange(100) < 10
        >>> scores = np.linspace(0, 1, 100)[::-1] + 0.3 * (np.arange(100) % 3)
        >>> plot_roc_pr({"vae": (scores, truth)}, os.path.join(tempfile.mkdtemp(), "c.png")).suffix
        '.png'
    """
    out = check_png(out_png)
    if not isinstance(curves, Mapping) or not curves:
        raise ArrayError("no curves to plot")
    points = {str(name): _curve(str(name), c, max_points) for name, c in curves.items()}
    fig = new_figure(10.0, 4.6)
    roc_ax, pr_ax = fig.subplots(1, 2)
    for name, p in points.items():
        auroc = f" (AUROC {p['auroc']:.3f})" if "auroc" in p else ""
        auprc = f" (AUPRC {p['auprc']:.3f})" if "auprc" in p else ""
        roc_ax.plot(p["fpr"], p["tpr"], label=name + auroc)
        pr_ax.plot(p["recall"], p["precision"], label=name + auprc)
    roc_ax.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="chance")
    prevalences = {round(float(p["prevalence"]), 12) for p in points.values() if "prevalence" in p}
    if len(prevalences) == 1 and all("prevalence" in p for p in points.values()):
        prevalence = prevalences.pop()
        pr_ax.axhline(prevalence, color="k", linestyle="--", linewidth=0.8, label=f"chance ({prevalence:.3g})")
    roc_ax.set(xlabel="false-positive rate", ylabel="true-positive rate", xlim=(0, 1), ylim=(0, 1.01),
               title="ROC")
    pr_ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title="Precision-recall")
    for ax in (roc_ax, pr_ax):
        ax.legend(loc="best", fontsize="small")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)


def plot_dice_vs_lesion_size(rows: Sequence[Mapping], out_png, *, metric: str = "dice",
                             title: str | None = None) -> Path:
    """Scatter plot of a per-subject metric against lesion volume (voxels).

    The size axis is logarithmic when sizes span a factor of 10 or more.

    Subjects without lesion voxels have no Dice and are left out (their count
    is given in the title); a dashed line marks the mean.

    Args:
        rows: Rows of :func:`~tfuad.metrics.per_subject_metrics` with
            ``lesion_voxels``, ``metric`` and optionally ``subject`` (used as
            point labels when there are at most 20 points).
        out_png: Path.
        metric: Str.
        title: Str.

    Returns:
        pathlib.Path

    Example:
        >>> import tempfile, os
        >>> rows = [{"subject": "a", "dice": 0.4, "lesion_voxels": 900},
        ...         {"subject": "b", "dice": 0.7, "lesion_voxels": 40000}]
        >>> plot_dice_vs_lesion_size(rows, os.path.join(tempfile.mkdtemp(), "d.png")).name
        'd.png'
    """
    out = check_png(out_png)
    rows = list(rows)
    for i, row in enumerate(rows):
        if "lesion_voxels" not in row or metric not in row:
            raise ArrayError(f"row {i} lacks 'lesion_voxels' or {metric!r}")
    lesion_rows = [r for r in rows if r["lesion_voxels"] > 0 and math.isfinite(r[metric])]
    if not lesion_rows:
        raise ArrayError(f"no subject with lesion voxels and a finite {metric!r} to plot")
    sizes = np.array([r["lesion_voxels"] for r in lesion_rows], float)
    values = np.array([r[metric] for r in lesion_rows], float)
    fig = new_figure(5.5, 4.2)
    ax = fig.subplots()
    ax.scatter(sizes, values, s=22, zorder=3)
    ax.axhline(values.mean(), color="k", linestyle="--", linewidth=0.8, label=f"mean {values.mean():.3f}")
    if len(lesion_rows) <= 20:
        for r, x, y in zip(lesion_rows, sizes, values):
            if r.get("subject") is not None:
                ax.annotate(str(r["subject"]), (x, y), fontsize="x-small", xytext=(3, 3),
                            textcoords="offset points")
    if sizes.max() >= 10 * sizes.min():                     # sizes spanning decades
        ax.set_xscale("log")
    ax.margins(x=0.15)
    ax.set(xlabel="lesion size (voxels)", ylabel=metric)
    if values.min() >= 0.0 and values.max() <= 1.0:          # Dice, rates: show the whole range
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    left_out = len(rows) - len(lesion_rows)
    ax.set_title((title or f"{metric} vs lesion size")
                 + (f"\n({left_out} subject(s) without lesion or {metric} not shown)" if left_out else ""),
                 fontsize="medium")
    return save_figure(fig, out)


def plot_example_grid(rows_of_slices: Sequence[Mapping], out_png,
                      columns: Sequence[str] = ("input", "reconstruction", "residual", "segmentation",
                                                "ground truth"),
                      *, row_labels: Sequence[str] | None = None, cmaps: Mapping | None = None,
                      title: str | None = None) -> Path:
    """Paper-style grid: one row per slice, one column per image kind.

    Boolean columns (segmentations, ground truth) are drawn as coloured
    contours over the first column's image; other columns are images: grey
    ones share the intensity window of the first column of their row (so
    input and reconstruction are comparable), columns with a colour map in
    ``cmaps`` (default: ``residual`` in ``inferno``) share one range across
    rows, from 0 (negative scores shown as 0) to the largest value.

    Args:
        rows_of_slices: ``{column: 2D array}`` per row, arrays being axial slices
            ``data[:, :, z]`` (oriented by :func:`axial_to_display`); masks as ``bool`` arrays.
        out_png: The PNG file.
        columns: Keys to show, in order; the first is the background image.
        row_labels: One label per row (e.g. subject and slice).
        cmaps: Colour maps of non-binary columns, updating :data:`DEFAULT_CMAPS`.
        title: Figure title.

    Returns:
        The PNG path.

    Example:
        >>> import numpy as np, tempfile, os
        >>> x = np.random.default_rng(0).random((32, 32)); seg = x > 0.9
        >>> row = {"input": x, "reconstruction": x, "residual": x, "segmentation": seg, "ground truth": seg}
        >>> plot_example_grid([row], os.path.join(tempfile.mkdtemp(), "g.png")).name
        'g.png'
    """
    out = check_png(out_png)
    columns = list(columns)
    grid = _grid_cells(list(rows_of_slices), columns, row_labels)
    cmaps = {**DEFAULT_CMAPS, **(cmaps or {})}
    mask_columns = _mask_columns(grid, columns)
    ranges = {c: _shared_range(grid, c) for c in columns if c in cmaps and c not in mask_columns}
    colours = dict(zip(mask_columns, cycle(CONTOUR_COLOURS)))
    fig = new_figure(2.1 * len(columns), 2.1 * len(grid) + (0.6 if title else 0.3))
    axes = fig.subplots(len(grid), len(columns), squeeze=False)
    for i, row in enumerate(grid):
        window = _window(row[columns[0]])
        for j, c in enumerate(columns):
            ax = axes[i, j]
            _blank_axes(ax)
            if c in mask_columns:
                ax.imshow(row[columns[0]], cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
                _draw_contour(ax, row[c], colours[c])
            else:
                lo, hi = ranges.get(c, window)
                ax.imshow(row[c], cmap=cmaps.get(c, "gray"), vmin=lo, vmax=hi, interpolation="nearest")
            if i == 0:
                ax.set_title(c, fontsize="medium", color=colours.get(c, "black"))
            if j == 0 and row_labels is not None:
                # wrapped to the panel's height: a long label (subject, lesion type, slice) must not run over
                ax.set_ylabel("\n".join(textwrap.wrap(str(row_labels[i]), 24)), fontsize="small")
    if title:
        fig.suptitle(title, fontsize="medium")
    return save_figure(fig, out)


def _grid_cells(rows: list, columns: list, row_labels) -> list:
    """The rows' slices, checked and oriented for display."""
    if not rows or not columns:
        raise ArrayError("the grid needs at least one row and one column")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ArrayError(f"{len(row_labels)} row labels for {len(rows)} rows")
    grid = []
    for i, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise ArrayError(f"row {i} lacks column(s) {missing}")
        cells = {c: _slice(row[c], f"row {i} column {c!r}") for c in columns}
        shapes = {c: a.shape for c, a in cells.items()}
        if len(set(shapes.values())) > 1:
            raise ArrayError(f"row {i} has slices of different shapes: {shapes}")
        if cells[columns[0]].dtype == bool:
            raise ArrayError(f"the first column {columns[0]!r} is the background image and cannot be a mask")
        grid.append({c: axial_to_display(a) for c, a in cells.items()})
    return grid


def _mask_columns(grid: list, columns: list) -> list:
    """The columns that are masks in every row (a column that is a mask in some rows only is refused)."""
    masks = [c for c in columns if all(r[c].dtype == bool for r in grid)]
    mixed = [c for c in columns if c not in masks and any(r[c].dtype == bool for r in grid)]
    if mixed:
        raise ArrayError(f"column(s) {mixed} are masks in some rows but not in others")
    return masks


def _shared_range(grid: list, column: str) -> tuple:
    """One display range of a coloured column across rows: 0 (or the minimum) to the largest value."""
    hi = max(float(r[column].max()) for r in grid)
    lo = 0.0 if hi > 0 else min(float(r[column].min()) for r in grid)
    return lo, hi if hi > lo else lo + 1.0


def _window(image: np.ndarray) -> tuple:
    """Grey window of a row: its background image's 0.5th to 99.5th percentile."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def overview_slices(score_map, segmentation, n_slices: int = 3) -> list:
    """Axial slices that show a detection, chosen by content, each with the reason it was chosen.

    First the slice where each of the largest segmented 3D components (26-connected) is widest, largest
    component first; then, while slices are missing, the slices with the largest summed positive anomaly
    score. A volume without any segmentation or positive score gives its middle slice.

    Args:
        score_map: Anomaly map ``(X, Y, Z)``.
        segmentation: Binary segmentation of the same shape.
        n_slices: How many slices.

    Returns:
        ``[(z, reason)]`` sorted by ``z``.

    Example:
        >>> import numpy as np
        >>> seg = np.zeros((8, 8, 10), bool); seg[2:5, 2:5, 6:8] = True
        >>> overview_slices(seg * 1.0, seg, 1)
        [(6, 'largest detection, 18 voxels')]
    """
    from scipy import ndimage as ndi

    score_map = np.asarray(score_map, np.float32)
    segmentation = np.asarray(segmentation).astype(bool)
    picks = {}
    labels, count = ndi.label(segmentation, structure=np.ones((3, 3, 3), bool))
    if count:
        sizes = np.bincount(labels.ravel())[1:]
        for rank, label in enumerate(np.argsort(-sizes, kind="stable")[:n_slices] + 1):
            z = int(np.argmax((labels == label).sum(axis=(0, 1))))
            what = "largest detection" if rank == 0 else f"detection {rank + 1} by size"
            picks.setdefault(z, f"{what}, {int(sizes[label - 1])} voxels")
    mass = np.clip(score_map, 0, None).sum(axis=(0, 1))
    for z in np.argsort(-mass, kind="stable"):
        if len(picks) >= n_slices or mass[z] <= 0:
            break
        picks.setdefault(int(z), "high anomaly score")
    if not picks:
        picks[score_map.shape[2] // 2] = "middle slice (nothing detected)"
    return sorted(picks.items())[:n_slices]


def plot_detection_overview(volume, score_map, segmentation, out_png, *, n_slices: int = 3,
                            title: str | None = None) -> Path:
    """Overview of a detection on a few axial slices: input, anomaly map, segmentation.

    The slices are chosen by content (:func:`overview_slices`: where the largest
    detections are widest, then where the anomaly score is highest) and each
    row says why; drawn with :func:`plot_example_grid`.

    Args:
        volume, score_map: Input image and anomaly map in canonical RAS+ order.
        segmentation: Array_like of bool, shape (X, Y, Z).
        out_png: Path.
        n_slices: Int.
        title: Str.

    Returns:
        pathlib.Path

    Example:
        >>> import numpy as np, tempfile, os
        >>> vol = np.random.default_rng(0).random((24, 24, 12)); seg = vol > 0.97
        >>> plot_detection_overview(vol, vol * seg, seg, os.path.join(tempfile.mkdtemp(), "v.png")).name
        'v.png'
    """
    volume, score_map = np.asarray(volume), np.asarray(score_map)
    segmentation = np.asarray(segmentation).astype(bool)
    shapes = {"volume": volume.shape, "anomaly map": score_map.shape, "segmentation": segmentation.shape}
    if len(set(shapes.values())) > 1 or volume.ndim != 3:
        raise ArrayError("need three 3D arrays of one shape, got "
                         + ", ".join(f"{n} {s}" for n, s in shapes.items()))
    if isinstance(n_slices, bool) or not isinstance(n_slices, int) or n_slices < 1:
        raise ArrayError(f"n_slices must be a positive integer, got {n_slices!r}")
    picks = overview_slices(score_map, segmentation, n_slices)
    rows = [{"input": volume[:, :, z], "anomaly map": score_map[:, :, z], "segmentation": segmentation[:, :, z]}
            for z, _ in picks]
    return plot_example_grid(rows, out_png, columns=("input", "anomaly map", "segmentation"),
                             row_labels=[f"z = {z}: {why}" for z, why in picks], cmaps={"anomaly map": "inferno"},
                             title=title)


def plot_overlay(image2d, map2d, mask2d, out_png, *, title: str | None = None, alpha: float = 0.6,
                 cmap: str = "inferno") -> Path:
    """One axial slice with an anomaly map (positive values) and a mask contour on top.

    Args:
        image2d: Background slice ``data[:, :, z]``.
        map2d: Anomaly map of the slice; voxels ``<= 0`` are transparent.
        mask2d: Segmentation drawn as a red contour.
        out_png: Path.
        title: Str.
        alpha: Opacity of the map.
        cmap: Colour map of the anomaly map.

    Returns:
        pathlib.Path

    Example:
        >>> import numpy as np, tempfile, os
        >>> img = np.random.default_rng(1).random((40, 40)); amap = np.where(img > 0.8, img, 0.0)
        >>> plot_overlay(img, amap, amap > 0.9, os.path.join(tempfile.mkdtemp(), "o.png")).name
        'o.png'
    """
    out = check_png(out_png)
    if not 0.0 <= alpha <= 1.0:
        raise ArrayError(f"alpha must be in [0, 1], got {alpha!r}")
    image = _slice(image2d, "image")
    amap = _slice(map2d, "anomaly map")
    mask = None if mask2d is None else _slice(mask2d, "mask").astype(bool)
    shapes = {"image": image.shape, "anomaly map": amap.shape, **({} if mask is None else {"mask": mask.shape})}
    if len(set(shapes.values())) > 1:
        raise ArrayError("shape mismatch: " + ", ".join(f"{n} {s}" for n, s in shapes.items()))
    image, amap = axial_to_display(image), axial_to_display(amap.astype(np.float32))
    fig = new_figure(4.6, 4.2)
    ax = fig.subplots()
    _blank_axes(ax)
    lo, hi = np.percentile(image, [0.5, 99.5])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1.0, interpolation="nearest")
    shown = np.ma.masked_less_equal(amap, 0.0)
    peak = float(amap.max())
    overlay = ax.imshow(shown, cmap=cmap, alpha=alpha, vmin=0.0, vmax=peak if peak > 0 else 1.0,
                        interpolation="nearest")
    fig.colorbar(overlay, ax=ax, shrink=0.8, label="anomaly score")
    if mask is not None:
        _draw_contour(ax, axial_to_display(mask), "red")
    if title:
        _set_title(ax, title)
    return save_figure(fig, out)


def _model_slice(array, what: str) -> np.ndarray:
    """A model-space slice ``(S, S)`` or ``(S, S, 1)`` as a 2D array."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return _slice(array, what)


def reconstruction_comparison(image, reconstructions: Mapping, *, truth=None, path=None,
                              title: str | None = None) -> Figure:
    """One slice, its reconstruction by each model and each residual ``|x − x̂|``.

    Row 1 shows the input, then every reconstruction, all in the input's grey
    window (0.5th to 99.5th percentile), so brightness is comparable across
    models. Row 2 shows the ground truth (as a red contour on the input, when
    given), then every residual on one shared ``inferno`` scale from 0 to the
    largest 99.9th percentile of the models' residuals; the ground truth is outlined on each
    residual too. Model names are the column titles and each row has one
    colour bar. Made to stay legible with ten or more models.

    Slices are in the model's layout (``prepare_volume(...).slices[z]``:
    anterior up, the patient's left on the left) and are drawn as they are.

    Args:
        image: The input slice.
        reconstructions: ``{model name: reconstruction}``, each of the input's shape, in
            display order.
        truth: Lesion mask of the slice.
        path: When given, the figure is also written there as PNG, atomically.
        title: Figure title.

    Returns:
        matplotlib.figure.Figure

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).random((32, 32))
        >>> fig = reconstruction_comparison(x, {"sae": 0.9 * x, "svae": 0.8 * x}, truth=x > 0.95)
        >>> len(fig.axes)          # 2 rows x 3 columns + 2 colour bars
        8
    """
    out = None if path is None else check_png(path)
    x, recons, mask = _comparison_inputs(image, reconstructions, truth)
    residuals = {k: np.abs(x - r) for k, r in recons.items()}
    lo, hi = _window(x)
    grey = dict(cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    top = max(float(np.percentile(r, 99.9)) for r in residuals.values())  # a few outlier pixels do not set the scale
    heat = dict(cmap="inferno", vmin=0.0, vmax=top if top > 0 else 1.0, interpolation="nearest")

    n = len(recons) + 1
    fig = new_figure(1.75 * n + 0.7, 2 * 1.9 + (0.45 if title else 0.2))
    axes = fig.subplots(2, n, squeeze=False)
    for ax in axes.ravel():
        _blank_axes(ax)
    shown = axes[0, 0].imshow(x, **grey)
    axes[0, 0].set_title("input", fontsize="medium")
    axes[0, 0].set_ylabel("input / reconstruction", fontsize="small")
    axes[1, 0].set_ylabel("truth / |x − x̂|", fontsize="small")
    if mask is not None:
        axes[1, 0].imshow(x, **grey)
        _draw_contour(axes[1, 0], mask, "red")
        axes[1, 0].set_title("ground truth", fontsize="medium", color="red")
    else:
        axes[1, 0].axis("off")
    heat_image = None
    for j, (name, recon) in enumerate(recons.items(), 1):
        axes[0, j].imshow(recon, **grey)
        axes[0, j].set_title(name, fontsize="medium")
        heat_image = axes[1, j].imshow(residuals[name], **heat)
        if mask is not None:
            _draw_contour(axes[1, j], mask, "cyan")
    fig.colorbar(shown, ax=list(axes[0]), shrink=0.85, pad=0.01, aspect=15, label="intensity")
    fig.colorbar(heat_image, ax=list(axes[1]), shrink=0.85, pad=0.01, aspect=15, label="|x − x̂|")
    if title:
        fig.suptitle(title, fontsize="medium")
    if out is not None:
        save_figure(fig, out)
    return fig


def _comparison_inputs(image, reconstructions, truth) -> tuple:
    """The slice, the reconstructions and the mask of :func:`reconstruction_comparison`, checked."""
    if not isinstance(reconstructions, Mapping) or not reconstructions:
        raise ArrayError("reconstruction_comparison needs at least one reconstruction")
    x = _model_slice(image, "image").astype(np.float32)
    recons = {str(k): _model_slice(v, f"reconstruction {k!r}").astype(np.float32)
              for k, v in reconstructions.items()}
    mask = None if truth is None else _model_slice(truth, "truth").astype(bool)
    shapes = {"image": x.shape, **{f"reconstruction {k!r}": r.shape for k, r in recons.items()},
              **({} if mask is None else {"truth": mask.shape})}
    if len(set(shapes.values())) > 1:
        raise ArrayError("shape mismatch: " + ", ".join(f"{n} {s}" for n, s in shapes.items()))
    return x, recons, mask


def plot_convergence(curves: Mapping, out_png, *, title: str | None = None,
                     ylabel: str = "pixel AUROC of |y − x̂|") -> Path:
    """A score of the restoration against the number of steps, one line per model.

    Draws what :func:`~tfuad.detection.restoration.convergence_curve`
    returns (cf. Chen et al. 2020, Fig. 10c: AUROC rises over the first
    steps, then levels off).

    Args:
        curves: ``{name: {steps: value}}``.
        out_png: Path.
        title: Str.
        ylabel: Str.

    Returns:
        pathlib.Path

    Example:
        >>> import tempfile, os
        >>> curve = {0: 0.70, 50: 0.80, 100: 0.82}
        >>> plot_convergence({"vae": curve}, os.path.join(tempfile.mkdtemp(), "c.png")).name
        'c.png'
    """
    out = check_png(out_png)
    if not isinstance(curves, Mapping) or not curves:
        raise ArrayError("no curves to plot")
    lines = {}
    for name, curve in curves.items():
        if not isinstance(curve, Mapping) or not curve:
            raise ArrayError(f"curve {name!r} must be a non-empty dict {{steps: value}}")
        steps = sorted(curve, key=float)
        values = np.array([float(curve[s]) for s in steps])
        if not np.isfinite(values).all():
            raise ArrayError(f"curve {name!r} has non-finite values")
        lines[str(name)] = ([float(s) for s in steps], values)
    fig = new_figure(5.0, 3.6)
    ax = fig.subplots()
    for name, (steps, values) in lines.items():
        ax.plot(steps, values, "o-", label=name, markersize=4)
    ax.set(xlabel="restoration steps", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if title:
        _set_title(ax, title)
    return save_figure(fig, out)


def plot_selection_curve(curve: Mapping, out_png) -> Path:
    """A criterion against a setting, with the chosen setting marked (e.g. ε(λ), Chen et al. Fig. 10a).

    Args:
        curve: ``{"x": x-axis label, "y": y-axis label, "values": {x: y}, "chosen": x}``, as a
            scoring method's ``calibrate_settings`` returns it.
        out_png: The PNG file (written atomically).

    Returns:
        The PNG path.

    Example:
        >>> import tempfile, os
        >>> curve = {"x": "λ", "y": "ε(λ)", "values": {"1": 3.0, "2": 2.0, "4": 2.5}, "chosen": 2.0}
        >>> plot_selection_curve(curve, os.path.join(tempfile.mkdtemp(), "lambda_curve.png")).name
        'lambda_curve.png'
    """
    out = check_png(out_png)
    values = curve.get("values") if isinstance(curve, Mapping) else None
    if not isinstance(values, Mapping) or not values:
        raise ConfigError(f"{out}: the selection curve has no values to plot")
    xs = sorted(float(k) for k in values)
    ys = [float(values[k]) for k in sorted(values, key=float)]
    fig = new_figure(5.0, 3.5)
    ax = fig.add_subplot()
    ax.plot(xs, ys, "o-", color="tab:blue", label=curve.get("y", "criterion"))
    chosen = float(curve["chosen"])
    ax.axvline(chosen, color="tab:red", linestyle="--", label=f"chosen: {chosen:g}")
    ax.set_xlabel(curve.get("x", "setting"))
    ax.set_ylabel(curve.get("y", "criterion"))
    ax.legend()
    return save_figure(fig, out)
