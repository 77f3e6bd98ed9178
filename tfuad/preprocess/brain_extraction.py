"""Atlas-based brain extraction: the template's brain mask, refined on the subject.

The subject is registered to the template (:mod:`tfuad.preprocess.registration`),
so on the template grid the template's brain mask is the first estimate of the
subject's brain. :func:`refine_brain_mask` then adapts its border to the
subject: within a band inside its border, dark voxels (air, bone) are removed
(bright scalp next to the brain is never added), and the result is cleaned by an optional
morphological opening, the largest connected component and hole filling.

Example:
    >>> mask = refine_brain_mask(image_on_template, template.mask)    # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from tfuad.errors import ArrayError

__all__ = ["refine_brain_mask"]


def refine_brain_mask(image, prior, *, band: int = 2, dark: float = 0.25, opening: int = 0) -> np.ndarray:
    """Refine a carried-over brain mask on the subject's image.

    Args:
        image: 3D image on the same grid as ``prior``.
        prior: 3D boolean brain mask carried over from the template.
        band: Width (voxels) of the band inside the border that may change.
        dark: Voxels of the band darker than this fraction of the median
            intensity inside the eroded prior are background (air, bone).
        opening: Iterations of a morphological opening of the result (0: none).

    Returns:
        3D boolean brain mask.

    Example:
        >>> img = np.zeros((20, 20, 20)); img[5:15, 5:15, 5:15] = 1.0
        >>> prior = np.zeros(img.shape, bool); prior[4:16, 4:16, 4:16] = True
        >>> int(refine_brain_mask(img, prior).sum())
        1000
    """
    image = np.asarray(image, dtype=np.float32)
    prior = np.asarray(prior, dtype=bool)
    if image.shape != prior.shape:
        raise ArrayError(f"image shape {image.shape} and mask shape {prior.shape} differ")
    if not prior.any():
        return prior.copy()
    core = ndi.binary_erosion(prior, iterations=band)
    if not core.any():
        core = prior
    level = float(np.median(image[core]))
    tissue = image > dark * level
    mask = core | (prior & tissue)
    mask = ndi.binary_opening(mask, iterations=opening) if opening else mask
    labels, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return ndi.binary_fill_holes(mask)
