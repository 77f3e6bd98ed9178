"""Report figures (PNG): ROC/PR curves, Dice vs lesion size, example grids and overlays.

Example:
    >>> from tfuad.reports import plot_roc_pr, plot_example_grid, axial_to_display
"""
from tfuad.reports.figures import (
    axial_to_display,
    plot_detection_overview,
    plot_dice_vs_lesion_size,
    plot_example_grid,
    plot_overlay,
    plot_roc_pr,
)

__all__ = [
    "axial_to_display",
    "plot_roc_pr",
    "plot_dice_vs_lesion_size",
    "plot_example_grid",
    "plot_overlay",
    "plot_detection_overview",
]
