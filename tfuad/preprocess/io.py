"""NumPy volumes (canonical RAS+ order, voxel-to-world affine) to SimpleITK images and back.

tfuad holds volumes as arrays in canonical RAS+ voxel order with a NIfTI
(RAS world) affine (:mod:`tfuad.data.nifti`); ITK works in LPS world
coordinates with an origin, spacing and direction matrix and stores arrays as
``(z, y, x)``. These two functions are the only place where one becomes the other.

Example:
    >>> import numpy as np
    >>> affine = np.diag([2.0, 2.0, 2.0, 1.0]); affine[:3, 3] = (-90, -126, -72)
    >>> image = to_sitk(np.zeros((4, 5, 6), np.float32), affine)
    >>> image.GetSize(), image.GetOrigin()
    ((4, 5, 6), (90.0, 126.0, -72.0))
    >>> data, back = from_sitk(image)
    >>> data.shape, bool(np.allclose(back, affine))
    ((4, 5, 6), True)
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from tfuad.errors import ArrayError

__all__ = ["to_sitk", "from_sitk", "RAS_TO_LPS"]

#: Flips the first two world axes: RAS (NIfTI) <-> LPS (ITK).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def to_sitk(data, affine) -> sitk.Image:
    """A SimpleITK image of a 3D array with a voxel-to-world (RAS) affine.

    Args:
        data: 3D array indexed ``[i, j, k]`` as the affine's voxel axes.
        affine: 4x4 voxel-to-RAS-world matrix.

    Returns:
        ``sitk.Image`` (float32 for float input, the array's type otherwise)
        whose physical space equals the affine's, in LPS.
    """
    data = np.asarray(data)
    if data.ndim != 3:
        raise ArrayError(f"expected a 3D array, got shape {data.shape}")
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float32)
    affine = np.asarray(affine, dtype=float)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(z) for z in zooms))
    image.SetOrigin(tuple(float(v) for v in RAS_TO_LPS @ affine[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (RAS_TO_LPS @ (affine[:3, :3] / zooms)).ravel()))
    return image


def from_sitk(image: sitk.Image) -> tuple:
    """The array ``[i, j, k]`` and voxel-to-world (RAS) affine of a SimpleITK image.

    Inverse of :func:`to_sitk`.

    Returns:
        ``(data, affine)``.
    """
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = RAS_TO_LPS @ direction * np.asarray(image.GetSpacing(), dtype=float)
    affine[:3, 3] = RAS_TO_LPS @ np.asarray(image.GetOrigin(), dtype=float)
    return np.ascontiguousarray(data), affine
