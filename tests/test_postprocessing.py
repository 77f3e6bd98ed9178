"""Median filter, mask erosion, small-component removal and the post-processing pipeline."""
import numpy as np
import pytest

from tfuad.errors import ConfigError, EmptyMaskError
from tfuad.postprocessing import (
    PostprocessConfig,
    erode_mask,
    median_filter_3d,
    postprocess_map,
    remove_small_components,
    segment,
)


def _ball(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


def test_lone_voxel_removed_and_block_kept():
    seg = np.zeros((16, 16, 16), bool)
    seg[1, 1, 1] = True
    seg[8:11, 8:11, 8:11] = True
    out = remove_small_components(seg, min_size=6)
    assert not out[1, 1, 1]
    assert out[8:11, 8:11, 8:11].all()
    assert out.sum() == 27


def test_six_voxel_component_kept_five_voxel_removed():
    seg = np.zeros((10, 10, 10), bool)
    seg[1, 1, 1:6] = True   # 5 voxels
    seg[6, 6, 0:6] = True   # 6 voxels
    out = remove_small_components(seg, min_size=6)
    assert not out[1, 1].any()
    assert out[6, 6, 0:6].all()
    assert out.sum() == 6


def test_component_connectivity():
    seg = np.zeros((6, 6, 6), bool)
    seg[1, 1, 1] = seg[2, 2, 2] = seg[3, 3, 3] = True   # a chain touching only at corners
    assert remove_small_components(seg, min_size=3, connectivity=3).sum() == 3
    assert remove_small_components(seg, min_size=3, connectivity=1).sum() == 0
    assert remove_small_components(seg, min_size=1).sum() == 3


def test_erosion_shrinks_cube_by_iterations_on_each_side():
    mask = np.zeros((20, 20, 20), bool)
    mask[5:15, 5:15, 5:15] = True                      # side 10
    eroded = erode_mask(mask, iterations=2)
    expected = np.zeros_like(mask)
    expected[7:13, 7:13, 7:13] = True                  # side 10 - 2 * 2
    np.testing.assert_array_equal(eroded, expected)
    np.testing.assert_array_equal(erode_mask(mask, iterations=0), mask)


def test_erosion_ignores_the_array_border():
    full = np.ones((8, 8, 8), bool)
    assert erode_mask(full, iterations=3).all()
    half = np.zeros((8, 8, 8), bool)
    half[:, :, :4] = True                              # brain cut by the field of view at z=0
    eroded = erode_mask(half, iterations=1)
    assert eroded[:, :, :3].all() and not eroded[:, :, 3:].any()


def test_median_filter_removes_salt_noise_and_keeps_large_structures():
    rng = np.random.default_rng(0)
    volume = np.ones((24, 24, 24), np.float32)
    volume[6:18, 6:18, 6:18] = 3.0
    noisy = volume.copy()
    salt = rng.random(volume.shape) < 0.03
    noisy[salt] = 50.0
    filtered = median_filter_3d(noisy, size=5)
    assert filtered.dtype == np.float32
    assert filtered.max() < 50.0
    np.testing.assert_array_equal(filtered[9:15, 9:15, 9:15], 3.0)
    np.testing.assert_array_equal(filtered[:3, :3, :3], 1.0)
    np.testing.assert_array_equal(median_filter_3d(noisy, size=1), noisy)


def test_postprocess_map_equals_full_volume_filter_times_eroded_mask():
    rng = np.random.default_rng(1)
    shape = (30, 26, 22)
    residual = rng.normal(size=shape).astype(np.float32)
    brain = _ball(shape, (12, 13, 4), 9)               # touches the z=0 border
    config = PostprocessConfig(median_size=5, erosion_iterations=2)
    score = postprocess_map(residual, brain, config)
    expected = median_filter_3d(residual, 5) * erode_mask(brain, 2)
    assert score.dtype == np.float32
    np.testing.assert_array_equal(score, expected)
    assert not score[~erode_mask(brain, 2)].any()


def test_disabled_steps_reduce_to_plain_masking_and_thresholding():
    rng = np.random.default_rng(2)
    residual = rng.random((12, 12, 12)).astype(np.float32)
    brain = np.zeros((12, 12, 12), bool)
    brain[2:10, 2:10, 2:10] = True
    off = PostprocessConfig(median_size=1, erosion_iterations=0, min_component_size=0)
    score = postprocess_map(residual, brain, off)
    np.testing.assert_array_equal(score, residual * brain)
    np.testing.assert_array_equal(segment(score, 0.5, off), score > 0.5)


def test_segment_thresholds_strictly_and_removes_small_components():
    score = np.zeros((12, 12, 12), np.float32)
    score[1, 1, 1] = 9.0                               # lone voxel
    score[4:7, 4:7, 4:7] = 2.0                         # 27 voxels
    score[9, 9, 2:8] = 1.0                             # 6 voxels exactly at the threshold
    seg = segment(score, 1.0, PostprocessConfig())
    assert seg.dtype == bool
    assert seg.sum() == 27 and seg[4:7, 4:7, 4:7].all()
    assert segment(score, 0.999, PostprocessConfig())[9, 9, 2:8].all()


def test_config_round_trip_and_validation():
    config = PostprocessConfig(median_size=3, erosion_iterations=1, min_component_size=10, connectivity=1)
    assert PostprocessConfig.from_dict(config.to_dict()) == config
    assert PostprocessConfig().to_dict() == {"median_size": 5, "erosion_iterations": 3,
                                             "min_component_size": 6, "connectivity": 3}
    with pytest.raises(ConfigError, match="unknown"):
        PostprocessConfig.from_dict({"median": 5})
    with pytest.raises(ConfigError, match="odd"):
        PostprocessConfig(median_size=4)
    with pytest.raises(ConfigError, match="connectivity"):
        PostprocessConfig(connectivity=4)
    with pytest.raises(ConfigError, match="erosion_iterations"):
        PostprocessConfig(erosion_iterations=-1)


def test_invalid_inputs_raise_clear_errors():
    vol = np.zeros((6, 6, 6), np.float32)
    brain = np.ones((6, 6, 6), bool)
    with pytest.raises(ValueError, match="differs"):
        postprocess_map(vol, np.ones((6, 6, 5), bool))
    with pytest.raises(ValueError, match="3D"):
        median_filter_3d(np.zeros((6, 6)))
    with pytest.raises(ValueError, match="empty"):
        remove_small_components(np.zeros((0, 4, 4), bool))
    bad = vol.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        postprocess_map(bad, brain)
    with pytest.raises(EmptyMaskError, match="no non-zero"):
        postprocess_map(vol, np.zeros_like(brain))
    with pytest.raises(EmptyMaskError, match="after 3 erosion"):
        postprocess_map(vol, brain & (np.indices(brain.shape)[0] < 2), PostprocessConfig(erosion_iterations=3))
    with pytest.raises(ValueError, match="finite"):
        segment(vol, float("nan"))
    with pytest.raises(ValueError, match="odd"):
        median_filter_3d(vol, size=2)
