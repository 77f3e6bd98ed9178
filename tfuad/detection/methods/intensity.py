"""The intensity baseline: the normalised intensity itself is the anomaly score.

Not a learned method: it thresholds hyperintense voxels of FLAIR- or
T2-weighted scans, the reference every normative model should beat. The map
is ``y − b`` with ``b`` the preprocessing background value, so the brain's
darkest possible value scores 0.

Example:
    >>> import numpy as np
    >>> maps, estimate = IntensityMethod(background=-1.0).slice_maps(np.zeros((1, 4, 4, 1), np.float32))
    >>> float(maps.max()), estimate is None
    (1.0, True)
"""
from __future__ import annotations

import numpy as np

from tfuad.detection.methods.base import ScoringMethod

__all__ = ["IntensityMethod"]


class IntensityMethod(ScoringMethod):
    """Thresholded normalised intensity (reference)."""

    name = "intensity"
    label = "intensity baseline"
    summary = "thresholded normalised intensity (non-learned reference)"
    needs = None

    def slice_maps(self, slices, brain=None):
        return np.asarray(slices, np.float32) - np.float32(self.background), None

    def graph_maps(self, slices, brain):
        return slices - self.background, None
