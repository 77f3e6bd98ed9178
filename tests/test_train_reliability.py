"""Training and preprocessing refuse what would destroy or misplace files, and say why on one line."""
import json
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from tfuad.cli.main import main

TINY = ("--image-size", "32", "--batch-size", "32", "-O", "base_filters=4", "-O", "max_filters=8")


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _train(data, out, *extra, model="sae", epochs=1):
    return _run("train", model, "--data", data, "--out", out, "--epochs", epochs, *TINY, *extra)


def _one_line_error(result, *needles):
    """The command failed with exactly one ``Error:`` line holding every needle, and no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, demo_data):
    """A spatial AE trained for one epoch at 32 px; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("reliability") / "run"
    result = _train(demo_data, out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_copy(tmp_path, tiny_run):
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    return out


# --------------------------------------------------------------------------- 1. --overwrite


def test_overwrite_refuses_a_folder_that_is_not_a_tfuad_run(tmp_path, demo_data):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "config.json").write_text('{"name": "x"}')
    (proj / "src" / "main.py").write_text("code")
    result = _train(demo_data, proj, "--overwrite")
    _one_line_error(result, "config.json", "not a tfuad run")
    assert (proj / "src" / "main.py").read_text(encoding="utf-8") == "code"
    assert json.loads((proj / "config.json").read_text()) == {"name": "x"}


def test_overwrite_removes_only_tfuad_files(run_copy, demo_data):
    (run_copy / "notes.txt").write_text("keep me")
    (run_copy / "analysis").mkdir()
    (run_copy / "analysis" / "table.csv").write_text("a,b")
    (run_copy / "calibration-residual.json").write_text("{}")  # the old run's calibration goes with it
    (run_copy / "lambda_curve.png").write_bytes(b"old")
    result = _train(demo_data, run_copy, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (run_copy / "notes.txt").read_text(encoding="utf-8") == "keep me"
    assert (run_copy / "analysis" / "table.csv").read_text(encoding="utf-8") == "a,b"
    assert not (run_copy / "calibration-residual.json").exists()
    assert not (run_copy / "lambda_curve.png").exists()
    assert (run_copy / "model.keras").is_file()
    assert "notes.txt" in result.output  # the kept entries are named


def test_overwrite_through_a_symbolic_link_is_refused(run_copy, demo_data, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(run_copy, target_is_directory=True)
    before = sorted(p.name for p in run_copy.iterdir())
    _one_line_error(_train(demo_data, link, "--overwrite"), "symbolic link")
    assert sorted(p.name for p in run_copy.iterdir()) == before


# --------------------------------------------------------------------------- 2. names in state.json


@pytest.mark.parametrize("absolute", [False, True])
def test_checkpoint_names_must_stay_in_the_checkpoint_folder(run_copy, demo_data, tmp_path, absolute):
    state_path = run_copy / "checkpoints" / "state.json"
    state = json.loads(state_path.read_text())
    victim = tmp_path / "victim.weights.h5"  # a loadable weights file outside the run
    shutil.copy(run_copy / "checkpoints" / state["weights"], victim)
    state["weights"] = str(victim) if absolute else "../../victim.weights.h5"
    state_path.write_text(json.dumps(state))
    _one_line_error(_train(demo_data, run_copy, "--resume", epochs=2), "state.json",
                    "cannot name an output folder or file")
    assert victim.is_file()


# --------------------------------------------------------------------------- 3. subject ids in preprocess


def test_preprocess_keeps_every_output_inside_out(tmp_path, demo_data):
    src = demo_data / "sub-train000"
    escape_abs = tmp_path / "abs-target"
    manifest = tmp_path / "in" / "manifest.csv"
    manifest.parent.mkdir()
    rows = ["subject,t1,brain_mask"]
    for sid in ("good", "../../escaped", str(escape_abs)):
        rows.append(f"{sid},{src / 'sub-train000_t1.nii.gz'},{src / 'sub-train000_brainmask.nii.gz'}")
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "deep" / "out"
    result = _run("preprocess", manifest, "--out", out, "--steps", "reorient,normalize")
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for sid in ("../../escaped", str(escape_abs)):
        lines = [line for line in result.output.splitlines() if line.startswith(f"subject {sid}:")]
        assert len(lines) == 1 and str(manifest) in lines[0] and "cannot name an output folder" in lines[0]
    assert not (tmp_path / "escaped").exists() and not escape_abs.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "in"]
    assert (out / "good" / "good_t1.nii.gz").is_file()  # the valid subject still finished
    assert (out / "manifest.csv").read_text(encoding="utf-8").count("\n") == 2


# --------------------------------------------------------------------------- 4. what a killed run leaves


def test_resume_removes_what_a_killed_run_left_behind(run_copy, demo_data):
    stale = [run_copy / "checkpoints" / ".epoch-0002.weights.h5.k3j2.weights.h5",
             run_copy / "checkpoints" / ".state.json.x81.json",
             run_copy / "checkpoints" / "epoch-0002.weights.h5",  # complete, but state.json never named it
             run_copy / ".model.keras.a1b2.keras", run_copy / ".history.csv.zz.csv"]
    for path in stale:
        path.write_bytes(b"partial")
    (run_copy / ".keep").write_text("not tfuad's")
    result = _train(demo_data, run_copy, "--resume", epochs=2)
    assert result.exit_code == 0, result.output
    assert not [p for p in stale if p.exists() and p.read_bytes() == b"partial"]
    assert (run_copy / ".keep").exists()
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir() if p.name.startswith(".")) == []


# --------------------------------------------------------------------------- 5. one line, not a traceback


def test_resume_of_a_config_without_a_key(run_copy, demo_data):
    config = json.loads((run_copy / "config.json").read_text())
    del config["preprocess"]
    (run_copy / "config.json").write_text(json.dumps(config))
    _one_line_error(_train(demo_data, run_copy, "--resume", epochs=2), "config.json", "'preprocess'")


def test_truncated_model_file(run_copy, demo_data):
    data = (run_copy / "model.keras").read_bytes()
    (run_copy / "model.keras").write_bytes(data[: len(data) // 2])
    _one_line_error(_run("calibrate", run_copy, "--data", demo_data), "model.keras", "corrupt or truncated")


def test_model_file_with_a_lambda_layer(run_copy, demo_data):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)])
    model.save(run_copy / "model.keras")
    _one_line_error(_run("calibrate", run_copy, "--data", demo_data), "model.keras", "Lambda")


@pytest.mark.parametrize("option,value", [("--batch-size", 0), ("--epochs", 0), ("--epochs", -1)])
def test_non_positive_counts_are_refused(tmp_path, demo_data, option, value):
    args = ["train", "sae", "--data", demo_data, "--out", tmp_path / "r", *TINY]
    result = _run(*args, option, value)
    assert result.exit_code == 2 and f"{value} is not in the range x>=1" in result.output
    assert not (tmp_path / "r").exists()


def _make_read_only(folder):
    """Make ``folder`` read-only even for root (immutable attribute), or skip."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    locked = shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True,
                                                       check=False).returncode == 0
    if locked:
        return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
    pytest.skip("cannot make a folder read-only for root here")


def test_unwritable_out_is_refused_before_any_work(tmp_path, demo_data):
    (tmp_path / "a_file").write_text("x")
    result = _train(demo_data, tmp_path / "a_file" / "run")
    _one_line_error(result, "is not a folder")
    assert "training slices" not in result.output
    locked = tmp_path / "locked"
    locked.mkdir()
    undo = _make_read_only(locked)
    try:
        for out in (locked, locked / "run"):
            result = _train(demo_data, out)
            _one_line_error(result, str(out), "not writable")
            assert "training slices" not in result.output
    finally:
        undo()


# --------------------------------------------------------------------------- 6. silent nonsense


def test_unknown_split_in_a_manifest(tmp_path, demo_data):
    header, *rows = (demo_data / "manifest.csv").read_text(encoding="utf-8").splitlines()
    rows = [row.replace(",sub-", f",{demo_data}/sub-") for row in rows]
    rows[1] = rows[1].replace(",train,", ",trian,", 1)  # file line 3
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join([header, *rows]) + "\n")
    _one_line_error(_train(manifest, tmp_path / "r"), str(manifest), "line 3", "'trian'", "train, calib, test")
    assert not (tmp_path / "r").exists()


def test_resume_with_another_model_is_refused(run_copy, demo_data):
    _one_line_error(_train(demo_data, run_copy, "--resume", model="vae", epochs=3), "holds a sae run")
    assert json.loads((run_copy / "checkpoints" / "state.json").read_text())["epoch"] == 1


def test_resume_when_the_epochs_are_done_trains_nothing(run_copy, demo_data):
    history = (run_copy / "history.csv").read_text(encoding="utf-8")
    model = (run_copy / "model.keras").read_bytes()
    result = _train(demo_data, run_copy, "--resume", epochs=1)
    assert result.exit_code == 0, result.output
    assert "already trained 1 epochs (--epochs 1); nothing to train" in result.output
    assert "resuming" not in result.output and "Epoch" not in result.output
    assert (run_copy / "history.csv").read_text(encoding="utf-8") == history
    assert (run_copy / "model.keras").read_bytes() == model
    # a run killed after its last checkpoint but before model.keras gets its model
    (run_copy / "model.keras").unlink()
    result = _train(demo_data, run_copy, "--resume", epochs=1)
    assert result.exit_code == 0 and (run_copy / "model.keras").is_file(), result.output
