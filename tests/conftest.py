"""Shared pytest fixtures."""
from pathlib import Path

import pytest
from helpers import cli

#: Real scans live beside the project (``../shared/data``), never inside it.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder, or skip the test when it is absent (a fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """A small demo dataset (3 train, 1 calib, 2 test subjects), made once per test session."""
    from tfuad.data.demo import make_demo_dataset

    out = tmp_path_factory.mktemp("demo") / "data"
    make_demo_dataset(out, seed=3, n_train=3, n_calib=1, n_test=2)
    return out


#: Model options that keep the end-to-end runs CPU-sized (the architecture is the paper's, narrower).
TINY_SAE = ("-O", "base_filters=8", "-O", "max_filters=16")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, demo_data):
    """A spatial AE trained for two short epochs on the demo data, calibrated for residual maps and
    the intensity baseline."""
    run = tmp_path_factory.mktemp("runs") / "sae"
    cli("train", "sae", "--data", demo_data, "--out", run, "--epochs", 2, "--image-size", 64, "--batch-size", 16,
        *TINY_SAE, check=True)
    cli("calibrate", run, "--data", demo_data, "--method", "residual", "--method", "intensity", check=True)
    return run


@pytest.fixture(scope="session")
def raw_run(tmp_path_factory, demo_data):
    """A tiny run trained on a dataset made by ``tfuad preprocess`` (its settings recorded), calibrated for
    the intensity baseline: ``tfuad detect --raw`` takes raw scans with it."""
    base = tmp_path_factory.mktemp("raw_run")
    prep, run = base / "prep", base / "run"
    cli("preprocess", demo_data, "--out", prep, "--modality", "flair", "--steps", "reorient,resample,normalize",
        "--standardize-fit", check=True)
    cli("train", "sae", "--data", prep, "--modality", "flair", "--out", run, "--epochs", 1, "--image-size", 64,
        "--batch-size", 16, *TINY_SAE, check=True)
    cli("calibrate", run, "--data", prep, "--method", "intensity", check=True)
    return run


@pytest.fixture()
def run(tmp_path, trained_run):
    """A private copy of the trained, calibrated run (tests may change it)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy
