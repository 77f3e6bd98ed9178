"""Percentile and FPR-limited thresholds, and the Calibration record."""
import json

import nibabel as nib
import numpy as np
import pytest

from tfuad.data.nifti import load_mask, load_volume
from tfuad.errors import ConfigError, DataError
from tfuad.metrics import false_positive_rate
from tfuad.postprocessing import (
    Calibration,
    PostprocessConfig,
    brain_values,
    calibrate,
    fpr_threshold,
    fpr_thresholds,
    percentile_threshold,
    postprocess_map,
    segment,
)

FPR_GRID = (0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.29, 0.5, 0.9, 0.999)


def _tied_values(seed, n=5000):
    rng = np.random.default_rng(seed)
    return np.round(rng.gamma(2.0, 1.0, size=n), 1).astype(np.float32)   # many ties


@pytest.mark.parametrize("q", [0.0, 50.0, 98.0, 99.5, 100.0])
def test_percentile_matches_numpy(q):
    values = np.random.default_rng(0).normal(size=1001)
    assert percentile_threshold(values, q) == float(np.percentile(values, q))
    parts = iter(np.array_split(values, 7))
    assert percentile_threshold(parts, q) == float(np.percentile(values, q))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fpr_threshold_meets_limit_and_is_smallest(seed):
    values = _tied_values(seed)
    distinct = np.unique(values)
    for fpr in FPR_GRID:
        t = fpr_threshold(values, fpr)
        assert np.mean(values > t) <= fpr
        assert t in distinct
        below = distinct[distinct < t]
        if below.size:
            assert np.mean(values > below[-1]) > fpr
        else:
            assert t == values.min()
        brute = next(v for v in distinct if np.mean(values > v) <= fpr)
        assert t == float(brute)


def test_fpr_threshold_with_heavy_ties_and_float_edge_cases():
    values = np.array([0, 1, 1, 1, 2, 3, 4, 5, 6, 9], np.float32)
    assert fpr_thresholds(values, (0.1, 0.5, 0.6, 0.7)) == {0.1: 6.0, 0.5: 2.0, 0.6: 1.0, 0.7: 1.0}
    assert fpr_threshold(values, 0.0) == 9.0
    hundred = np.arange(100, dtype=np.float64)
    # 0.29 * 100 is 28.999... in floating point, but 29 / 100 == 0.29: 29 exceedances are allowed.
    t = fpr_threshold(hundred, 0.29)
    assert np.sum(hundred > t) == 29
    assert np.mean(hundred > t) <= 0.29
    constant = np.full(50, 0.7, np.float32)
    assert fpr_threshold(constant, 0.01) == pytest.approx(0.7)
    assert np.mean(constant > fpr_threshold(constant, 0.01)) == 0.0


def test_fpr_thresholds_monotone_and_exact_on_float32_maps():
    values = np.random.default_rng(3).random(20000).astype(np.float32)
    thresholds = fpr_thresholds(values, FPR_GRID)
    ordered = [thresholds[f] for f in sorted(FPR_GRID)]
    assert all(a >= b for a, b in zip(ordered, ordered[1:]))
    volume = values.reshape(20, 25, 40)
    for fpr, t in thresholds.items():
        assert np.count_nonzero(volume > t) / volume.size <= fpr


def test_weighted_fpr_thresholds():
    """Equal weights give the unweighted thresholds; integer weights act as repeated values."""
    for seed in range(3):
        values = _tied_values(seed)
        assert fpr_thresholds(values, FPR_GRID, weights=np.full(values.size, 2.5)) == fpr_thresholds(values, FPR_GRID)
        counts = np.random.default_rng(seed).integers(0, 4, values.size)
        weighted = fpr_thresholds(values, FPR_GRID, weights=counts)
        assert weighted == fpr_thresholds(np.repeat(values, counts), FPR_GRID)
        for fpr, t in weighted.items():  # the weighted limit holds, and no smaller value of the data meets it
            assert counts[values > t].sum() <= fpr * counts.sum()
            smaller = values[(values < t) & (counts > 0)]
            if smaller.size:
                assert counts[values > smaller.max()].sum() > fpr * counts.sum()
    with pytest.raises(ValueError, match="3 weights for 10"):
        fpr_thresholds(np.arange(10.0), (0.1,), weights=[1, 1, 1])
    for bad in ([-1.0] + [1.0] * 9, [0.0] * 10, [np.nan] + [1.0] * 9):
        with pytest.raises(ValueError, match="weights must be"):
            fpr_thresholds(np.arange(10.0), (0.1,), weights=bad)


def test_invalid_fpr_and_values():
    values = np.arange(10.0)
    for bad in (-0.1, 1.0, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="FPR limit"):
            fpr_threshold(values, bad)
    with pytest.raises(ValueError, match="empty"):
        fpr_threshold(np.array([]), 0.1)
    with pytest.raises(ValueError, match="empty"):
        calibrate(iter([]), method="ae")
    with pytest.raises(ValueError, match="NaN"):
        percentile_threshold(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="percentile"):
        percentile_threshold(values, 101)
    with pytest.raises(ValueError, match="differs"):
        brain_values(np.zeros((3, 3)), np.ones((3, 4), bool))


def test_calibration_json_round_trip(tmp_path):
    values = _tied_values(4)
    cal = calibrate((v for v in np.array_split(values, 3)), method="vae", subject_ids=["s1", "s2"],
                    postprocess=PostprocessConfig().to_dict(), extra={"lambda": 2.4})
    assert set(cal.thresholds) == {"p98", "fpr@0.01", "fpr@0.05", "fpr@0.1"}
    assert cal.n_voxels == values.size
    assert cal.threshold_for(fpr=0.05) == fpr_threshold(values, 0.05)
    assert cal.threshold_for(fpr=0.10) == fpr_threshold(values, 0.1)
    assert cal.threshold_for(percentile=98) == percentile_threshold(values, 98)
    assert cal.fprs == [0.01, 0.05, 0.1]
    path = cal.to_json(tmp_path / "run" / "calibration.json")
    assert json.loads(path.read_text())["extra"] == {"lambda": 2.4}
    assert sorted(p.name for p in path.parent.iterdir()) == ["calibration.json"]   # no temp file left
    again = Calibration.from_json(path)
    assert again == cal
    assert PostprocessConfig.from_dict(again.postprocess) == PostprocessConfig()


def test_uncalibrated_limit_and_bad_files(tmp_path):
    cal = Calibration("ae", {"p98": 0.4, "fpr@0.05": 0.3}, n_voxels=100)
    with pytest.raises(ConfigError, match=r"FPR limit 0.02 was not calibrated.*fpr@0.05"):
        cal.threshold_for(fpr=0.02)
    with pytest.raises(ConfigError, match="percentile 99 was not calibrated"):
        cal.threshold_for(percentile=99)
    with pytest.raises(ValueError, match="exactly one"):
        cal.threshold_for(fpr=0.05, percentile=98)
    with pytest.raises(ConfigError, match="finite"):
        Calibration("ae", {"p98": float("nan")}, n_voxels=1)
    missing = tmp_path / "none.json"
    with pytest.raises(DataError, match="none.json: no such calibration file"):
        Calibration.from_json(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="broken.json: not a readable JSON"):
        Calibration.from_json(broken)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"method": "ae", "n_voxels": 3}))
    with pytest.raises(DataError, match="lacks field"):
        Calibration.from_json(partial)


def test_calibration_on_nifti_volumes_holds_at_detection(tmp_path):
    """Calibrate on healthy NIfTI residuals, then segment the same maps: FPR stays within the limit."""
    rng = np.random.default_rng(5)
    shape = (28, 28, 20)
    grid = np.indices(shape)
    brain = ((grid[0] - 14) ** 2 + (grid[1] - 14) ** 2 + 2 * (grid[2] - 10) ** 2) <= 11 ** 2
    config = PostprocessConfig(median_size=3, erosion_iterations=1, min_component_size=0)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    maps, masks = [], []
    for i in range(2):
        residual = np.abs(rng.normal(size=shape)).astype(np.float32) * brain
        nib.save(nib.Nifti1Image(residual, affine), tmp_path / f"res{i}.nii.gz")
        nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), tmp_path / f"mask{i}.nii.gz")
        vol = load_volume(tmp_path / f"res{i}.nii.gz")
        mask = load_mask(tmp_path / f"mask{i}.nii.gz", vol, what="brain mask")
        maps.append(postprocess_map(vol.data, mask, config))
        masks.append(mask)
    cal = calibrate((brain_values(m, b) for m, b in zip(maps, masks)), method="ae",
                    postprocess=config.to_dict())
    cal = Calibration.from_json(cal.to_json(tmp_path / "calibration.json"))
    config_back = PostprocessConfig.from_dict(cal.postprocess)
    no_lesion = np.zeros(shape, bool)
    for fpr in cal.fprs:
        t = cal.threshold_for(fpr=fpr)
        false_pos = sum(np.count_nonzero(segment(m, t, config_back) & b) for m, b in zip(maps, masks))
        assert false_pos / cal.n_voxels <= fpr
        # two equal-sized subjects: neither can exceed twice the pooled limit
        assert all(false_positive_rate(segment(m, t, config_back), no_lesion, b) <= 2 * fpr
                   for m, b in zip(maps, masks))
