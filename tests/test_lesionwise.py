"""Lesion-wise detection: components, the matching rule, precision/recall/F1 and undefined cases."""
import math

import numpy as np
import pytest

from tfuad.metrics import MetricInputError, label_components, lesion_detection, lesion_table


def _three_lesions():
    truth = np.zeros((12, 12, 12), bool)
    truth[0:2, 0:2, 0:2] = True          # lesion 1: 8 voxels
    truth[5:8, 5:8, 5:8] = True          # lesion 2: 27 voxels
    truth[11, 11, 11] = True             # lesion 3: 1 voxel
    return truth


def test_counts_precision_recall_f1_by_hand():
    truth = _three_lesions()
    pred = np.zeros_like(truth)
    pred[1, 1, 1:4] = True               # component 1: touches lesion 1 (one voxel inside)
    pred[6, 6, 6] = True                 # component 2: inside lesion 2
    pred[0, 10, 0] = True                # component 3: nowhere near a lesion
    pred[10, 0, 10:12] = True            # component 4: nowhere near a lesion
    r = lesion_detection(pred, truth)
    assert (r["true_lesions"], r["detected_lesions"], r["missed_lesions"]) == (3, 2, 1)
    assert (r["predicted_components"], r["true_positive_components"], r["false_positive_components"]) == (4, 2, 2)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["precision"] == pytest.approx(2 / 4)
    assert r["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))    # 4/7


def test_one_component_over_two_lesions_detects_both():
    truth = np.zeros((1, 1, 7), bool)
    truth[0, 0, 0:2] = True
    truth[0, 0, 4:6] = True
    pred = np.zeros_like(truth)
    pred[0, 0, 1:5] = True               # bridges the gap
    r = lesion_detection(pred, truth)
    assert (r["true_lesions"], r["predicted_components"]) == (2, 1)
    assert r["recall"] == 1.0 and r["precision"] == 1.0 and r["f1"] == 1.0


def test_connectivity_26_versus_6():
    truth = np.zeros((3, 3, 3), bool)
    truth[0, 0, 0] = truth[1, 1, 1] = True    # touch by a corner only
    assert label_components(truth)[1].tolist() == [2]                 # 26-connected: one lesion
    assert label_components(truth, connectivity=1)[1].tolist() == [1, 1]
    pred = np.zeros_like(truth)
    pred[0, 0, 0] = True
    assert lesion_detection(pred, truth)["recall"] == 1.0
    assert lesion_detection(pred, truth, connectivity=1)["recall"] == 0.5


def test_min_overlap_fraction():
    truth = np.zeros((6, 6, 6), bool)
    truth[1:4, 1:4, 1:4] = True          # one lesion of 27 voxels
    pred = np.zeros_like(truth)
    pred[1, 1, 1:4] = True               # component of 3 voxels, all inside the lesion
    pred[3, 3, 3:6] = True               # component of 3 voxels, 1 inside the lesion at (3, 3, 3)
    assert label_components(pred)[1].tolist() == [3, 3]
    r0 = lesion_detection(pred, truth)
    assert r0["recall"] == 1.0 and r0["true_positive_components"] == 2 and r0["f1"] == 1.0
    r_half = lesion_detection(pred, truth, min_overlap=0.5)
    # lesion: 4 of 27 voxels covered < 13.5 -> missed; first component 3/3 -> TP; second 1/3 -> FP
    assert r_half["detected_lesions"] == 0 and r_half["recall"] == 0.0
    assert r_half["true_positive_components"] == 1 and r_half["false_positive_components"] == 1
    assert r_half["precision"] == 0.5 and r_half["f1"] == 0.0
    r_tenth = lesion_detection(pred, truth, min_overlap=0.1)
    # 4 >= 0.1 * 27 and 1 >= max(1, 0.1 * 3)
    assert r_tenth["recall"] == 1.0 and r_tenth["true_positive_components"] == 2


def test_undefined_and_zero_cases():
    truth = _three_lesions()
    nothing = np.zeros_like(truth)
    r = lesion_detection(nothing, nothing)
    assert math.isnan(r["precision"]) and math.isnan(r["recall"]) and math.isnan(r["f1"])
    missed = lesion_detection(nothing, truth)
    assert missed["recall"] == 0.0 and math.isnan(missed["precision"]) and missed["f1"] == 0.0
    false_alarm = lesion_detection(truth, nothing)
    assert false_alarm["precision"] == 0.0 and math.isnan(false_alarm["recall"]) and false_alarm["f1"] == 0.0


def test_lesion_table_sizes_volumes_and_detection():
    truth = _three_lesions()
    pred = np.zeros_like(truth)
    pred[6, 6, 5:8] = True
    rows = lesion_table(pred, truth, spacing=(1.0, 1.0, 2.0))
    assert [(r["lesion"], r["voxels"], r["volume_mm3"], r["covered_voxels"], r["detected"]) for r in rows] == [
        (1, 8, 16.0, 0, False), (2, 27, 54.0, 3, True), (3, 1, 2.0, 0, False)]


@pytest.mark.parametrize("call", [
    lambda t: lesion_detection(t, t[:-1]),
    lambda t: lesion_detection(t * 3, t),
    lambda t: lesion_detection(t, t, connectivity=0),
    lambda t: lesion_detection(t, t, min_overlap=1.5),
    lambda t: lesion_table(t, t, spacing=(1, 1)),
])
def test_bad_input_raises_typed_error(call):
    with pytest.raises(MetricInputError):
        call(_three_lesions())
