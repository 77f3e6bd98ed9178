"""MAP-TV schedules: step limits, their JSON form, and agreement with the calibration."""
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tfuad.cli.main import main
from tfuad.detection.restoration import (
    AdamAscent,
    GradientAscent,
    calibrated_schedule,
    describe_schedule,
    get_schedule,
    schedule_config,
)
from tfuad.errors import ConfigError


def test_max_steps_replaces_each_schedules_own_limit():
    assert get_schedule("paper", 7) == GradientAscent(steps=7)
    assert get_schedule("fast", 50) == AdamAscent(max_steps=50)
    assert get_schedule("fast").max_steps == 30 and get_schedule("paper").steps == 500
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="max_steps"):
            get_schedule("fast", bad)
    with pytest.raises(ConfigError, match="unknown restoration schedule 'slow'"):
        get_schedule("slow")


def test_schedule_config_round_trips_through_json():
    for schedule in (GradientAscent(steps=40, step_sizes=(1e-3, 5e-4)), AdamAscent(max_steps=12, tol=0.0)):
        stored = json.loads(json.dumps(schedule_config(schedule)))
        assert get_schedule(stored) == schedule
    assert schedule_config("fast")["name"] == "fast"
    assert describe_schedule(AdamAscent(max_steps=12)) == "fast (Adam, at most 12 steps)"
    with pytest.raises(ConfigError, match="unknown settings"):
        get_schedule({"name": "paper", "momentum": 0.9})


def test_detection_follows_the_calibrated_schedule_and_refuses_another():
    stored = schedule_config(AdamAscent(max_steps=12))
    assert calibrated_schedule(None, None, stored) == AdamAscent(max_steps=12)
    assert calibrated_schedule("fast", 12, stored) == AdamAscent(max_steps=12)
    assert calibrated_schedule(None, None, None) == GradientAscent()
    assert calibrated_schedule("fast", 8, None) == AdamAscent(max_steps=8)
    with pytest.raises(ConfigError, match=r"cal\.json: .*fast \(Adam, at most 12 steps\).*not fast \(Adam, at most 30"):
        calibrated_schedule("fast", None, stored, source="cal.json")
    with pytest.raises(ConfigError, match="not paper"):
        calibrated_schedule("paper", None, stored)
    # calibrations that stored only a name
    assert calibrated_schedule(None, None, "fast") == AdamAscent()


@pytest.fixture(scope="module")
def map_tv_run(tmp_path_factory, trained_run, demo_data):
    """A copy of the trained run calibrated for map-tv by the CLI with a 2-step fast schedule."""
    run = tmp_path_factory.mktemp("schedules") / "sae"
    run.mkdir()
    for name in ("config.json", "model.keras"):
        shutil.copy2(Path(trained_run) / name, run / name)
    result = CliRunner().invoke(main, ["calibrate", str(run), "--data", str(demo_data), "--method", "map-tv",
                                       "--schedule", "fast", "--max-steps", "2", "--lambdas", "0.5,1"])
    assert result.exit_code == 0, result.output
    return run


def test_calibration_stores_the_schedule_and_detection_reuses_it(map_tv_run, demo_data, tmp_path):
    from tfuad.data.layouts import discover
    from tfuad.detection.detector import Detector

    stored = json.loads((map_tv_run / "calibration-map-tv.json").read_text())["extra"]["schedule"]
    assert stored == schedule_config(AdamAscent(max_steps=2))
    detector = Detector(map_tv_run, "map-tv")
    detector.calibration()
    assert detector.method.schedule == AdamAscent(max_steps=2)

    image = next(s for s in discover(demo_data) if s.split == "test").image("flair")
    ok = CliRunner().invoke(main, ["detect", str(image), "--model", str(map_tv_run), "--method", "map-tv",
                                   "--out", str(tmp_path / "ok")])
    assert ok.exit_code == 0, ok.output
    assert len(list((tmp_path / "ok").rglob("*_lesions.nii.gz"))) == 1

    for extra in (["--max-steps", "3"], ["--schedule", "paper"]):
        bad = CliRunner().invoke(main, ["detect", str(image), "--model", str(map_tv_run), "--method", "map-tv",
                                        "--out", str(tmp_path / "bad"), *extra])
        assert bad.exit_code != 0
        assert "calibration-map-tv.json" in bad.output and "at most 2 steps" in bad.output, bad.output
        assert not list((tmp_path / "bad").rglob("*.nii.gz"))


def test_cli_rejects_a_step_limit_below_one(map_tv_run, demo_data):
    result = CliRunner().invoke(main, ["calibrate", str(map_tv_run), "--data", str(demo_data),
                                       "--method", "map-tv", "--max-steps", "0"])
    assert result.exit_code == 2 and "--max-steps" in result.output
