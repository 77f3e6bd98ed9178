"""Tests of the Baur et al. (2018) model zoo: dae, dvae, sae, svae, saegan, anovaegan, anogan.

Every model is trained for a few steps on a fixed batch of tiny (32 px)
synthetic slices, saved to a ``.keras`` file and reloaded.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfuad.errors import ConfigError  # noqa: E402
from tfuad.models import build_model, model_class  # noqa: E402
from tfuad.models.adversarial import AnoGAN  # noqa: E402
from tfuad.models.autoencoders import gaussian_kl  # noqa: E402
from tfuad.models.base import gaussian_log_likelihood  # noqa: E402

SIZE = 32
STEPS = 25
TRUNK = dict(image_size=SIZE, base_filters=4, max_filters=8)
TINY = {
    "dae": dict(TRUNK, latent_dim=16, feature_size=8),
    "dvae": dict(TRUNK, latent_dim=16, feature_size=8),
    "sae": dict(TRUNK, latent_size=8, latent_channels=4),
    "svae": dict(TRUNK, latent_size=8, latent_channels=4),
    "saegan": dict(TRUNK, latent_size=8, latent_channels=4),
    "anovaegan": dict(TRUNK, latent_size=8, latent_channels=4),
    "anogan": dict(TRUNK, latent_dim=8, feature_size=8, anogan_steps=10),
}
NAMES = tuple(TINY)
AUTOENCODERS = ("dae", "dvae", "sae", "svae", "saegan", "anovaegan")
VAES = ("dvae", "svae", "anovaegan")


def synthetic_slices(n: int = 8, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Smooth elliptic 'brains' with a little noise, shape ``(n, size, size, 1)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    slices = []
    for _ in range(n):
        cy, cx = rng.uniform(0.35, 0.65, 2)
        ry, rx = rng.uniform(0.2, 0.35, 2)
        blob = np.exp(-2.0 * (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2))
        slices.append(blob + 0.02 * rng.standard_normal((size, size)))
    return np.asarray(slices, np.float32)[..., None]


X = synthetic_slices()


def new_model(name: str, seed: int = 0):
    keras.utils.set_random_seed(seed)
    return build_model(name, **TINY[name])


def compile_for_test(model):
    if isinstance(model, AnoGAN):
        # Paper generator (Adam 1e-4); a faster discriminator so that its loss
        # falls visibly within a few steps on the fixed batch.
        model.compile(d_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5))
    else:
        model.compile()  # the paper's optimisers
    return model


def fit(model, steps: int):
    dataset = tf.data.Dataset.from_tensors(X).repeat()  # yields x only, no labels
    return model.fit(dataset, epochs=steps, steps_per_epoch=1, shuffle=False, verbose=0).history


@pytest.fixture(scope="module")
def trained():
    """Every model, compiled and trained for ``STEPS`` steps, with its history."""
    out = {}
    for name in NAMES:
        model = compile_for_test(new_model(name))
        out[name] = model, fit(model, STEPS)
    return out


def test_registry_builds_every_model_and_rejects_unknown_names():
    for name in NAMES:
        model = build_model(name, **TINY[name])
        assert isinstance(model, model_class(name))
        assert model.model_name == name
    with pytest.raises(ConfigError, match="unknown model name 'vaegan'"):
        build_model("vaegan")


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes_and_deterministic_reconstruction(trained, name):
    model, _ = trained[name]
    x = X[:3]
    x_hat = model.reconstruct(x)
    assert tuple(x_hat.shape) == (3, SIZE, SIZE, 1)
    assert x_hat.dtype == tf.float32
    np.testing.assert_array_equal(x_hat.numpy(), model.reconstruct(x).numpy())
    assert tuple(model.log_density(x).shape) == (3,)
    if name in AUTOENCODERS:
        code = model.encode(x)
        code = code[0] if name in VAES else code
        assert tuple(code.shape) == (3, *model.latent_shape)


@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_the_loss(trained, name):
    model, history = trained[name]
    assert set(history) == set(model.loss_names())
    # AnoGAN's generator objective rises while the discriminator learns; its
    # monitored loss is the discriminator's.
    key = "d_loss" if name == "anogan" else "loss"
    assert all(np.isfinite(values).all() for values in history.values())
    assert history[key][-1] < 0.8 * history[key][0], history[key]
    logs = model.evaluate(tf.data.Dataset.from_tensors(X), return_dict=True, verbose=0)
    assert set(logs) == set(model.loss_names())
    assert all(np.isfinite(value) for value in logs.values())


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_restore_outputs_and_optimizer_state(trained, tmp_path, name):
    model, _ = trained[name]
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.reconstruct(X).numpy(), model.reconstruct(X).numpy())
    if name == "anogan":
        z = tf.random.stateless_normal((4, model.latent_dim), seed=(1, 2))
        np.testing.assert_array_equal(loaded.generate(z).numpy(), model.generate(z).numpy())
        np.testing.assert_array_equal(loaded.discriminator(X).numpy(),
                                      model.discriminator(X).numpy())
    # Every optimiser comes back compiled, with its slots and step count.
    assert loaded.compiled
    for opt_name in model.optimizer_names:
        saved, restored = getattr(model, opt_name), getattr(loaded, opt_name)
        assert int(restored.iterations) == int(saved.iterations) == STEPS
        assert float(restored.learning_rate) == pytest.approx(float(saved.learning_rate))
        assert len(restored.variables) == len(saved.variables)
        for a, b in zip(saved.variables, restored.variables):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                          keras.ops.convert_to_numpy(b))
    # Training resumes from the restored state.
    fit(loaded, 1)
    assert int(loaded.optimizer.iterations) == STEPS + 1


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip_builds_the_same_architecture(name):
    model = new_model(name)
    model.build((None, SIZE, SIZE, 1))
    clone = type(model).from_config(model.get_config())
    clone.build((None, SIZE, SIZE, 1))
    assert clone.get_config() == model.get_config()
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in model.weights]
    assert clone.count_params() == model.count_params() > 0


@pytest.mark.parametrize("name", NAMES)
def test_log_density_has_a_finite_input_gradient(trained, name):
    model, _ = trained[name]
    x = tf.constant(X[:2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        log_p = model.log_density(x)
    grad = tape.gradient(log_p, x)
    assert tuple(log_p.shape) == (2,)
    assert np.isfinite(log_p.numpy()).all()
    assert grad is not None and np.isfinite(grad.numpy()).all()
    assert float(tf.reduce_max(tf.abs(grad))) > 0.0


@pytest.mark.parametrize("name", VAES)
def test_vae_log_density_is_the_elbo(trained, name):
    model, _ = trained[name]
    x = X[:4]
    mean, log_var = model.encode(x)
    expected = (gaussian_log_likelihood(x, model.reconstruct(x), model.sigma)
                - gaussian_kl(mean, log_var))
    np.testing.assert_allclose(model.log_density(x).numpy(), expected.numpy(), rtol=1e-5)
    assert model.has_elbo
    assert (gaussian_kl(mean, log_var).numpy() > 0).all()


def test_anogan_latent_search_lowers_mapping_loss_without_retracing(trained):
    model, _ = trained["anogan"]
    x = X[:4]
    start = model.mapping_loss(x, model.map_to_latent(x, steps=0)).numpy()
    traces = model.search_latent.experimental_get_tracing_count()
    found = model.mapping_loss(x, model.map_to_latent(x, steps=30)).numpy()
    model.map_to_latent(x)  # default anogan_steps, same shape: same trace
    assert model.search_latent.experimental_get_tracing_count() == traces
    assert (found < start).all(), (start, found)
    np.testing.assert_allclose(model.log_density(x).numpy(),
                               -model.mapping_loss(x, model.map_to_latent(x)).numpy(), rtol=1e-6)


def test_trunks_are_shared_by_all_autoencoding_variants():
    shapes = {}
    for name in AUTOENCODERS:
        model = build_model(name, image_size=64)
        model.build((None, 64, 64, 1))
        trunks = (model.encoder.layers[0], model.decoder.layers[-1])
        shapes[name] = [[tuple(w.shape) for w in trunk.weights] for trunk in trunks]
    assert all(s == shapes["sae"] for s in shapes.values())


def test_paper_defaults():
    assert build_model("sae", image_size=256).latent_shape == (16, 16, 64)
    assert build_model("svae", image_size=256, latent_size=8).latent_shape == (8, 8, 64)
    assert build_model("dvae", image_size=128).latent_shape == (512,)
    model = build_model("anovaegan", image_size=64)
    model.compile()
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert float(model.d_optimizer.learning_rate) == pytest.approx(1e-4)
    anogan = build_model("anogan", image_size=64)
    assert (anogan.anogan_steps, anogan.anogan_lambda, anogan.latent_dim) == (100, 0.1, 128)


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_size=32, latent_size=12), "latent_size=12 must divide image_size=32"),
    (dict(image_size=32, latent_size=32), "power of two"),
    (dict(image_size=32, latent_channels=0), "latent_channels must be >= 1"),
    (dict(image_size=32, kl_weight=-1.0), "kl_weight must be >= 0"),
])
def test_invalid_constructor_arguments_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_model("svae", **kwargs)


def test_wrong_input_shape_is_rejected(trained):
    model, _ = trained["sae"]
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, 32, 32, 1\)"):
        model.reconstruct(np.zeros((2, 16, 16, 1), np.float32))


def _upsampling_layers(model) -> set:
    trunk = model.decoder.layers[-1]
    return {type(layer).__name__ for layer in trunk.layers} & {"Conv2DTranspose", "UpSampling2D"}


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_decoders_resize_then_convolve_by_default_and_keep_the_papers_option(name):
    resize = new_model(name)
    resize.build((None, SIZE, SIZE, 1))
    assert resize.upsampling == "resize" and _upsampling_layers(resize) == {"UpSampling2D"}
    transpose = build_model(name, **TINY[name], upsampling="transpose")
    transpose.build((None, SIZE, SIZE, 1))
    assert _upsampling_layers(transpose) == {"Conv2DTranspose"}
    # Both variants double the resolution to the same output shape.
    x = X[:2]
    assert resize.reconstruct(x).shape == transpose.reconstruct(x).shape == x.shape


def test_models_saved_before_the_upsampling_option_load_with_transposed_convolutions(tmp_path):
    model = compile_for_test(build_model("svae", **TINY["svae"], upsampling="transpose"))
    fit(model, 2)
    config = model.get_config()
    config.pop("upsampling")  # what a model saved by an earlier version carries
    old = type(model).from_config(config)
    old.build((None, SIZE, SIZE, 1))
    old.set_weights(model.get_weights())
    np.testing.assert_allclose(old.reconstruct(X[:2]), model.reconstruct(X[:2]), atol=1e-5)


def test_unknown_upsampling_is_refused():
    with pytest.raises(ConfigError, match="upsampling must be one of transpose, resize"):
        build_model("sae", **TINY["sae"], upsampling="pixelshuffle")
