"""Slice- and subject-level detection scores, labels and AUROC/AP on hand-made volumes."""
import math

import numpy as np
import pytest

from tfuad.metrics import (
    MetricInputError,
    sample_auc,
    sample_level_auc,
    slice_labels,
    slice_scores,
    volume_label,
    volume_score,
)
from tfuad.metrics.sample import reduction


def _volume():
    """2x2x3 map: slice 0 holds 1..4, slice 1 holds 10, 20, 30, 40, slice 2 is outside the brain."""
    score = np.zeros((2, 2, 3))
    score[..., 0] = [[1, 2], [3, 4]]
    score[..., 1] = [[10, 20], [30, 40]]
    score[..., 2] = np.nan                      # outside the brain: never read
    brain = np.ones((2, 2, 3), bool)
    brain[..., 2] = False
    return score, brain


@pytest.mark.parametrize("reduce, expected", [
    ("max", [4.0, 40.0]),
    ("mean", [2.5, 25.0]),
    ("p50", [2.5, 25.0]),
    ("p100", [4.0, 40.0]),
    ("p99", [3.97, 39.7]),                      # rank 0.99 * 3 = 2.97 between the 3rd and 4th values
    ("top50%", [3.5, 35.0]),                    # mean of the top 2 of 4
    ("top1%", [4.0, 40.0]),                     # at least one voxel
])
def test_slice_scores_reductions_by_hand(reduce, expected):
    score, brain = _volume()
    out = slice_scores(score, brain, reduce=reduce)
    assert out[:2] == pytest.approx(expected)
    assert math.isnan(out[2])                   # no brain voxel: no score


def test_slice_scores_brain_mask_axis_and_callable():
    score, brain = _volume()
    brain[1, 1, 1] = False                      # drop the 40
    assert slice_scores(score, brain, reduce="max")[1] == 30.0
    along0 = slice_scores(score[..., :2], reduce="max", axis=0)   # rows: (1, 2, 10, 20) and (3, 4, 30, 40)
    assert along0.tolist() == [20.0, 40.0]
    assert slice_scores(score[..., :2], reduce=np.median).tolist() == [2.5, 25.0]


def test_slice_labels_and_volume_labels():
    truth = np.zeros((3, 3, 4), bool)
    truth[0, 0, 1] = True                       # slice 1: one lesion voxel
    truth[:2, :2, 3] = True                     # slice 3: four
    assert slice_labels(truth).tolist() == [False, True, False, True]
    assert slice_labels(truth, min_voxels=2).tolist() == [False, False, False, True]
    assert slice_labels(truth, axis=0).tolist() == [True, True, False]
    assert volume_label(truth) is True and volume_label(truth, min_voxels=6) is False
    assert volume_label(np.zeros((2, 2, 2))) is False


def test_volume_score():
    score, brain = _volume()
    assert volume_score(score, brain, reduce="max") == 40.0
    assert volume_score(score, brain, reduce="top25%") == pytest.approx((40 + 30) / 2)   # ceil(0.25 * 8) = 2
    assert math.isnan(volume_score(score[..., 2:], brain[..., 2:]))


def test_sample_auc_by_hand():
    # ranking 0.8(+) 0.4(-) 0.35(+) 0.1(-): 3 of 4 pairs right; AP = 1/2 * 1 + 1/2 * 2/3
    r = sample_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert r["auroc"] == pytest.approx(0.75) and r["ap"] == pytest.approx(5 / 6)
    assert (r["n"], r["positives"], r["n_undefined"]) == (4, 2, 0)
    one_class = sample_auc([0.1, 0.2], [1, 1])
    assert math.isnan(one_class["auroc"]) and math.isnan(one_class["ap"]) and one_class["note"]


def test_sample_level_auc_over_subjects():
    # subject A: lesion in slice 1 where the map is high; subject B: lesion in slice 0 where the map is low
    truth_a = np.zeros((2, 2, 2), bool)
    truth_a[0, 0, 1] = True
    map_a = np.zeros((2, 2, 2))
    map_a[..., 1] = 5.0
    truth_b = np.zeros((2, 2, 2), bool)
    truth_b[0, 0, 0] = True
    map_b = np.zeros((2, 2, 2))
    map_b[..., 0] = 1.0
    map_b[..., 1] = 3.0
    r = sample_level_auc([map_a, map_b], [truth_a, truth_b], reduce="max")
    # slices: A0 (0, -), A1 (5, +), B0 (1, +), B1 (3, -): positive/negative pairs right: (5>0, 5>3, 1>0) = 3 of 4
    assert r["auroc"] == pytest.approx(0.75) and r["n"] == 4 and r["positives"] == 2
    assert r["level"] == "slice" and r["reduce"] == "max"
    healthy = np.zeros((2, 2, 2), bool)
    subj = sample_level_auc([map_a, map_b, np.zeros((2, 2, 2))], [truth_a, truth_b, healthy],
                            level="subject", reduce="max")
    # subject scores 5, 3, 0 with labels +, +, -: perfect
    assert subj["auroc"] == 1.0 and subj["n"] == 3


@pytest.mark.parametrize("call", [
    lambda: reduction("p0"),
    lambda: reduction("top150%"),
    lambda: reduction("median"),
    lambda: slice_scores(np.zeros((2, 2)), np.zeros((2, 3))),
    lambda: slice_scores(np.full((2, 2), np.nan)),
    lambda: slice_scores(np.zeros((2, 2)), axis=2),
    lambda: slice_labels(np.zeros((2, 2)), min_voxels=0),
    lambda: sample_auc([0.1, np.inf], [0, 1]),
    lambda: sample_level_auc([np.zeros((2, 2))], [np.zeros((2, 2))], level="voxel"),
])
def test_bad_input_raises_typed_error(call):
    with pytest.raises(MetricInputError):
        call()
