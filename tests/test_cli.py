"""The ``tfuad`` command: help texts, and one-line errors with non-zero exits for bad input."""
import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from tfuad.cli.main import main


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_lists_every_command():
    result = _run("--help")
    assert result.exit_code == 0
    for command in ("data", "train", "calibrate", "detect", "evaluate"):
        assert command in result.output


@pytest.mark.parametrize("command", ["train", "calibrate", "detect", "evaluate", "data"])
def test_every_command_explains_itself(command):
    result = _run(command, "--help")
    assert result.exit_code == 0 and len(result.output.splitlines()) > 8


def test_unknown_model_name(tmp_path):
    result = _run("train", "resnet", "--data", tmp_path, "--out", tmp_path / "run")
    assert result.exit_code != 0
    assert "'resnet' is not one of" in result.output and "anovaegan" in result.output


def test_dataset_that_is_not_a_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = _run("data", "info", tmp_path)
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and str(tmp_path) in error[0]


def test_train_refuses_a_foreign_non_empty_folder(tmp_path, demo_data):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    result = _run("train", "sae", "--data", demo_data, "--out", out, "--epochs", 1)
    assert result.exit_code == 1
    assert "is not empty and is not a tfuad run" in result.output
    assert (out / "thesis.tex").read_text(encoding="utf-8") == "precious"


def test_train_missing_modality(tmp_path, demo_data):
    result = _run("train", "sae", "--data", demo_data, "--modality", "t1ce", "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert "has no 't1ce' images" in result.output


def test_train_bad_model_option_is_one_line(tmp_path, demo_data):
    result = _run("train", "sae", "--data", demo_data, "--out", tmp_path / "r", "-O", "base_filters=-3")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "base_filters" in result.output


def test_detect_rejects_4d_input(tmp_path, trained_run):
    bad = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 3), np.float32), np.eye(4)), bad)
    result = _run("detect", bad, "--model", trained_run, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert f"Error: {bad}: 4D image" in result.output
    assert not (tmp_path / "out" / "bold").exists()


@pytest.mark.parametrize("model", ["dae", "dvae", "sae", "svae", "saegan", "anovaegan", "anogan"])
def test_cli_trains_every_baur_model_for_one_short_epoch(tmp_path, demo_data, model):
    out = tmp_path / model
    result = _run("train", model, "--data", demo_data, "--out", out, "--epochs", 1, "--image-size", 32,
                  "--batch-size", 64, "-O", "base_filters=4", "-O", "max_filters=8")
    assert result.exit_code == 0, result.output
    assert (out / "model.keras").is_file() and (out / "history.csv").is_file()
    assert "saved" in result.output.splitlines()[-1]


@pytest.mark.parametrize("model,options", [("vae", ()), ("gmvae", ("--clusters", 3))])
def test_cli_trains_the_chen_priors_for_one_short_epoch(tmp_path, demo_data, model, options):
    out = tmp_path / model
    result = _run("train", model, "--data", demo_data, "--out", out, "--epochs", 1, "--image-size", 32,
                  "--batch-size", 64, "-O", "filters=[4,8]", *options)
    assert result.exit_code == 0, result.output
    config = __import__("json").loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["preprocess"]["normalization"] == "zscore"  # Chen et al. z-score with fixed statistics
    assert set(config["intensity_stats"]) >= {"mean", "std"}
    if model == "gmvae":
        assert config["model_kwargs"]["clusters"] == 3
    assert (out / "model.keras").is_file()
