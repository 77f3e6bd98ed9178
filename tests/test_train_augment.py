"""The training stream: brain-slice augmentation in TensorFlow ops, reproducible and resumable."""
import numpy as np
import pytest
import tensorflow as tf

from tfuad.data.layouts import discover
from tfuad.data.pipeline import augment_brain_slice, collect_slices, training_batches
from tfuad.data.preprocessing import PreprocessConfig
from tfuad.data.splits import prepare_split, split_subjects


@pytest.fixture(scope="module", params=["percentile", "zscore"])
def slices(request, demo_data):
    """Healthy 32 px FLAIR slices of one demo subject, and their background value."""
    config = PreprocessConfig(image_size=32, normalization=request.param)
    subjects = split_subjects(discover(demo_data), "train")[:1]
    stats = {"mean": 0.4, "std": 0.2} if request.param == "zscore" else None
    prepared, _ = prepare_split(subjects, "flair", config, stats, log=lambda *a: None)
    return collect_slices(prepared, lambda p: p.training_indices(config)), config.background_value


def _stream(x, **kwargs):
    ds, steps = training_batches(x, **{"batch_size": 8, "epochs": 1, "seed": 0, **kwargs})
    return [b.numpy() for b in ds], steps


def test_augmented_batches_keep_shape_dtype_and_background(slices):
    x, background = slices
    blank = np.full((3, *x.shape[1:]), background, np.float32)
    data = np.concatenate([x, blank])
    batches, steps = _stream(data, augment=True, background=background)
    assert steps == len(batches) == -(-len(data) // 8)
    out = np.concatenate(batches)
    assert all(b.dtype == np.float32 and b.shape[1:] == x.shape[1:] for b in batches)
    assert out.shape == data.shape
    blanks = [o for o in out if np.all(o == background)]
    assert len(blanks) >= 3  # slices without brain stay exactly background
    corners = np.concatenate([out[:, :2, :2], out[:, :2, -2:], out[:, -2:, :2], out[:, -2:, -2:]], axis=1)
    assert np.all(corners == background)  # background stays background, no shift of its value
    brain_before, brain_after = (data != background).mean(), (out != background).mean()
    assert abs(brain_after - brain_before) < 0.25 * brain_before  # the brain keeps roughly its size
    if background == 0.0:
        assert out.min() >= 0.0 and out.max() <= x.max() * 1.1 + 1e-5
    assert not np.allclose(np.sort(out.ravel()), np.sort(data.ravel()))  # the data did change


def test_augmentation_is_reproducible_for_a_seed(slices):
    x, background = slices
    a, _ = _stream(x, augment=True, background=background, seed=5)
    b, _ = _stream(x, augment=True, background=background, seed=5)
    c, _ = _stream(x, augment=True, background=background, seed=6)
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
    assert not np.allclose(np.concatenate(a), np.concatenate(c))
    one = tf.constant(x[len(x) // 2])
    np.testing.assert_array_equal(augment_brain_slice(one, [3, 4], background=background).numpy(),
                                  tf.function(augment_brain_slice)(one, [3, 4], background=background).numpy())


def test_geometry_is_centred_and_the_flip_is_left_right(slices):
    x, background = slices
    one = x[len(x) // 2]
    still = dict(rotation=0.0, scale=0.0, shift=0.0, intensity=0.0, gamma=1.0, background=background)
    np.testing.assert_allclose(augment_brain_slice(one, [0, 1], flip=0.0, **still).numpy(), one, atol=1e-6)
    mirrored = [augment_brain_slice(one, [0, s], flip=0.5, **still).numpy() for s in range(12)]
    flips = [np.allclose(m, one[:, ::-1], atol=1e-6) for m in mirrored]
    assert all(f or np.allclose(m, one, atol=1e-6) for f, m in zip(flips, mirrored))
    assert 0 < sum(flips) < len(flips)


def test_each_epoch_visits_every_slice_once_in_its_own_order(slices):
    x, _ = slices
    ds, steps = training_batches(x[:20], batch_size=8, epochs=3, seed=1, augment=False)
    batches = [b.numpy() for b in ds]
    assert [len(b) for b in batches] == [8, 8, 4] * 3 and steps == 3  # no batch straddles two epochs
    keys = [tuple(np.round(s.ravel()[::7], 5)) for s in x[:20]]
    epochs = [np.concatenate(batches[3 * e:3 * e + 3]) for e in range(3)]
    orders = [[keys.index(tuple(np.round(s.ravel()[::7], 5))) for s in epoch] for epoch in epochs]
    assert all(sorted(order) == list(range(20)) for order in orders)
    assert orders[0] != orders[1] != orders[2]


def test_a_stream_started_later_is_the_tail_of_the_whole_stream(slices):
    x, background = slices
    whole, steps = _stream(x, augment=True, background=background, epochs=4, seed=2)
    tail, _ = _stream(x, augment=True, background=background, epochs=4, first_epoch=2, seed=2)
    assert len(tail) == 2 * steps
    for a, b in zip(whole[2 * steps:], tail):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        training_batches(np.zeros((2, 8, 8, 1)), batch_size=0, epochs=1)
    with pytest.raises(ValueError, match="no epoch"):
        training_batches(np.zeros((2, 8, 8, 1)), batch_size=1, epochs=2, first_epoch=2)
    with pytest.raises(ValueError, match="one slice"):
        augment_brain_slice(tf.zeros((2, 8, 8, 1)), [0, 0])
