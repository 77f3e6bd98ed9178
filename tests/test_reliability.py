"""Nothing lost, nothing overwritten, nothing escapes --out: detect, calibrate and evaluate as a
careless or hostile user meets them, through the command line."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
from helpers import cli

from tfuad.data.layouts import discover


@pytest.fixture(scope="module")
def test_image(demo_data):
    return discover(demo_data).split("test").subjects[0].image("flair")


def test_inputs_sharing_a_file_name_are_refused_before_any_output(tmp_path, trained_run, test_image):
    for sub in ("subA", "subB"):
        (tmp_path / sub).mkdir()
        shutil.copy2(test_image, tmp_path / sub / "flair.nii.gz")
    out = tmp_path / "out"
    result = cli("detect", tmp_path / "subA" / "flair.nii.gz", tmp_path / "subB" / "flair.nii.gz",
                 "--model", trained_run, "--out", out)
    assert result.exit_code == 1
    assert "subject id 'flair' is also the id of" in result.output and result.output.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


def test_dataset_outputs_are_named_by_subject_id(tmp_path, trained_run, demo_data):
    out = tmp_path / "out"
    result = cli("detect", demo_data, "--model", trained_run, "--out", out)
    assert result.exit_code == 0, result.output
    ids = discover(demo_data).ids
    assert sorted(p.name for p in out.iterdir()) == sorted(ids)
    for sid in ids:
        record = json.loads((out / sid / "detection.json").read_text())
        assert record["input"].endswith(f"{sid}_flair.nii.gz")  # the model's modality, not a default
        assert (out / sid / f"{sid}_lesions.nii.gz").is_file()


def test_detect_refuses_a_modality_other_than_the_models(tmp_path, trained_run, demo_data):
    result = cli("detect", demo_data, "--model", trained_run, "--out", tmp_path / "out", "--modality", "t2")
    assert result.exit_code == 1
    assert "trained on 'flair' images, not 't2'" in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_detect_never_replaces_what_it_did_not_write(tmp_path, trained_run, test_image):
    # --out is the input's own folder, which holds the user's earlier result under the subject's name
    folder = tmp_path / "data"
    folder.mkdir()
    image = folder / "sub-01.nii.gz"
    shutil.copy2(test_image, image)
    (folder / "sub-01").mkdir()
    mine = folder / "sub-01" / "sub-01_lesions.nii.gz"
    mine.write_bytes(b"the user's own segmentation")
    refused = cli("detect", image, "--model", trained_run, "--out", folder)
    assert refused.exit_code == 1 and "was not written by tfuad detect" in refused.output
    assert mine.read_bytes() == b"the user's own segmentation"

    (folder / "sub-01" / "notes.txt").write_text("keep me")
    forced = cli("detect", image, "--model", trained_run, "--out", folder, "--force")
    assert forced.exit_code == 0, forced.output
    assert nib.load(mine).shape == nib.load(image).shape  # replaced, as asked
    assert (folder / "sub-01" / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert image.is_file() and nib.load(image).get_fdata().std() > 0  # the input is untouched


def test_a_second_run_replaces_its_own_set_whole(tmp_path, trained_run, test_image):
    out = tmp_path / "out"
    assert cli("detect", test_image, "--model", trained_run, "--out", out, "--fpr", 0.01).exit_code == 0
    (sid,) = [p.name for p in out.iterdir()]
    stale = out / sid / "leftover.txt"
    stale.write_text("from an earlier set")
    assert cli("detect", test_image, "--model", trained_run, "--out", out, "--fpr", 0.1).exit_code == 0
    record = json.loads((out / sid / "detection.json").read_text())
    assert not stale.exists()  # the set is replaced whole: no file of an older run stays beside it
    assert record["threshold"] == json.loads((trained_run / "calibration-residual.json").read_text())[
        "thresholds"]["fpr@0.1"]
    assert [p.name for p in out.iterdir()] == [sid]  # no hidden staging folder left


def test_a_killed_detect_leaves_no_mixed_set_and_the_next_run_cleans_up(tmp_path, trained_run, test_image):
    out = tmp_path / "out"
    inputs = []
    for i in range(6):
        inputs.append(tmp_path / f"s{i}.nii.gz")
        shutil.copy2(test_image, inputs[-1])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "tfuad.cli.main", "detect", *map(str, inputs), "--model",
                             str(trained_run), "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill it while a set is being staged
        if out.is_dir() and any(p.name.endswith(".tmp") for p in out.iterdir()):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    expected = {"detection.json", "s{}_anomaly.nii.gz", "s{}_lesions.nii.gz", "s{}_overview.png"}
    for folder in out.iterdir():
        if folder.name.startswith("."):
            continue
        i = folder.name[1:]
        assert {p.name for p in folder.iterdir()} == {e.format(i) for e in expected}  # whole sets only
    rerun = cli("detect", *inputs, "--model", trained_run, "--out", out)
    assert rerun.exit_code == 0, rerun.output
    assert sorted(p.name for p in out.iterdir()) == [f"s{i}" for i in range(6)]  # staging folders are gone


def test_a_calibration_of_other_weights_is_refused(tmp_path, run, demo_data, test_image):
    resumed = cli("train", "sae", "--data", demo_data, "--out", run, "--epochs", 3, "--resume")
    assert resumed.exit_code == 0, resumed.output
    result = cli("detect", test_image, "--model", run, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "calibration-residual.json: was made for other weights" in result.output
    assert f"tfuad calibrate {run} --data DATASET --method residual" in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("fpr", ["0", "1", "1.5", "-0.1", "nan", "inf", "abc"])
def test_fpr_outside_zero_one_is_a_usage_error(tmp_path, trained_run, test_image, fpr):
    result = cli("detect", test_image, "--model", trained_run, "--out", tmp_path / "o", "--fpr", fpr)
    assert result.exit_code == 2 and "--fpr" in result.output and "Traceback" not in result.output


def test_a_corrupt_calibration_is_one_line(tmp_path, run, test_image):
    (run / "calibration-residual.json").write_text('{"method": "residual", "thresh')
    result = cli("detect", test_image, "--model", run, "--out", tmp_path / "o")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "calibration-residual.json" in result.output and "not" in result.output


@pytest.mark.parametrize("command", ["detect", "evaluate"])
def test_an_unwritable_out_is_one_line_before_any_work(trained_run, demo_data, test_image, command):
    out = "/proc/tfuad-cannot-write-here"
    args = ([test_image, "--model", trained_run, "--out", out] if command == "detect"
            else ["--model", trained_run, "--data", demo_data, "--out", out])
    result = cli(command, *args)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert f"Error: {out}: cannot write here" in result.output


def test_a_background_that_is_not_zero_gets_a_warning(tmp_path, trained_run, test_image):
    img = nib.load(test_image)
    shifted = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(img.get_fdata().astype(np.float32) + 5.0, img.affine), shifted)
    result = cli("detect", shifted, "--model", trained_run, "--out", tmp_path / "o")
    assert "warning:" in result.output and "covers 100% of the image" in result.output


def test_a_voxel_size_far_from_the_training_data_gets_a_warning(tmp_path, trained_run, test_image):
    img = nib.load(test_image)
    coarse = tmp_path / "coarse.nii.gz"
    affine = img.affine.copy()
    affine[:3, :3] *= 2.0  # the same voxels, said to be twice as large
    nib.save(nib.Nifti1Image(img.get_fdata().astype(np.float32), affine), coarse)
    config = json.loads((trained_run / "config.json").read_text())
    assert len(config["data"]["voxel_size"]) == 3
    result = cli("detect", coarse, "--model", trained_run, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "differs from the training data's" in result.output
    plain = cli("detect", test_image, "--model", trained_run, "--out", tmp_path / "p")
    assert "differs from the training data's" not in plain.output


def test_evaluate_never_calibrates_and_names_what_it_leaves_out(tmp_path, run, demo_data):
    (run / "calibration-intensity.json").unlink()
    before = sorted(p.name for p in run.iterdir())
    out = tmp_path / "report"
    result = cli("evaluate", "--model", run, "--data", demo_data, "--out", out, "--method", "residual",
                 "--method", "map-tv")
    assert result.exit_code == 0, result.output
    assert "leaving out map-tv" in result.output and "leaving out intensity" in result.output
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written into the run
    summary = json.loads((out / "summary.json").read_text())
    assert [m["method"] for m in summary["methods"]] == ["residual"]


def test_evaluate_any_labelled_folder_without_a_calibration_split(tmp_path, trained_run, demo_data):
    tested = discover(demo_data).split("test").subjects
    manifest = tmp_path / "labelled.csv"
    manifest.write_text("subject,flair,brain_mask,lesion_mask\n" + "".join(
        f"{s.id},{s.image('flair')},{s.brain_mask},{s.lesion_mask}\n" for s in tested))
    result = cli("evaluate", "--model", trained_run, "--data", manifest, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["subjects"] == [s.id for s in tested]


def test_commands_that_run_networks_print_no_framework_start_up_lines(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    done = subprocess.run([sys.executable, "-m", "tfuad.cli.main", "detect", str(run / "config.json"), "--model",
                           str(run), "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 1
    assert done.stdout == "" and done.stderr.splitlines() == [
        f"Error: {run / 'config.json'}: missing key 'model'; the run's config is incomplete"], done.stderr
