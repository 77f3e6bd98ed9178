"""The calibration-transfer study (``benchmarks/calibration_transfer.py``) measures what the pipeline measures.

Its ``slices`` variant must reproduce ``tfuad calibrate``'s thresholds and ``tfuad evaluate``'s
Dice and FPR; its other variants must be what they say: weights that give the whole brain's axial
profile (``tfuad calibrate --weighting position``, tested in ``test_calibration_weighting.py``), and a
per-volume normalisation that leaves each volume's ranking as it was.
"""
import csv

import numpy as np
import pytest
from helpers import cli, load_script

from tfuad.data.layouts import discover
from tfuad.data.splits import labelled_test_subjects, prepare_split, split_subjects
from tfuad.detection.detector import Detector
from tfuad.metrics.segmentation import auc_scores
from tfuad.postprocessing.filters import PostprocessConfig, erode_mask

METHODS = ("residual", "intensity")


@pytest.fixture(scope="module")
def study():
    return load_script("calibration_transfer")


def test_normalise_is_monotone_per_volume_and_robust(study):
    rng = np.random.default_rng(0)
    config = PostprocessConfig()
    brain = np.zeros((20, 20, 20), bool)
    brain[2:18, 2:18, 2:18] = True
    score = rng.gamma(2.0, 1.0, brain.shape).astype(np.float32)
    norm = study.normalise(score, brain, config)
    inside = erode_mask(brain, config.erosion_iterations)
    assert np.median(norm[inside]) == pytest.approx(0.0, abs=1e-6)
    q25, q75 = np.percentile(norm[inside], (25, 75))
    assert q75 - q25 == pytest.approx(1.0, rel=1e-5)
    order = np.argsort(score[inside])
    assert (np.diff(norm[inside][order]) >= 0).all()  # the ranking inside the brain is kept
    assert np.allclose(study.normalise(3 * score + 7, brain, config), norm, atol=1e-5)  # affine-invariant
    assert norm[~inside].max() <= norm[inside].min()


def test_slices_variant_is_the_pipeline(study, trained_run, demo_data, tmp_path):
    dataset = discover(demo_data)
    detectors = {m: Detector(trained_run, m) for m in METHODS}
    det = detectors["residual"]
    variants = list(study.VARIANTS)
    preps = prepare_split(split_subjects(dataset, "calib"), "flair", det.pconfig, det.stats, log=lambda _: None)[0]
    calibration = study.calibrate_fold(detectors, preps, variants)
    thresholds = calibration["thresholds"]
    assert 0 < calibration["coverage"] <= 1
    for method, d in detectors.items():
        stored = d.calibration().thresholds
        for fpr in study.FPRS:
            key = study._key(fpr)
            assert thresholds[method]["slices"][key] == pytest.approx(stored[key], rel=1e-6)
        assert thresholds[method]["subject"]["fpr@0.05"] != pytest.approx(stored["fpr@0.05"], rel=1e-3)

    out = tmp_path / "report"
    cli("evaluate", "--model", trained_run, "--data", demo_data, "--out", out, "--method", "residual",
        "--method", "intensity", check=True)
    with open(out / "per_subject.csv", newline="") as f:
        report = {(r["subject"], r["method"]): r for r in csv.DictReader(f)}
    subjects = labelled_test_subjects(dataset, lambda _: None)
    assert subjects
    for subject in subjects:
        prep = det.prepare(subject.image("flair"), brain_mask_path=subject.brain_mask,
                           lesion_mask_path=subject.lesion_mask)
        scores, voxels = study.score_subject(detectors, prep, variants, thresholds)
        truth = prep.lesion_mask.astype(bool)[prep.brain_mask.astype(bool)]
        for method in METHODS:
            row = report[(subject.id, method)]
            for measure in ("dice@fpr@0.05", "fpr@fpr@0.05", "fpr@fpr@0.01"):
                assert scores[method]["slices"][measure] == pytest.approx(float(row[measure]), abs=1e-6)
            for region in ("far", "beside", "near"):
                measure = f"fpr_{region}@fpr@0.05"
                expected, mine = float(row[measure]), scores[method]["slices"][measure]
                assert mine == pytest.approx(expected, abs=1e-6) or (np.isnan(mine) and np.isnan(expected))
            # the per-volume normalisation keeps the subject's AUROC
            raw, norm = voxels[method]["raw"], voxels[method]["norm"]
            assert auc_scores(norm, truth)[0] == pytest.approx(auc_scores(raw, truth)[0], abs=2e-3)
