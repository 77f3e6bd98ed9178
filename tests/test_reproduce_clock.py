"""The reproduction's wall-time clock (``benchmarks/reproduce.py``) survives a killed run."""
import json
import time

import pytest
from helpers import load_script


@pytest.fixture(scope="module")
def reproduce():
    return load_script("reproduce")


def test_laps_keep_the_time_up_to_the_last_line(reproduce, tmp_path):
    path = tmp_path / "timings.json"
    lines = []
    timed = reproduce.Clock(path).laps("t2/dae", lines.append)
    time.sleep(0.05)
    timed("fold 1 of 3")
    # no final call: the process is killed here, and the time up to the line is on disk
    first = json.loads(path.read_text())["t2/dae"]
    assert lines == ["fold 1 of 3"]
    assert first >= 0.05
    time.sleep(0.02)
    timed(None)
    assert json.loads(path.read_text())["t2/dae"] >= first + 0.02
    assert lines == ["fold 1 of 3"]


def test_two_clocks_on_one_file_keep_each_others_keys(reproduce, tmp_path):
    path = tmp_path / "timings.json"
    flair, t2 = reproduce.Clock(path), reproduce.Clock(path)   # two runs, started before either wrote
    flair.record("flair/vae", 3.0)
    t2.record("t2/vae", 2.0)
    flair.record("flair/vae", 1.0)
    assert json.loads(path.read_text()) == {"flair/vae": 4.0, "t2/vae": 2.0}


def test_laps_between_lines_keep_a_long_silent_stretch(reproduce, tmp_path):
    path = tmp_path / "timings.json"
    timed = reproduce.Clock(path).laps("flair/sae-r32", lambda _: None, every=0.02)
    time.sleep(0.2)   # a fold trains without a progress line; the process is killed here
    silent = json.loads(path.read_text())["flair/sae-r32"]
    assert silent >= 0.1
    timed(None)       # the end: the rest is added and the timer stops
    done = json.loads(path.read_text())["flair/sae-r32"]
    assert done >= 0.2
    time.sleep(0.1)
    assert json.loads(path.read_text())["flair/sae-r32"] == done
