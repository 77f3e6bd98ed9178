"""Training runs: resumable after kill -9, with nothing lost but the unfinished epoch."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tfuad.data.layouts import discover
from tfuad.errors import ConfigError
from tfuad.training import RunDir, TrainConfig, train
from tfuad.training.checkpoint import read_state, restore_checkpoint

TINY = {"base_filters": 4, "max_filters": 8}


def _config(epochs):
    return TrainConfig(model="sae", modality="flair", epochs=epochs, batch_size=32, image_size=64,
                       model_kwargs=dict(TINY))


def _replay(values, patience, min_delta=1e-4):
    """The convergence counters after ``values`` of the watched loss, computed independently of tfuad."""
    lr_patience = max(1, -(-patience // 2))
    best, best_epoch, wait, lr_wait, reductions = None, 0, 0, 0, []
    for epoch, value in enumerate(values, 1):
        if best is None or value < best - min_delta * abs(best):
            best, best_epoch, wait, lr_wait = value, epoch, 0, 0
            continue
        wait, lr_wait = wait + 1, lr_wait + 1
        if lr_wait >= lr_patience:
            reductions.append(epoch)
            lr_wait = 0
    return {"best": best, "best_epoch": best_epoch, "wait": wait, "lr_wait": lr_wait, "lr_reductions": reductions}


def test_resume_after_kill_continues_at_the_right_epoch_with_the_same_weights(tmp_path, demo_data):
    run = tmp_path / "run"
    code = ("import sys; from tfuad.cli.main import main; sys.exit(main())")
    args = [sys.executable, "-c", code, "train", "sae", "--data", str(demo_data), "--out", str(run),
            "--epochs", "200", "--image-size", "64", "--batch-size", "32",
            "-O", "base_filters=4", "-O", "max_filters=8"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            state = read_state(run / "checkpoints") if (run / "checkpoints" / "state.json").exists() else None
            if state and state["epoch"] >= 2:
                break
            assert proc.poll() is None, "training ended before it could be interrupted"
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 300 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = read_state(run / "checkpoints")
    done = state["epoch"]
    assert [r["epoch"] for r in state["history"]] == list(range(1, done + 1))
    assert (run / "checkpoints" / state["weights"]).is_file()
    assert not (run / "model.keras").exists()  # the run never finished

    # Restoring gives exactly the checkpoint's weights, optimiser step included.
    import keras

    from tfuad.models import model_class

    cfg = RunDir(run).config()
    cls = model_class("sae")
    restored = cls(**cfg["model_kwargs"])
    restored.compile()
    batch = np.zeros((4, 64, 64, 1), np.float32)
    restore_checkpoint(restored, run / "checkpoints", batch)
    reference = cls(**cfg["model_kwargs"])
    reference.compile()
    reference.load_weights(run / "checkpoints" / state["weights"])
    for a, b in zip(restored.weights, reference.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    steps = int(np.ceil(cfg["data"]["n_train_slices"] / 32))
    assert int(restored.optimizer.iterations.numpy()) == done * steps

    history = train(run, discover(demo_data), _config(done + 1), resume=True, verbose=0, log=lambda *a: None)
    assert [r["epoch"] for r in history] == list(range(1, done + 2))
    state = read_state(run / "checkpoints")
    assert state["epoch"] == done + 1
    # the convergence counters went on across the kill as if the run had never stopped
    expected = _replay([r["val_loss"] for r in state["history"]], patience=10)
    assert {k: state["convergence"][k] for k in expected} == expected
    assert state["best_weights"] == f"best-{expected['best_epoch']:04d}.weights.h5"
    assert (run / "model.keras").is_file()
    rows = (run / "history.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == done + 2  # header + one row per epoch, none repeated


def test_run_directory_rules(tmp_path, demo_data):
    ds = discover(demo_data)
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(tmp_path / "none", ds, _config(1), resume=True, verbose=0)
    run = tmp_path / "run"
    train(run, ds, _config(1), verbose=0, log=lambda *a: None)
    first = json.loads((run / "config.json").read_text())
    with pytest.raises(ConfigError, match="holds another run"):
        train(run, ds, _config(1), verbose=0)
    with pytest.raises(ConfigError, match="does not take|Unrecognized|unexpected"):
        train(run, ds, TrainConfig(model="sae", image_size=64, epochs=1, model_kwargs={"bogus": 1}),
              overwrite=True, verbose=0)
    assert json.loads((run / "config.json").read_text()) == first  # a refused overwrite loses nothing
    train(run, ds, _config(1), overwrite=True, verbose=0, log=lambda *a: None)
    assert (run / "model.keras").is_file()


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multiworker_training_with_two_local_workers(tmp_path, demo_data):
    """tf.distribute.MultiWorkerMirroredStrategy for real: two worker processes on localhost CPUs."""
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    run = tmp_path / "run"
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        args = [sys.executable, "-c", "import sys; from tfuad.cli.main import main; sys.exit(main())",
                "train", "sae", "--data", str(demo_data), "--out", str(run), "--epochs", "2",
                "--image-size", "64", "--batch-size", "16", "--strategy", "multiworker",
                "-O", "base_filters=4", "-O", "max_filters=8"]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        assert "multiworker strategy: 2 replicas in sync" in out
    history = read_state(run / "checkpoints")["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    assert (run / "model.keras").is_file()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "history.csv", "logs",
                                                     "loss_curves.png", "model.keras", "reconstructions.png"]
