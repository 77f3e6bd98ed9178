"""Requests to an exported SavedModel, loaded in a fresh process without tfuad: operating points chosen per
request, whole volumes answered as ``tfuad detect`` answers them, bad requests refused while the model keeps
answering, and the model card written beside it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import cli

#: Runs in a fresh interpreter (``tfuad`` unimportable): every call of ``calls.json`` in order, recording its
#: outputs or its error message, so a refused request followed by a good one shows the model still answers.
CALLS = r"""
import json, sys
from pathlib import Path
sys.modules["tfuad"] = None
import numpy as np
import tensorflow as tf

folder = Path(sys.argv[1])
loaded = tf.saved_model.load(sys.argv[2])
arrays = dict(np.load(folder / "inputs.npz"))
results, outputs = {}, {}
for call in json.loads((folder / "calls.json").read_text()):
    inputs = {k: tf.constant(arrays[v]) for k, v in call["inputs"].items()}
    try:
        answer = loaded.signatures[call["signature"]](**inputs)
    except tf.errors.InvalidArgumentError as err:
        results[call["name"]] = err.message
        continue
    results[call["name"]] = None
    for key, value in answer.items():
        outputs[f"{call['name']}/{key}"] = value.numpy()
np.savez(folder / "outputs.npz", **outputs)
(folder / "results.json").write_text(json.dumps(results))
"""

FPR = 0.05


def _calls():
    """``(name, signature, inputs)``: each bad request is followed by a good one."""
    good = ("good", "serving_default", {"slices": "slices"})
    calls = [
        good,
        ("at_calibrated", "detect_at_fpr", {"slices": "slices", "fpr": "fpr_calibrated"}),
        ("at_between", "detect_at_fpr", {"slices": "slices", "fpr": "fpr_between"}),
        ("at_per_slice", "detect_at_fpr", {"slices": "slices", "fpr": "fpr_per_slice"}),
        ("at_threshold", "detect_at_threshold", {"slices": "slices", "threshold": "threshold"}),
        ("volume", "detect_volume", {"slices": "volume_slices", "brain_mask": "brain_mask"}),
        ("volume_at_fpr", "detect_volume_at_fpr", {"slices": "volume_slices", "brain_mask": "brain_mask",
                                                   "fpr": "fpr_between"}),
        ("volume_at_threshold", "detect_volume_at_threshold", {"slices": "volume_slices", "brain_mask": "brain_mask",
                                                               "threshold": "volume_threshold"}),
    ]
    bad = {
        "bad_rank": ("serving_default", {"slices": "slices_rank3"}),
        "bad_size": ("detect_at_fpr", {"slices": "slices_small", "fpr": "fpr_calibrated"}),
        "bad_nan": ("detect_at_fpr", {"slices": "slices_nan", "fpr": "fpr_calibrated"}),
        "bad_fpr_zero": ("detect_at_fpr", {"slices": "slices", "fpr": "fpr_zero"}),
        "bad_fpr_one": ("detect_at_fpr", {"slices": "slices", "fpr": "fpr_one"}),
        "bad_fpr_nan": ("detect_at_fpr", {"slices": "slices", "fpr": "fpr_nan"}),
        "bad_fpr_range": ("detect_at_fpr", {"slices": "slices", "fpr": "fpr_tiny"}),
        "bad_fpr_count": ("detect_at_fpr", {"slices": "slices", "fpr": "fpr_two"}),
        "bad_threshold_nan": ("detect_at_threshold", {"slices": "slices", "threshold": "fpr_nan"}),
        "bad_volume_depth": ("detect_volume", {"slices": "slices", "brain_mask": "brain_mask"}),
        "bad_volume_empty": ("detect_volume", {"slices": "volume_slices", "brain_mask": "empty_mask"}),
        "bad_volume_fpr": ("detect_volume_at_fpr", {"slices": "volume_slices", "brain_mask": "brain_mask",
                                                    "fpr": "fpr_one"}),
    }
    for name, (signature, inputs) in bad.items():
        calls += [(name, signature, inputs), (f"after_{name}", *good[1:])]
    return [{"name": n, "signature": s, "inputs": i} for n, s, i in calls]


@pytest.fixture(scope="module")
def served(tmp_path_factory, trained_run, demo_data):
    """A residual export with an evaluation report, ``tfuad detect`` on a test subject, and the calls' answers."""
    from tfuad.data.layouts import discover
    from tfuad.detection.detector import Detector
    from tfuad.workflows.export import export_plan

    root = tmp_path_factory.mktemp("serving")
    cli("evaluate", "--model", trained_run, "--data", demo_data, "--out", root / "report", "--resamples", 200,
        check=True)
    cli("export", trained_run, "--out", root / "serving", "--name", "sae", "--fpr", FPR, "--no-warmup",
        "--report", root / "report", check=True)
    subject = next(s for s in discover(demo_data) if s.split == "test")
    cli("detect", subject.image("flair"), "--model", trained_run, "--out", root / "detect", "--fpr", FPR,
        "--brain-mask", subject.brain_mask, check=True)

    detector = Detector(trained_run, "residual")
    prep = detector.prepare(subject.image("flair"), brain_mask_path=subject.brain_mask)
    plan = export_plan(trained_run, fpr=FPR)
    levels = np.asarray(plan.slice_curve.fpr, np.float32)
    between = float(np.sqrt(levels[100] * levels[101]))  # strictly between two levels of the curve
    slices = prep.slices[np.flatnonzero(prep.brain_fraction() > 0.2)[::12]]
    nan = slices.copy()
    nan[0, 3, 3, 0] = np.nan
    per_slice = np.linspace(0.01, 0.1, len(slices)).astype(np.float32)
    inputs = {
        "slices": slices, "slices_rank3": slices[..., 0], "slices_small": slices[:, :32, :32], "slices_nan": nan,
        "fpr_calibrated": np.float32([FPR]), "fpr_between": np.float32([between]), "fpr_per_slice": per_slice,
        "fpr_zero": np.float32([0.0]), "fpr_one": np.float32([1.0]), "fpr_nan": np.float32([np.nan]),
        "fpr_tiny": np.float32([1e-6]), "fpr_two": np.float32([0.01, 0.05]), "threshold": np.float32([0.5]),
        "volume_slices": prep.slices, "brain_mask": prep.brain_mask, "empty_mask": np.zeros_like(prep.brain_mask),
        "volume_threshold": np.float32([plan.volume_curve.default_threshold * 1.1]),
    }
    np.savez(root / "inputs.npz", **inputs)
    (root / "calls.json").write_text(json.dumps(_calls()))
    version = root / "serving" / "sae" / "1"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", CALLS, str(root), str(version)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "data": demo_data, "version": version, "subject": subject, "prep": prep,
            "detector": detector, "plan": plan, "inputs": inputs, "between": between,
            "results": json.loads((root / "results.json").read_text()), "outputs": dict(np.load(root / "outputs.npz"))}


def test_volume_signature_answers_what_tfuad_detect_writes(served):
    """The served post-processed map and lesion mask equal ``tfuad detect``'s files voxel for voxel.

    Allowed difference: 1e-6 relative on the map, and only lesion voxels whose map lies that close to the
    threshold may differ. The slice maps are the same float32 graph ops in the same batches; the geometry,
    median, erosion and components are exact; only the inverse resize sums the same float64 terms in another
    order than SciPy, which can round a float32 tie the other way (one float32 step, 6e-8 relative).
    """
    from tfuad.data.nifti import load_volume

    folder = next((served["root"] / "detect").glob("*/detection.json")).parent  # named after the file
    expected_map = load_volume(next(folder.glob("*_anomaly.nii.gz"))).data
    expected_mask = load_volume(next(folder.glob("*_lesions.nii.gz"))).data > 0
    out = served["outputs"]
    served_map, served_mask = out["volume/anomaly_map"], out["volume/mask"]
    assert served_map.shape == expected_map.shape == served["prep"].brain_mask.shape
    np.testing.assert_allclose(served_map, expected_map, rtol=1e-6, atol=0)
    record = json.loads((folder / "detection.json").read_text())
    assert float(out["volume/threshold"]) == pytest.approx(record["threshold"], rel=1e-7)
    differ = served_mask != expected_mask
    assert np.all(np.abs(served_map[differ] - record["threshold"]) <= 1e-6 * record["threshold"])
    assert expected_mask.sum() > 100 and differ.sum() <= expected_mask.sum() * 1e-3


def test_volume_operating_points(served):
    from tfuad.postprocessing.filters import segment

    out, plan = served["outputs"], served["plan"]
    at_fpr = float(out["volume_at_fpr/threshold"])
    assert at_fpr == pytest.approx(plan.volume_curve.at(served["between"]), rel=1e-6)
    threshold = float(served["inputs"]["volume_threshold"][0])
    assert float(out["volume_at_threshold/threshold"]) == np.float32(threshold)
    config = plan.postprocess
    for name, t in (("volume_at_fpr", at_fpr), ("volume_at_threshold", threshold)):
        np.testing.assert_array_equal(out[f"{name}/anomaly_map"], out["volume/anomaly_map"])
        np.testing.assert_array_equal(out[f"{name}/mask"], segment(out["volume/anomaly_map"], np.float32(t), config))


def test_fpr_per_request_uses_the_calibrated_threshold_or_the_healthy_curve(served):
    from tfuad.workflows.calibrate import healthy_values

    out, plan, run = served["outputs"], served["plan"], served["detector"]
    calibrated = plan.slice_thresholds[f"fpr@{FPR:g}"]
    n = len(served["inputs"]["slices"])
    assert np.array_equal(out["good/threshold"], np.full(n, calibrated, np.float32))
    assert np.array_equal(out["at_calibrated/threshold"], np.full(n, calibrated, np.float32))
    np.testing.assert_array_equal(out["at_calibrated/mask"], out["good/mask"])
    np.testing.assert_array_equal(out["at_calibrated/anomaly_map"], out["good/anomaly_map"])

    # between two levels: the interpolated threshold, whose healthy FPR on the calibration voxels is bracketed
    between = served["between"]
    threshold = float(out["at_between/threshold"][0])
    assert threshold == pytest.approx(plan.slice_curve.at(between), rel=1e-6)
    levels = np.asarray(plan.slice_curve.fpr, np.float32)
    lo, hi = 100, 101
    assert levels[lo] < np.float32(between) < levels[hi]
    t_lo, t_hi = plan.slice_curve.threshold[lo], plan.slice_curve.threshold[hi]
    assert t_hi <= threshold <= t_lo and t_hi < t_lo
    from tfuad.data.layouts import discover
    from tfuad.data.splits import prepare_split, split_subjects

    calib = prepare_split(split_subjects(discover(served["data"]), "calib"), "flair", run.pconfig, run.stats)[0]
    healthy = healthy_values(run, calib)[1]  # the raw slice-map values the curve was computed from
    fpr = float(np.mean(healthy > np.float32(threshold)))
    assert np.mean(healthy > np.float32(t_lo)) <= fpr <= levels[hi]
    np.testing.assert_array_equal(out["at_between/mask"], out["good/anomaly_map"] > np.float32(threshold))

    # one limit per slice, and an explicit threshold
    expected = np.asarray([plan.slice_curve.at(float(f)) for f in served["inputs"]["fpr_per_slice"]], np.float32)
    np.testing.assert_allclose(out["at_per_slice/threshold"], expected, rtol=1e-6)
    assert np.array_equal(out["at_threshold/threshold"], np.full(n, 0.5, np.float32))
    np.testing.assert_array_equal(out["at_threshold/mask"], out["good/anomaly_map"] > np.float32(0.5))


def test_bad_requests_fail_with_a_clear_error_and_the_model_keeps_answering(served):
    results, out = served["results"], served["outputs"]
    expected = {
        "bad_rank": "is not compatible with expected shape [?,64,64,1]",
        "bad_size": "is not compatible with expected shape [?,64,64,1]",
        "bad_nan": "slices contain NaN or infinite values",
        "bad_fpr_zero": "fpr must lie in (0, 1)",
        "bad_fpr_one": "fpr must lie in (0, 1)",
        "bad_fpr_nan": "fpr must lie in (0, 1)",
        "bad_fpr_range": "fpr must lie within the calibrated range [0.0001, 0.5]",
        "bad_fpr_count": "fpr must hold one value or one per slice",
        "bad_threshold_nan": "threshold must be a finite number",
        "bad_volume_depth": "slices must hold one slice per index of the third axis of brain_mask",
        "bad_volume_empty": "brain_mask has no brain voxel",
        "bad_volume_fpr": "fpr must lie in (0, 1)",
    }
    for name, message in expected.items():
        assert results[name] is not None, f"{name} was answered"
        assert message in results[name], (name, results[name])
        assert results[f"after_{name}"] is None
        np.testing.assert_array_equal(out[f"after_{name}/anomaly_map"], out["good/anomaly_map"])


def test_model_card_describes_model_data_evaluation_speed_and_limits(served):
    extra = served["version"] / "assets.extra"
    card = json.loads((extra / "model_card.json").read_text())
    text = (extra / "model_card.md").read_text(encoding="utf-8")
    summary = json.loads((served["root"] / "report" / "summary.json").read_text())
    assert card["model"]["architecture"] == "sae" and card["method"]["name"] == "residual"
    assert card["training_data"]["modality"] == "flair" and len(card["training_data"]["subjects"]) == 3
    assert card["calibration_data"]["healthy_voxels"] > 0 and card["calibration_data"]["subjects"]
    assert card["calibration_data"]["weighting"] == "none"  # tfuad calibrate's default
    rows = {row["method"]: row for row in card["evaluation"]["methods"]}
    for method in summary["methods"]:
        ci = method["auroc_ci"]
        assert rows[method["method"]]["auroc"] == {"mean": ci["value"], "low": ci["low"], "high": ci["high"]}
        dice = method["dice"][f"fpr@{FPR:g}"]
        assert rows[method["method"]]["dice"][f"fpr@{FPR:g}"]["low"] == dice["low"]
        assert f"{ci['value']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]" in text
    speed = {row["signature"]: row for row in card["speed"]["rows"]}
    assert {"serving_default", "detect_volume"} <= set(speed)
    assert all(row["p50_ms"] > 0 and row["requests_per_s"] > 0 for row in speed.values())
    assert card["speed"]["hardware"]["cpu_count"] >= 1
    assert card["versions"]["tensorflow"] and card["versions"]["tfuad_exported"]
    for words in ("Small lesions", "Other scanners", "not hyperintense", "## Intended use", "## Evaluation"):
        assert words in text
    contract = json.loads((extra / "tfuad_preprocess.json").read_text())
    assert contract["operating_points"]["fpr_range"] == [pytest.approx(1e-4), pytest.approx(0.5)]
    assert contract["signatures"]["detect_volume_at_fpr"]["inputs"] == ["slices", "brain_mask", "fpr"]


def test_report_and_speed_records_are_checked_before_exporting(served, tmp_path):
    run = served["detector"].run.path
    result = cli("export", run, "--out", tmp_path, "--report", tmp_path)
    assert result.exit_code == 1 and "no summary.json" in result.output
    bad = tmp_path / "speed.json"
    bad.write_text("{}")
    result = cli("export", run, "--out", tmp_path, "--speed", bad)
    assert result.exit_code == 1 and "not a speed record" in result.output
    assert not any(Path(tmp_path).glob("*/*"))
