"""Chen et al. 2020 normative priors: ResVAE and GMVAE (tiny models, real training steps)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

from tfuad.errors import ConfigError  # noqa: E402
from tfuad.models import build_model  # noqa: E402
from tfuad.models.priors import GMVAE, PAPER_SIGMA, ResVAE  # noqa: E402
from tfuad.models.resblocks import DownBlock, FlipGradConv2D, UpBlock  # noqa: E402

tfd = tfp.distributions
SIZE = 32
TINY = dict(image_size=SIZE, filters=(4, 8, 16))
GM_TINY = dict(TINY, clusters=3, w_dim=4, prior_hidden=8)


def _images(n=32, seed=0):
    """Smooth discs on a dark background, ``(n, 32, 32, 1)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = np.zeros((n, SIZE, SIZE, 1), np.float32)
    for i in range(n):
        cy, cx, r = rng.uniform(12, 20), rng.uniform(12, 20), rng.uniform(8, 12)
        out[i, ..., 0] = (np.hypot(yy - cy, xx - cx) < r) * (1.0 + 0.3 * np.sin(xx / 3.0 + i))
    return out


@pytest.fixture(scope="module")
def trained():
    """Both priors after a few real training steps (batch-norm statistics move away from init)."""
    keras.utils.set_random_seed(0)
    x = _images(64)
    models = {}
    for name, cls, kw in (("vae", ResVAE, TINY), ("gmvae", GMVAE, GM_TINY)):
        model = cls(**kw)
        model.compile()
        history = model.fit(x, epochs=3, batch_size=16, verbose=0).history
        models[name] = (model, history)
    return models


@pytest.mark.parametrize("name", ["vae", "gmvae"])
def test_training_reports_finite_decreasing_loss(trained, name):
    model, history = trained[name]
    expected = {"loss", "rec_loss", "kl_z"} if name == "vae" else {"loss", "rec_loss", "cond_prior", "kl_w", "kl_k"}
    assert set(history) == expected
    for values in history.values():
        assert np.all(np.isfinite(values))
    assert history["loss"][-1] < history["loss"][0]
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_default_sigma_makes_log_likelihood_an_l2_loss():
    model = ResVAE(**TINY)
    assert model.sigma == pytest.approx(PAPER_SIGMA)
    assert 2 * model.sigma ** 2 == pytest.approx(1.0)


def test_paper_architecture_latent_is_2x2x512():
    model = ResVAE(image_size=128)
    assert model.latent_shape == (2, 2, 512)
    assert [b.filters for b in model.down_blocks] == [16, 32, 64, 128, 256, 512]
    assert [b.filters for b in model.up_blocks] == [256, 128, 64, 32, 16, 16]
    assert model.x_mean.activation is keras.activations.linear
    assert model.z_mean.activation is keras.activations.linear


def test_image_size_must_be_divisible_by_the_number_of_halvings():
    with pytest.raises(ConfigError, match="divisible"):
        ResVAE(image_size=36, filters=(4, 8, 16))
    with pytest.raises(ConfigError, match="clusters"):
        GMVAE(**dict(GM_TINY, clusters=0))


@pytest.mark.parametrize("name", ["vae", "gmvae"])
def test_log_density_is_deterministic_and_differentiable(trained, name):
    model, _ = trained[name]
    x = tf.constant(_images(4, seed=3))
    with tf.GradientTape() as tape:
        tape.watch(x)
        elbo = model.log_density(x)
    grad = tape.gradient(elbo, x)
    assert elbo.shape == (4,)
    np.testing.assert_array_equal(elbo.numpy(), model.log_density(x).numpy())
    assert np.all(np.isfinite(grad.numpy())) and float(tf.reduce_max(tf.abs(grad))) > 0
    terms = model.elbo_terms(x)
    np.testing.assert_allclose(-sum(t.numpy() for t in terms.values()), elbo.numpy(), rtol=1e-5)


def test_gmvae_terms_are_finite_and_kl_terms_nonnegative(trained):
    model, _ = trained["gmvae"]
    x = _images(8, seed=5)
    for sample in (False, True):
        terms = {k: v.numpy() for k, v in model.elbo_terms(x, sample=sample).items()}
        assert set(terms) == {"rec_loss", "cond_prior", "kl_w", "kl_k"}
        for value in terms.values():
            assert value.shape == (8,) and np.all(np.isfinite(value))
        for name in ("cond_prior", "kl_w", "kl_k"):
            assert np.all(terms[name] >= -1e-4), name
        assert np.all(terms["kl_k"] <= np.log(model.clusters) + 1e-4)


def test_vae_prior_and_posterior_are_distributions(trained):
    model, _ = trained["vae"]
    prior = model.prior()
    assert isinstance(prior, tfd.Distribution)
    z = prior.sample(5, seed=1)
    assert z.shape == (5,) + model.latent_shape
    np.testing.assert_allclose(prior.log_prob(z).numpy(),
                               tfd.Normal(0.0, 1.0).log_prob(z).numpy().sum(axis=(1, 2, 3)), rtol=1e-5)
    post = model.posterior(_images(3))
    assert isinstance(post, tfd.Distribution) and post.batch_shape == (3,)
    np.testing.assert_allclose(tfd.kl_divergence(post, prior).numpy(),
                               model.elbo_terms(_images(3))["kl_z"].numpy(), rtol=1e-5)


def test_gmvae_prior_is_a_mixture_over_clusters(trained):
    model, _ = trained["gmvae"]
    w = model.w_prior().sample(4, seed=2)
    prior = model.prior(w)
    assert isinstance(prior, tfd.MixtureSameFamily)
    assert prior.batch_shape == (4,) and tuple(prior.event_shape) == model.latent_shape
    z = prior.sample(seed=3)
    assert z.shape == (4,) + model.latent_shape
    log_p = prior.log_prob(z).numpy()
    components = model.components(w).log_prob(z[:, None]).numpy()  # (4, clusters)
    expected = np.logaddexp.reduce(components, axis=1) - np.log(model.clusters)
    np.testing.assert_allclose(log_p, expected, rtol=1e-5)
    joint = model.posterior(_images(2))
    sample = joint.sample(seed=4)
    assert sample["z"].shape == (2,) + model.latent_shape
    assert sample["w"].shape == (2, model.latent_size, model.latent_size, model.w_dim)


@pytest.mark.parametrize("name", ["vae", "gmvae"])
def test_save_load_round_trip(trained, name, tmp_path):
    model, _ = trained[name]
    x = _images(4, seed=7)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.log_density(x).numpy(), model.log_density(x).numpy())
    np.testing.assert_array_equal(loaded.reconstruct(x).numpy(), model.reconstruct(x).numpy())
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) > 0
    history = loaded.fit(x, epochs=1, batch_size=4, verbose=0).history
    assert np.isfinite(history["loss"][0])


@pytest.mark.parametrize("name,kwargs", [("vae", TINY), ("gmvae", dict(GM_TINY, kl_k_free_bits=0.1))])
def test_get_config_round_trip(name, kwargs):
    model = build_model(name, learning_rate=5e-4, **kwargs)
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()
    assert config["learning_rate"] == 5e-4 and config["filters"] == [4, 8, 16]
    if name == "gmvae":
        assert (config["clusters"], config["w_dim"], config["kl_k_free_bits"]) == (3, 4, 0.1)


@pytest.mark.parametrize("strides,kernel,size,cin,cout,kind", [
    (1, 3, 9, 3, 5, "flip"), (1, 1, 6, 3, 5, "flip"), (2, 3, 8, 3, 5, "polyphase"), (2, 1, 8, 3, 5, "polyphase"),
    (2, 3, 7, 3, 5, None), (1, 3, 8, 16, 1, "taps"), (1, 5, 7, 6, 1, "taps"), (1, 3, 8, 3, 1, "flip"),
])
def test_flipgrad_conv_matches_keras_conv_and_its_gradients(strides, kernel, size, cin, cout, kind):
    x = tf.random.stateless_normal((2, size, size, cin), seed=(1, 2))
    fast = FlipGradConv2D(cout, kernel, strides=strides, padding="same")
    ref = keras.layers.Conv2D(cout, kernel, strides=strides, padding="same")
    fast.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(fast.get_weights())
    results = []
    for layer in (fast, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.reshape(tf.sin(tf.range(tf.size(y), dtype=tf.float32) * 0.37), tf.shape(y)))
        results.append([y, *tape.gradient(loss, [x, layer.kernel, layer.bias])])
    assert fast._adjoint_kind(x) == kind
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def _while_body_ops(concrete):
    """Op types inside the body functions of the ``While`` ops of a concrete function."""
    library = {f.signature.name: f for f in concrete.graph.as_graph_def().library.function}
    bodies = [op.get_attr("body").name for op in concrete.graph.get_operations()
              if op.type in ("While", "StatelessWhile")]
    assert bodies
    return {node.op for name in bodies for node in library[name].node_def}


def test_loop_invariant_weights_moves_kernel_preparation_out_of_the_loop(trained):
    """Folded, flipped and polyphase kernels are built once before the loop; results are unchanged."""
    from tfuad.models.resblocks import loop_invariant_weights

    model, _ = trained["vae"]
    x = tf.random.stateless_normal((3, 32, 32, 1), seed=(7, 8))

    def ascend(x, cached):
        def body(i, v):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(v)
                f = tf.reduce_sum(model.log_density(v))
            return i + 1, v + 1e-3 * tape.gradient(f, v)

        loop = (lambda: tf.while_loop(lambda i, v: i < 3, body, (tf.constant(0), x)))
        if not cached:
            return loop()[1]
        with loop_invariant_weights():
            return loop()[1]

    plain = tf.function(lambda v: ascend(v, False)).get_concrete_function(x)
    hoisted = tf.function(lambda v: ascend(v, True)).get_concrete_function(x)
    preparation = {"Rsqrt", "ReverseV2", "GatherV2"}
    assert preparation <= _while_body_ops(plain)
    assert not preparation & _while_body_ops(hoisted)
    np.testing.assert_allclose(hoisted(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-5)


def test_inference_batch_norm_folding_equals_unfolded_blocks(trained):
    model, _ = trained["vae"]
    for block, shape in ((model.down_blocks[1], (2, 16, 16, 4)), (model.up_blocks[0], (2, 4, 4, 16))):
        x = tf.random.stateless_normal(shape, seed=(3, 4))
        lrelu = lambda t: keras.ops.leaky_relu(t, block.negative_slope)  # noqa: E731
        if isinstance(block, DownBlock):
            h = lrelu(block.bn1(block.ds_conv(x), training=False))
            ref = lrelu(block.bn2(block.conv(h), training=False) + block.shortcut(x))
        else:
            assert isinstance(block, UpBlock)
            h = lrelu(block.bn1(block.up(block.up_conv(x)), training=False))
            ref = lrelu(block.bn2(block.conv(h), training=False) + block.up(block.shortcut(x)))
        assert float(tf.reduce_max(tf.abs(block.bn1.moving_mean))) > 0  # trained statistics
        np.testing.assert_allclose(block(x, training=False).numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_1x1_kernel_gradient_matches_tensorflow(stride):
    from tfuad.models.resblocks import _filter_grad

    x = tf.random.stateless_normal((3, 8, 8, 1), seed=(1, 2))
    kernel = tf.random.stateless_normal((1, 1, 1, 5), seed=(3, 4))
    dy = tf.random.stateless_normal((3, 8 // stride, 8 // stride, 5), seed=(5, 6))
    with tf.GradientTape() as tape:
        tape.watch(kernel)
        y = tf.nn.conv2d(x, kernel, stride, "SAME")
    expected = tape.gradient(y, kernel, output_gradients=dy)
    np.testing.assert_allclose(_filter_grad(x, kernel, dy, stride).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_six_block_prior_trains_on_single_channel_64px_slices():
    """The paper's depth at 64 px: 1×1 stride-2 shortcut on a one-channel input (crashed in oneDNN)."""
    model = ResVAE(image_size=64, filters=(4, 4, 4, 4, 4, 4))
    model.compile()
    x = np.random.default_rng(0).random((16, 64, 64, 1), dtype=np.float32)
    history = model.fit(x, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_leaky_relu_gradient_from_output_equals_keras():
    from tfuad.models.resblocks import _leaky_relu

    x = tf.constant([[-3.0, -0.5, 0.25, 2.0]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = _leaky_relu(x, 0.2)
        ref = keras.ops.leaky_relu(x, 0.2)
    np.testing.assert_array_equal(ours.numpy(), ref.numpy())
    np.testing.assert_allclose(tape.gradient(ours, x).numpy(), [[0.2, 0.2, 1.0, 1.0]])
    np.testing.assert_array_equal(tape.gradient(ours, x).numpy(), tape.gradient(ref, x).numpy())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (2, 33, 40, 2), (2, 8, 8, 3)])
def test_up2_gradient_equals_resize_bilinear_gradient(dtype, shape):
    """The depthwise adjoint (large inputs) and ResizeBilinearGrad (small ones) give the same gradient."""
    from tfuad.models.resblocks import ADJOINT_MIN_PIXELS, _up2

    x = tf.cast(tf.random.stateless_normal(shape, seed=(1, 2)), dtype)
    dy = tf.cast(tf.random.stateless_normal((shape[0], 2 * shape[1], 2 * shape[2], shape[3]), seed=(3, 4)), dtype)
    layer = keras.layers.UpSampling2D(2, interpolation="bilinear")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = _up2(x)
        ref = tf.cast(layer(tf.cast(x, "float32")), dtype)
    as64 = (lambda t: tf.cast(t, tf.float64).numpy())  # noqa: E731
    tol = 1e-6 if dtype == "float32" else 0.0
    np.testing.assert_allclose(as64(ours), as64(ref), atol=tol)
    np.testing.assert_allclose(as64(tape.gradient(ours, x, output_gradients=dy)),
                               as64(tape.gradient(ref, x, output_gradients=dy)), atol=4 * tol + 1e-6)
    ops = {op.type for op in tf.function(lambda t: tf.gradients(_up2(t), t)).get_concrete_function(
        tf.TensorSpec(shape, dtype)).graph.get_operations()}
    uses_adjoint = shape[1] * shape[2] >= ADJOINT_MIN_PIXELS
    assert ("DepthwiseConv2dNative" in ops) == uses_adjoint
    assert ("ResizeBilinearGrad" in ops) != uses_adjoint
