"""Calibration voxels weighted to the brains' axial profile (``tfuad calibrate --weighting position``).

Healthy calibration slices of lesioned brains are their tumour-free top and bottom; a threshold meets
every slice of a test brain. Position weights make the calibration voxels stand for the whole brain's
profile, so that a limit set on them holds on whole brains where the score depends on position.
"""
import csv

import numpy as np
import pytest
from helpers import cli

from tfuad.data.layouts import discover
from tfuad.data.splits import prepare_split, split_subjects
from tfuad.detection.detector import Detector
from tfuad.errors import ArrayError
from tfuad.postprocessing import fpr_key, fpr_thresholds, position_weights
from tfuad.postprocessing.thresholds import POSITION_BINS, Calibration
from tfuad.workflows.calibrate import calibration_weights, healthy_values


def _brain(slices=20, pad=5):
    brain = np.zeros((4, 4, slices + 2 * pad), bool)
    brain[1:3, 1:3, pad:pad + slices] = True  # two slices per bin
    return brain


def test_weights_give_the_brains_profile_and_coverage():
    brain = _brain()
    healthy = np.zeros_like(brain)
    healthy[:, :, 5:9] = healthy[:, :, 21:25] = True  # healthy slices only at the ends: bins 0, 1, 8, 9
    (weights,), coverage = position_weights([brain], [healthy])
    assert coverage == pytest.approx(0.4)
    # each covered bin holds 0.1 of the brain and 0.25 of the healthy voxels
    assert weights == pytest.approx(np.full(weights.size, 0.1 / 0.25))
    healthy[:, :, 5] = False  # bin 0 now half as covered: its voxels count twice as much as the others
    (weights,), _ = position_weights([brain], [healthy])
    bins = np.broadcast_to((np.arange(brain.shape[2]) - 5) // 2, brain.shape)[brain & healthy]
    assert weights[bins == 0] == pytest.approx(2 * weights[bins != 0][0])
    assert weights.sum() == pytest.approx(weights.size * 0.4)  # the voxel count times the coverage
    (whole,), coverage = position_weights([brain], [brain])
    assert coverage == 1.0 and whole == pytest.approx(1.0)  # whole brains need no weighting
    # the profile is each volume's own: a shorter brain's bins are its own tenths
    (a, b), coverage = position_weights([brain, _brain(slices=10, pad=2)], [brain, _brain(slices=10, pad=2)])
    assert coverage == 1.0 and np.allclose(np.concatenate([a, b]), 1.0)


def test_weighted_limit_holds_on_whole_brains_where_scores_depend_on_position():
    """Scores higher in the upper half, which calibration sees thinly: the weighted limit holds there."""
    rng = np.random.default_rng(0)
    brain = np.ones((40, 40, 20), bool)
    upper = np.arange(20) >= 10
    healthy = np.zeros_like(brain)
    healthy[:, :, ~upper] = True
    healthy[:, :, [10, 12, 14, 16, 18]] = True  # one slice of each upper bin: a third of the healthy voxels

    def scores():
        return rng.normal(0.0, 1.0, brain.shape) + 1.5 * upper[None, None, :]

    calib = scores()
    (weights,), coverage = position_weights([brain], [healthy], bins=POSITION_BINS)
    assert coverage == 1.0
    plain = fpr_thresholds(calib[healthy], (0.05,))[0.05]
    weighted = fpr_thresholds(calib[healthy], (0.05,), weights=weights)[0.05]
    test = scores()
    reached = {name: float((test[brain] > t).mean()) for name, t in (("plain", plain), ("weighted", weighted))}
    assert reached["plain"] > 0.07  # the thin upper half pulls the plain threshold down
    assert reached["weighted"] == pytest.approx(0.05, abs=0.01)


def test_masks_are_checked():
    with pytest.raises(ArrayError, match="differ in shape"):
        position_weights([np.ones((2, 2, 3), bool)], [np.ones((2, 2, 4), bool)])
    with pytest.raises(ArrayError, match="no calibration voxel"):
        position_weights([np.ones((2, 2, 3), bool)], [np.zeros((2, 2, 3), bool)])
    with pytest.raises(ArrayError, match="bins must be"):
        position_weights([np.ones((2, 2, 3), bool)], [np.ones((2, 2, 3), bool)], bins=0)


@pytest.fixture()
def lesioned_calibration(demo_data, tmp_path):
    """The demo dataset with its first lesioned test subject calibrating: its healthy slices are partial."""
    rows = list(csv.DictReader(open(demo_data / "manifest.csv", newline="", encoding="utf-8")))
    for row in rows:
        for column in ("t1", "t2", "flair", "brain_mask", "lesion_mask"):
            if row[column]:
                row[column] = str(demo_data / row[column])
        row["healthy"] = "no" if row["lesion_mask"] else "yes"
        if row["subject"] == "sub-test000":
            row["split"] = "calib"
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_calibrate_weighting_position(run, lesioned_calibration):
    result = cli("calibrate", run, "--data", lesioned_calibration, "--method", "intensity", "--weighting", "position",
                 check=True)
    assert "position weighting: the healthy slices cover" in result.output
    cal = Calibration.from_json(run / "calibration-intensity.json")
    assert cal.extra["weighting"] == "position" and 0 < cal.extra["position_coverage"] <= 1

    det = Detector(run, "intensity", calibrated=False)
    calib = prepare_split(split_subjects(discover(lesioned_calibration), "calib"), "flair", det.pconfig, det.stats,
                          log=lambda _: None)[0]
    assert any(p.training_indices(det.pconfig).size < p.brain.shape[0] for p in calib)
    volume_values, slice_values = healthy_values(det, calib)
    weights = calibration_weights(calib, det.pconfig)
    assert weights["volume"].shape == volume_values.shape and weights["slice"].shape == slice_values.shape
    assert weights["coverage"] == cal.extra["position_coverage"]
    for f in (0.01, 0.05, 0.1):
        key = fpr_key(f)
        expected = fpr_thresholds(volume_values, (f,), weights=weights["volume"])[f]
        assert cal.thresholds[key] == pytest.approx(expected, rel=1e-6)
        slice_expected = fpr_thresholds(slice_values, (f,), weights=weights["slice"])[f]
        assert cal.extra["slice_thresholds"][key] == pytest.approx(slice_expected, rel=1e-6)
        curve = cal.extra["fpr_curve"]
        at = curve["fpr"].index(f)
        assert curve["volume_threshold"][at] == cal.thresholds[key]
        assert curve["slice_threshold"][at] == cal.extra["slice_thresholds"][key]

    cli("calibrate", run, "--data", lesioned_calibration, "--method", "intensity", check=True)
    plain = Calibration.from_json(run / "calibration-intensity.json")
    assert plain.extra["weighting"] == "none" and "position_coverage" not in plain.extra
    assert plain.thresholds["fpr@0.05"] == fpr_thresholds(volume_values, (0.05,))[0.05]
    assert plain.thresholds["fpr@0.05"] != cal.thresholds["fpr@0.05"]


def test_calibrate_rejects_an_unknown_weighting(run, demo_data):
    result = cli("calibrate", run, "--data", demo_data, "--weighting", "slices")
    assert result.exit_code != 0 and "'slices' is not one of" in result.output
