"""NIfTI volumes in and out, in one canonical orientation, mapped back exactly.

Every volume is held internally in the closest canonical (RAS+) voxel order so
slicing is the same for all inputs; :meth:`Volume.to_native` undoes that exactly,
and :func:`save_like` writes an array with its reference's affine and header so a
map overlays the input in ITK-SNAP or FSLeyes.

Example:
    >>> vol = load_volume("sub-01_flair.nii.gz")            # doctest: +SKIP
    >>> save_like(vol.data > 0.5, vol, "mask.nii.gz")        # doctest: +SKIP
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from tfuad.errors import (
    ArrayError,
    CorruptFileError,
    DimensionError,
    EmptyMaskError,
    GeometryMismatchError,
    NonFiniteError,
)
from tfuad.files import atomic_path

__all__ = [
    "Volume",
    "load_volume",
    "load_mask",
    "save_like",
    "save_volume",
    "nifti_stem",
    "check_same_grid",
    "AFFINE_ATOL",
]

#: Largest difference (mm) between two affines still considered the same grid.
AFFINE_ATOL = 1e-3


@dataclass
class Volume:
    """A 3D image in canonical (RAS+) voxel order plus what is needed to map back.

    Attributes:
        data: Voxel array of shape ``shape`` in canonical order.
        affine: Voxel-to-world affine of ``data`` (canonical order).
        header: The original NIfTI header (native order), reused on save.
        native_affine: The file's own affine.
        native_shape: The file's own 3D shape.
        path: Where the volume came from, or ``None``.
    """

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    native_affine: np.ndarray
    native_shape: tuple
    path: str | None = None
    _to_canonical: np.ndarray = field(default=None, repr=False)

    @property
    def shape(self):
        return self.data.shape

    @property
    def zooms(self):
        """Voxel sizes (mm) in canonical axis order."""
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    def to_native(self, array: np.ndarray) -> np.ndarray:
        """Map an array on this volume's canonical grid back to the file's voxel order."""
        array = np.asarray(array)
        if array.shape[:3] != self.data.shape:
            raise ArrayError(f"array of shape {array.shape} is not on the grid {self.data.shape}")
        back = nio.ornt_transform(nio.axcodes2ornt(("R", "A", "S")), nio.io_orientation(self.native_affine))
        return nio.apply_orientation(array, back)

    def with_data(self, data: np.ndarray) -> Volume:
        """Same geometry, other voxels (canonical order)."""
        return Volume(np.asarray(data), self.affine, self.header, self.native_affine,
                      self.native_shape, self.path, self._to_canonical)


def _squeeze_to_3d(data: np.ndarray, path) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DimensionError(path, f"{data.ndim}D image of shape {tuple(data.shape)} where a 3D volume is needed")
    return data


def nifti_stem(path) -> str:
    """A file's name without its ``.nii.gz`` or ``.nii`` extension (a folder, e.g. a DICOM series: its name).

    Example:
        >>> nifti_stem("data/sub-01_flair.nii.gz")
        'sub-01_flair'
    """
    name = Path(path).name
    if Path(path).is_dir():
        return name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return Path(path).stem


def load_volume(path, *, dtype=np.float32, allow_nonfinite: bool = False) -> Volume:
    """Load a 3D NIfTI image into canonical RAS+ voxel order.

    Args:
        path: ``.nii`` or ``.nii.gz`` file, or a folder holding one DICOM series
            (:mod:`tfuad.data.dicom`; its geometry becomes the affine, LPS turned to RAS).
        dtype: Voxel type of the returned array.
        allow_nonfinite: Accept NaN/Inf voxels instead of raising.

    Returns:
        A :class:`Volume`.

    Raises:
        CorruptFileError: missing, unreadable, truncated or not NIfTI.
        DimensionError: not 3D (trailing singleton dimensions are dropped).
        NonFiniteError: NaN or Inf voxels (unless ``allow_nonfinite``).
        DatasetError: a folder with no DICOM series or with several.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _load_dicom(path, dtype, allow_nonfinite)
    if not os.path.isfile(path):
        raise CorruptFileError(path, "no such file")
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises many types for bad files
        raise CorruptFileError(path, f"not a readable NIfTI image ({type(err).__name__}: {err})") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise CorruptFileError(path, f"not a NIfTI image ({type(img).__name__})")
    if len(img.shape) < 3:
        raise DimensionError(path, f"{len(img.shape)}D image of shape {tuple(img.shape)} where a 3D volume is needed")
    if len(img.shape) > 3 and any(s != 1 for s in img.shape[3:]):
        raise DimensionError(path, f"{len(img.shape)}D image of shape {tuple(img.shape)} where a 3D volume is needed")
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, ValueError) as err:
        raise CorruptFileError(path, f"truncated or corrupt voxel data ({type(err).__name__}: {err})") from err
    data = _squeeze_to_3d(np.asarray(data, dtype=dtype), path)
    return _canonical_volume(data, img.affine.copy(), img.header.copy(), path, allow_nonfinite)


def _load_dicom(path: str, dtype, allow_nonfinite: bool) -> Volume:
    """A DICOM series folder as a :class:`Volume` with a NIfTI header made from its geometry."""
    from tfuad.data.dicom import read_dicom_series

    data, affine, _ = read_dicom_series(path)
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.float32)
    header.set_xyzt_units("mm")
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    return _canonical_volume(np.asarray(data, dtype=dtype), affine, header, path, allow_nonfinite)


def _canonical_volume(data: np.ndarray, native_affine: np.ndarray, header, path: str,
                      allow_nonfinite: bool) -> Volume:
    if not allow_nonfinite and np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        if bad.any():
            raise NonFiniteError(path, f"{int(bad.sum())} NaN/Inf voxels")
    to_canonical = nio.ornt_transform(nio.io_orientation(native_affine), nio.axcodes2ornt(("R", "A", "S")))
    canonical = nio.apply_orientation(data, to_canonical)
    affine = native_affine @ nio.inv_ornt_aff(to_canonical, data.shape)
    return Volume(
        data=np.ascontiguousarray(canonical),
        affine=affine,
        header=header,
        native_affine=native_affine,
        native_shape=tuple(data.shape),
        path=path,
        _to_canonical=to_canonical,
    )


def check_same_grid(volume: Volume, other: Volume, what: str = "mask") -> None:
    """Raise :class:`GeometryMismatchError` unless ``other`` lies on ``volume``'s grid."""
    if other.native_shape != volume.native_shape:
        raise GeometryMismatchError(
            other.path, f"{what} shape {other.native_shape} differs from image shape {volume.native_shape}"
            + (f" ({volume.path})" if volume.path else ""))
    if not np.allclose(other.native_affine, volume.native_affine, atol=AFFINE_ATOL):
        diff = float(np.abs(other.native_affine - volume.native_affine).max())
        raise GeometryMismatchError(
            other.path, f"{what} affine differs from the image's by up to {diff:.4g}"
            + (f" ({volume.path})" if volume.path else ""))


def load_mask(path, like: Volume, *, what: str = "mask", require_nonempty: bool = True) -> np.ndarray:
    """Load a binary mask or label volume on the grid of ``like``.

    Args:
        path: The mask file.
        like: The image it belongs to; shape and affine must match.
        what: Word used in error messages ("brain mask", "lesion mask").
        require_nonempty: Raise :class:`EmptyMaskError` for an all-zero mask.

    Returns:
        Boolean array in canonical order (label > 0).
    """
    mask = load_volume(path, dtype=np.float32)
    check_same_grid(like, mask, what)
    out = mask.data > 0
    if require_nonempty and not out.any():
        raise EmptyMaskError(path, f"{what} has no non-zero voxel")
    return out


def _refuse_input_overwrite(path, reference: Volume):
    if reference.path and os.path.exists(path) and os.path.samefile(path, reference.path):
        raise CorruptFileError(path, "refusing to overwrite the input image")


def save_like(array: np.ndarray, reference: Volume, path, *, dtype=None) -> Path:
    """Write a canonical-order array with the geometry and header of ``reference``.

    The array is mapped back to the reference file's voxel order, and the file
    gets the reference's affine, qform/sform and spatial header, so it overlays
    the input exactly. The write is atomic and never replaces the input file.

    Args:
        array: Array of ``reference.shape`` in canonical order.
        reference: The volume whose geometry to copy.
        path: Output ``.nii``/``.nii.gz`` file.
        dtype: Stored voxel type (default: ``uint8`` for bool arrays, ``float32`` otherwise).

    Returns:
        The written path.
    """
    array = np.asarray(array)
    if dtype is None:
        dtype = np.uint8 if array.dtype == bool else np.float32
    _refuse_input_overwrite(path, reference)
    native = np.ascontiguousarray(reference.to_native(array).astype(dtype))
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    header.set_data_shape(native.shape)
    img = nib.Nifti1Image(native, reference.native_affine, header=header) \
        if isinstance(header, nib.Nifti1Header) and not isinstance(header, nib.Nifti2Header) \
        else nib.Nifti2Image(native, reference.native_affine, header=header)
    img.header.set_slope_inter(None, None)
    img.header["cal_min"], img.header["cal_max"] = 0, 0
    qcode = int(reference.header["qform_code"]) or 1
    scode = int(reference.header["sform_code"]) or 1
    img.set_qform(reference.native_affine, code=qcode)
    img.set_sform(reference.native_affine, code=scode)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def save_volume(array: np.ndarray, affine: np.ndarray, path, *, dtype=np.float32) -> Path:
    """Write a new NIfTI file (array in its own voxel order) atomically."""
    img = nib.Nifti1Image(np.ascontiguousarray(np.asarray(array).astype(dtype)), np.asarray(affine, float))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)
