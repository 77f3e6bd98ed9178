"""``tfuad crossval``: every labelled case tested once by a model that never saw it, one merged report."""
import json

from helpers import cli

from tfuad.data.layouts import discover

#: The tiny spatial AE of the other end-to-end tests (tests/conftest.py).
TINY_SAE = ("-O", "base_filters=8", "-O", "max_filters=16")


def test_crossval_tests_each_case_once_with_models_that_never_saw_it(tmp_path, demo_data):
    out = tmp_path / "cv"
    args = ("crossval", "sae", "--data", demo_data, "--out", out, "--folds", 2, "--epochs", 1, "--image-size", 32,
            "--batch-size", 16, "--no-augment", "--figure-every", 0, "--resamples", 200, *TINY_SAE)
    first = cli(*args)
    assert first.exit_code == 0, first.output
    labelled = sorted(s.id for s in discover(demo_data) if s.lesion_mask is not None)
    folds = json.loads((out / "folds.json").read_text())["folds"]
    tested = sorted(r["subject"] for r in folds if r["split"] == "test")
    assert tested == labelled  # each labelled case exactly once
    for i in (0, 1):
        test_ids = {r["subject"] for r in folds if r["fold"] == i and r["split"] == "test"}
        config = json.loads((out / f"fold-{i}" / "config.json").read_text())
        seen = config["data"]["train_subjects"] + config["data"]["val_subjects"]
        calibrated = json.loads((out / f"fold-{i}" / "calibration-residual.json").read_text())["subject_ids"]
        assert not any(sid in path for sid in test_ids for path in seen + calibrated)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert sorted(summary["subjects"]) == labelled and summary["folds"] == 2
    assert [m["method"] for m in summary["methods"]] == ["residual", "intensity"]
    assert summary["methods"][0]["bootstrap"]["resamples"] == 200

    calibration = out / "fold-0" / "calibration-residual.json"
    stamp = calibration.stat().st_mtime_ns
    again = cli(*args)  # a rerun resumes: nothing is trained or calibrated again
    assert again.exit_code == 0, again.output
    assert calibration.stat().st_mtime_ns == stamp
    assert json.loads((out / "report" / "summary.json").read_text())["subjects"] == summary["subjects"]

    other = cli(*args[:-len(TINY_SAE)], *TINY_SAE, "--fold-seed", 5)
    assert other.exit_code == 1 and "folds.json: this folder holds a cross-validation with other folds" in \
        other.output
