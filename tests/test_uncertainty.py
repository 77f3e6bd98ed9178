"""Bootstrap intervals over subjects, pooled-AUC intervals and paired comparisons, on cases solved by hand."""
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tfuad.errors import ArrayError, TfuadError
from tfuad.metrics import MetricInputError, bootstrap_mean, bootstrap_pooled_auc, paired_comparison, weighted_auc


def test_bootstrap_mean_two_values_solved_by_hand():
    # Resampled means of [0.2, 0.6] are 0.2 (p=1/4), 0.4 (p=1/2), 0.6 (p=1/4).
    r = bootstrap_mean([0.2, 0.6], resamples=4000, seed=1)
    assert r["mean"] == pytest.approx(0.4)
    assert (r["low"], r["high"]) == pytest.approx((0.2, 0.6))        # 2.5th / 97.5th percentile
    narrow = bootstrap_mean([0.2, 0.6], resamples=4000, confidence=0.4, seed=1)
    assert (narrow["low"], narrow["high"]) == pytest.approx((0.4, 0.4))   # 30th / 70th percentile
    assert r["resamples"] == 4000 and r["seed"] == 1 and r["confidence"] == 0.95 and r["n"] == 2


def test_bootstrap_mean_undefined_values_and_small_n():
    r = bootstrap_mean([0.5, math.nan, 0.7, math.nan], resamples=500)
    assert r["n"] == 2 and r["n_undefined"] == 2 and r["mean"] == pytest.approx(0.6)
    one = bootstrap_mean([0.5, math.nan])
    assert one["mean"] == 0.5 and math.isnan(one["low"]) and math.isnan(one["high"]) and one["note"]
    none = bootstrap_mean([math.nan])
    assert math.isnan(none["mean"]) and none["n"] == 0 and none["note"]


def test_bootstrap_mean_is_reproducible_for_a_seed():
    values = np.linspace(0.1, 0.9, 17) ** 2
    a, b = bootstrap_mean(values, seed=7), bootstrap_mean(values, seed=7)
    assert (a["low"], a["high"]) == (b["low"], b["high"])
    c = bootstrap_mean(values, seed=8)
    assert (a["low"], a["high"]) != (c["low"], c["high"])
    assert a["low"] < a["mean"] < a["high"]


@pytest.mark.parametrize("kwargs, values", [
    ({"resamples": 0}, [1.0, 2.0]),
    ({"confidence": 1.0}, [1.0, 2.0]),
    ({"seed": -1}, [1.0, 2.0]),
    ({}, [1.0, math.inf]),
    ({}, ["a", "b"]),
])
def test_bootstrap_mean_refuses_bad_input(kwargs, values):
    with pytest.raises(MetricInputError) as err:
        bootstrap_mean(values, **kwargs)
    assert isinstance(err.value, TfuadError) and isinstance(err.value, ValueError) and isinstance(err.value, ArrayError)
    assert "\n" not in str(err.value)


def test_paired_comparison_all_better_solved_by_hand():
    a = [0.9, 0.8, 0.7, 0.6, 0.5]
    b = [0.8, 0.6, 0.4, 0.2, 0.0]          # differences 0.1 .. 0.5, all positive and distinct
    r = paired_comparison(a, b, resamples=2000, seed=0)
    assert r["n"] == 5 and r["mean_difference"] == pytest.approx(0.3)
    assert r["mean_a"] == pytest.approx(0.7) and r["mean_b"] == pytest.approx(0.4)
    assert r["fraction_le_0"] == 0.0                       # no resample can have a mean <= 0
    assert 0.1 <= r["low"] < 0.3 < r["high"] <= 0.5
    # exact signed-rank null: W- = 0 happens in 1 of 2^5 sign patterns; two-sided p = 2/32
    assert r["wilcoxon_statistic"] == 0.0
    assert r["wilcoxon_p"] == pytest.approx(2 / 32)
    assert r["zero_differences"] == 0 and r["note"] == ""


def test_paired_comparison_two_pairs_interval_and_sign_fraction():
    # differences -0.2 and +0.4: resampled means -0.2 (1/4), 0.1 (1/2), 0.4 (1/4)
    r = paired_comparison([0.3, 0.9], [0.5, 0.5], resamples=4000, seed=3)
    assert (r["low"], r["high"]) == pytest.approx((-0.2, 0.4))
    assert r["fraction_le_0"] == pytest.approx(0.25, abs=0.03)


def test_paired_comparison_zero_differences_and_ties():
    a = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.4]
    b = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.4 - 0.6]   # differences 0, .1, .2, .3, .4, .5, .6
    r = paired_comparison(a, b, seed=0)
    # the zero difference is dropped: 6 positive distinct differences, p = 2/2^6
    assert r["zero_differences"] == 1 and "zero" in r["note"]
    assert r["wilcoxon_p"] == pytest.approx(2 / 64)
    same = paired_comparison([0.3, 0.4, 0.5], [0.3, 0.4, 0.5])
    assert math.isnan(same["wilcoxon_p"]) and "zero" in same["note"]
    assert same["mean_difference"] == 0.0 and same["fraction_le_0"] == 1.0


def test_paired_comparison_small_n_and_undefined_pairs():
    r = paired_comparison([0.5, math.nan, 0.7], [0.4, 0.3, math.nan])
    assert r["n"] == 1 and r["n_undefined"] == 2
    assert r["mean_difference"] == pytest.approx(0.1)
    assert math.isnan(r["wilcoxon_p"]) and math.isnan(r["low"]) and r["note"]
    empty = paired_comparison([math.nan], [0.1])
    assert empty["n"] == 0 and math.isnan(empty["mean_difference"])
    with pytest.raises(MetricInputError):
        paired_comparison([0.1, 0.2], [0.1])


def test_paired_comparison_is_reproducible_for_a_seed():
    rng = np.random.default_rng(0)
    a, b = rng.random(12), rng.random(12)
    assert paired_comparison(a, b, seed=5) == paired_comparison(a, b, seed=5)
    assert paired_comparison(a, b, seed=5)["low"] != paired_comparison(a, b, seed=6)["low"]


def test_weighted_auc_hand_case_and_sklearn_with_weights_and_ties():
    # order: 0.8(+) 0.4(-) 0.35(+) 0.1(-): 3 of 4 pairs ranked right; AP = 1/2 * 1 + 1/2 * 2/3
    assert weighted_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx((0.75, 5 / 6))
    rng = np.random.default_rng(2)
    s = np.round(rng.random(3000), 1)                 # many ties
    y = rng.random(3000) < 0.2
    w = rng.random(3000) * 3
    w[:50] = 0
    auroc, ap = weighted_auc(s, y, w)
    assert auroc == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert ap == pytest.approx(average_precision_score(y, s, sample_weight=w), abs=1e-12)
    assert all(math.isnan(v) for v in weighted_auc([0.1, 0.2], [1, 1]))


def _two_opposite_subjects():
    # subject A ranks its lesion voxel first (AUROC 1), subject B ranks it last (AUROC 0)
    scores = [np.array([0.0, 1.0]), np.array([0.5, 0.6])]
    truths = [np.array([False, True]), np.array([True, False])]
    return scores, truths


def test_bootstrap_pooled_auc_solved_by_hand():
    scores, truths = _two_opposite_subjects()
    r = bootstrap_pooled_auc(scores, truths, resamples=3000, seed=0)
    # pooled: positives {1.0, 0.5}, negatives {0.0, 0.6}: 3 of 4 pairs right;
    # ranking 1.0(+) 0.6(-) 0.5(+) 0.0(-): AP = 1/2 * 1 + 1/2 * 2/3
    assert r["auroc"]["value"] == pytest.approx(0.75)
    assert r["auprc"]["value"] == pytest.approx(5 / 6)
    # resamples: AA (p=1/4): AUROC 1, AP 1; AB (1/2): 0.75, 5/6; BB (1/4): AUROC 0, AP 1/2
    assert (r["auroc"]["low"], r["auroc"]["high"]) == pytest.approx((0.0, 1.0))
    assert (r["auprc"]["low"], r["auprc"]["high"]) == pytest.approx((0.5, 1.0))
    narrow = bootstrap_pooled_auc(scores, truths, resamples=3000, confidence=0.4, seed=0)
    assert (narrow["auroc"]["low"], narrow["auroc"]["high"]) == pytest.approx((0.75, 0.75))
    assert r["n_subjects"] == 2 and r["resamples"] == 3000 and r["undefined_resamples"] == 0


def test_bootstrap_pooled_auc_brain_mask_and_reproducibility():
    scores, truths = _two_opposite_subjects()
    # a third voxel outside the brain would make every subject perfect if it counted
    masked_scores = [np.append(s, 9.0) for s in scores]
    masked_truths = [np.append(t, True) for t in truths]
    masks = [np.array([True, True, False])] * 2
    r = bootstrap_pooled_auc(masked_scores, masked_truths, masks, resamples=500, seed=4)
    assert r["auroc"]["value"] == pytest.approx(0.75)
    assert r == bootstrap_pooled_auc(masked_scores, masked_truths, masks, resamples=500, seed=4)


def test_bootstrap_pooled_auc_subsample_keeps_class_sizes():
    # every subject: 10 lesion voxels at 0.5 and 1000 healthy voxels at 1.0 (all ranked above):
    # AP = precision at the only lesion threshold = 10 / 1010, whatever subjects are drawn.
    score = np.concatenate([np.full(10, 0.5), np.full(1000, 1.0)])
    truth = np.arange(1010) < 10
    r = bootstrap_pooled_auc([score] * 3, [truth] * 3, resamples=200, seed=0, max_voxels_per_class=100)
    assert r["auprc"]["value"] == pytest.approx(10 / 1010)
    # kept voxels are weighted by class size / kept, so the prevalence stays 10 / 1010 (not 10 / 110)
    assert r["auprc"]["low"] == pytest.approx(10 / 1010) and r["auprc"]["high"] == pytest.approx(10 / 1010)
    assert r["auroc"]["value"] == 0.0 and r["max_voxels_per_class"] == 100


def test_bootstrap_pooled_auc_undefined_cases_and_errors():
    # only subject 0 has a lesion: resamples without it are undefined and counted
    scores = [np.array([0.1, 0.9]), np.array([0.2, 0.3]), np.array([0.4, 0.5])]
    truths = [np.array([0, 1]), np.array([0, 0]), np.array([0, 0])]
    r = bootstrap_pooled_auc(scores, truths, resamples=400, seed=0)
    assert 0 < r["undefined_resamples"] < 400 and r["note"]
    # (8/27 of resamples miss subject 0)
    assert r["undefined_resamples"] / 400 == pytest.approx(8 / 27, abs=0.08)
    one_class = bootstrap_pooled_auc([np.array([0.1, 0.2])], [np.array([0, 0])])
    assert math.isnan(one_class["auroc"]["value"]) and one_class["note"]
    with pytest.raises(MetricInputError):
        bootstrap_pooled_auc([np.zeros(3)], [np.zeros(4)])
    with pytest.raises(MetricInputError):
        bootstrap_pooled_auc([np.array([0.1, np.nan])], [np.array([0, 1])])
    with pytest.raises(MetricInputError):
        bootstrap_pooled_auc([np.zeros(2)], [np.zeros(2)], [np.zeros(2)] * 2)
    with pytest.raises(MetricInputError):
        bootstrap_pooled_auc([np.zeros(2)], [np.array([0, 2])])
