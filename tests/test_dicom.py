"""DICOM series in wherever a NIfTI file goes: real series written by SimpleITK (GDCM), slice by slice
with the patient-geometry tags, read back through tfuad and checked against the same volume as NIfTI."""
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner

from tfuad.cli.main import main
from tfuad.data.dicom import is_dicom_folder, list_series, read_dicom_series
from tfuad.data.layouts import discover
from tfuad.data.nifti import load_volume, save_like
from tfuad.errors import DatasetError, DimensionError

STUDY_UID = "1.2.826.0.1.3680043.2.1125.7"


def _oblique_direction():
    """A rotation by 10°, -20° and 30° about x, y, z: no axis is aligned with the scanner's."""
    def rot(axis, deg):
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        i, j = [a for a in range(3) if a != axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m
    return rot(2, 30) @ rot(1, -20) @ rot(0, 10)


def _image(array_zyx, spacing=(0.9, 1.1, 2.5), origin=(12.0, -30.0, 45.0), direction=None):
    image = sitk.GetImageFromArray(np.asarray(array_zyx))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple((_oblique_direction() if direction is None else direction).ravel()))
    return image


def write_series(image, folder, uid, description="T1 MPRAGE"):
    """Write a 3D SimpleITK image as a DICOM MR series, one file per slice, with the tags that carry its
    geometry (ImagePositionPatient per slice, ImageOrientationPatient, SeriesInstanceUID)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = image.GetDirection()
    tags = [("0008|0060", "MR"), ("0020|000d", STUDY_UID), ("0020|000e", uid), ("0008|103e", description),
            ("0010|0020", "tfuad-test"),
            ("0020|0037", "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])))]
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        for tag, value in tags:
            piece.SetMetaData(tag, value)
        piece.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        piece.SetMetaData("0020|0013", str(k + 1))
        piece.SetMetaData("0008|0018", f"{uid}.{k + 1}")
        writer.SetFileName(str(folder / f"{uid[-3:]}_{k:03d}.dcm"))
        writer.Execute(piece)
    return folder


@pytest.fixture()
def volume_zyx():
    rng = np.random.default_rng(7)
    return rng.integers(0, 1200, size=(9, 11, 13)).astype(np.int16)  # (slices, rows, columns)


def test_a_series_reads_as_the_same_voxels_and_affine_as_its_nifti(tmp_path, volume_zyx):
    image = _image(volume_zyx)
    folder = write_series(image, tmp_path / "series", "1.2.826.0.1.3680043.2.1125.101")
    nifti = tmp_path / "same.nii.gz"
    sitk.WriteImage(image, str(nifti))  # ITK's own NIfTI writer: LPS -> RAS done by ITK, not by tfuad

    assert is_dicom_folder(folder) and not is_dicom_folder(tmp_path)
    dicom = load_volume(folder)
    reference = load_volume(nifti)
    np.testing.assert_allclose(dicom.native_affine, nib.load(nifti).affine, atol=1e-4)
    np.testing.assert_allclose(dicom.affine, reference.affine, atol=1e-4)
    np.testing.assert_array_equal(dicom.data, reference.data)
    assert dicom.shape == reference.shape

    # Spacing, origin and direction as ITK reads the series, turned from LPS to RAS.
    data, affine, info = read_dicom_series(folder)
    assert info == {"series_uid": "1.2.826.0.1.3680043.2.1125.101", "description": "T1 MPRAGE", "files": 9}
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), (0.9, 1.1, 2.5), atol=1e-6)
    np.testing.assert_allclose(affine[:3, 3], (-12.0, 30.0, 45.0), atol=1e-6)
    np.testing.assert_allclose(affine[:3, :3] / (0.9, 1.1, 2.5), np.diag([-1, -1, 1]) @ _oblique_direction(),
                               atol=1e-6)
    # The voxel at column 4, row 6, slice 2 sits where ITK says it does, in RAS.
    lps = image.TransformIndexToPhysicalPoint((4, 6, 2))
    np.testing.assert_allclose(affine @ [4, 6, 2, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-6)
    assert data[4, 6, 2] == volume_zyx[2, 6, 4]


def test_a_map_written_like_a_series_overlays_it(tmp_path, volume_zyx):
    folder = write_series(_image(volume_zyx), tmp_path / "series", "1.2.826.0.1.3680043.2.1125.102")
    vol = load_volume(folder)
    out = save_like(vol.data > 600, vol, tmp_path / "mask.nii.gz")
    written = nib.load(out)
    np.testing.assert_allclose(written.affine, vol.native_affine, atol=1e-5)
    assert written.shape == vol.native_shape
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"102_{k:03d}.dcm" for k in range(9))  # input untouched


def test_a_folder_of_two_series_is_one_line_naming_both(tmp_path, volume_zyx):
    folder = tmp_path / "mixed"
    write_series(_image(volume_zyx), folder, "1.2.826.0.1.3680043.2.1125.201", "T1 MPRAGE")
    write_series(_image(volume_zyx[:5], spacing=(1.0, 1.0, 3.0)), folder, "1.2.826.0.1.3680043.2.1125.202",
                 "FLAIR axial")
    assert [s["uid"] for s in list_series(folder)] == ["1.2.826.0.1.3680043.2.1125.201",
                                                        "1.2.826.0.1.3680043.2.1125.202"]
    with pytest.raises(DatasetError) as err:
        load_volume(folder)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(folder))
    assert "holds 2 DICOM series" in message
    assert "1.2.826.0.1.3680043.2.1125.201 'T1 MPRAGE' (9 files)" in message
    assert "1.2.826.0.1.3680043.2.1125.202 'FLAIR axial' (5 files)" in message

    result = CliRunner().invoke(main, ["preprocess", str(folder), "--out", str(tmp_path / "prep"),
                                       "--steps", "reorient,normalize"])
    assert result.exit_code == 1
    assert "holds 2 DICOM series" in result.output and "FLAIR axial" in result.output


def test_a_series_with_a_missing_slice_is_refused(tmp_path, volume_zyx):
    folder = write_series(_image(volume_zyx), tmp_path / "gap", "1.2.826.0.1.3680043.2.1125.301")
    (folder / "301_004.dcm").unlink()
    with pytest.raises(DimensionError, match="not evenly spaced.*a missing slice"):
        load_volume(folder)


def test_an_empty_folder_is_no_series(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no readable DICOM series"):
        read_dicom_series(tmp_path / "empty")


def _demo_as_series(demo_data, tmp_path):
    """The first demo test subject's FLAIR as a DICOM series (int16, intensities scaled by 1000)."""
    subject = discover(demo_data).split("test").subjects[0]
    img = nib.load(subject.image("flair"))
    data = np.round(np.asarray(img.dataobj, dtype=np.float32) / max(float(np.max(img.dataobj)), 1e-6) * 1000)
    image = sitk.GetImageFromArray(data.astype(np.int16).transpose(2, 1, 0))
    affine = img.affine
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    flip = np.diag([-1.0, -1.0, 1.0])
    image.SetSpacing(tuple(float(z) for z in zooms))
    image.SetOrigin(tuple(float(v) for v in flip @ affine[:3, 3]))
    image.SetDirection(tuple(float(v) for v in (flip @ (affine[:3, :3] / zooms)).ravel()))
    return write_series(image, tmp_path / "flair_series", "1.2.826.0.1.3680043.2.1125.401", "FLAIR"), affine


def test_detect_and_preprocess_take_a_series_folder(tmp_path, trained_run, demo_data):
    folder, affine = _demo_as_series(demo_data, tmp_path)
    out = tmp_path / "detections"
    result = CliRunner().invoke(main, ["detect", str(folder), "--model", str(trained_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "flair_series" / "detection.json").read_text())
    assert record["input"] == str(folder.resolve())
    lesions = nib.load(out / "flair_series" / "flair_series_lesions.nii.gz")
    np.testing.assert_allclose(lesions.affine, affine, atol=1e-4)  # the series' own grid and orientation

    prep = tmp_path / "prep"
    result = CliRunner().invoke(main, ["preprocess", str(folder), "--out", str(prep), "--steps", "reorient,normalize",
                                       "--modality", "flair"])
    assert result.exit_code == 0, result.output
    manifest = discover(prep)
    assert manifest.ids == ["flair_series"]
    written = nib.load(manifest.subjects[0].image("flair"))
    assert written.shape == nib.load(out / "flair_series" / "flair_series_anomaly.nii.gz").shape


def test_a_manifest_cell_may_name_a_series_folder(tmp_path, volume_zyx):
    write_series(_image(volume_zyx), tmp_path / "scans" / "s01_t1", "1.2.826.0.1.3680043.2.1125.501")
    (tmp_path / "manifest.csv").write_text("subject,t1\ns01,scans/s01_t1\n")
    subject = discover(tmp_path / "manifest.csv").subjects[0]
    assert subject.image("t1") == tmp_path / "scans" / "s01_t1"
    assert load_volume(subject.image("t1")).native_shape == (13, 11, 9)  # columns, rows, slices
