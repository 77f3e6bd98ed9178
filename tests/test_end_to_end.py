"""The whole pipeline on the demo data: train → calibrate → detect → evaluate, through the CLI."""
import csv
import json

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from tfuad.cli.main import main
from tfuad.data.layouts import discover
from tfuad.data.preprocessing import brain_mask_from_image


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_run_directory_holds_what_is_needed_later(trained_run):
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"] == "sae" and config["data"]["modality"] == "flair"
    assert config["preprocess"]["image_size"] == 64
    assert config["model_kwargs"]["base_filters"] == 8
    assert (trained_run / "model.keras").is_file()
    rows = list(csv.DictReader((trained_run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])
    cal = json.loads((trained_run / "calibration-residual.json").read_text())
    t = cal["thresholds"]
    assert t["fpr@0.01"] >= t["fpr@0.05"] >= t["fpr@0.1"]
    assert any((trained_run / "logs").rglob("*tfevents*"))
    assert cal["postprocess"]["median_size"] == 5 and cal["postprocess"]["min_component_size"] == 6


def test_calibrated_post_processing_is_reused_by_detection(tmp_path, trained_run, demo_data):
    import shutil

    from tfuad.detection.detector import Detector

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    _run("calibrate", run, "--data", demo_data, "--method", "intensity", "--median-size", "3", "--erosion", "1")
    det = Detector(run, "intensity")
    assert (det.postprocess.median_size, det.postprocess.erosion_iterations) == (3, 1)
    assert Detector(run, "residual").postprocess.median_size == 5


def test_detect_writes_maps_that_overlay_the_input(tmp_path, trained_run, demo_data):
    subject = discover(demo_data).split("test").subjects[0]
    image = subject.image("flair")
    out = tmp_path / "det"
    _run("detect", image, "--model", trained_run, "--out", out, "--fpr", 0.05)
    src = nib.load(image)
    sid = f"{subject.id}_flair"  # a file's subject id is its name without extension
    for name in ("anomaly", "lesions"):
        img = nib.load(out / sid / f"{sid}_{name}.nii.gz")
        assert img.shape == src.shape
        np.testing.assert_allclose(img.affine, src.affine, atol=1e-6)
    lesions = nib.load(out / sid / f"{sid}_lesions.nii.gz").get_fdata()
    anomaly = nib.load(out / sid / f"{sid}_anomaly.nii.gz").get_fdata()
    assert set(np.unique(lesions)) <= {0.0, 1.0}
    brain = brain_mask_from_image(src.get_fdata())  # what detect uses without --brain-mask
    assert anomaly[brain].any() and not anomaly[~brain].any()  # nothing outside the brain
    assert (out / sid / f"{sid}_overview.png").stat().st_size > 1000
    record = json.loads((out / sid / "detection.json").read_text())
    assert record["lesion_voxels"] == int(lesions.sum()) and record["input"] == str(image.resolve())
    assert nib.load(image).get_fdata().std() > 0  # the input is untouched


def test_evaluate_writes_the_report_and_beats_chance(tmp_path, trained_run, demo_data):
    out = tmp_path / "report"
    result = _run("evaluate", "--model", trained_run, "--data", demo_data, "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    methods = {m["method"]: m for m in summary["methods"]}
    assert set(methods) == {"residual", "intensity"}
    assert summary["modality"] == "flair" and len(summary["subjects"]) == 2
    # Each row records the precision its network ran at (the calibrated one); a threshold has no network.
    calibrated = json.loads((trained_run / "calibration-residual.json").read_text())["extra"]["precision"]
    assert methods["residual"]["precision"] == calibrated and methods["intensity"]["precision"] is None
    # A trained model separates lesions from healthy brain far better than a random map (AUROC 0.5).
    assert methods["residual"]["auroc"] > 0.75, methods["residual"]["auroc"]
    for m in methods.values():
        assert 0 <= m["dice"]["fpr@0.05"]["mean"] <= 1
        assert m["best_dice"]["mean"] >= m["dice"]["fpr@0.05"]["mean"] - 1e-9
    rows = list(csv.DictReader((out / "per_subject.csv").open()))
    assert len(rows) == 4
    assert "| method | AUROC |" in (out / "summary.md").read_text(encoding="utf-8")
    # The demo dataset's report breaks the results down by lesion type (test000 MS-like, test001 tumour-like).
    groups = {(g["group"], g["method"]): g for g in summary["by_lesion_type"]}
    assert set(groups) == {(k, m) for k in ("ms", "tumour") for m in ("residual", "intensity")}
    assert all(g["subjects"] == 1 and 0.0 <= g["auroc"] <= 1.0 for g in groups.values())
    ms_row = next(r for r in rows if r["subject"] == "sub-test000" and r["method"] == "residual")
    assert groups["ms", "residual"]["auroc"] == pytest.approx(float(ms_row["auroc"]))
    assert "| bright: MS-like lesions | 1 | residual |" in (out / "summary.md").read_text(encoding="utf-8")
    assert "intensity baseline" in result.output
    for png in ("roc_pr.png", "dice_vs_lesion_size.png", "examples.png"):
        assert (out / png).stat().st_size > 1000
