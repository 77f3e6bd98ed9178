"""Precision through the command line: stored with the run and the calibration, enforced at detection."""
import json

from helpers import cli

from tfuad.data.layouts import discover


def test_a_bfloat16_run_is_calibrated_and_detected_at_its_precision(tmp_path, demo_data):
    run = tmp_path / "run"
    trained = cli("train", "sae", "--data", demo_data, "--out", run, "--epochs", 1, "--image-size", 32,
                  "--batch-size", 16, "--precision", "mixed_bfloat16", "--no-augment", "--figure-every", 0,
                  "-O", "base_filters=8", "-O", "max_filters=16")
    assert trained.exit_code == 0, trained.output
    assert json.loads((run / "config.json").read_text())["training"]["precision"] == "mixed_bfloat16"
    calibrated = cli("calibrate", run, "--data", demo_data, "--median-size", 3)
    assert calibrated.exit_code == 0, calibrated.output
    stored = json.loads((run / "calibration-residual.json").read_text())["extra"]
    assert stored["precision"] == "mixed_bfloat16"

    image = discover(demo_data).split("test").subjects[0].image("flair")
    ok = cli("detect", image, "--model", run, "--out", tmp_path / "ok")
    assert ok.exit_code == 0, ok.output
    refused = cli("detect", image, "--model", run, "--out", tmp_path / "bad", "--precision", "float32")
    assert refused.exit_code == 1
    assert "calibration-residual.json: the thresholds were calibrated with mixed_bfloat16 networks" in \
        refused.output
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
