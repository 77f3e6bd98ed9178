"""Batch-norm statistics recomputed on training slices (tfuad.training.batch_norm)."""
import keras
import numpy as np
import pytest

from tfuad.models import model_class
from tfuad.training import TrainConfig
from tfuad.training.batch_norm import RecomputedBatchNorm, batch_norm_layers, recompute_batch_norm

TINY = {"base_filters": 4, "max_filters": 8}


def _slices(n=40, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, size, size, 1)) * rng.uniform(0.5, 2.0, (n, 1, 1, 1))).astype("float32")


def test_the_statistics_are_the_population_moments_pooled_over_batches():
    x = _slices(50) * 3.0 + 1.0
    model = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.BatchNormalization()])
    assert recompute_batch_norm(model, x, batch_size=16) == 1  # batches of 16, 16, 16, 2
    bn = batch_norm_layers(model)[0]
    np.testing.assert_allclose(np.asarray(bn.moving_mean), x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), x.var(axis=(0, 1, 2)), rtol=1e-4)
    assert bn.momentum == pytest.approx(0.99)  # the layer's momentum is put back


@pytest.mark.parametrize("name", ["sae", "vae"])
def test_in_one_batch_inference_then_matches_training_mode(name):
    """With every slice in one batch, the recomputed statistics are that batch's at every layer."""
    size = 64 if name == "vae" else 32
    model = model_class(name)(image_size=size, **(TINY if name == "sae" else {}))
    x = _slices(12, size)
    model(x, training=False)
    for bn in batch_norm_layers(model):  # stale statistics, as after training on other data
        bn.moving_mean.assign(np.full(bn.moving_mean.shape, 0.3, "float32"))
        bn.moving_variance.assign(np.full(bn.moving_variance.shape, 4.0, "float32"))
    seeds_before = [np.array(v) for v in model.variables if v.path.endswith("seed_generator_state")]
    stale = model.reconstruct(x, training=False).numpy()
    assert recompute_batch_norm(model, x, batch_size=64) == len(batch_norm_layers(model)) > 0
    fresh = model.reconstruct(x, training=False).numpy()
    if name == "sae":  # deterministic in training mode too
        np.testing.assert_allclose(fresh, model.reconstruct(x, training=True).numpy(), atol=2e-4)
    assert np.abs(fresh - stale).max() > 1e-2
    seeds_after = [np.array(v) for v in model.variables if v.path.endswith("seed_generator_state")]
    for a, b in zip(seeds_before, seeds_after):
        np.testing.assert_array_equal(a, b)


def test_the_callback_runs_before_validation_within_fit():
    """After fit with validation, the moving statistics are the recomputed ones of the final weights."""
    x = _slices(64)
    model = model_class("sae")(image_size=32, **TINY)
    model.compile()
    model.fit(x, validation_data=(x[:16],), epochs=2, batch_size=16, verbose=0,
              callbacks=[RecomputedBatchNorm(x, batch_size=32)])
    after_fit = [np.array(bn.moving_mean) for bn in batch_norm_layers(model)]
    recompute_batch_norm(model, x, batch_size=32)
    for a, bn in zip(after_fit, batch_norm_layers(model)):
        np.testing.assert_allclose(a, np.asarray(bn.moving_mean), rtol=1e-4, atol=1e-6)

    plain = model_class("sae")(image_size=32, **TINY)
    plain.compile()
    plain.fit(x, validation_data=(x[:16],), epochs=2, batch_size=16, verbose=0)
    moving = [np.array(bn.moving_mean) for bn in batch_norm_layers(plain)]
    recompute_batch_norm(plain, x, batch_size=32)
    assert max(np.abs(a - np.asarray(bn.moving_mean)).max() for a, bn in zip(moving, batch_norm_layers(plain))) > 1e-3


def test_the_setting_is_stored_and_checked():
    assert TrainConfig(model="sae").bn_statistics == "moving"  # the default, as runs made before the option
    assert TrainConfig.from_stored({"model": "sae"}, "config.json").bn_statistics == "moving"
    assert TrainConfig.from_stored({"model": "sae", "bn_statistics": "recomputed"}, "c").bn_statistics == "recomputed"
    from tfuad.errors import ConfigError

    with pytest.raises(ConfigError, match="bn_statistics"):
        TrainConfig(model="sae", bn_statistics="exact")
