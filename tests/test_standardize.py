"""Histogram standardisation (Nyúl–Udupa) and its use in preprocessing."""
import numpy as np
import pytest

from tfuad.data.preprocessing import PreprocessConfig, fit_intensity_stats, normalize_intensity
from tfuad.data.standardize import DEFAULT_LANDMARKS, HistogramStandardizer, landmarks, piecewise_linear
from tfuad.errors import ConfigError, DataError, EmptyMaskError


def _brain(seed=0, shape=(20, 22, 18)):
    """A skull-stripped-like volume: gamma-distributed brain, zero background."""
    rng = np.random.default_rng(seed)
    data = np.zeros(shape)
    mask = np.zeros(shape, bool)
    mask[3:-3, 3:-3, 2:-2] = True
    data[mask] = rng.gamma(5.0, 40.0, int(mask.sum()))
    return data, mask


def test_scaled_and_shifted_copy_maps_back_onto_the_reference_landmarks():
    ref, mask = _brain(0)
    std = HistogramStandardizer.fit([ref], [mask])
    other = ref * 2.7 + 130.0
    other[~mask] = 0
    mapped = std.apply(other, mask)
    assert np.allclose(landmarks(mapped[mask]), std.standard, atol=1e-9)
    assert np.allclose(mapped[mask], std.apply(ref, mask)[mask], atol=1e-9)
    # a non-linear (gamma-curve) intensity change is also undone at the landmarks
    warped = np.where(mask, (ref / ref.max()) ** 1.7 * 900.0, 0.0)
    assert np.allclose(landmarks(std.apply(warped, mask)[mask]), std.standard, atol=1e-3)


def test_standard_scale_averages_subjects_between_the_scale_ends():
    vols = [_brain(s) for s in range(3)]
    std = HistogramStandardizer.fit([v for v, _ in vols], [m for _, m in vols], scale=(0.0, 1.0))
    assert std.percentiles == DEFAULT_LANDMARKS
    assert std.standard[0] == pytest.approx(0.0) and std.standard[-1] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(std.standard, std.standard[1:]))


def test_piecewise_linear_extrapolates_with_the_end_segments():
    out = piecewise_linear(np.array([-2.0, 0.0, 1.5, 4.0]), [0.0, 1.0, 2.0], [10.0, 20.0, 40.0])
    assert out.tolist() == [-10.0, 10.0, 30.0, 80.0]


def test_save_load_round_trip_and_bad_files(tmp_path):
    ref, mask = _brain(1)
    std = HistogramStandardizer.fit([ref], [mask])
    path = std.save(tmp_path / "standardizer.json")
    assert HistogramStandardizer.load(path) == std
    (tmp_path / "bad.json").write_text('{"percentiles": [1, 99]}')
    with pytest.raises(ConfigError, match="bad.json"):
        HistogramStandardizer.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="missing.json"):
        HistogramStandardizer.load(tmp_path / "missing.json")


def test_bad_inputs_raise_clear_errors():
    ref, mask = _brain(2)
    with pytest.raises(DataError, match="not increasing"):
        HistogramStandardizer.fit([np.ones((4, 4, 4))])
    with pytest.raises(EmptyMaskError):
        HistogramStandardizer.fit([ref], [np.zeros_like(mask)])
    with pytest.raises(DataError, match="shape"):
        HistogramStandardizer.fit([ref], [mask[:-1]])
    with pytest.raises(ConfigError, match="increasing"):
        HistogramStandardizer((1.0, 50.0, 99.0), (0.0, 0.7, 0.5))
    with pytest.raises(ConfigError, match="percentiles"):
        landmarks(ref, (50.0, 10.0))
    with pytest.raises(ValueError, match="at least one"):
        HistogramStandardizer.fit([])


@pytest.mark.parametrize("normalization", ["percentile", "zscore"])
def test_preprocessing_with_standardisation_removes_scanner_differences(normalization):
    cfg = PreprocessConfig(normalization=normalization, standardize=True)
    train = [_brain(s) for s in range(3)]
    stats = fit_intensity_stats([v for v, _ in train], [m for _, m in train], cfg)
    assert "standardizer" in stats and (normalization != "zscore" or {"mean", "std"} <= set(stats))
    test, mask = _brain(7)
    other = np.where(mask, test * 0.4 + 55.0, 0.0)  # the same subject on "another scanner"
    a = normalize_intensity(test, mask, cfg, stats)
    b = normalize_intensity(other, mask, cfg, stats)
    assert np.allclose(a, b, atol=1e-5)
    assert np.all(a[~mask] == cfg.background_value)
    # without standardisation, fixed z-scoring keeps the scanner difference
    if normalization == "zscore":
        plain = PreprocessConfig(normalization="zscore")
        plain_stats = fit_intensity_stats([v for v, _ in train], [m for _, m in train], plain)
        diff = np.abs(normalize_intensity(test, mask, plain, plain_stats)
                      - normalize_intensity(other, mask, plain, plain_stats))[mask]
        assert diff.mean() > 0.5
    with pytest.raises(ConfigError, match="standardize"):
        normalize_intensity(test, mask, cfg, {"mean": 0.0, "std": 1.0})
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="standardize"):
        PreprocessConfig(standardize="yes")
