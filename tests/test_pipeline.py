"""Tests of the tf.data slice pipeline."""
import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from tfuad.data.pipeline import collect_slices, slice_dataset
from tfuad.data.preprocessing import PreprocessConfig, prepare_volume
from tfuad.errors import DatasetError


def _numbered(n=10, size=16):
    """Slice i is constant i, so a batch reveals the order of its slices."""
    return np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, size, size, 1), np.float32)


def _ids(ds):
    return [batch[:, 0, 0, 0].numpy().round().astype(int).tolist() for batch in ds]


def test_batches_have_the_expected_shapes_and_dtype():
    ds = slice_dataset(_numbered(10).astype(np.float64), batch_size=4, shuffle=False)
    batches = list(ds)
    assert [tuple(b.shape) for b in batches] == [(4, 16, 16, 1), (4, 16, 16, 1), (2, 16, 16, 1)]
    assert all(b.dtype == tf.float32 for b in batches)
    assert _ids(ds) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    dropped = slice_dataset(_numbered(10), batch_size=4, shuffle=False, drop_remainder=True)
    assert dropped.element_spec.shape.as_list() == [4, 16, 16, 1]
    assert len(list(dropped)) == 2


def test_shuffling_is_deterministic_for_a_seed():
    x = _numbered(12)
    first = _ids(slice_dataset(x, batch_size=12, seed=7))
    assert first == _ids(slice_dataset(x, batch_size=12, seed=7))
    assert sorted(first[0]) == list(range(12)) and first[0] != list(range(12))
    assert first != _ids(slice_dataset(x, batch_size=12, seed=8))
    # reshuffled every epoch, reproducibly
    epochs = _ids(slice_dataset(x, batch_size=12, seed=7, repeat=True).take(3))
    assert epochs[0] == first[0] and epochs[1] != epochs[0]
    assert epochs == _ids(slice_dataset(x, batch_size=12, seed=7, repeat=True).take(3))


def test_cache_and_repeat():
    calls = []

    def decode(i):
        calls.append(int(i))
        return np.full((8, 8, 1), float(i), np.float32)

    def slow_source():
        ids = tf.data.Dataset.range(5)
        return ids.map(lambda i: tf.ensure_shape(tf.numpy_function(decode, [i], tf.float32), (8, 8, 1)))

    ds = slice_dataset(slow_source(), batch_size=5, seed=1, cache=True, repeat=True)
    epochs = _ids(ds.take(4))
    assert all(sorted(e) == [0, 1, 2, 3, 4] for e in epochs)
    assert len(calls) == 5  # decoded once, then served from the cache
    calls.clear()
    _ids(slice_dataset(slow_source(), batch_size=5, seed=1, cache=False, repeat=True).take(4))
    assert len(calls) >= 20  # decoded again every epoch (prefetching may read ahead)


def test_bad_inputs():
    with pytest.raises(DatasetError):
        slice_dataset(np.zeros((0, 8, 8, 1)))
    with pytest.raises(DatasetError):
        slice_dataset(np.zeros((4, 8, 8)))
    with pytest.raises(DatasetError):
        slice_dataset(np.full((2, 8, 8, 1), np.nan))
    with pytest.raises(ValueError):
        slice_dataset(np.zeros((2, 8, 8, 1)), batch_size=0)
    with pytest.raises(DatasetError):
        collect_slices([], lambda p: [0])


def test_collect_slices_from_prepared_volumes(tmp_path):
    cfg = PreprocessConfig(image_size=32, healthy_margin=1, min_brain_fraction=0.05)
    prepared = []
    for k in range(2):
        data = np.zeros((30, 30, 10), np.float32)
        data[5:25, 6:24, :] = 100.0 + 10 * k + np.arange(10)  # slice value encodes the slice
        seg = np.zeros(data.shape, np.uint8)
        seg[10:12, 10:12, 4 + k] = 1
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / f"s{k}.nii.gz"))
        nib.save(nib.Nifti1Image(seg, np.eye(4)), str(tmp_path / f"s{k}_seg.nii.gz"))
        prepared.append(prepare_volume(tmp_path / f"s{k}.nii.gz", cfg,
                                       lesion_mask_path=tmp_path / f"s{k}_seg.nii.gz"))
    train = collect_slices(prepared, lambda p: p.training_indices(cfg))
    expected = [p.training_indices(cfg) for p in prepared]
    assert [e.tolist() for e in expected] == [[0, 1, 2, 6, 7, 8, 9], [0, 1, 2, 3, 7, 8, 9]]
    assert train.shape == (14, 32, 32, 1) and train.dtype == np.float32
    np.testing.assert_array_equal(train[:7], prepared[0].slices[expected[0]])
    np.testing.assert_array_equal(train[7:], prepared[1].slices[expected[1]])
    batches = list(slice_dataset(train, batch_size=8, seed=0))
    assert [b.shape[0] for b in batches] == [8, 6]
    other = prepare_volume(tmp_path / "s0.nii.gz", PreprocessConfig(image_size=16))
    with pytest.raises(DatasetError, match="differ"):
        collect_slices([prepared[0], other], lambda p: [0])
