"""Where the false positives lie: the regions of healthy voxels and their FPR in every report."""
import math

import numpy as np
import pytest

from tfuad.errors import ArrayError
from tfuad.metrics.segmentation import FPR_REGIONS, false_positive_rate, false_positive_regions, rate_in
from tfuad.reports.tables import Bootstrap, method_summary, subject_row, transfer_table


def _volume():
    truth = np.zeros((20, 20, 40), bool)
    truth[8:12, 8:12, 18:22] = True            # a 4 mm cube, slices 18-21
    brain = np.zeros_like(truth)
    brain[2:18, 2:18, 2:38] = True
    truth &= brain
    return truth, brain


def test_regions_partition_the_healthy_brain_and_follow_their_definitions():
    truth, brain = _volume()
    regions = false_positive_regions(truth, brain, spacing=(1.0, 1.0, 1.0), near_mm=3.0, margin=3)
    assert tuple(regions) == FPR_REGIONS
    total = sum(r.astype(int) for r in regions.values())
    np.testing.assert_array_equal(total, (brain & ~truth).astype(int))   # a partition of the healthy brain
    far_slices = np.flatnonzero(regions["far"].any(axis=(0, 1)))
    assert set(far_slices) == set(range(2, 15)) | set(range(25, 38))   # lesion slices 18-21 ± 3 are excluded
    # near: 3 mm around the cube, in 3D; a voxel 3 slices above the cube, over its centre, is near
    assert regions["near"][9, 9, 24] and not regions["near"][9, 9, 25]
    assert regions["beside"][3, 3, 19] and not regions["beside"][9, 9, 17]


def test_anisotropic_spacing_counts_millimetres():
    truth, brain = _volume()
    coarse = false_positive_regions(truth, brain, spacing=(1.0, 1.0, 3.0), near_mm=3.0, margin=0)
    assert coarse["near"][9, 9, 22] and not coarse["near"][9, 9, 23]   # one 3 mm slice away is near, two are not


def test_rate_in_regions_and_an_empty_region():
    truth, brain = _volume()
    pred = np.zeros_like(truth)
    pred[2:18, 2:18, 2] = True                                           # one far slice all positive
    regions = false_positive_regions(truth, brain, near_mm=3.0)
    assert rate_in(pred, regions["far"]) == pytest.approx(1 / 26)
    assert rate_in(pred, regions["near"]) == 0.0
    assert math.isnan(rate_in(pred, np.zeros_like(pred)))
    no_lesion = false_positive_regions(np.zeros_like(truth), brain)
    assert not no_lesion["near"].any() and not no_lesion["beside"].any()
    assert no_lesion["far"].sum() == brain.sum()
    with pytest.raises(ArrayError, match="3D"):
        false_positive_regions(truth[..., 0], brain[..., 0])


def test_reports_carry_the_regional_fpr_and_the_transfer_table():
    truth, brain = _volume()
    rng = np.random.default_rng(0)
    score = rng.random(truth.shape) + 2.0 * truth
    score[9, 9, 23:26] += 5.0                                            # false positives right above the lesion
    thresholds = {"fpr@0.01": 2.5, "fpr@0.05": 2.2}

    def segment(m, t):
        return m > t

    row = subject_row("s", "residual", score, truth, brain, thresholds, segment, slices=40, seconds=1.0,
                      spacing=(1.0, 1.0, 1.0))
    pred = segment(score, 2.5)
    regions = false_positive_regions(truth, brain, spacing=(1.0, 1.0, 1.0), near_mm=10.0)
    for name in FPR_REGIONS:
        assert row[f"fpr_{name}@fpr@0.01"] == pytest.approx(rate_in(pred, regions[name]), nan_ok=True)
    assert math.isnan(row["fpr_beside@fpr@0.01"])   # no lesion-slice voxel lies 10 mm from this small brain's lesion
    assert row["fpr_near@fpr@0.01"] > 0 and row["fpr_far@fpr@0.01"] == 0
    assert row["fpr@fpr@0.01"] == pytest.approx(false_positive_rate(pred, truth, brain))
    summary = method_summary("residual", "residual", [row, dict(row, subject="t")], thresholds,
                             ([score, score], [truth, truth], [brain, brain]), bootstrap=Bootstrap(resamples=100))
    assert summary["fpr_near"]["fpr@0.01"]["mean"] == pytest.approx(row["fpr_near@fpr@0.01"])
    table = transfer_table([summary])
    assert table.count("\n| residual |") == 2 and "| 1% |" in table and "| 5% |" in table
