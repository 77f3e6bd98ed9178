"""NIfTI I/O: exact geometry round trips and one-line errors for bad files."""
import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from tfuad.data.nifti import load_mask, load_volume, save_like
from tfuad.errors import (
    CorruptFileError,
    DimensionError,
    EmptyMaskError,
    GeometryMismatchError,
    NonFiniteError,
)

# A left-posterior-inferior, axis-permuted, obliquely translated affine: nothing like RAS.
LPS_PERMUTED = np.array([
    [0.0, -1.2, 0.0, 90.0],
    [-0.9, 0.0, 0.0, 110.0],
    [0.0, 0.0, -2.0, 40.0],
    [0.0, 0.0, 0.0, 1.0],
])


def _write(path, data, affine=np.eye(4), dtype=None):
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype or np.asarray(data).dtype), affine)
    img.header["descrip"] = b"test-volume"
    nib.save(img, path)
    return path


def test_canonical_orientation_and_exact_round_trip_for_non_ras_input(tmp_path):
    data = np.random.default_rng(0).normal(size=(7, 9, 5)).astype(np.float32)
    src = _write(tmp_path / "in.nii.gz", data, LPS_PERMUTED)
    vol = load_volume(src)
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert vol.shape == (9, 7, 5)  # axes permuted into RAS order
    # Every voxel keeps its world position.
    ijk = np.array([2, 3, 4, 1.0])
    world_native = LPS_PERMUTED @ ijk
    canon_ijk = np.linalg.solve(vol.affine, world_native)
    ci = tuple(int(round(c)) for c in canon_ijk[:3])
    assert vol.data[ci] == data[2, 3, 4]
    np.testing.assert_array_equal(vol.to_native(vol.data), data)
    out = save_like(vol.data, vol, tmp_path / "out.nii.gz")
    back = nib.load(out)
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), data)
    np.testing.assert_allclose(back.affine, LPS_PERMUTED, atol=1e-6)
    assert back.header["descrip"].tobytes().startswith(b"test-volume")
    assert back.header.get_zooms() == nib.load(src).header.get_zooms()


def test_save_like_writes_masks_as_uint8_and_keeps_sform(tmp_path):
    src = _write(tmp_path / "in.nii", np.ones((4, 5, 6), np.int16), np.diag([2.0, 2.0, 2.0, 1.0]))
    vol = load_volume(src)
    out = save_like(vol.data > 0, vol, tmp_path / "mask.nii.gz")
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.get_sform(), vol.native_affine)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any other output


def test_save_like_refuses_to_overwrite_the_input(tmp_path):
    src = _write(tmp_path / "in.nii.gz", np.ones((3, 3, 3), np.float32))
    vol = load_volume(src)
    with pytest.raises(CorruptFileError, match="refusing to overwrite"):
        save_like(vol.data * 2, vol, src)
    np.testing.assert_array_equal(nib.load(src).get_fdata(), 1.0)


def test_trailing_singleton_dimension_is_accepted(tmp_path):
    src = _write(tmp_path / "in.nii.gz", np.ones((3, 4, 5, 1), np.float32))
    assert load_volume(src).shape == (3, 4, 5)


@pytest.mark.parametrize("shape,dims", [((3, 4, 5, 2), "4D"), ((3, 4), "2D")])
def test_non_3d_is_rejected(tmp_path, shape, dims):
    src = _write(tmp_path / "bad.nii.gz", np.ones(shape, np.float32))
    with pytest.raises(DimensionError, match=f"{dims} image") as err:
        load_volume(src)
    assert str(src) in str(err.value) and "\n" not in str(err.value)


def test_nan_voxels_are_rejected(tmp_path):
    data = np.ones((3, 3, 3), np.float32)
    data[1, 1, 1] = np.nan
    data[0, 0, 0] = np.inf
    src = _write(tmp_path / "nan.nii.gz", data)
    with pytest.raises(NonFiniteError, match="2 NaN/Inf voxels"):
        load_volume(src)
    assert np.isnan(load_volume(src, allow_nonfinite=True).data).sum() == 1


def test_truncated_and_garbage_files(tmp_path):
    src = _write(tmp_path / "ok.nii.gz", np.random.default_rng(1).normal(size=(20, 20, 20)).astype(np.float32))
    raw = src.read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptFileError, match="truncated.nii.gz"):
        load_volume(truncated)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"this is not a nifti file" * 20))
    with pytest.raises(CorruptFileError, match="garbage.nii.gz"):
        load_volume(garbage)
    with pytest.raises(CorruptFileError, match="no such file"):
        load_volume(tmp_path / "missing.nii.gz")


def test_mask_of_other_shape_or_affine_and_empty_mask(tmp_path):
    img = load_volume(_write(tmp_path / "img.nii.gz", np.ones((4, 4, 4), np.float32)))
    shape_bad = _write(tmp_path / "m1.nii.gz", np.ones((4, 4, 5), np.uint8))
    with pytest.raises(GeometryMismatchError, match="shape"):
        load_mask(shape_bad, img, what="brain mask")
    aff = np.eye(4)
    aff[0, 3] = 5.0
    affine_bad = _write(tmp_path / "m2.nii.gz", np.ones((4, 4, 4), np.uint8), aff)
    with pytest.raises(GeometryMismatchError, match="affine"):
        load_mask(affine_bad, img)
    empty = _write(tmp_path / "m3.nii.gz", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(EmptyMaskError, match="m3.nii.gz: brain mask has no non-zero voxel"):
        load_mask(empty, img, what="brain mask")
    good = _write(tmp_path / "m4.nii.gz", np.pad(np.ones((2, 2, 2), np.uint8), 1))
    assert load_mask(good, img).sum() == 8
