"""The MNI152 2009 template and brain mask that nilearn ships, on the FSL MNI grid.

Volumes are resampled onto the FSL MNI152 bounding box (x from -90, y from
-126, z from -72 mm): 91 x 109 x 91 voxels at 2 mm, 182 x 218 x 182 at 1 mm,
the grid of the demo dataset and of MNI-registered public data such as MSLUB.
Nothing is downloaded: the images are files inside the nilearn package.

Example:
    >>> tpl = load_template(2)
    >>> tpl.image.shape, tpl.mask.dtype
    ((91, 109, 91), dtype('bool'))
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from tfuad.errors import ConfigError

__all__ = ["Template", "load_template", "TEMPLATE_NAME", "RESOLUTIONS"]

TEMPLATE_NAME = "mni152"
#: Grid resolutions (mm) offered.
RESOLUTIONS = (1, 2)
#: RAS world position (mm) of the first voxel and extent of the FSL MNI box.
_BOX_ORIGIN = np.array([-90.0, -126.0, -72.0])
_BOX_EXTENT = np.array([182.0, 218.0, 182.0])


@dataclass(frozen=True)
class Template:
    """A template image with its brain mask on one grid (canonical RAS+ order).

    Attributes:
        name: Template name (``"mni152"``).
        resolution: Voxel size (mm).
        image: float32 T1 template, brain only (0 outside the brain).
        mask: bool brain mask.
        affine: 4x4 voxel-to-MNI affine.
    """

    name: str
    resolution: int
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple:
        return self.image.shape


@functools.lru_cache(maxsize=2)
def load_template(resolution: int = 2, name: str = TEMPLATE_NAME) -> Template:
    """Load the MNI152 2009 T1 template and brain mask at 1 or 2 mm (cached).

    Args:
        resolution: 1 or 2 (mm).
        name: Only ``"mni152"``.

    Returns:
        A :class:`Template` on the FSL MNI box.

    Raises:
        ConfigError: unknown template or resolution.
    """
    if name != TEMPLATE_NAME:
        raise ConfigError(f"unknown template {name!r}; available: {TEMPLATE_NAME}")
    if resolution not in RESOLUTIONS:
        raise ConfigError(f"template resolution must be one of {RESOLUTIONS} mm, got {resolution!r}")
    from nilearn import datasets  # slow to import, only needed here

    def crop(image):
        affine = np.asarray(image.affine, dtype=float)
        start = np.round((_BOX_ORIGIN - affine[:3, 3]) / resolution).astype(int)
        size = (_BOX_EXTENT / resolution).astype(int)
        box = tuple(slice(int(a), int(a + n)) for a, n in zip(start, size))
        cropped = image.slicer[box]
        return np.asarray(cropped.get_fdata(), dtype=np.float32), np.asarray(cropped.affine, dtype=float)

    image, affine = crop(datasets.load_mni152_template(resolution=resolution))
    mask, _ = crop(datasets.load_mni152_brain_mask(resolution=resolution))
    mask = mask > 0
    image = np.where(mask, image, 0.0).astype(np.float32)
    for array in (image, mask):
        array.setflags(write=False)
    return Template(name, int(resolution), image, mask, affine)
