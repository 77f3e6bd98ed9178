"""Positive-part scoring (``residual-positive``, ``map-tv-positive``): only brighter-than-healthy counts."""
import json

import numpy as np
import pytest
import tensorflow as tf
from helpers import cli

from tfuad.data.layouts import discover
from tfuad.detection.detector import Detector
from tfuad.detection.methods import METHOD_NAMES, get_method, methods_for


def test_the_positive_part_in_numpy_and_in_a_graph_is_relu_of_the_difference():
    rng = np.random.default_rng(0)
    y, x = rng.normal(size=(2, 4, 4, 1)).astype(np.float32), rng.normal(size=(2, 4, 4, 1)).astype(np.float32)
    positive, absolute = get_method("residual-positive"), get_method("residual")
    for cls, expected in ((positive, np.maximum(y - x, 0)), (absolute, np.abs(y - x))):
        method = cls.__new__(cls)  # deviation needs no model
        np.testing.assert_array_equal(method.deviation(y, x), expected)
        np.testing.assert_allclose(method.deviation(tf.constant(y), tf.constant(x)).numpy(), expected)


def test_positive_methods_are_registered_but_not_part_of_method_all(trained_run):
    assert {"residual-positive", "map-tv-positive"} <= set(METHOD_NAMES)
    model = Detector(trained_run, "residual", calibrated=False).model
    assert "residual" in methods_for(model) and "residual-positive" not in methods_for(model)


def test_positive_residual_maps_are_the_bright_part_of_the_residual(trained_run, demo_data):
    subject = discover(demo_data).split("test").subjects[0]
    signed = Detector(trained_run, "residual", calibrated=False)
    prepared = signed.prepare(subject.image("flair"))
    absolute, estimate = signed.slice_maps(prepared.slices, prepared.brain)
    positive, same_estimate = Detector(trained_run, "residual-positive", calibrated=False).slice_maps(
        prepared.slices, prepared.brain)
    np.testing.assert_allclose(same_estimate, estimate, atol=1e-6)
    darker = prepared.slices < estimate
    assert darker.any() and (~darker).any()
    assert np.all(positive[darker] == 0)
    np.testing.assert_allclose(positive[~darker], absolute[~darker], atol=1e-6)


def test_calibrate_and_detect_with_the_positive_residual(run, demo_data, tmp_path):
    result = cli("calibrate", run, "--data", demo_data, "--method", "residual-positive")
    assert result.exit_code == 0, result.output
    positive = json.loads((run / "calibration-residual-positive.json").read_text())
    absolute = json.loads((run / "calibration-residual.json").read_text())
    # max(y − x̂, 0) ≤ |y − x̂| voxel by voxel, and the same (monotone) post-processing keeps that, so every
    # healthy quantile (threshold) is lower or equal.
    assert positive["postprocess"] == absolute["postprocess"]
    assert set(positive["thresholds"]) == set(absolute["thresholds"]) and len(positive["thresholds"]) >= 3
    for key, value in positive["thresholds"].items():
        assert value <= absolute["thresholds"][key] + 1e-6, key
    image = discover(demo_data).split("test").subjects[0].image("flair")
    out = tmp_path / "detect"
    result = cli("detect", image, "--model", run, "--method", "residual-positive", "--fpr", "0.05", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads(next(out.glob("*/detection.json")).read_text())
    assert record["method"] == "positive residual of SpatialAE"


def test_methods_that_differ_only_in_polarity_share_one_healthy_estimate(trained_run, demo_data):
    subject = discover(demo_data).split("test").subjects[0]
    fast = {"schedule": "fast", "max_steps": 2}
    absolute = Detector(trained_run, "map-tv", calibrated=False, lam=1.0, **fast)
    positive = Detector(trained_run, "map-tv-positive", calibrated=False, lam=1.0, **fast)
    other_lam = Detector(trained_run, "map-tv-positive", calibrated=False, lam=2.0, **fast)
    assert absolute.estimate_key() == positive.estimate_key() != other_lam.estimate_key()
    assert Detector(trained_run, "residual", calibrated=False).estimate_key() != absolute.estimate_key()
    assert Detector(trained_run, "intensity", calibrated=False).estimate_key() is None
    prepared = absolute.prepare(subject.image("flair"))
    shared = {}
    first = absolute.run_volume(prepared, shared=shared)
    second = positive.run_volume(prepared, shared=shared)
    assert len(shared) == 1 and second.restored is first.restored  # restored once, reused
    assert second.seconds == first.seconds  # the method's own cost, not the reuse's
    alone = positive.run_volume(prepared)  # restored again from scratch: the same map
    np.testing.assert_allclose(second.map, alone.map, atol=1e-5)
    np.testing.assert_allclose(second.slice_maps, np.where(prepared.brain, np.maximum(
        prepared.slices - first.restored, 0), 0), atol=1e-6)
    assert second.map.max() > 0 and np.all(second.slice_maps <= first.slice_maps + 1e-6)


def test_calibrating_both_polarities_together_searches_lambda_once_and_matches_alone(run, demo_data, tmp_path):
    """``calibrate --method map-tv --method map-tv-positive`` shares λ and the restorations, not the thresholds."""
    import shutil

    alone = tmp_path / "alone"
    shutil.copytree(run, alone)
    options = ("--schedule", "fast", "--max-steps", "2", "--lambdas", "0.5,1,2")
    together = cli("calibrate", run, "--data", demo_data, "--method", "map-tv", "--method", "map-tv-positive",
                   *options)
    assert together.exit_code == 0, together.output
    assert together.output.count("choosing λ") == 1, together.output
    assert "map-tv-positive: the settings chosen for map-tv" in together.output
    for method in ("map-tv", "map-tv-positive"):
        result = cli("calibrate", alone, "--data", demo_data, "--method", method, *options)
        assert result.exit_code == 0, result.output
        shared = json.loads((run / f"calibration-{method}.json").read_text())
        own = json.loads((alone / f"calibration-{method}.json").read_text())
        assert shared["method"] == own["method"] == method
        assert shared["extra"]["lambda"] == own["extra"]["lambda"]
        assert shared["extra"]["lambda_curve"] == pytest.approx(own["extra"]["lambda_curve"], rel=1e-4)
        assert shared["extra"]["schedule"] == own["extra"]["schedule"]
        assert shared["n_voxels"] == own["n_voxels"] > 0
        assert shared["thresholds"] == pytest.approx(own["thresholds"], rel=1e-4, abs=1e-6)
    absolute = json.loads((run / "calibration-map-tv.json").read_text())["thresholds"]
    positive = json.loads((run / "calibration-map-tv-positive.json").read_text())["thresholds"]
    assert all(positive[k] <= absolute[k] + 1e-6 for k in absolute) and positive != absolute
