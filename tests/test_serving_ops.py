"""The serving graph's volume operations (tfuad.export.volume) against tfuad's NumPy/SciPy post-processing."""
import numpy as np
import pytest
import tensorflow as tf

from tfuad.data.preprocessing import SliceGeometry
from tfuad.export import volume as ops
from tfuad.postprocessing import filters


@pytest.mark.parametrize("shape,size", [((9, 11, 7), 3), ((12, 10, 13), 5), ((3, 20, 4), 5), ((1, 5, 6), 3)])
def test_median_filter_is_scipys_with_the_reflect_border(shape, size):
    volume = np.random.default_rng(sum(shape)).random(shape).astype(np.float32)
    volume[volume < 0.3] = 0.0  # ties, as in maps that are 0 outside the brain
    served = ops.median_filter(tf.constant(volume), size, block_elements=size ** 3 * 17).numpy()
    np.testing.assert_array_equal(served, filters.median_filter_3d(volume, size))


@pytest.mark.parametrize("iterations", [1, 3])
def test_erosion_treats_the_array_border_as_brain(iterations):
    mask = np.random.default_rng(iterations).random((15, 14, 12)) > 0.25
    mask[:, :, 0] = True  # touches the border
    np.testing.assert_array_equal(ops.erode(tf.constant(mask), iterations).numpy(),
                                  filters.erode_mask(mask, iterations))


@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_small_components_are_removed_as_scipy_labels_them(connectivity):
    rng = np.random.default_rng(connectivity)
    for _ in range(3):
        binary = rng.random((20, 18, 16)) > 0.75
        np.testing.assert_array_equal(ops.remove_small_components(tf.constant(binary), 6, connectivity).numpy(),
                                      filters.remove_small_components(binary, 6, connectivity))


def test_components_of_any_length_and_an_empty_volume():
    snake = np.zeros((40, 40, 5), bool)  # one 26-connected serpentine of 820 voxels, and a 5-voxel rod
    snake[::2, :, 2] = True
    snake[1::4, 0, 2] = True
    snake[3::4, -1, 2] = True
    snake[5, 5:10, 0] = True
    kept = ops.remove_small_components(tf.constant(snake), 6).numpy()
    np.testing.assert_array_equal(kept, filters.remove_small_components(snake, 6))
    assert kept.sum() == snake.sum() - 5
    assert not ops.remove_small_components(tf.constant(np.zeros((4, 4, 4), bool)), 6).numpy().any()


@pytest.mark.parametrize("shape,size,margin", [((60, 70, 9), 64, 3), ((100, 120, 5), 64, 0), ((40, 30, 4), 64, 2)])
def test_slice_geometry_and_its_inverse_match_slicegeometry(shape, size, margin):
    rng = np.random.default_rng(shape[0])
    mask = np.zeros(shape, bool)
    mask[5:shape[0] - 7, 9:shape[1] - 3, 1:] = rng.random((shape[0] - 12, shape[1] - 12, shape[2] - 1)) > 0.2
    reference = SliceGeometry.from_mask(mask, size, margin)
    geo = ops.geometry(tf.constant(mask), margin)
    assert (int(geo.x0), int(geo.x1), int(geo.y0), int(geo.y1), int(geo.side)) == (*reference.box, reference.side)
    np.testing.assert_array_equal(ops.to_slices(tf.constant(mask), geo, size).numpy(), reference.to_slices(mask))
    maps = rng.random((shape[2], size, size)).astype(np.float32)
    expected = reference.to_volume(maps, order=1, fill=0)
    served = ops.to_volume(tf.constant(maps), geo).numpy()
    # SciPy's zoom sums the same float64 terms in another order: a float32 tie can round the other way
    np.testing.assert_allclose(served, expected, rtol=2 ** -23, atol=0)
    assert np.mean(served != expected) < 1e-3


def test_postprocess_and_segment_match_tfuad_detects():
    rng = np.random.default_rng(7)
    raw = rng.random((30, 36, 24)).astype(np.float32)
    brain = np.zeros(raw.shape, bool)
    brain[4:27, 5:30, 3:21] = True
    config = filters.PostprocessConfig()
    expected = filters.postprocess_map(raw, brain, config)
    served = ops.postprocess_map(tf.constant(raw), tf.constant(brain), config.median_size,
                                 config.erosion_iterations).numpy()
    np.testing.assert_array_equal(served, expected)
    threshold = float(np.quantile(expected[expected > 0], 0.9))
    np.testing.assert_array_equal(ops.segment(tf.constant(served), threshold, 6, 3).numpy(),
                                  filters.segment(expected, threshold, config))


def test_empty_brain_after_erosion_fails_with_its_message():
    brain = np.zeros((10, 10, 10), bool)
    brain[4:6, 4:6, 4:6] = True
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty after 3 erosion iterations"):
        ops.postprocess_map(tf.zeros((10, 10, 10)), tf.constant(brain), 5, 3)
