"""tfuad preprocess: registration, brain extraction, standardisation through the pipeline, batch faults."""
import gzip
import json

import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner

from tfuad.cli.main import main
from tfuad.data.layouts import discover
from tfuad.data.nifti import load_mask, load_volume, save_volume
from tfuad.data.standardize import landmarks
from tfuad.metrics.segmentation import dice
from tfuad.preprocess import Job, PreprocessOptions, run_batch
from tfuad.preprocess.io import from_sitk, to_sitk
from tfuad.preprocess.registration import register, resample, transform_from_record, transform_record
from tfuad.preprocess.template import load_template


def _points(transform, points):
    return np.array([transform.TransformPoint(tuple(float(v) for v in p)) for p in points])


def test_sitk_round_trip_keeps_world_coordinates():
    affine = np.array([[0.0, 0, 2, -98], [-2, 0, 0, 117], [0, 2, 0, -117], [0, 0, 0, 1]])  # IXI-like PSR
    data = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    image = to_sitk(data, affine)
    back, back_affine = from_sitk(image)
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(back_affine, affine, atol=1e-9)
    ras = affine @ np.array([1, 2, 3, 1.0])
    lps = image.TransformIndexToPhysicalPoint((1, 2, 3))
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-9)


def test_registration_recovers_a_known_affine():
    tpl = load_template(2)
    fixed = to_sitk(tpl.image, tpl.affine)
    known = sitk.AffineTransform(3)
    angle = np.deg2rad(6.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    known.SetMatrix(tuple((rotation @ np.diag([1.06, 0.96, 1.03])).ravel()))
    known.SetTranslation((6.0, -5.0, 4.0))
    known.SetCenter((0.0, -18.0, 18.0))
    moving = resample(fixed, fixed, known)  # moving(x) = template(known(x))
    transform, record = register(moving, fixed, to_sitk(tpl.mask, tpl.affine))
    # moving(T(x)) = template(x) needs known(T(x)) = x for brain points x
    brain = np.argwhere(tpl.mask)[::50]
    world = brain @ tpl.affine[:3, :3].T + tpl.affine[:3, 3]
    lps = world * np.array([-1.0, -1.0, 1.0])
    error = np.linalg.norm(_points(known, _points(transform, lps)) - lps, axis=1)
    assert error.mean() < 1.0, (error.mean(), record)
    assert error.max() < 2.5
    rebuilt = transform_from_record(json.loads(json.dumps(transform_record(transform))))
    np.testing.assert_allclose(_points(rebuilt, lps[:20]), _points(transform, lps[:20]), atol=1e-4)


def test_brain_extraction_matches_the_demo_mask(tmp_path):
    from tfuad.data.demo import make_demo_dataset

    ds = discover(make_demo_dataset(tmp_path / "demo", seed=5, n_train=1, n_calib=0, n_test=1))
    lesioned = [s for s in ds.subjects if s.lesion_mask]
    jobs = [Job(s.id, str(s.image("t1")), lesion_mask=str(s.lesion_mask))
            for s in lesioned]  # brain mask withheld: it must be found
    options = PreprocessOptions(steps=("reorient", "register", "extract", "resample", "normalize"))
    result = run_batch(jobs, tmp_path / "out", options, progress=False)
    assert not result.failed
    out = discover(tmp_path / "out")
    assert out.layout == "manifest" and out.modalities == ["t1"]
    for subject in lesioned:
        truth_volume = load_volume(subject.brain_mask)
        found_path = tmp_path / "out" / subject.id / f"{subject.id}_brainmask.nii.gz"
        found_volume = load_volume(found_path)
        np.testing.assert_allclose(found_volume.affine, truth_volume.affine, atol=1e-6)  # both on the MNI grid
        score = dice(found_volume.data > 0, truth_volume.data > 0)
        assert score >= 0.9, (subject.id, score)
        record = json.loads((tmp_path / "out" / subject.id / "preprocess.json").read_text())
        assert [s["name"] for s in record["steps"]] == ["reorient", "register", "resample", "extract", "normalize"]
        assert record["versions"]["SimpleITK"] == sitk.Version_VersionString()
        assert "ras_matrix" in record["steps"][1]["transform"]
    seg = tmp_path / "out" / lesioned[0].id / f"{lesioned[0].id}_seg.nii.gz"
    # the lesion follows the image's transform (nearest neighbour): about the same size, inside the brain
    # found for the same subject, near its place before registration (the demo subjects are smoothly
    # deformed, so the affine registration moves them by a few voxels; it is also multi-threaded)
    carried, known = load_volume(seg).data > 0, load_volume(lesioned[0].lesion_mask).data > 0
    brain = load_volume(tmp_path / "out" / lesioned[0].id / f"{lesioned[0].id}_brainmask.nii.gz").data > 0
    assert 0.5 < carried.sum() / known.sum() < 1.5, (int(carried.sum()), int(known.sum()))
    assert (carried & brain).sum() >= 0.9 * carried.sum()
    shift = np.linalg.norm(np.argwhere(carried).mean(0) - np.argwhere(known).mean(0))
    assert shift < 5.0, shift  # voxels (10 mm)
    assert (tmp_path / "out" / "qc_montage.png").stat().st_size > 0


def _brain_volume():
    """A skull-stripped T1-like volume on the template grid (brain = its non-zero voxels) and the template."""
    from tfuad.data.preprocessing import brain_mask_from_image

    tpl = load_template(2)
    brain = brain_mask_from_image(tpl.mask)
    rng = np.random.default_rng(1)
    image = np.where(brain, 100.0 + 800.0 * tpl.image + rng.normal(0, 5, tpl.shape), 0.0)
    return image.astype(np.float32), brain, tpl


def test_standardisation_maps_a_scaled_copy_onto_the_reference_landmarks(tmp_path):
    image, brain, tpl = _brain_volume()
    save_volume(image, tpl.affine, tmp_path / "in" / "a.nii.gz")
    save_volume(np.where(brain, 3.0 * image + 200.0, 0.0), tpl.affine, tmp_path / "in" / "b.nii.gz")
    steps = ("reorient", "normalize")
    fit = PreprocessOptions(steps=steps, standardize="fit", normalize="none")
    result = run_batch([Job("a", str(tmp_path / "in" / "a.nii.gz"))], tmp_path / "ref", fit, progress=False)
    assert not result.failed
    reference = json.loads((tmp_path / "ref" / "standardizer.json").read_text())
    apply = PreprocessOptions(steps=steps, standardize="apply", normalize="none",
                              standardizer=str(tmp_path / "ref" / "standardizer.json"))
    result = run_batch([Job("b", str(tmp_path / "in" / "b.nii.gz"))], tmp_path / "test", apply, progress=False)
    assert not result.failed
    for folder, subject in (("ref", "a"), ("test", "b")):
        volume = load_volume(tmp_path / folder / subject / f"{subject}_t1.nii.gz")
        brain = load_mask(tmp_path / folder / subject / f"{subject}_brainmask.nii.gz", volume)
        marks = landmarks(volume.data[brain], reference["percentiles"])
        np.testing.assert_allclose(marks, reference["standard"], atol=1e-3)
    a = load_volume(tmp_path / "ref" / "a" / "a_t1.nii.gz").data
    b = load_volume(tmp_path / "test" / "b" / "b_t1.nii.gz").data
    np.testing.assert_allclose(a, b, atol=1e-4, err_msg=str(np.abs(a - b).max()))
    assert not np.allclose(a, image)


def test_a_corrupt_subject_is_reported_and_the_others_finish(tmp_path):
    image, _, tpl = _brain_volume()
    inputs = tmp_path / "in"
    for name in ("good1", "good2"):
        save_volume(image, tpl.affine, inputs / f"{name}.nii.gz")
    raw = (inputs / "good1.nii.gz").read_bytes()
    (inputs / "bad.nii.gz").write_bytes(raw[: len(raw) // 3])
    (inputs / "nan.nii.gz").write_bytes(gzip.compress(b"not a nifti file"))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["preprocess", *[str(p) for p in sorted(inputs.iterdir())], "--out", str(out),
                                       "--steps", "reorient,normalize", "--jobs", "2"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("subject ")]
    assert sorted(line.split(":")[0] for line in lines) == ["subject bad", "subject nan"]
    assert all(str(inputs) in line for line in lines)
    ds = discover(out)
    assert ds.ids == ["good1", "good2"]
    assert (out / "qc" / "good1.png").is_file() and not (out / "qc" / "bad.png").exists()
    assert "2 of 4 subjects" in result.output


def test_options_refuse_inconsistent_steps():
    from tfuad.errors import ConfigError

    with pytest.raises(ConfigError, match="register"):
        PreprocessOptions(steps=("extract", "resample"))
    with pytest.raises(ConfigError, match="standardize"):
        PreprocessOptions(steps=("standardize",))
