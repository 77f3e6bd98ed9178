"""Training to convergence: best weights, learning-rate plateaus, early stopping, exact resumption, evidence."""
import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from tfuad.cli.main import main
from tfuad.data.layouts import discover
from tfuad.training import RunDir, TrainConfig, train
from tfuad.training.checkpoint import read_state

TINY = {"base_filters": 4, "max_filters": 8}
PNG = b"\x89PNG\r\n\x1a\n"


def _config(model="sae", epochs=15, **kwargs):
    return TrainConfig(model=model, image_size=32, batch_size=32, epochs=epochs, model_kwargs=dict(TINY),
                       figure_every=0, **kwargs)


def _quiet(*args):
    pass


def _rows(run):
    with open(run / "history.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _val_slices(run, dataset, split="calib"):
    from tfuad.data.pipeline import collect_slices
    from tfuad.data.splits import prepare_split, split_subjects

    stored = RunDir(run)
    pconfig = stored.preprocess_config()
    prepared, _ = prepare_split(split_subjects(dataset, split), stored.config()["data"]["modality"], pconfig,
                                stored.intensity_stats(), log=_quiet)
    return collect_slices(prepared, lambda p: p.training_indices(pconfig))


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, demo_data):
    """A spatial AE run with patience 2 under a cap of 15 epochs."""
    run = tmp_path_factory.mktemp("convergence") / "run"
    lines = []
    history = train(run, discover(demo_data), _config(patience=2), verbose=0, log=lines.append)
    return run, history, lines


def test_training_stops_early_and_keeps_the_best_weights(stopped_run, demo_data):
    from tfuad.models import model_class

    run, history, lines = stopped_run
    state = read_state(run / "checkpoints")
    conv = state["convergence"]
    val = [r["val_loss"] for r in history]
    assert conv["monitor"] == "val_loss"
    # early stop before the cap: two epochs without improvement after the best one
    assert len(history) < 15 and conv["stopped_epoch"] == len(history) == conv["best_epoch"] + 2
    assert any("stopped early after epoch" in line for line in lines)
    # the best epoch is the lowest validation loss, and the last epoch is worse
    assert conv["best"] == val[conv["best_epoch"] - 1] == min(val)
    assert val[-1] > conv["best"]
    # model.keras holds the best epoch's weights, not the last epoch's
    model = RunDir(run).load_model(compile=True)
    x_val = _val_slices(run, discover(demo_data))
    loss = model.evaluate(x_val, batch_size=32, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(loss, conv["best"], rtol=1e-5)
    last = model_class("sae")(**RunDir(run).config()["model_kwargs"])
    last.compile()
    last.train_on_batch(x_val[:2])  # builds the optimiser's variables, then all are overwritten
    last.load_weights(run / "checkpoints" / state["weights"])
    last_loss = last.evaluate(x_val, batch_size=32, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(last_loss, val[-1], rtol=1e-5)
    assert not np.isclose(last_loss, loss, rtol=1e-5)


def test_learning_rate_is_reduced_on_a_plateau(stopped_run):
    run, history, _ = stopped_run
    conv = read_state(run / "checkpoints")["convergence"]
    rates = [r["learning_rate"] for r in history]
    assert rates[0] == pytest.approx(1e-3)
    # patience 2 -> halve after every epoch without improvement; the rate logged is the one the epoch trained with
    assert conv["lr_reductions"] == list(range(conv["best_epoch"] + 1, len(history) + 1))
    for epoch in conv["lr_reductions"][:-1]:
        assert rates[epoch] == pytest.approx(rates[epoch - 1] * 0.5)
    assert conv["learning_rates"]["optimizer"] == pytest.approx(rates[-1] * 0.5)
    assert all(b <= a for a, b in zip(rates, rates[1:]))


def test_history_has_reconstruction_quality_and_the_run_has_figures(stopped_run):
    import matplotlib.image as mpimg

    run, history, _ = stopped_run
    rows = _rows(run)
    assert len(rows) == len(history)
    assert {"epoch", "loss", "val_loss", "val_l1", "val_ssim", "learning_rate"} <= set(rows[0])
    for row in rows:
        assert row["val_l1"] > 0 and -1 <= row["val_ssim"] <= 1
    for name in ("reconstructions.png", "loss_curves.png"):
        path = run / name
        assert path.read_bytes()[:8] == PNG
        image = mpimg.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05  # something is drawn
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary left


def test_without_validation_slices_the_training_loss_is_watched(tmp_path, demo_data):
    dataset = discover(demo_data)
    no_calib = dataset.select([s.id for s in dataset.subjects if s.split == "train"])
    lines = []
    history = train(tmp_path / "run", no_calib, _config(epochs=2, patience=3), verbose=0, log=lines.append)
    conv = read_state(tmp_path / "run" / "checkpoints")["convergence"]
    assert conv["monitor"] == "loss"
    assert any("no validation slices" in line and "follow loss" in line for line in lines)
    assert {"l1", "ssim"} <= set(history[0]) and "val_l1" not in history[0]
    assert conv["best"] == min(r["loss"] for r in history)


def test_resume_after_an_interruption_continues_exactly(tmp_path, demo_data):
    """Two epochs, a kill (no model.keras, temporaries left), resume: the same run as one without a stop."""
    dataset = discover(demo_data)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    config = {"model": "svae", "patience": 2, "epochs": 6}  # svae: its latent samples must continue too
    train(whole, dataset, _config(**config), verbose=0, log=_quiet)
    train(parts, dataset, _config(**{**config, "epochs": 2}), verbose=0, log=_quiet)
    for name in ("model.keras", "reconstructions.png", "loss_curves.png"):
        (parts / name).unlink()
    (parts / "checkpoints" / ".epoch-0003.weights.h5.x1.weights.h5").write_bytes(b"partial")
    resumed = train(parts, dataset, _config(**config), resume=True, verbose=0, log=_quiet)
    expected = read_state(whole / "checkpoints")
    got = read_state(parts / "checkpoints")
    assert [r["epoch"] for r in resumed] == [r["epoch"] for r in expected["history"]]
    for a, b in zip(expected["history"], got["history"]):
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=f"epoch {a['epoch']} {key}")
    for key in ("best_epoch", "wait", "lr_wait", "lr_reductions", "stopped_epoch"):
        assert got["convergence"][key] == expected["convergence"][key], key
    assert got["convergence"]["best"] == pytest.approx(expected["convergence"]["best"], rel=1e-5)
    assert got["best_weights"] == expected["best_weights"]
    assert sorted(p.name for p in (parts / "checkpoints").iterdir()) == sorted(
        p.name for p in (whole / "checkpoints").iterdir())
    assert (parts / "model.keras").is_file() and (parts / "reconstructions.png").is_file()


def test_a_run_that_stopped_early_has_nothing_left_to_train(stopped_run, tmp_path, demo_data):
    run = tmp_path / "run"
    shutil.copytree(stopped_run[0], run)
    before = (run / "history.csv").read_text(encoding="utf-8")
    lines = []
    train(run, discover(demo_data), _config(epochs=40), resume=True, verbose=0, log=lines.append)
    assert any("stopped early after epoch" in line and "nothing to train" in line for line in lines)
    assert (run / "history.csv").read_text(encoding="utf-8") == before


def test_cli_stores_augmentation_and_patience(tmp_path, demo_data):
    runner = CliRunner()
    args = ["train", "sae", "--data", str(demo_data), "--epochs", "1", "--image-size", "32", "--batch-size", "64",
            "-O", "base_filters=4", "-O", "max_filters=8"]
    result = runner.invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    training = json.loads((tmp_path / "a" / "config.json").read_text())["training"]
    assert training["augment"] is True and training["patience"] == 10  # the defaults
    result = runner.invoke(main, [*args, "--out", str(tmp_path / "b"), "--no-augment", "--patience", "4"])
    assert result.exit_code == 0, result.output
    training = json.loads((tmp_path / "b" / "config.json").read_text())["training"]
    assert training["augment"] is False and training["patience"] == 4
    assert "follow val_loss (learning rate x0.5 after 2 epochs without improvement, stop after 4)" in result.output


def test_watched_loss_of_each_model():
    assert _config().watched(True) == "val_loss" and _config().watched(False) == "loss"
    assert TrainConfig(model="anovaegan").watched(True) == "val_rec_loss"  # not the adversarial total
    assert TrainConfig(model="anogan").watched(True) is None
    assert TrainConfig(model="vae", monitor="val_l1").watched(False) == "l1"


def test_recomputed_batch_norm_statistics_are_saved_with_the_weights(tmp_path, demo_data):
    """With bn_statistics="recomputed" the saved model's statistics are those of its weights on the training slices."""
    from tfuad.training.batch_norm import batch_norm_layers, recompute_batch_norm

    dataset = discover(demo_data)
    run = tmp_path / "run"
    train(run, dataset, _config(epochs=2, patience=0, bn_statistics="recomputed"), verbose=0, log=_quiet)
    stored = RunDir(run)
    assert stored.config()["training"]["bn_statistics"] == "recomputed"
    x_train = _val_slices(run, dataset, split="train")
    model = stored.load_model()
    saved = [np.array(bn.moving_variance) for bn in batch_norm_layers(model)]
    assert recompute_batch_norm(model, x_train, batch_size=32) == len(saved) > 0
    for a, bn in zip(saved, batch_norm_layers(model)):
        np.testing.assert_allclose(a, np.asarray(bn.moving_variance), rtol=1e-3, atol=1e-6)
