"""The post-processing study (``benchmarks/postprocessing.py``) measures what the pipeline measures.

Its ``paper`` variant must reproduce ``tfuad calibrate``'s thresholds and ``tfuad evaluate``'s
per-subject numbers, and the other variants must differ from it, so its table compares pipelines.
"""
import csv

import pytest
from helpers import cli, load_script

from tfuad.data.layouts import discover
from tfuad.data.splits import labelled_test_subjects, prepare_split, split_subjects
from tfuad.detection.detector import Detector

METHODS = ("residual", "intensity")


@pytest.fixture(scope="module")
def study():
    return load_script("postprocessing")


@pytest.fixture(scope="module")
def report(trained_run, demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "report"
    cli("evaluate", "--model", trained_run, "--data", demo_data, "--out", out, "--method", "residual", check=True)
    with open(out / "per_subject.csv", newline="") as f:
        return {(r["subject"], r["method"]): r for r in csv.DictReader(f)}


def test_paper_variant_is_the_pipeline_and_the_others_differ(study, trained_run, demo_data, report):
    dataset = discover(demo_data)
    detectors = {m: Detector(trained_run, m) for m in METHODS}
    det = detectors["residual"]
    configs = study.variant_configs(["paper", "none", "median3"])
    preps = prepare_split(split_subjects(dataset, "calib"), "flair", det.pconfig, det.stats, log=lambda _: None)[0]
    thresholds = study.calibrate_fold(detectors, preps, configs)
    for method, d in detectors.items():
        stored = d.calibration().thresholds
        for fpr in study.FPRS:
            key = study._key(fpr)
            assert thresholds[method]["paper"][key] == pytest.approx(stored[key], rel=1e-6)
        assert thresholds[method]["none"]["fpr@0.05"] != pytest.approx(stored["fpr@0.05"], rel=1e-3)

    subjects = labelled_test_subjects(dataset, lambda _: None)
    assert subjects
    cases = {}
    for subject in subjects:
        prep = det.prepare(subject.image("flair"), brain_mask_path=subject.brain_mask,
                           lesion_mask_path=subject.lesion_mask)
        cases[subject.id] = scores = study.score_subject(detectors, prep, configs, thresholds)
        for method in METHODS:
            row = report[(subject.id, method)]
            for measure in ("auroc", "dice@fpr@0.05", "fpr@fpr@0.05"):
                assert scores[method]["paper"][measure] == pytest.approx(float(row[measure]), abs=1e-6)
            assert scores[method]["none"]["auroc"] != pytest.approx(scores[method]["paper"]["auroc"], abs=1e-6)
    means = study.summarise(cases, METHODS, list(configs))
    for method in METHODS:
        expected = sum(float(report[(s, method)]["auroc"]) for s in cases) / len(cases)
        assert means[method]["paper"]["auroc"] == pytest.approx(expected, abs=1e-6)
