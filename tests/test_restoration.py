"""MAP-TV restoration: gradients, lesion maps of a briefly trained prior, schedules, λ choice, tracing."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from tfuad.detection.restoration import (  # noqa: E402
    AdamAscent,
    GradientAscent,
    Restorer,
    choose_lambda,
    convergence_curve,
    map_objective,
    plot_lambda_curve,
    select_lambda,
    total_variation,
)
from tfuad.errors import ConfigError, DimensionError, NonFiniteError  # noqa: E402
from tfuad.models.base import AnomalyModel  # noqa: E402
from tfuad.models.priors import GMVAE, ResVAE  # noqa: E402

S = 32
YY, XX = np.mgrid[:S, :S].astype(np.float32)


def healthy_slices(rng, n, noise=0.2):
    """Elliptic 'brains' with smooth bumps, a dark central 'ventricle' and noise; background 0."""
    images = np.zeros((n, S, S), np.float32)
    masks = np.zeros((n, S, S), bool)
    for i in range(n):
        cy, cx = S / 2 + rng.uniform(-1.5, 1.5, 2)
        ry, rx = rng.uniform(11, 14, 2)
        brain = ((YY - cy) / ry) ** 2 + ((XX - cx) / rx) ** 2 <= 1
        img = np.ones((S, S), np.float32)
        for _ in range(3):
            by, bx, s = cy + rng.uniform(-6, 6), cx + rng.uniform(-6, 6), rng.uniform(3, 6)
            img += rng.uniform(-0.5, 0.5) * np.exp(-((YY - by) ** 2 + (XX - bx) ** 2) / (2 * s * s))
        vr = rng.uniform(2.5, 4)
        img -= 0.6 * (((YY - cy) / vr) ** 2 + ((XX - cx) / (0.6 * vr)) ** 2 <= 1)
        img += noise * rng.standard_normal((S, S))
        images[i] = np.where(brain, img, 0)
        masks[i] = brain
    return images, masks


def add_blobs(rng, images, masks, amplitude=0.8):
    """Insert one bright disc (radius 2.5-4 px) inside each brain; return images and lesion labels."""
    out, truth = images.copy(), np.zeros_like(masks)
    for i in range(len(images)):
        while True:
            by, bx = rng.uniform(6, S - 6, 2)
            if masks[i, int(by), int(bx)] and np.hypot(by - S / 2, bx - S / 2) > 5:
                break
        disc = (((YY - by) ** 2 + (XX - bx) ** 2) <= rng.uniform(2.5, 4) ** 2) & masks[i]
        out[i][disc] += amplitude
        truth[i] = disc
    return out, truth


@pytest.fixture(scope="module")
def prior():
    """A tiny VAE trained for 192 steps on synthetic healthy slices, and test data."""
    rng = np.random.default_rng(0)
    train, _ = healthy_slices(rng, 2048)
    keras.utils.set_random_seed(0)
    model = ResVAE(image_size=S, filters=(8, 16, 32))
    model.compile()
    model.fit(train[..., None], epochs=3, batch_size=32, verbose=0)
    clean, mask = healthy_slices(rng, 16)
    lesioned, truth = add_blobs(rng, clean, mask)
    return dict(model=model, clean=clean, lesioned=lesioned, truth=truth, mask=mask)


@pytest.fixture(scope="module")
def paper_maps(prior):
    """Paper-schedule (500 steps, λ = 0.5) lesion maps of the lesioned and the clean test slices."""
    restorer = Restorer(prior["model"], lam=0.5, schedule="paper", batch_size=16)
    lesioned = restorer.lesion_map(prior["lesioned"], prior["mask"])
    steps = restorer.steps_taken_
    return dict(lesioned=lesioned, clean=restorer.lesion_map(prior["clean"], prior["mask"]), steps=steps)


def _auroc(score, truth, mask):
    return roc_auc_score(truth[mask], score[mask])


def _objective_float64(model, x, y, lam):
    """``ELBO(x) - λ TV(x - y)`` per slice, summed in float64 from float32 per-element terms.

    An evaluation independent of :func:`map_objective`: the likelihood
    ``-Σ (x - μ)² / (2σ²)``, the KL of every latent element and the total
    variation are added up in float64, so the rounding of a float32 sum over
    all pixels (F ≈ -4.5e3, float32 spacing 5e-4) does not swamp difference
    quotients.
    """
    xt = tf.constant(x)
    q = model.posterior(xt)
    mu = model.decode(q.mean()).numpy().astype(np.float64)
    kl = tfp.distributions.kl_divergence(q.distribution, tfp.distributions.Normal(0.0, 1.0)).numpy()
    rec = ((x.astype(np.float64) - mu) ** 2).sum(axis=(1, 2, 3)) / (2.0 * model.sigma ** 2)
    d = x.astype(np.float64) - y
    tv = np.abs(np.diff(d, axis=1)).sum(axis=(1, 2, 3)) + np.abs(np.diff(d, axis=2)).sum(axis=(1, 2, 3))
    return -rec - kl.astype(np.float64).sum(axis=(1, 2, 3)) - lam * tv


def test_objective_gradient_matches_central_differences(prior):
    """∂F/∂X from the tape against central differences away from kinks.

    The differences come from :func:`_objective_float64`, which must agree
    with :func:`map_objective`, so with h = 3e-3 they are free of rounding
    noise. F is piecewise smooth: pixels with a TV kink within reach of the
    step are skipped, and so are pixels where the forward and backward
    quotients differ by more than 0.05 (a leaky-ReLU kink of the network;
    smooth curvature moves them apart by h·F'' ≈ 0.01). At most a quarter of
    the pixels may be skipped, and every other one must agree within
    0.01 + 2 %.
    """
    model = prior["model"]
    rng = np.random.default_rng(2)
    y = rng.normal(size=(2, S, S, 1)).astype(np.float32)
    x = (y + rng.normal(scale=0.5, size=y.shape)).astype(np.float32)
    lam, h = 0.7, 3e-3

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        per_slice = map_objective(model, xt, tf.constant(y), lam)
        total = tf.reduce_sum(per_slice)
    grad = tape.gradient(total, xt).numpy()
    f0 = _objective_float64(model, x, y, lam)
    np.testing.assert_allclose(f0, per_slice.numpy(), rtol=1e-5)
    d = x - y
    errors, kinks = [], 0
    for b, i, j in zip(rng.integers(0, 2, 60), rng.integers(1, S - 1, 60), rng.integers(1, S - 1, 60)):
        neighbours = d[b, [i - 1, i + 1, i, i], [j, j, j - 1, j + 1], 0]
        if np.min(np.abs(neighbours - d[b, i, j, 0])) < 5 * h:
            continue  # |·| kink of the TV term within reach of the step
        plus, minus = x.copy(), x.copy()
        plus[b, i, j, 0] += h
        minus[b, i, j, 0] -= h
        forward = (_objective_float64(model, plus, y, lam)[b] - f0[b]) / h
        backward = (f0[b] - _objective_float64(model, minus, y, lam)[b]) / h
        if abs(forward - backward) > 0.05:
            kinks += 1  # a leaky-ReLU kink of the network within reach of the step
            continue
        errors.append((abs((forward + backward) / 2 - grad[b, i, j, 0]), abs(grad[b, i, j, 0])))
    abs_err, size = np.array(errors).T
    assert len(errors) >= 20 and kinks <= len(errors) // 3
    assert np.all(abs_err <= 0.02 * size + 0.01)


def test_total_variation_matches_tensorflow_and_its_gradient():
    d = tf.random.stateless_normal((3, 9, 7, 2), seed=(5, 6))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(d)
        ours, ref = total_variation(d), tf.image.total_variation(d)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(ours, d).numpy(), tape.gradient(ref, d).numpy(), atol=1e-6)


def test_brain_tv_region_frees_a_constant_offset_inside_the_mask():
    """``tv_region="brain"``: only pairs inside the mask count, so an offset inside the brain costs nothing."""
    mask = np.zeros((1, 8, 8, 1), np.float32)
    mask[0, 2:6, 1:7] = 1.0  # a 4 × 6 "brain"
    d = tf.constant(0.5 * mask)  # X = Y + 0.5 inside, X = Y outside (the masked restoration)
    assert total_variation(d, tf.constant(mask)).numpy()[0] == 0.0
    border_pairs = 2 * 4 + 2 * 6
    np.testing.assert_allclose(total_variation(d).numpy()[0], 0.5 * border_pairs)  # charged at the border


def test_brain_tv_region_gradient_matches_autodiff():
    rng = np.random.default_rng(7)
    d = tf.constant(rng.normal(size=(2, 9, 7, 1)).astype(np.float32))
    mask = tf.constant((rng.uniform(size=(2, 9, 7, 1)) > 0.3).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(d)
        ours = total_variation(d, mask)
        ref = (tf.reduce_sum(mask[:, 1:] * mask[:, :-1] * tf.abs(d[:, 1:] - d[:, :-1]), axis=[1, 2, 3])
               + tf.reduce_sum(mask[:, :, 1:] * mask[:, :, :-1] * tf.abs(d[:, :, 1:] - d[:, :, :-1]), axis=[1, 2, 3]))
        weighted = tf.reduce_sum(ours * [1.0, -2.0])
        weighted_ref = tf.reduce_sum(ref * [1.0, -2.0])
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(weighted, d).numpy(), tape.gradient(weighted_ref, d).numpy(),
                               atol=1e-6)
    ones = tf.ones_like(mask)  # a full mask is the image TV
    np.testing.assert_allclose(total_variation(d, ones).numpy(), total_variation(d).numpy(), rtol=1e-6)


def test_restorer_counts_only_brain_pairs_with_tv_region_brain(prior):
    """Two gradient steps: the second one's TV subgradient is that of the brain-pair TV."""
    model, y, mask = prior["model"], prior["clean"][:2], prior["mask"][:2]
    alpha, lam = 5e-3, 50.0
    y4, m4 = tf.constant(y[..., None]), tf.constant(mask[..., None].astype(np.float32))
    x = y4
    for _ in range(2):
        with tf.GradientTape() as tape:
            tape.watch(x)
            objective = tf.reduce_sum(map_objective(model, x, y4, lam, tv_mask=m4))
        x = x + alpha * tape.gradient(objective, x) * m4
    schedule = GradientAscent(steps=2, step_sizes=(alpha, alpha))
    brain = Restorer(model, lam=lam, schedule=schedule, tv_region="brain").restore(y, mask)
    image = Restorer(model, lam=lam, schedule=schedule).restore(y, mask)
    np.testing.assert_allclose(brain, x.numpy()[..., 0], atol=1e-5)
    assert np.abs(brain - image).max() > 1e-3  # the border pairs push the image variant differently
    with pytest.raises(ConfigError, match="tv_region"):
        Restorer(model, tv_region="border")


def test_one_paper_step_is_a_masked_gradient_step(prior):
    model, y, mask = prior["model"], prior["clean"][:3], prior["mask"][:3]
    alpha = 5e-3
    restorer = Restorer(model, lam=2.0, schedule=GradientAscent(steps=1, step_sizes=(alpha, alpha)))
    yt = tf.constant(y[..., None])
    with tf.GradientTape() as tape:
        tape.watch(yt)
        elbo = tf.reduce_sum(model.log_density(yt))  # TV subgradient is 0 at X = Y
    expected = y + alpha * tape.gradient(elbo, yt).numpy()[..., 0] * mask
    np.testing.assert_allclose(restorer.restore(y, mask), expected, atol=1e-5)


def test_map_tv_moves_lesions_not_healthy_tissue_and_beats_the_residual(prior, paper_maps):
    model, mask, truth = prior["model"], prior["mask"], prior["truth"]
    lesion_map, healthy_change = paper_maps["lesioned"], paper_maps["clean"]
    assert paper_maps["steps"] == [500]
    assert np.all(lesion_map[~mask] == 0) and np.all(healthy_change[~mask] == 0)
    in_lesion = lesion_map[truth].mean()
    # Healthy pixels change too (the prior removes part of the noise), but far less.
    assert in_lesion > 2.2 * lesion_map[mask & ~truth].mean()
    assert in_lesion > 2.2 * healthy_change[mask].mean()
    recon = model.reconstruct(prior["lesioned"][..., None]).numpy()[..., 0]
    residual_auc = _auroc(np.abs(prior["lesioned"] - recon), truth, mask)
    map_auc = _auroc(lesion_map, truth, mask)
    assert map_auc > residual_auc + 0.005, (map_auc, residual_auc)
    print(f"AUROC MAP-TV {map_auc:.4f} vs residual {residual_auc:.4f}; mean change lesion {in_lesion:.3f}, "
          f"other brain {lesion_map[mask & ~truth].mean():.3f}, healthy slices {healthy_change[mask].mean():.3f}")


def test_fast_schedule_matches_paper_quality_in_far_fewer_steps(prior, paper_maps):
    model, mask, truth, y = prior["model"], prior["mask"], prior["truth"], prior["lesioned"]
    fast = Restorer(model, lam=0.5, schedule="fast", batch_size=16)
    paper_auc = _auroc(paper_maps["lesioned"], truth, mask)
    fast_auc = _auroc(fast.lesion_map(y, mask), truth, mask)
    assert fast.steps_taken_[0] < fast.schedule.max_steps  # the stopping rule ended it
    assert fast.steps_taken_[0] <= paper_maps["steps"][0] // 10
    assert fast_auc >= paper_auc - 0.005, (fast_auc, paper_auc, fast.steps_taken_)
    print(f"AUROC fast {fast_auc:.4f} in {fast.steps_taken_[0]} steps vs paper {paper_auc:.4f} in 500 steps")


def test_fast_schedule_stops_early_only_after_a_gain(prior):
    """With a strong TV term Adam's first steps lower the objective; the loop must not stop there.

    The stopping rule compares the last change with the signed gain ``F_t - F_0``: a rule on
    ``|F_t - F_0|`` stopped after a few steps with the objective below its start and the
    restoration far from the input, so ε(λ) rose spuriously at large λ.
    """
    model, y, mask = prior["model"], prior["clean"][:6], prior["mask"][:6]
    y4 = tf.constant(y[..., None])
    changes = {}
    for lam in (2.0, 32.0):
        restorer = Restorer(model, lam=lam, schedule="fast", batch_size=6)
        x = restorer.restore(y, mask)
        start = tf.reduce_sum(map_objective(model, y4, y4, lam)).numpy()
        end = tf.reduce_sum(map_objective(model, tf.constant(x[..., None]), y4, lam)).numpy()
        if restorer.steps_taken_[0] < restorer.schedule.max_steps:
            assert end > start, (lam, restorer.steps_taken_, end, start)
        changes[lam] = np.abs(x - y).sum() / len(y)
    assert changes[32.0] < changes[2.0], changes


def test_convergence_curve_and_trajectory_resume_exactly(prior):
    model, mask, truth, y = prior["model"], prior["mask"][:8], prior["truth"][:8], prior["lesioned"][:8]
    restorer = Restorer(model, lam=0.5, schedule=GradientAscent(steps=40, switch_step=20), batch_size=8)
    curve = convergence_curve(restorer, y, truth, mask, checkpoints=(0, 20, 40))
    assert list(curve) == [0, 20, 40]
    assert curve[0] == 0.5 and curve[40] > curve[20] > 0.8
    snapshots = dict(restorer.trajectory(y, mask, checkpoints=(10, 40)))
    np.testing.assert_allclose(snapshots[40], restorer.restore(y, mask), atol=1e-5)


def test_compiled_loop_does_not_retrace_across_volumes(prior):
    model, clean, mask = prior["model"], prior["clean"], prior["mask"]
    restorer = Restorer(model, lam=1.0, schedule=AdamAscent(max_steps=3), batch_size=6)
    restorer.restore(clean[:5], mask[:5])  # one batch of 5
    restorer.lam = 2.5
    restorer.restore(clean[:11])  # two batches of 6
    list(restorer.trajectory(clean[:3], mask[:3], checkpoints=(1, 2)))
    assert restorer.loop_function.experimental_get_tracing_count() == 1


def test_restore_tensor_in_a_graph_equals_restore(prior):
    """The graph-mode API (used by the serving signatures) gives :meth:`Restorer.restore`'s result."""
    model, clean, mask = prior["model"], prior["lesioned"][:4], prior["mask"][:4]
    restorer = Restorer(model, lam=0.5, schedule=AdamAscent(max_steps=6), batch_size=4)
    expected = restorer.restore(clean, mask)

    @tf.function(input_signature=[tf.TensorSpec((None, S, S, 1), tf.float32)])
    def serve(y):
        return restorer.restore_tensor(y, tf.not_equal(y, 0.0))

    y = tf.constant(clean[..., None])
    np.testing.assert_allclose(serve(y).numpy()[..., 0], expected, atol=1e-5)
    eager = restorer.restore_tensor(y, mask[..., None]).numpy()[..., 0]
    np.testing.assert_allclose(eager, expected, atol=1e-5)
    assert np.all(eager[~mask] == clean[~mask])
    assert restorer.loop_function.experimental_get_tracing_count() == 1


def test_empty_mask_slices_are_returned_without_work(prior):
    model, clean, mask = prior["model"], prior["clean"][:4], prior["mask"][:4].copy()
    mask[1:3] = False
    restorer = Restorer(model, lam=1.0, schedule=GradientAscent(steps=5), batch_size=8)
    out = restorer.restore(clean, mask)
    np.testing.assert_array_equal(out[1:3], clean[1:3])
    assert restorer.steps_taken_ == [5]
    assert not np.allclose(out[0], clean[0])


def test_any_anomaly_model_can_be_restored():
    """A plain autoencoder of the base contract: its surrogate is the Gaussian likelihood."""

    class TinyAE(AnomalyModel):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(1, 3, padding="same")

        def call(self, x, training=False):
            return self.conv(x)

    model = TinyAE(image_size=16, sigma=1.0).build_for_inference()
    y = np.random.default_rng(3).normal(size=(3, 16, 16)).astype(np.float32)
    x_hat = Restorer(model, lam=0.1, schedule=GradientAscent(steps=20, step_sizes=(0.05, 0.05))).restore(y)
    before = model.log_density(y[..., None]).numpy()
    after = model.log_density(x_hat[..., None]).numpy()
    assert x_hat.shape == y.shape and np.all(after > before)


def test_gmvae_prior_restores():
    keras.utils.set_random_seed(2)
    model = GMVAE(image_size=S, filters=(4, 8, 16), clusters=3, w_dim=4, prior_hidden=8)
    y = np.random.default_rng(4).normal(size=(2, S, S)).astype(np.float32)
    restorer = Restorer(model, lam=1.0, schedule=GradientAscent(steps=3))
    x_hat = restorer.restore(y)
    assert np.all(np.isfinite(x_hat)) and not np.allclose(x_hat, y)


def test_select_lambda_picks_the_smallest_lambda_at_the_minimum():
    assert select_lambda({0.5: 3.0, 1.0: 2.0, 2.0: 1.0, 4.0: 1.0, 8.0: 1.5}) == 2.0
    assert select_lambda({8.0: 0.9, 1.0: 5.0, 4.0: 0.9}) == 4.0
    assert select_lambda({1.0: 1.0, 2.0: 0.9995, 4.0: 0.999}) == 4.0
    assert select_lambda({1.0: 1.0, 2.0: 0.9995, 4.0: 0.999}, rtol=2e-3) == 1.0
    with pytest.raises(ConfigError):
        select_lambda({})
    with pytest.raises(NonFiniteError):
        select_lambda({1.0: float("nan")})


def test_choose_lambda_returns_curve_and_its_minimiser(prior, tmp_path):
    model, clean, mask = prior["model"], prior["clean"][:6], prior["mask"][:6]
    best, curve = choose_lambda(model, clean, [4.0, 0.5, 1.0], schedule="fast", mask=mask, batch_size=6)
    assert list(curve) == [0.5, 1.0, 4.0]
    assert all(v > 0 for v in curve.values())
    assert best == select_lambda(curve)
    assert curve[0.5] > curve[4.0]  # a weak TV term lets the prior change healthy slices more
    out = plot_lambda_curve(curve, best, tmp_path / "plots" / "lambda.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000
    assert [p.name for p in out.parent.iterdir()] == ["lambda.png"]  # no temporary file left
    with pytest.raises(ValueError, match="png"):
        plot_lambda_curve(curve, best, tmp_path / "lambda.jpg")


def test_invalid_inputs_raise_clear_errors(prior):
    model = prior["model"]
    restorer = Restorer(model, lam=1.0, schedule=GradientAscent(steps=1))
    with pytest.raises(DimensionError, match="slices"):
        restorer.restore(np.zeros((2, 16, 16), np.float32))
    bad = np.zeros((1, S, S), np.float32)
    bad[0, 3, 3] = np.nan
    with pytest.raises(NonFiniteError):
        restorer.restore(bad)
    with pytest.raises(DimensionError, match="mask"):
        restorer.restore(np.zeros((2, S, S), np.float32), mask=np.ones((3, S, S), bool))
    with pytest.raises(ConfigError, match="schedule"):
        Restorer(model, schedule="slow")
    with pytest.raises(ConfigError, match="lam"):
        restorer.lam = -1.0
    with pytest.raises(ConfigError, match="log_density"):
        Restorer(object())
