"""Dice, FPR/TPR, lesion detection, oracle Dice, pooled AUROC/AUPRC, summaries and curves."""
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from tfuad.metrics import (
    best_dice,
    dice,
    false_positive_rate,
    lesion_detection_rate,
    per_subject_metrics,
    pool_brain_voxels,
    pooled_auc,
    pr_points,
    roc_points,
    summarize,
    true_positive_rate,
)


def _hand_case():
    """4x4x1 volume: truth 4 voxels, pred 3 voxels, 2 of them correct; brain = all but one corner."""
    truth = np.zeros((4, 4, 1), bool)
    truth[0, 0:4, 0] = True
    pred = np.zeros((4, 4, 1), bool)
    pred[0, 0:2, 0] = True
    pred[2, 2, 0] = True
    brain = np.ones((4, 4, 1), bool)
    brain[3, 3, 0] = False
    return pred, truth, brain


def test_dice_hand_computed():
    pred, truth, _ = _hand_case()
    assert dice(pred, truth) == pytest.approx(2 * 2 / (3 + 4))
    assert dice(truth, truth) == 1.0
    assert dice(np.zeros_like(truth), truth) == 0.0
    assert math.isnan(dice(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 3), bool)))


def test_fpr_tpr_hand_computed():
    pred, truth, brain = _hand_case()
    # healthy brain voxels: 15 brain - 4 lesion = 11; one false positive at (2, 2)
    assert false_positive_rate(pred, truth, brain) == pytest.approx(1 / 11)
    assert true_positive_rate(pred, truth) == pytest.approx(2 / 4)
    assert math.isnan(true_positive_rate(pred, np.zeros_like(truth)))
    outside = pred.copy()
    outside[3, 3, 0] = True                            # outside the brain: not counted
    assert false_positive_rate(outside, truth, brain) == pytest.approx(1 / 11)


def test_lesion_detection_rate_hand_computed():
    truth = np.zeros((10, 10, 10), bool)
    truth[0:2, 0:2, 0:2] = True                        # lesion 1
    truth[5:7, 5:7, 5:7] = True                        # lesion 2
    truth[9, 9, 9] = True                              # lesion 3
    pred = np.zeros_like(truth)
    pred[1, 1, 1] = True                               # hits lesion 1
    pred[9, 9, 9] = True                               # hits lesion 3
    pred[3, 3, 3] = True                               # false positive
    assert lesion_detection_rate(pred, truth) == pytest.approx(2 / 3)
    diagonal = np.zeros((4, 4, 4), bool)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = True
    hit_one = np.zeros_like(diagonal)
    hit_one[0, 0, 0] = True
    assert lesion_detection_rate(hit_one, diagonal, connectivity=3) == 1.0
    assert lesion_detection_rate(hit_one, diagonal, connectivity=1) == 0.5
    assert math.isnan(lesion_detection_rate(pred, np.zeros_like(truth)))
    with pytest.raises(ValueError, match="connectivity"):
        lesion_detection_rate(pred, truth, connectivity=4)


def _brute_force_best_dice(scores, truth):
    return max(dice(scores > t, truth) for t in np.concatenate([[-np.inf], np.unique(scores)]))


@pytest.mark.parametrize("seed", range(5))
def test_best_dice_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random((6, 7, 8)) < 0.15
    scores = np.round(rng.random(truth.shape) + 0.6 * truth, 1)   # ties on purpose
    assert best_dice(scores, truth) == pytest.approx(_brute_force_best_dice(scores, truth), abs=1e-12)
    assert best_dice(truth.astype(float), truth) == 1.0
    assert math.isnan(best_dice(scores, np.zeros_like(truth)))


def test_pooled_auc_matches_sklearn():
    rng = np.random.default_rng(7)
    scores, truths, masks = [], [], []
    for shape in [(8, 9, 10), (7, 7, 7), (10, 6, 5)]:
        t = rng.random(shape) < 0.1
        scores.append(rng.normal(size=shape) + 1.5 * t)
        truths.append(t)
        masks.append(rng.random(shape) < 0.8)
    s_all = np.concatenate([s[m] for s, m in zip(scores, masks)])
    t_all = np.concatenate([t[m] for t, m in zip(truths, masks)])
    auroc, auprc = pooled_auc(scores, truths, masks)
    assert auroc == pytest.approx(roc_auc_score(t_all, s_all))
    assert auprc == pytest.approx(average_precision_score(t_all, s_all))
    assert 0.8 < auroc < 1.0
    pooled_scores, pooled_truth = pool_brain_voxels(scores, truths, masks)
    np.testing.assert_array_equal(pooled_scores, s_all)
    with pytest.raises(ValueError, match="one of each per subject"):
        pooled_auc(scores, truths[:2], masks)
    with pytest.raises(ValueError, match="both lesion and healthy"):
        pooled_auc([scores[0]], [np.zeros_like(truths[0])], [masks[0]])
    with pytest.raises(ValueError, match="shape mismatch"):
        pooled_auc([scores[0]], [truths[1]], [masks[0]])


def test_per_subject_metrics():
    rng = np.random.default_rng(3)
    shape = (12, 12, 12)
    truth = np.zeros(shape, bool)
    truth[3:7, 3:7, 3:7] = True
    brain = np.zeros(shape, bool)
    brain[1:11, 1:11, 1:11] = True
    score = rng.random(shape).astype(np.float32) + truth
    pred = score > 1.2
    m = per_subject_metrics(score, pred, truth, brain)
    assert m["dice"] == dice(pred, truth)
    assert m["fpr"] == 0.0
    assert m["tpr"] == pytest.approx(np.mean(score[truth] > 1.2))
    assert m["auroc"] == pytest.approx(roc_auc_score(truth[brain], score[brain]))
    assert m["auprc"] == pytest.approx(average_precision_score(truth[brain], score[brain]))
    assert m["best_dice"] == pytest.approx(1.0)
    assert m["lesion_detection_rate"] == 1.0
    assert (m["lesion_voxels"], m["predicted_voxels"]) == (64, int(pred.sum()))
    healthy = per_subject_metrics(score, pred, np.zeros(shape, bool), brain)
    assert healthy["fpr"] == pytest.approx(pred[brain].mean())
    for key in ("tpr", "auroc", "auprc", "best_dice", "lesion_detection_rate"):
        assert math.isnan(healthy[key])
    with pytest.raises(ValueError, match="shape mismatch"):
        per_subject_metrics(score, pred, truth, brain[:-1])
    with pytest.raises(ValueError, match="empty"):
        dice(np.zeros((0, 3)), np.zeros((0, 3)))


def test_summarize_reports_lesion_free_subjects_apart():
    rows = [
        {"subject": "a", "dice": 0.5, "fpr": 0.01, "tpr": 0.6, "lesion_voxels": 100, "predicted_voxels": 80},
        {"subject": "b", "dice": 0.8, "fpr": 0.02, "tpr": 0.9, "lesion_voxels": 300, "predicted_voxels": 290},
        {"subject": "c", "dice": 0.2, "fpr": 0.04, "tpr": 0.3, "lesion_voxels": 50, "predicted_voxels": 20},
        {"subject": "h", "dice": math.nan, "fpr": 0.03, "tpr": math.nan, "lesion_voxels": 0,
         "predicted_voxels": 40},
    ]
    s = summarize(rows)
    assert s["n_subjects"] == 4
    lesion = s["with_lesions"]
    assert lesion["n"] == 3 and lesion["subjects"] == ["a", "b", "c"]
    assert lesion["dice"]["mean"] == pytest.approx(np.mean([0.5, 0.8, 0.2]))
    assert lesion["dice"]["std"] == pytest.approx(np.std([0.5, 0.8, 0.2]))
    assert lesion["dice"]["n"] == 3
    assert lesion["fpr"]["mean"] == pytest.approx(np.mean([0.01, 0.02, 0.04]))
    free = s["without_lesions"]
    assert free["n"] == 1 and free["subjects"] == ["h"]
    assert free["fpr"]["mean"] == pytest.approx(0.03)
    assert free["predicted_voxels"]["mean"] == 40
    only_healthy = summarize(rows[3:])
    assert only_healthy["with_lesions"]["n"] == 0
    assert math.isnan(only_healthy["with_lesions"]["dice"]["mean"])
    with pytest.raises(ValueError, match="no per-subject rows"):
        summarize([])
    with pytest.raises(ValueError, match="lacks"):
        summarize([{"dice": 0.1}])


def test_curve_points_match_sklearn_and_subsample():
    rng = np.random.default_rng(11)
    truth = rng.random(300) < 0.2
    scores = rng.normal(size=300) + truth
    fpr, tpr = roc_points(scores, truth)
    ref_fpr, ref_tpr, _ = roc_curve(truth, scores)
    np.testing.assert_array_equal(fpr, ref_fpr)
    np.testing.assert_array_equal(tpr, ref_tpr)
    recall, precision = pr_points(scores, truth)
    ref_precision, ref_recall, _ = precision_recall_curve(truth, scores)
    np.testing.assert_array_equal(recall, ref_recall)
    np.testing.assert_array_equal(precision, ref_precision)

    truth = rng.random(200_000) < 0.05
    scores = rng.normal(size=truth.size) + truth
    fpr, tpr = roc_points(scores, truth, max_points=500)
    assert len(fpr) <= 500 and len(fpr) == len(tpr)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    recall, precision = pr_points(scores, truth, max_points=300)
    assert len(recall) <= 300 and recall[0] == 1.0 and recall[-1] == 0.0
    with pytest.raises(ValueError, match="max_points"):
        roc_points(scores, truth, max_points=1)
