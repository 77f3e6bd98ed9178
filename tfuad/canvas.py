"""The canvas every tfuad figure is drawn on: Agg figures, display orientation, atomic PNGs.

Any layer may draw a figure through these helpers (the demo dataset's
overview, the QC montage, training curves, reports) without pyplot state or a
display.

Example:
    >>> import tempfile, os
    >>> fig = new_figure(2.0, 2.0)
    >>> save_figure(fig, check_png(os.path.join(tempfile.mkdtemp(), "x.png"))).name
    'x.png'
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfuad.errors import ArrayError, ConfigError
from tfuad.files import atomic_path

__all__ = ["DPI", "axial_to_display", "check_png", "new_figure", "save_figure"]

#: Resolution of the written PNG files.
DPI = 100


def axial_to_display(slice2d) -> np.ndarray:
    """Orient an axial slice ``data[:, :, z]`` of a RAS+ volume for display.

    The slice's rows run left to right and its columns posterior to anterior;
    :func:`numpy.rot90` turns it so anterior is up and the patient's left is
    on the left of the image (the neurological convention of nilearn and
    FSLeyes' default).

    Example:
        >>> import numpy as np
        >>> s = np.zeros((3, 2)); s[0, 1] = 1      # left-most row, anterior column
        >>> axial_to_display(s)
        array([[1., 0., 0.],
               [0., 0., 0.]])
    """
    slice2d = np.asarray(slice2d)
    if slice2d.ndim != 2:
        raise ArrayError(f"an axial slice must be 2D, got shape {slice2d.shape}")
    return np.rot90(slice2d)


def check_png(out_png) -> Path:
    """``out_png`` as a Path.

    Raises:
        ConfigError: unless it names a ``.png`` file.
    """
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"{out}: figures are written as PNG; the file name must end in .png")
    return out


def new_figure(width: float, height: float) -> Figure:
    """A figure on an Agg canvas (no pyplot, no display needed)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out: Path) -> Path:
    """Write ``fig`` to ``out`` as PNG, atomically; returns ``out``."""
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(out)
