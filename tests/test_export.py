"""``tfuad export``: the SavedModel is loaded in a fresh Python process (without tfuad) and its
signatures must give the in-process Detector/Restorer results on the same slices."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import cli

#: Largest difference allowed between served and in-process maps (same float32 graph ops).
ATOL = 1e-5
FPR = 0.05
#: Every signature of an export with a ``restore`` signature.
SIGNATURES = ("serving_default", "detect_at_fpr", "detect_at_threshold", "detect_volume", "detect_volume_at_fpr",
              "detect_volume_at_threshold", "reconstruct", "restore")

#: Runs in a fresh interpreter: ``tfuad`` is made unimportable, so the SavedModel must be pure TF.
SERVE = r"""
import json, sys
from pathlib import Path
sys.modules["tfuad"] = None
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

out, slices = Path(sys.argv[1]), np.load(sys.argv[2])
SLICES_ONLY = ("serving_default", "reconstruct", "restore")  # the others take more inputs (test_serving_*.py)
report = {}
for version_dir in map(Path, sys.argv[3:]):
    loaded = tf.saved_model.load(str(version_dir))
    outputs, warmup, errors = {}, [], {}
    for name in SLICES_ONLY:
        for key, value in loaded.signatures[name](slices=tf.constant(slices)).items():
            outputs[f"{name}/{key}"] = value.numpy()
    np.savez(out / f"v{version_dir.name}.npz", **outputs)
    for record in tf.data.TFRecordDataset(str(version_dir / "assets.extra" / "tf_serving_warmup_requests")):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        result = loaded.signatures[request.model_spec.signature_name](**inputs)
        warmup.append({"model": request.model_spec.name, "signature": request.model_spec.signature_name,
                       "shape": list(inputs["slices"].shape),
                       "outputs": {k: [list(v.shape), bool(np.all(np.isfinite(v.numpy().astype(float))))]
                                   for k, v in result.items()}})
    nan = slices.copy()
    nan[0, 10, 10, 0] = np.nan
    bad = {"rank": slices[..., 0], "size": slices[:, :32, :32], "nan": nan, "huge": slices * np.float32(1e36)}
    for name in SLICES_ONLY:
        fn = loaded.signatures[name]
        for case, x in bad.items():
            try:
                answer = fn(slices=tf.constant(x))
                finite = all(np.isfinite(v.numpy().astype(float)).all() for v in answer.values())
                errors[f"{name}/{case}"] = None if finite else "ANSWERED WITH NON-FINITE VALUES"
            except tf.errors.InvalidArgumentError as err:
                errors[f"{name}/{case}"] = err.message
    report[version_dir.name] = {"signatures": sorted(loaded.signatures), "warmup": warmup, "errors": errors}
(out / "report.json").write_text(json.dumps(report))
"""


def _test_slices(demo_data, detector):
    """Five brain slices of a lesioned test subject.

    MAP-TV results depend on the batch (float rounding of batched convolutions is amplified by
    the TV subgradient), so the request holds exactly the batch the in-process Restorer uses.
    """
    from tfuad.data.layouts import discover

    subject = next(s for s in discover(demo_data) if s.split == "test")
    prep = detector.prepare(subject.image("flair"), brain_mask_path=subject.brain_mask,
                            lesion_mask_path=subject.lesion_mask)
    with_brain = np.flatnonzero(prep.brain_fraction() > 0.2)
    pick = with_brain[np.linspace(0, len(with_brain) - 1, 5).astype(int)]
    return prep.slices[pick], prep, subject


def _map_tv_calibration(run, demo_data):
    """A map-tv calibration (λ = 1, fast schedule) from healthy calibration slices.

    Uses the same rule as ``calibrate_run`` (FPR thresholds of raw slice maps on
    healthy brain pixels) on 8 slices, because restoring whole volumes takes too long here.
    """
    from tfuad.data.layouts import discover
    from tfuad.detection.detector import Detector
    from tfuad.postprocessing.thresholds import calibrate, fpr_key, fpr_thresholds

    detector = Detector(run, "map-tv", schedule="fast", lam=1.0, calibrated=False)
    subject = next(s for s in discover(demo_data) if s.split == "calib")
    assert subject.healthy
    prep = detector.prepare(subject.image("flair"), brain_mask_path=subject.brain_mask)
    healthy = np.flatnonzero(prep.brain_fraction() >= detector.pconfig.min_brain_fraction)
    slices = prep.slices[healthy[np.linspace(0, len(healthy) - 1, 8).astype(int)]]
    brain = slices != detector.pconfig.background_value
    values = detector.slice_maps(slices, brain)[0][brain]
    slice_thresholds = {fpr_key(f): t for f, t in fpr_thresholds(values, (FPR,)).items()}
    calibrate(values, method="map-tv", fprs=(FPR,), postprocess=detector.postprocess.to_dict(),
              extra={"lambda": 1.0, "schedule": "fast", "slice_thresholds": slice_thresholds},
              weights=detector.run.weights_fingerprint()).to_json(detector.calibration_path)


@pytest.fixture(scope="module")
def served(tmp_path_factory, trained_run, demo_data):
    """Two exported versions (1: residual + restore with --lam; 2: map-tv) and what a fresh process saw."""
    from tfuad.detection.detector import Detector

    root = tmp_path_factory.mktemp("export")
    run = root / "sae"
    run.mkdir()
    for name in ("config.json", "model.keras", "calibration-residual.json"):
        shutil.copy2(Path(trained_run) / name, run / name)
    base = root / "serving"
    first = cli("export", run, "--out", base, "--lam", "1.0", "--schedule", "fast", "--fpr", FPR)
    assert first.exit_code == 0, first.output
    _map_tv_calibration(run, demo_data)
    (base / "sae" / "notes").mkdir()  # a non-numeric folder is not a version
    second = cli("export", run, "--out", base, "--method", "map-tv")
    assert second.exit_code == 0, second.output

    detector = Detector(run, "residual")
    slices, prep, subject = _test_slices(demo_data, detector)
    np.save(root / "slices.npy", slices)
    versions = [base / "sae" / "1", base / "sae" / "2"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", SERVE, str(root), str(root / "slices.npy"), *map(str, versions)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {
        "run": run, "base": base, "slices": slices, "prep": prep, "subject": subject, "detector": detector,
        "outputs": {v.name: dict(np.load(root / f"v{v.name}.npz")) for v in versions},
        "report": json.loads((root / "report.json").read_text()),
        "meta": {v.name: json.loads((v / "assets.extra" / "tfuad_preprocess.json").read_text()) for v in versions},
        "cli_output": first.output + second.output,
    }


def _slice_threshold(run, method):
    from tfuad.postprocessing.thresholds import Calibration, fpr_key

    return Calibration.from_json(Path(run) / f"calibration-{method}.json").extra["slice_thresholds"][fpr_key(FPR)]


def _assert_mask(mask, anomaly_map, threshold):
    """``mask == anomaly_map > threshold``, except within ATOL of the threshold."""
    expected = anomaly_map > threshold
    assert expected.any() and not expected.all()
    differ = mask != expected
    assert np.all(np.abs(anomaly_map[differ] - threshold) <= ATOL)


def test_residual_signatures_match_in_process_detector(served):
    slices, detector = served["slices"], served["detector"]
    out = served["outputs"]["1"]
    brain = slices != detector.pconfig.background_value
    maps, recon = detector.slice_maps(slices)
    expected = np.where(brain, maps, 0.0)
    np.testing.assert_allclose(out["reconstruct/reconstruction"], recon, rtol=0, atol=ATOL)
    np.testing.assert_allclose(out["serving_default/anomaly_map"], expected, rtol=0, atol=ATOL)
    assert out["serving_default/mask"].dtype == bool
    _assert_mask(out["serving_default/mask"], expected, _slice_threshold(served["run"], "residual"))
    assert np.array_equal(out["serving_default/threshold"],
                          np.full(len(slices), _slice_threshold(served["run"], "residual"), np.float32))
    assert (~brain).any() and not out["serving_default/mask"][~brain].any()


def test_restore_signature_matches_in_process_restorer(served):
    from tfuad.detection.restoration import Restorer

    slices, detector = served["slices"], served["detector"]
    brain = slices != detector.pconfig.background_value
    restored = Restorer(detector.model, lam=1.0, schedule="fast", batch_size=64).restore(slices, mask=brain)
    assert np.abs(slices - restored).max() > 0.01  # the restoration did change the slices
    for version in ("1", "2"):
        out = served["outputs"][version]
        np.testing.assert_allclose(out["restore/restoration"], restored, rtol=0, atol=ATOL)
        np.testing.assert_allclose(out["restore/lesion_map"], np.abs(slices - restored), rtol=0, atol=ATOL)
        assert np.array_equal(out["restore/restoration"][~brain], slices[~brain])


def test_map_tv_serving_default_matches_in_process_detector(served):
    from tfuad.detection.detector import Detector

    slices = served["slices"]
    detector = Detector(served["run"], "map-tv", schedule="fast")
    brain = slices != detector.pconfig.background_value
    maps, _ = detector.slice_maps(slices, brain)
    out = served["outputs"]["2"]
    np.testing.assert_allclose(out["serving_default/anomaly_map"], np.where(brain, maps, 0.0), rtol=0, atol=ATOL)
    _assert_mask(out["serving_default/mask"], np.where(brain, maps, 0.0), _slice_threshold(served["run"], "map-tv"))


def test_savedmodel_loads_without_tfuad_and_lists_documented_signatures(served):
    report = served["report"]
    assert report["1"]["signatures"] == report["2"]["signatures"] == sorted(SIGNATURES)
    cli = Path(sys.executable).parent / "saved_model_cli"
    shown = subprocess.run([str(cli), "show", "--all", "--dir", str(served["base"] / "sae" / "1")],
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert shown.returncode == 0, shown.stderr[-2000:]
    blocks = {b.split("']", 1)[0]: b for b in shown.stdout.split("signature_def['")[1:]}
    outputs = {"serving_default": {"anomaly_map": "DT_FLOAT", "mask": "DT_BOOL", "threshold": "DT_FLOAT"},
               "reconstruct": {"reconstruction": "DT_FLOAT"},
               "restore": {"restoration": "DT_FLOAT", "lesion_map": "DT_FLOAT"}}
    for name, expected in outputs.items():
        block = blocks[name]
        inputs, outs = block.split("output(s):")
        assert "inputs['slices']" in inputs and "DT_FLOAT" in inputs and "shape: (-1, 64, 64, 1)" in inputs
        listed = dict(zip([s.split("']")[0] for s in outs.split("outputs['")[1:]],
                          [s.split("dtype: ")[1].split()[0] for s in outs.split("outputs['")[1:]]))
        assert listed == expected
        assert "Method name is: tensorflow/serving/predict" in block


def test_warmup_requests_parse_and_replay(served):
    for version in ("1", "2"):
        warmup = served["report"][version]["warmup"]
        assert sorted(w["signature"] for w in warmup) == sorted(SIGNATURES)
        for record in warmup:
            assert record["model"] == "sae"
            volume = record["signature"].startswith("detect_volume")
            assert record["shape"] == ([8, 64, 64, 1] if volume else [2, 64, 64, 1])
            outputs = record["outputs"]
            assert outputs and all(finite for _, finite in outputs.values())
            maps = [shape for key, (shape, _) in outputs.items() if key != "threshold"]
            assert all(shape == ([64, 64, 8] if volume else [2, 64, 64, 1]) for shape in maps)
            if "threshold" in outputs:
                assert outputs["threshold"][0] == ([] if volume else [2])


def test_malformed_requests_fail_in_the_graph(served):
    errors = served["report"]["1"]["errors"]
    assert len(errors) == 12
    for key, message in errors.items():
        # finite input far outside the normalised range: a signature answers finite values or fails
        # saying why, never answers NaN
        if key.endswith("/huge"):
            assert message is None or "is not finite: send slices normalised" in message
            continue
        assert message is not None, f"{key} was accepted"
        if key.endswith("/nan"):
            assert "slices contain NaN or infinite values" in message
        else:
            assert "is not compatible with expected shape [?,64,64,1]" in message


def test_preprocess_contract_lets_a_python_client_rebuild_the_request(served):
    from tfuad.data.preprocessing import PreprocessConfig, prepare_volume

    meta, run_config = served["meta"]["1"], served["detector"].config
    assert meta["preprocess"] == run_config["preprocess"]
    assert meta["background_value"] == 0.0 and meta["input"]["shape"] == [None, 64, 64, 1]
    assert meta["slice_threshold"] == _slice_threshold(served["run"], "residual")
    assert meta["method"] == "residual" and meta["restore"]["lambda"] == 1.0
    assert meta["restore"]["schedule"] == "fast"
    assert meta["volume_thresholds"] == json.loads((served["run"] / "calibration-residual.json").read_text())[
        "thresholds"]
    assert served["meta"]["2"]["method"] == "map-tv"
    assert served["meta"]["2"]["slice_threshold"] == _slice_threshold(served["run"], "map-tv")
    subject = served["subject"]
    client = prepare_volume(subject.image("flair"), PreprocessConfig.from_dict(meta["preprocess"]),
                            brain_mask_path=subject.brain_mask, stats=meta["intensity_stats"])
    np.testing.assert_array_equal(client.slices, served["prep"].slices)
    assert "exported sae version 1" in served["cli_output"]


def test_versions_are_numbered_and_never_overwritten(served):
    model_dir = served["base"] / "sae"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "notes"]  # no temporary folder left
    before = (model_dir / "1" / "saved_model.pb").read_bytes()
    refused = cli("export", served["run"], "--out", served["base"], "--version", 1)
    assert refused.exit_code == 1
    assert "version 1 of model 'sae' exists already" in refused.output
    assert "write version 3" in refused.output
    assert (model_dir / "1" / "saved_model.pb").read_bytes() == before
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "notes"]


def test_uncalibrated_fpr_and_inconsistent_lambda_are_refused(served):
    result = cli("export", served["run"], "--out", served["base"], "--fpr", 0.2)
    assert result.exit_code == 1 and "FPR limit 0.2 has no slice-level threshold" in result.output
    result = cli("export", served["run"], "--out", served["base"], "--method", "map-tv", "--lam", 3)
    assert result.exit_code == 1 and "calibrated with lambda=1" in result.output
    assert sorted(p.name for p in (served["base"] / "sae").iterdir()) == ["1", "2", "notes"]
