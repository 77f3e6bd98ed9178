"""DICOM series in: a folder of one series read as a 3D volume with its scanner geometry.

A DICOM series is accepted wherever a NIfTI file is (``tfuad detect``,
``tfuad preprocess``, :func:`tfuad.data.nifti.load_volume`): give the folder that
holds the series' files. SimpleITK (GDCM) groups the files by Series Instance UID,
sorts the slices by their position along the slice normal and applies the
rescale slope and intercept. The voxel-to-world affine is ITK's geometry
(origin, spacing, direction, in the patient's LPS world) converted to the RAS
world of NIfTI/nibabel, so a map computed on the series overlays it and the
scanner coordinates of every voxel are kept.

A folder with more than one series is refused with one line naming every series
(UID, description, number of files); a folder with slices at uneven spacing
(a missing slice) is refused too, since one affine cannot describe it.

Example:
    >>> is_dicom_folder("scans/sub-01/t1_mprage")                 # doctest: +SKIP
    True
    >>> data, affine, info = read_dicom_series("scans/sub-01/t1_mprage")  # doctest: +SKIP
    >>> info["series_uid"], data.shape                            # doctest: +SKIP
    ('1.2.826.0.1.3680043.2.1125.1.4', (256, 256, 176))
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tfuad.errors import CorruptFileError, DatasetError, DimensionError

__all__ = ["is_dicom_folder", "list_series", "read_dicom_series", "affine_from_sitk", "LPS_TO_RAS",
           "SLICE_SPACING_RTOL"]

#: Flips the first two world axes: LPS (DICOM, ITK) <-> RAS (NIfTI).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
#: Largest relative deviation of one slice gap from the median gap still read as evenly spaced.
SLICE_SPACING_RTOL = 0.05
#: Files opened to decide whether a folder holds DICOM files.
_PROBE_FILES = 16

_SERIES_DESCRIPTION = "0008|103e"
_POSITION = "0020|0032"
_ORIENTATION = "0020|0037"


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_folder(path) -> bool:
    """True when ``path`` is a folder holding DICOM files (``DICM`` after the 128-byte preamble).

    Only the folder's own files are looked at (not subfolders), at most a few of them.

    Example:
        >>> import tempfile
        >>> is_dicom_folder(tempfile.mkdtemp())
        False
    """
    folder = Path(os.fspath(path))
    if not folder.is_dir():
        return False
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        return False
    return any(_has_dicom_magic(p) for p in files[:_PROBE_FILES])


def _sitk():
    import SimpleITK as sitk

    return sitk


def list_series(folder) -> list[dict]:
    """The DICOM series in ``folder``: ``[{"uid", "description", "files"}]``, files in slice order.

    Raises:
        DatasetError: ``folder`` is not a folder, or holds no DICOM series.
    """
    sitk = _sitk()
    folder = Path(os.fspath(folder))
    if not folder.is_dir():
        raise DatasetError(folder, "is not a folder of DICOM files")
    reader = sitk.ImageSeriesReader()
    uids = sorted(reader.GetGDCMSeriesIDs(os.fspath(folder)) or ())
    if not uids:
        raise DatasetError(folder, "holds no readable DICOM series")
    series = []
    for uid in uids:
        files = list(reader.GetGDCMSeriesFileNames(os.fspath(folder), uid))
        series.append({"uid": uid, "description": _tag(files[0], _SERIES_DESCRIPTION), "files": files})
    return series


def _tag(path: str, key: str) -> str:
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ""
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def _describe(series: list[dict]) -> str:
    return "; ".join(f"{s['uid']} {s['description'] or '(no description)'!r} ({len(s['files'])} files)"
                     for s in series)


def _check_even_spacing(folder: Path, reader, n_slices: int) -> None:
    """Refuse slices whose positions along the slice normal are not evenly spaced."""
    if n_slices < 3:
        return
    try:
        positions = np.array([[float(v) for v in reader.GetMetaData(i, _POSITION).split("\\")]
                              for i in range(n_slices)])
        cosines = np.array([float(v) for v in reader.GetMetaData(0, _ORIENTATION).split("\\")])
    except (RuntimeError, ValueError):
        return  # no per-slice positions (e.g. a multi-frame file): nothing to check
    if positions.shape != (n_slices, 3) or cosines.shape != (6,):
        return
    normal = np.cross(cosines[:3], cosines[3:])
    gaps = np.diff(positions @ normal)
    median = float(np.median(np.abs(gaps)))
    if median == 0 or np.any(np.abs(np.abs(gaps) - median) > SLICE_SPACING_RTOL * median):
        worst = int(np.argmax(np.abs(np.abs(gaps) - median)))
        raise DimensionError(folder, f"DICOM slices are not evenly spaced (gap of {abs(gaps[worst]):.4g} mm after "
                                     f"slice {worst + 1} of {n_slices}, median {median:.4g} mm): a missing slice?")


def affine_from_sitk(image) -> np.ndarray:
    """The voxel-to-RAS-world affine of a SimpleITK image (its LPS geometry, axes 0 and 1 flipped).

    Example:
        >>> import SimpleITK as sitk
        >>> image = sitk.Image(2, 2, 2, sitk.sitkInt16)
        >>> image.SetOrigin((10.0, 20.0, 30.0))
        >>> affine_from_sitk(image)[:3, 3].tolist()
        [-10.0, -20.0, 30.0]
    """
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction * np.asarray(image.GetSpacing(), dtype=float)
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=float)
    return affine


def read_dicom_series(folder) -> tuple:
    """Read the one DICOM series of ``folder``.

    Args:
        folder: A folder holding the files of exactly one series.

    Returns:
        ``(data, affine, info)``: the voxels as a float32 array indexed ``[i, j, k]``
        (column, row, slice, as ITK reads them), the 4x4 voxel-to-RAS-world affine,
        and ``{"series_uid", "description", "files"}``.

    Raises:
        DatasetError: no series, or several (the message names each UID and description).
        DimensionError: not a 3D volume (e.g. a 4D multi-frame series), or slices at uneven spacing.
        CorruptFileError: GDCM cannot read the files.
    """
    sitk = _sitk()
    folder = Path(os.fspath(folder))
    series = list_series(folder)
    if len(series) > 1:
        raise DatasetError(folder, f"holds {len(series)} DICOM series, expected one: {_describe(series)}; "
                                   "give the folder of one series")
    (only,) = series
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(only["files"])
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as err:
        first = " ".join(str(err).split())[:200]
        raise CorruptFileError(folder, f"unreadable DICOM series {only['uid']} ({first})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DimensionError(folder, f"DICOM series {only['uid']} has {image.GetNumberOfComponentsPerPixel()} "
                                     "components per voxel where a scalar volume is needed")
    if image.GetDimension() != 3:
        raise DimensionError(folder, f"DICOM series {only['uid']} is {image.GetDimension()}D where a 3D volume "
                                     "is needed")
    if len(only["files"]) > 1:
        _check_even_spacing(folder, reader, len(only["files"]))
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)
    info = {"series_uid": only["uid"], "description": only["description"], "files": len(only["files"])}
    return np.ascontiguousarray(data), affine_from_sitk(image), info
