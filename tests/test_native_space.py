"""tfuad detect --raw: a raw scan in, its anomaly map and lesion mask out on its own grid and affine.

The inverse transform is checked on its own (a known transform, a point mapped
there and back), then the whole command: a lesion put into a raw-looking scan
(rotated, shifted, 1.6 mm voxels, its axes in another order) at a known world
place must come back at that place in the native-space mask and map. A real
whole-head IXI scan checks the way through a registration.
"""
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import cli
from scipy import ndimage as ndi

from tfuad.errors import PreprocessStepError
from tfuad.preprocess.io import RAS_TO_LPS, from_sitk, to_sitk
from tfuad.preprocess.native import native_transform, preprocess_scan, to_native
from tfuad.preprocess.registration import resample, transform_record
from tfuad.preprocess.template import load_template


def _rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
    return r


def _raw_grid(shape, voxel: float, centre) -> np.ndarray:
    """A scanner-like grid: axes in P-S-R order, rotated 12° about z and 7° about x, centred on ``centre``."""
    psr = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    affine = np.eye(4)
    affine[:3, :3] = _rotation(2, 12.0) @ _rotation(0, 7.0) @ psr * voxel
    affine[:3, 3] = np.asarray(centre, float) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


def _world(affine, ijk) -> np.ndarray:
    return np.asarray(affine)[:3, :3] @ np.asarray(ijk, float) + np.asarray(affine)[:3, 3]


def _peak_world(array, affine) -> np.ndarray:
    return _world(affine, np.unravel_index(int(np.argmax(array)), array.shape))


# --------------------------------------------------------------------------- the inverse transform alone


def test_to_native_maps_a_point_there_and_back():
    template_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    template_affine[:3, 3] = (-30.0, -36.0, -30.0)
    spot = np.zeros((31, 37, 31), np.float32)
    spot[20, 12, 17] = 1.0
    spot = ndi.gaussian_filter(spot, 1.5)
    t_world = _world(template_affine, (20, 12, 17))
    # the registration result: template points -> subject points (LPS, as ITK)
    known = sitk.AffineTransform(3)
    known.SetMatrix(tuple((_rotation(2, 9.0) @ np.diag([1.05, 0.97, 1.02])).ravel()))
    known.SetTranslation((4.0, -6.0, 3.0))
    known.SetCenter((0.0, 0.0, 5.0))
    record = {"steps": [{"name": "register", "transform": json.loads(json.dumps(transform_record(known)))}]}
    transform = native_transform(record)
    s_world = RAS_TO_LPS @ np.asarray(known.TransformPoint(tuple(float(v) for v in RAS_TO_LPS @ t_world)))
    native_affine = _raw_grid((70, 60, 64), 1.3, (0.0, 0.0, 0.0))
    there = to_native(spot, template_affine, (70, 60, 64), native_affine, transform, interpolation="linear")
    assert there.dtype == np.float32 and there.shape == (70, 60, 64)
    assert np.linalg.norm(_peak_world(there, native_affine) - s_world) < 1.0  # one native voxel
    mask = to_native(spot > 0.5 * spot.max(), template_affine, (70, 60, 64), native_affine, transform,
                     interpolation="nearest")
    assert mask.dtype == bool and mask.any()
    assert np.linalg.norm(_world(native_affine, np.argwhere(mask).mean(axis=0)) - s_world) < 1.5
    # and back: the subject's map resampled onto the template grid through the registration itself
    back, _ = from_sitk(resample(to_sitk(there, native_affine), to_sitk(spot, template_affine), known))
    assert np.linalg.norm(_peak_world(back, template_affine) - t_world) < 2.0  # one template voxel
    assert not native_transform({"steps": [{"name": "resample"}]})  # no registration: identity


# --------------------------------------------------------------------------- the command, end to end


def _raw_scan_with_lesion(demo_data, path, *, radius: float = 8.0):
    """A demo FLAIR resampled onto a scanner-like grid, with a bright ball at a known world place."""
    source = nib.load(demo_data / "sub-calib000" / "sub-calib000_flair.nii.gz")
    data = np.asarray(source.get_fdata(), np.float32)
    shape = (120, 110, 130)
    affine = _raw_grid(shape, 1.6, (3.0, -20.0, 12.0))
    ijk = np.indices(shape).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:4]
    inverse = np.linalg.inv(source.affine)
    raw = ndi.map_coordinates(data, inverse[:3, :3] @ world + inverse[:3, 3:4], order=1).reshape(shape)
    centre = np.array([24.0, 20.0, 22.0])  # right frontal white matter (MNI mm)
    ball = (np.linalg.norm(world - centre[:, None], axis=0) <= radius).reshape(shape)
    raw[ball] = 3.0 * np.percentile(raw[raw > 0], 99.5)
    image = nib.Nifti1Image(raw.astype(np.float32), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    nib.save(image, path)
    return centre, ball


def test_the_run_records_the_preprocessing_of_its_training_data(raw_run):
    config = json.loads((raw_run / "config.json").read_text())
    record = config["raw_preprocess"]
    assert record["made_by"] == "tfuad preprocess"
    assert record["options"]["steps"] == ["reorient", "resample", "standardize", "normalize"]
    assert record["options"]["modality"] == "flair" and record["subjects"] == 4  # 3 train + 1 calib
    assert record["standardizer"]["method"] == "nyul" and len(record["standardizer"]["standard"]) == 11
    assert record["grid"]["shape"] == list(load_template(2).shape)


def test_a_lesion_in_a_raw_scan_comes_back_at_its_place(tmp_path, raw_run, demo_data):
    scan = tmp_path / "scanner_flair.nii.gz"
    centre, ball = _raw_scan_with_lesion(demo_data, scan)
    before = scan.read_bytes()
    out = tmp_path / "out"
    result = cli("detect", scan, "--raw", "--template-space", "--model", raw_run, "--out", out, "--method",
                 "intensity", "--fpr", 0.01)
    assert result.exit_code == 0, result.output
    assert scan.read_bytes() == before  # the input is never modified
    folder = out / "scanner_flair"
    raw = nib.load(scan)
    lesions = nib.load(folder / "scanner_flair_lesions.nii.gz")
    anomaly = nib.load(folder / "scanner_flair_anomaly.nii.gz")
    for image in (lesions, anomaly):  # on the input's own grid, with its affine and header codes
        assert image.shape == raw.shape
        np.testing.assert_allclose(image.affine, raw.affine, atol=1e-5)
        assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 2
    mask, score = np.asarray(lesions.dataobj) > 0, np.asarray(anomaly.dataobj, np.float32)
    # the map peaks at the lesion, and the lesion's component of the mask covers it and is centred on it
    assert np.linalg.norm(_peak_world(score, raw.affine) - centre) < 4.0
    labels, _ = ndi.label(mask)
    found = labels == np.bincount(labels[ball & mask]).argmax() if (ball & mask).any() else np.zeros_like(mask)
    assert (found & ball).sum() >= 0.6 * ball.sum(), (int((found & ball).sum()), int(ball.sum()))
    assert np.linalg.norm(_world(raw.affine, np.argwhere(found).mean(axis=0)) - centre) < 4.0
    # template-grid outputs on request, and the record of how the scan was brought home
    template = load_template(2)
    on_template = nib.load(folder / "scanner_flair_anomaly_template.nii.gz")
    np.testing.assert_allclose(on_template.affine, template.affine, atol=1e-5)
    assert np.linalg.norm(_peak_world(np.asarray(on_template.dataobj), template.affine) - centre) < 4.0
    record = json.loads((folder / "detection.json").read_text())
    assert record["space"] == "native+template"
    assert record["preprocess"]["steps"] == ["reorient", "resample", "standardize", "normalize"]
    assert record["preprocess"]["interpolation"] == {"anomaly": "linear", "lesions": "nearest"}
    assert all((folder / name).is_file() for name in record["outputs"].values())
    assert not list(out.glob(".*"))  # no scratch folder left


def test_a_raw_batch_names_each_bad_scan_on_one_line_and_finishes_the_others(tmp_path, raw_run, demo_data):
    good = tmp_path / "good.nii.gz"
    _raw_scan_with_lesion(demo_data, good)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[:5000])
    out = tmp_path / "out"
    result = cli("detect", truncated, good, "--raw", "--model", raw_run, "--out", out, "--method", "intensity")
    assert result.exit_code == 1
    bad = [line for line in result.output.splitlines() if "subject truncated: " in line]  # after a progress bar
    assert len(bad) == 1 and f"{truncated}: truncated or corrupt" in bad[0], result.output
    assert (out / "good" / "good_lesions.nii.gz").is_file() and not (out / "truncated").exists()
    assert result.output.strip().splitlines()[-1].startswith("Error: ") and "1 of 2 scans failed" in result.output


def test_raw_detection_needs_a_run_that_records_its_preprocessing(tmp_path, trained_run, demo_data):
    scan = demo_data / "sub-test000" / "sub-test000_flair.nii.gz"
    result = cli("detect", scan, "--raw", "--model", trained_run, "--out", tmp_path / "out")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "config.json" in lines[0] and "records no raw-scan preprocessing" in lines[0], lines
    assert not (tmp_path / "out").exists()
    result = cli("detect", scan, "--template-space", "--model", trained_run, "--out", tmp_path / "out")
    assert result.exit_code == 1 and "--template-space goes with --raw" in result.output


def test_a_scan_that_cannot_be_registered_is_named_in_one_line(tmp_path):
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((60, 60, 2)).astype(np.float32), np.eye(4)), flat)
    record = {"options": {"modality": "t1", "steps": ["reorient", "register", "extract", "resample", "normalize"]},
              "standardizer": None}
    with pytest.raises(PreprocessStepError) as caught:
        preprocess_scan(flat, "flat", record, tmp_path / "work")
    assert caught.value.step == "register" and caught.value.path == str(flat)
    message = str(caught.value)
    assert message.startswith(f"{flat}: cannot be registered to the template (SimpleITK: ") and "\n" not in message


def test_a_failing_step_is_named_in_the_typed_error_and_in_the_batch_line(tmp_path):
    """A brain of one intensity cannot be normalised: the error names the scan and the step, wherever it runs."""
    constant = tmp_path / "constant.nii.gz"
    data = np.zeros((12, 14, 10), np.float32)
    data[3:9, 4:10, 2:8] = 7.0
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), constant)
    record = {"options": {"modality": "t1", "steps": ["reorient", "normalize"]}, "standardizer": None}
    with pytest.raises(PreprocessStepError) as caught:
        preprocess_scan(constant, "constant", record, tmp_path / "work")
    assert caught.value.step == "normalize"
    assert str(caught.value).startswith(f"{constant}: intensity normalisation failed (brain intensities between "
                                        "percentiles (0.5, 99.5) are constant (7))")
    result = cli("preprocess", constant, "--out", tmp_path / "prep", "--steps", "reorient,normalize")
    assert result.exit_code == 1
    lines = [line[line.index("subject constant: "):] for line in result.output.splitlines()
             if "subject constant: " in line]  # after a progress bar
    assert lines == [f"subject constant: {caught.value}"], result.output


# --------------------------------------------------------------------------- a real whole-head scan


def test_a_lesion_in_a_whole_head_ixi_scan_comes_back_through_the_registration(tmp_path, shared_data):
    source = shared_data / "ixi_t1" / "IXI002-Guys-0828_T1.nii.gz"
    if not source.is_file():
        source = sorted((shared_data / "ixi_t1").glob("IXI*_T1.nii.gz"))[0]
    image = nib.load(source)
    data = np.asarray(image.get_fdata(), np.float32)
    head = np.argwhere(data > np.percentile(data, 75))
    spot = np.round(head.mean(axis=0)).astype(int) + np.array([8, 0, 6])  # inside the head, off its centre
    centre = _world(image.affine, spot)
    ijk = np.indices(data.shape).reshape(3, -1)
    world = image.affine[:3, :3] @ ijk + image.affine[:3, 3:4]
    ball = (np.linalg.norm(world - centre[:, None], axis=0) <= 7.0).reshape(data.shape)
    value = 3.0 * float(data.max())
    data[ball] = value
    scan = tmp_path / "ixi_lesion.nii.gz"
    nib.save(nib.Nifti1Image(data, image.affine, image.header), scan)
    record = {"options": {"modality": "t1", "steps": ["reorient", "register", "resample", "normalize"],
                          "normalize": "none"}, "standardizer": None}
    subject = preprocess_scan(scan, "ixi", record, tmp_path / "work")
    template = load_template(2)
    on_template = nib.load(tmp_path / "work" / "ixi" / "ixi_t1.nii.gz")
    np.testing.assert_allclose(on_template.affine, template.affine, atol=1e-5)
    found = np.asarray(on_template.dataobj) > 0.5 * value  # the ball, carried onto the template grid
    assert 0.5 * ball.sum() < found.sum() < 2.0 * ball.sum(), (int(found.sum()), int(ball.sum()))  # 2 mm both
    home = to_native(found, template.affine, data.shape, image.affine, native_transform(subject),
                     interpolation="nearest")
    assert home.any()
    assert np.linalg.norm(_world(image.affine, np.argwhere(home).mean(axis=0)) - centre) < 3.0
