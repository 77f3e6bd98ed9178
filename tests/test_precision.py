"""Mixed bfloat16 precision: policy choice, training, saving, residual maps and MAP-TV restoration.

Tiny models (32 px) of every family take one real training step under
``mixed_bfloat16``; bfloat16 inference is compared with float32 inference on
the same weights.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from tfuad.detection.methods.residual import ResidualMethod  # noqa: E402
from tfuad.detection.restoration import AdamAscent, GradientAscent, Restorer, map_objective  # noqa: E402
from tfuad.errors import ConfigError  # noqa: E402
from tfuad.models import build_model  # noqa: E402
from tfuad.models.adversarial import AnoGAN, generator_loss  # noqa: E402
from tfuad.models.base import computing_at  # noqa: E402
from tfuad.models.priors import ResVAE  # noqa: E402
from tfuad.models.resblocks import FlipGradConv2D, UpBlock  # noqa: E402
from tfuad.precision import (  # noqa: E402
    cpu_supports_bfloat16,
    inference_precision,
    policy_scope,
    read_cpu_flags,
    resolve_precision,
)

S = 32
MIXED = "mixed_bfloat16"
TRUNK = dict(image_size=S, base_filters=4, max_filters=8)
TINY = {
    "dae": dict(TRUNK, latent_dim=16, feature_size=8),
    "dvae": dict(TRUNK, latent_dim=16, feature_size=8),
    "sae": dict(TRUNK, latent_size=8, latent_channels=4),
    "svae": dict(TRUNK, latent_size=8, latent_channels=4),
    "saegan": dict(TRUNK, latent_size=8, latent_channels=4),
    "anovaegan": dict(TRUNK, latent_size=8, latent_channels=4),
    "anogan": dict(TRUNK, latent_dim=8, feature_size=8, anogan_steps=5),
    "vae": dict(image_size=S, filters=(4, 8, 16)),
    "gmvae": dict(image_size=S, filters=(4, 8, 16), clusters=3, w_dim=4, prior_hidden=8),
}
YY, XX = np.mgrid[:S, :S].astype(np.float32)


def brains(n, seed=0, lesions=False):
    """Elliptic 'brains' with smooth bumps and noise, ``(n, S, S, 1)``; with ``lesions`` a bright disc each.

    Returns ``(images, brain masks, lesion labels)``.
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((n, S, S), np.float32)
    masks, truth = np.zeros((n, S, S), bool), np.zeros((n, S, S), bool)
    for i in range(n):
        cy, cx = S / 2 + rng.uniform(-1.5, 1.5, 2)
        ry, rx = rng.uniform(11, 14, 2)
        brain = ((YY - cy) / ry) ** 2 + ((XX - cx) / rx) ** 2 <= 1
        img = 1.0 + sum(rng.uniform(-0.5, 0.5) * np.exp(-((YY - cy - rng.uniform(-6, 6)) ** 2
                                                          + (XX - cx - rng.uniform(-6, 6)) ** 2) / 20.0)
                        for _ in range(3))
        img = img + 0.1 * rng.standard_normal((S, S))
        if lesions:
            by, bx = cy + rng.uniform(-6, 6), cx + rng.uniform(-6, 6)
            truth[i] = (((YY - by) ** 2 + (XX - bx) ** 2) <= 9) & brain
            img = img + 0.8 * truth[i]
        images[i] = np.where(brain, img, 0.0)
        masks[i] = brain
    return images[..., None], masks, truth


X = brains(8, seed=1)[0]


def compute_dtypes(model) -> set:
    """Compute dtypes of the model's layers (input placeholders of its Sequential parts excluded)."""
    return {layer.compute_dtype for layer in model._flatten_layers()
            if not isinstance(layer, keras.layers.InputLayer)}


def loss_terms(model, x):
    """Every loss term the model's training step forms, evaluated in training mode."""
    if isinstance(model, AnoGAN):
        z = model._noise(x)
        fake = model.generate(z, training=True)
        return {"loss": generator_loss(model.discriminator(fake, training=True)),
                "d_loss": model._discriminator_loss(x, fake, True), "mapping": model.mapping_loss(x, z)}
    if hasattr(model, "elbo_terms"):
        return model.elbo_terms(x, training=True, sample=True)
    terms = model.compute_terms(x, training=True)[1]
    if hasattr(model, "discriminator"):
        terms["d_loss"] = model._discriminator_loss(x, model.reconstruct(x), True)
    return terms


def conv_dtypes(model):
    """Dtypes of the Conv2D/MatMul ops of a traced ``reconstruct``."""
    spec = tf.TensorSpec((2, S, S, 1), tf.float32)
    graph = tf.function(lambda x: model.reconstruct(x)).get_concrete_function(spec).graph
    ops = [op for op in graph.get_operations() if op.type in ("Conv2D", "Conv2DBackpropInput", "MatMul")]
    library = graph.as_graph_def().library.function  # AnoGAN's latent search runs in a nested function
    nested = [node.attr["T"].type for f in library for node in f.node_def
              if node.op in ("Conv2D", "Conv2DBackpropInput", "MatMul")]
    return {op.get_attr("T") for op in ops} | {tf.dtypes.as_dtype(t) for t in nested}


@pytest.fixture(scope="module")
def mixed_models():
    """Every model built under ``mixed_bfloat16``, compiled, after one real training step."""
    out = {}
    for name, kwargs in TINY.items():
        keras.utils.set_random_seed(0)
        model = build_model(name, precision=MIXED, **kwargs)
        model.compile()
        before = [w.numpy().copy() for w in model.trainable_weights]
        logs = model.fit(tf.data.Dataset.from_tensors(X), epochs=1, verbose=0).history
        out[name] = model, before, logs
    return out


@pytest.mark.parametrize("name", list(TINY))
def test_one_training_step_under_mixed_bfloat16(mixed_models, name):
    """bfloat16 arithmetic, float32 variables and optimiser state, finite float32 losses and outputs."""
    model, before, logs = mixed_models[name]
    assert model.precision == MIXED
    assert compute_dtypes(model) == {"bfloat16"}
    assert {v.dtype for v in model.weights} == {"float32"}
    optimizers = [getattr(model, n) for n in getattr(model, "optimizer_names", ("optimizer",))]
    assert {v.dtype for opt in optimizers for v in opt.variables} <= {"float32", "int64"}
    assert all(int(opt.iterations) == 1 for opt in optimizers)
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert sum(changed) > len(changed) // 2  # the step updated the weights
    assert all(np.isfinite(v[0]) for v in logs.values()) and "loss" in logs
    assert conv_dtypes(model) == {tf.bfloat16}
    terms = loss_terms(model, tf.constant(X[:4]))
    assert all(t.dtype == tf.float32 and np.all(np.isfinite(t.numpy())) for t in terms.values()), terms
    x_hat, log_p = model.reconstruct(X[:2]), model.log_density(X[:2])
    assert x_hat.dtype == tf.float32 and log_p.dtype == tf.float32 and log_p.shape == (2,)
    assert np.all(np.isfinite(x_hat.numpy())) and np.all(np.isfinite(log_p.numpy()))


@pytest.mark.parametrize("name", ["svae", "anovaegan", "gmvae"])
def test_save_load_keeps_the_policy(mixed_models, name, tmp_path):
    model = mixed_models[name][0]
    path = tmp_path / f"{name}.keras"
    model.save(path)
    assert keras.mixed_precision.dtype_policy().name == "float32"  # loaded under the global float32 policy
    loaded = keras.models.load_model(path)
    assert loaded.precision == MIXED
    assert compute_dtypes(loaded) == {"bfloat16"}
    np.testing.assert_array_equal(loaded.reconstruct(X).numpy(), model.reconstruct(X).numpy())
    assert loaded.get_config()["dtype"] == model.get_config()["dtype"]


def test_a_float32_model_loads_as_float32_under_a_mixed_global_policy(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model("vae", **TINY["vae"])
    assert model.precision == "float32"
    model.save(tmp_path / "vae.keras")
    with policy_scope(MIXED):
        loaded = keras.models.load_model(tmp_path / "vae.keras")
        fresh = build_model("vae", **TINY["vae"])
    assert fresh.precision == MIXED  # the global policy applies to new models only
    assert loaded.precision == "float32"
    assert compute_dtypes(loaded) == {"float32"}
    np.testing.assert_array_equal(loaded.log_density(X).numpy(), model.log_density(X).numpy())


def test_unsupported_policies_are_rejected():
    with pytest.raises(ConfigError, match="mixed_float16"):
        build_model("sae", dtype="mixed_float16", **TINY["sae"])
    with pytest.raises(ConfigError, match="unknown precision 'float16'"):
        build_model("sae", precision="float16", **TINY["sae"])
    with pytest.raises(ConfigError, match="either"):
        build_model("sae", precision=MIXED, dtype=MIXED, **TINY["sae"])


@pytest.mark.parametrize("flags, expected", [
    ("fpu vme sse2 avx2 avx512f avx512_vnni", "float32"),            # Cascade Lake: no bf16
    ("flags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni", MIXED),  # Cooper Lake / Zen 4
    ("fpu avx512f amx_bf16 amx_tile amx_int8", MIXED),               # Sapphire Rapids
    ("", "float32"),
])
def test_auto_precision_follows_the_cpu_flags(flags, expected):
    assert resolve_precision("auto", cpu=flags, gpus=(), onednn=True) == expected
    assert cpu_supports_bfloat16(flags.split()) == (expected == MIXED)
    # without oneDNN's kernels bfloat16 is emulated (slower than float32)
    assert resolve_precision("auto", cpu=flags, gpus=(), onednn=False) == "float32"


@pytest.mark.parametrize("gpus, expected", [([(8, 0)], MIXED), ([(9, 0), (8, 6)], MIXED),
                                            ([(7, 5)], "float32"), ([(8, 6), (7, 0)], "float32")])
def test_auto_precision_follows_the_gpus_before_the_cpu(gpus, expected):
    assert resolve_precision("auto", cpu="avx512_bf16", gpus=gpus) == expected


def test_precision_names_and_cpuinfo_parsing(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx512f avx512_bf16\nbugs\t\t: spectre_v1\n")
    assert read_cpu_flags(cpuinfo) == {"fpu", "avx512f", "avx512_bf16"}
    assert read_cpu_flags(tmp_path / "absent") == frozenset()
    assert resolve_precision("float32", cpu="avx512_bf16") == "float32"
    with pytest.raises(ConfigError, match="choose one of: auto, float32, mixed_bfloat16"):
        resolve_precision("bf16")
    # detection: the calibrated precision, else the run's, else float32; another request is an error
    assert inference_precision() == "float32"
    assert inference_precision(None, None, MIXED) == MIXED
    assert inference_precision(None, "float32", MIXED) == "float32"
    assert inference_precision("float32", "float32", MIXED) == "float32"
    with pytest.raises(ConfigError, match="calib.json: the thresholds were calibrated with float32"):
        inference_precision(MIXED, "float32", source="calib.json")


def test_computing_at_switches_and_restores_the_policy():
    model = build_model("vae", **TINY["vae"])
    with computing_at(model, MIXED) as precision:
        assert precision == MIXED and model.precision == MIXED
        assert model.reconstruct(X[:1]).dtype == tf.float32
        assert model.down_blocks[0](X[:1]).dtype == tf.bfloat16
    assert compute_dtypes(model) == {"float32"}
    assert model.down_blocks[0](X[:1]).dtype == tf.float32


@pytest.mark.parametrize("strides, kernel, cout, kind", [(1, 3, 8, "native"), (2, 3, 8, "native"),
                                                         (1, 3, 1, "taps"), (2, 1, 8, "native")])
def test_flipgrad_conv_in_bfloat16_matches_keras_conv(strides, kernel, cout, kind):
    """In bfloat16 the input gradient is TensorFlow's (the taps head keeps its own); all agree with Keras' conv."""
    x = tf.random.stateless_normal((2, 16, 16, 8), seed=(1, 2))
    fast = FlipGradConv2D(cout, kernel, strides=strides, padding="same", dtype=MIXED)
    ref = keras.layers.Conv2D(cout, kernel, strides=strides, padding="same", dtype=MIXED)
    fast.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(fast.get_weights())
    results = []
    for layer in (fast, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(x), tf.float32)
            loss = tf.reduce_sum(y * tf.reshape(tf.sin(tf.range(tf.size(y), dtype=tf.float32) * 0.37), tf.shape(y)))
        assert layer(x).dtype == tf.bfloat16
        results.append([y, *tape.gradient(loss, [x, layer.kernel])])
    assert fast._adjoint_kind(tf.cast(x, tf.bfloat16)) == kind
    for a, b in zip(*results):
        scale = float(tf.reduce_max(tf.abs(b)))
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-2 * scale)  # a few bfloat16 ulps


def test_up_block_upsampling_equals_the_keras_layer():
    x = tf.random.stateless_normal((2, 4, 4, 3), seed=(5, 6))
    block = UpBlock(3)
    block.build(x.shape)
    from tfuad.models.resblocks import _up2

    np.testing.assert_array_equal(_up2(x).numpy(), block.up(x).numpy())
    xb = tf.cast(x, tf.bfloat16)
    assert _up2(xb).dtype == tf.bfloat16
    np.testing.assert_array_equal(_up2(xb).numpy(), tf.cast(tf.image.resize(xb, (8, 8)), tf.bfloat16).numpy())


@pytest.fixture(scope="module")
def prior():
    """A float32 ResVAE trained briefly on synthetic brains, and lesioned test slices."""
    keras.utils.set_random_seed(0)
    model = ResVAE(image_size=S, filters=(8, 16, 32))
    model.compile()
    model.fit(brains(512, seed=2)[0], epochs=3, batch_size=32, verbose=0)
    y, mask, truth = brains(12, seed=3, lesions=True)
    return model, y, mask, truth


def test_map_tv_gradient_in_bfloat16_follows_the_float32_gradient(prior):
    """The ascent direction changes by bfloat16 rounding only.

    Each bfloat16 rounding has a relative error of at most 2⁻⁹; along the ~20
    roundings between the input and the ELBO the gradient's relative error is
    of the order of a percent, so the two gradients must agree to a cosine
    above 0.99 and within 5 % in norm (the objective, a float32 sum of
    float32 terms, within 1 %).
    """
    model, y, mask, _ = prior
    x = tf.constant(y + 0.05 * np.random.default_rng(4).standard_normal(y.shape).astype(np.float32))
    values, grads = [], []
    for precision in ("float32", MIXED):
        with computing_at(model, precision):
            with tf.GradientTape() as tape:
                tape.watch(x)
                f = map_objective(model, x, tf.constant(y), 1.0)
            grads.append(tape.gradient(f, x).numpy().ravel() * mask.ravel())
            values.append(f.numpy())
    assert values[1].dtype == np.float32
    np.testing.assert_allclose(values[1], values[0], rtol=1e-2)
    a, b = grads
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99
    assert abs(np.linalg.norm(b) / np.linalg.norm(a) - 1) < 0.05


@pytest.mark.parametrize("schedule", [AdamAscent(), GradientAscent(steps=60, switch_step=30)],
                         ids=["fast", "paper-60"])
def test_map_tv_in_bfloat16_gives_maps_close_to_float32(prior, schedule):
    """Same lesion maps up to bfloat16 noise, the same AUROC, float32 iterate and optimiser state.

    Tolerance: the map is |Y − X̂| with X̂ the sum of the steps; each step
    moves pixels by at most about the step size (Adam: ``learning_rate``
    0.1), and bfloat16 perturbs each gradient by about a percent (see the
    gradient test). Maps may therefore differ by a few hundredths where the
    ascent direction is flat, but on average by a small fraction of the
    map's own mean: mean |Δ| ≤ 10 % of the mean map. The pixel AUROC, from
    about 300 lesion pixels here, may move by such noise within 0.02.
    """
    model, y, mask, truth = prior
    maps = {}
    for precision in ("float32", MIXED):
        restorer = Restorer(model, lam=1.0, schedule=schedule, batch_size=12, precision=precision)
        assert restorer.precision == precision
        maps[precision] = restorer.lesion_map(y[..., 0], mask)
        assert maps[precision].dtype == np.float32 and np.all(np.isfinite(maps[precision]))
    concrete = restorer.loop_function.get_concrete_function()
    assert all(t.dtype == tf.float32 for t in tf.nest.flatten(concrete.structured_outputs)[:-1])  # X, state
    body = [op.get_attr("body").name for op in concrete.graph.get_operations() if op.type in ("While",
                                                                                              "StatelessWhile")]
    nodes = [n for f in concrete.graph.as_graph_def().library.function if f.signature.name in body
             for n in f.node_def if n.op == "Conv2D"]
    assert nodes and {tf.dtypes.as_dtype(n.attr["T"].type) for n in nodes} == {tf.bfloat16}
    assert model.precision == "float32"  # the model itself is unchanged
    f32, b16 = maps["float32"], maps[MIXED]
    assert np.abs(b16 - f32)[mask].mean() <= 0.1 * f32[mask].mean()
    auroc = {p: roc_auc_score(truth[mask], m[mask]) for p, m in maps.items()}
    assert auroc["float32"] > 0.8 and abs(auroc[MIXED] - auroc["float32"]) < 0.02, auroc


def test_residual_maps_in_bfloat16_are_close_to_float32(prior):
    """x̂ from bfloat16 arithmetic is within a few bfloat16 ulps of the float32 x̂; |x − x̂| is taken in float32.

    The spacing of bfloat16 numbers is 2⁻⁸ of their magnitude (0.4 %), and
    the output's rounding comes on top of the network's: on average x̂ may
    move by up to four ulps (2⁻⁶ of the mean |x̂|), no pixel by more than ten
    ulps of the largest value (4 % of max |x̂|).
    """
    model, y, _, _ = prior
    f32, recon32 = ResidualMethod(model, precision="float32").slice_maps(y)
    b16, recon16 = ResidualMethod(model, precision=MIXED).slice_maps(y)
    assert b16.dtype == np.float32 and recon16.dtype == np.float32
    change = np.abs(recon16 - recon32)
    assert 0 < change.mean() <= 2 ** -6 * np.abs(recon32).mean()  # > 0: the network really ran in bfloat16
    assert change.max() <= 0.04 * np.abs(recon32).max()
    assert np.all(np.abs(b16 - f32) <= change + 1e-6)  # the residual itself adds no rounding


@pytest.mark.parametrize("policy", ["float32", MIXED])
def test_fused_training_batch_norm_equals_the_keras_layer(policy):
    """Output, gradients and moving statistics of the fused training-mode batch norm equal Keras'."""
    from tfuad.models.resblocks import _batch_norm_training

    x = tf.random.stateless_normal((4, 6, 6, 3), seed=(7, 8)) * 2.0 + 0.5
    dy = tf.random.stateless_normal(x.shape, seed=(9, 10))
    layers = [keras.layers.BatchNormalization(momentum=0.9, dtype=policy) for _ in range(2)]
    results = []
    for bn, apply in zip(layers, (lambda bn, t: bn(t, training=True), _batch_norm_training)):
        bn.build(x.shape)
        bn.gamma.assign([0.5, 1.0, 2.0])
        bn.beta.assign([0.1, -0.2, 0.3])
        xc = tf.cast(x, bn.compute_dtype)
        with tf.GradientTape() as tape:
            tape.watch(xc)
            y = apply(bn, xc)
        assert y.dtype == xc.dtype
        grads = tape.gradient(y, [xc, bn.gamma, bn.beta], output_gradients=tf.cast(dy, y.dtype))
        results.append([y, *grads, bn.moving_mean, bn.moving_variance])
    tol = 1e-5 if policy == "float32" else 2e-2  # bfloat16 outputs: a few ulps
    for ours, keras_value in zip(results[1], results[0]):
        np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(keras_value, np.float32), rtol=tol,
                                   atol=tol)


@pytest.mark.parametrize("name", list(TINY))
def test_batch_norm_statistics_are_recomputed_under_mixed_bfloat16(mixed_models, name):
    """The training-mode forward pass of every model runs in bfloat16 (tfuad.training.batch_norm)."""
    from tfuad.training.batch_norm import batch_norm_layers, recompute_batch_norm

    model, _, _ = mixed_models[name]
    updated = recompute_batch_norm(model, X, batch_size=4)
    assert updated == len(batch_norm_layers(model))
    for bn in batch_norm_layers(model):
        assert bn.moving_mean.dtype == "float32" and np.all(np.isfinite(np.asarray(bn.moving_variance)))
    assert np.all(np.isfinite(model.reconstruct(X[:2]).numpy()))
