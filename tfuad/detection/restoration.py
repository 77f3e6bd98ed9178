"""MAP-TV restoration and lesion maps (Chen et al. 2020, Section 2.2).

A slice ``Y`` with a lesion is modelled as a healthy slice ``X`` plus an
outlier ``D = Y - X``. The restoration maximises (their Eq. 6)::

    F(X) = ELBO(X) - λ ||X - Y||_TV

by gradient ascent from ``X₀ = Y``; the lesion map is ``|Y - X̂|``.

* ``ELBO(X)`` is ``model.log_density(X)``, so any model of the
  :class:`~tfuad.models.base.AnomalyModel` contract can be restored: the
  VAE/GMVAE priors give their deterministic ELBO, the Baur et al. autoencoders
  the Gaussian likelihood around their reconstruction,
  ``-||X - x̂(X)||² / (2σ²)``.
* ``||·||_TV`` is the anisotropic total variation: the ℓ1 norm of the
  horizontal and vertical finite differences of ``D`` (no smoothing; its
  gradient is the subgradient ``sign``, which is 0 where differences vanish).
* Batch normalisation runs in inference mode; with a brain mask the gradient
  is zeroed outside the brain, so background pixels never change and slices
  without brain are returned untouched without any computation.
* Which neighbouring pixel pairs the TV counts (``tv_region``):

  - ``"image"`` (default): every pair of the image,
    ``Σ_(p,q) |D_p - D_q|``. With a brain mask ``D = 0`` outside, so the
    pairs that cross the brain border charge ``|D|`` at the border: a
    constant offset of ``X`` inside the brain costs ``λ |c| · (border
    length)``.
  - ``"brain"``: only pairs with both pixels inside the mask,
    ``Σ_(p,q) m_p m_q |D_p - D_q|``; a constant offset inside the brain is
    free, as the paper's Eq. 6 on a whole image would have it for any
    constant ``D``.

  ``benchmarks/lambda_rule.py`` compares both, and no mask at all, on the
  cross-validated 128 px FLAIR VAE (``docs/lambda_rule.png``): with the fast
  schedule none gives ε(λ) a dip, and ``"brain"`` gives lower lesion-map
  AUROCs than ``"image"`` at every λ tried, so MAP-TV calibration and
  detection (:class:`~tfuad.detection.methods.map_tv.MapTVMethod`) keep
  ``"image"``; ``"brain"`` is there for such studies.

Two schedules:

* ``"paper"`` (:class:`GradientAscent`): ``X ← X + α ∇F`` for 500 steps with
  ``α = 5e-3`` for the first 100 steps and ``3e-3`` after (Section 3.2).
* ``"fast"`` (:class:`AdamAscent`): Adam ascent with a decaying step, at
  most 30 steps, and a stopping rule on the relative objective change. On
  the synthetic lesion test of ``tests/test_restoration.py`` it stops after
  19 steps with a pixel AUROC of 0.991, against 0.987 for the 500 paper
  steps (0.971 for the plain reconstruction residual of the same model); on
  trained BraTS priors its 30 steps match the paper schedule's lesion-map
  AUROC (README).

``get_schedule(name, max_steps)`` changes either schedule's step limit;
``schedule_config`` is the JSON form a calibration stores, and
``calibrated_schedule`` makes detection use the calibrated schedule.

Neither schedule is run to the exact maximiser: like the paper's 500 small
steps, both stop early, which keeps healthy anatomy closer to the input than
the exact MAP estimate of an imperfect prior would.

A schedule is a small frozen dataclass with ``steps``, ``tol`` and
``patience`` and the methods ``hyper()`` (float hyper-parameters, passed to
the compiled loop as tensors), ``init_state(x)`` / ``state_spec(spec)`` (the
optimiser state carried through the loop) and ``update(x, grad, state, t,
hyper)`` (one ascent step at global step ``t``).

Precision: the network inside ``ELBO(X)`` may compute in bfloat16
(``precision="mixed_bfloat16"``, also for a model trained in float32: the
weights are the same); the iterate ``X``, the optimiser state, the TV term,
the ELBO's sums and the objective stay float32, so the step sizes and the
stopping rule act on float32 values and only the network's rounding
(relative 2⁻⁹ per operation) enters the gradient.

The whole optimisation of a batch of slices runs in one ``tf.function``
(a ``tf.while_loop`` around a ``GradientTape``), optionally XLA-compiled; it
is traced once per :class:`Restorer` and reused for every volume: the batch
dimension, λ and the step sizes are tensors.

Example:
    >>> from tfuad.models.priors import ResVAE
    >>> model = ResVAE(image_size=32, filters=(4, 8, 16))
    >>> restorer = Restorer(model, lam=2.0, schedule="fast")
    >>> x_hat = restorer.restore(slices, mask=brain)          # doctest: +SKIP
    >>> lesions = restorer.lesion_map(slices, mask=brain)     # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import numpy as np
import tensorflow as tf

from tfuad.canvas import check_png, new_figure, save_figure
from tfuad.errors import ConfigError, DimensionError, NonFiniteError
from tfuad.models.base import computing_at, precision_of
from tfuad.models.resblocks import loop_invariant_weights
from tfuad.precision import resolve_precision

__all__ = [
    "TV_REGIONS",
    "check_tv_region",
    "total_variation",
    "map_objective",
    "GradientAscent",
    "AdamAscent",
    "SCHEDULES",
    "get_schedule",
    "schedule_config",
    "describe_schedule",
    "calibrated_schedule",
    "AUTO_BATCH_PIXELS",
    "restoration_batch_size",
    "Restorer",
    "select_lambda",
    "choose_lambda",
    "plot_lambda_curve",
    "convergence_curve",
]


#: Pixel pairs the TV term counts: all of the image, or only pairs inside the brain mask.
TV_REGIONS = ("image", "brain")


def check_tv_region(tv_region) -> str:
    """``tv_region`` if it is one of :data:`TV_REGIONS`.

    Raises:
        ConfigError: for any other value.

    Example:
        >>> check_tv_region("brain")
        'brain'
    """
    if tv_region not in TV_REGIONS:
        raise ConfigError(f"unknown tv_region {tv_region!r}; choose one of: {', '.join(TV_REGIONS)}")
    return tv_region


def total_variation(d, mask=None):
    """Anisotropic total variation of each image: ``Σ |Δ_h d| + |Δ_w d|``.

    Without ``mask`` the value equals ``tf.image.total_variation``. With a
    mask only differences between two pixels that are both inside it count,
    ``Σ m_p m_q |d_p - d_q|`` over neighbouring pairs ``(p, q)``, so a
    constant ``d`` inside the mask has zero TV whatever ``d`` is outside.
    The (sub)gradient ``sign(Δd)`` (times the pair weights) is written with
    padding instead of slice gradients, which is several times faster on CPU;
    the mask gets no gradient.

    Args:
        d: Images ``(B, H, W, C)``.
        mask: Optional ``(B, H, W, C)`` float 0/1 (or bool) mask.

    Returns:
        Tensor ``(B,)``.

    Example:
        >>> d = tf.ones((1, 4, 4, 1)) * tf.constant([0., 1., 2., 0.])[None, None, :, None]
        >>> float(total_variation(d)[0]), float(total_variation(d, tf.cast(d > 0, tf.float32))[0])
        (16.0, 4.0)
    """
    if mask is None:
        return _total_variation(d)
    mask = tf.cast(mask, d.dtype)
    return _pair_total_variation(d, mask[:, 1:] * mask[:, :-1], mask[:, :, 1:] * mask[:, :, :-1])


def _tv_gradient(sh, sw):
    """Adjoint of the finite differences applied to the (weighted) signs ``sh``, ``sw``."""
    none = [0, 0]
    gh = tf.pad(sh, [none, [1, 0], none, none]) - tf.pad(sh, [none, [0, 1], none, none])
    gw = tf.pad(sw, [none, none, [1, 0], none]) - tf.pad(sw, [none, none, [0, 1], none])
    return gh + gw


@tf.custom_gradient
def _total_variation(d):
    dh = d[:, 1:] - d[:, :-1]
    dw = d[:, :, 1:] - d[:, :, :-1]
    tv = tf.reduce_sum(tf.abs(dh), axis=[1, 2, 3]) + tf.reduce_sum(tf.abs(dw), axis=[1, 2, 3])

    def grad(g):
        return g[:, None, None, None] * _tv_gradient(tf.sign(dh), tf.sign(dw))

    return tv, grad


@tf.custom_gradient
def _pair_total_variation(d, wh, ww):
    """TV with per-pair weights ``wh`` ``(B, H-1, W, C)`` and ``ww`` ``(B, H, W-1, C)``."""
    dh = d[:, 1:] - d[:, :-1]
    dw = d[:, :, 1:] - d[:, :, :-1]
    tv = tf.reduce_sum(wh * tf.abs(dh), axis=[1, 2, 3]) + tf.reduce_sum(ww * tf.abs(dw), axis=[1, 2, 3])

    def grad(g):
        gd = g[:, None, None, None] * _tv_gradient(wh * tf.sign(dh), ww * tf.sign(dw))
        return gd, tf.zeros_like(wh), tf.zeros_like(ww)

    return tv, grad


def map_objective(model, x, y, lam, tv_mask=None):
    """Per-slice MAP-TV objective ``ELBO(x) - λ ||x - y||_TV``, shape ``(B,)``.

    Args:
        model: Any model with ``log_density(x, training=False)``.
        x: Current estimates ``(B, H, W, C)``.
        y: Observed slices, same shape.
        lam: Weight λ of the TV term.
        tv_mask: Optional mask of the same shape: the TV then counts only
            pixel pairs inside it (``tv_region="brain"``, see :func:`total_variation`).
    """
    return model.log_density(x, training=False) - lam * total_variation(x - y, tv_mask)


# --------------------------------------------------------------------------- schedules
@dataclasses.dataclass(frozen=True)
class GradientAscent:
    """Plain gradient ascent ``X ← X + α_i ∇F`` (the paper's schedule).

    Args:
        steps: Number of steps.
        step_sizes: ``(α before switch_step, α from switch_step on)``.
        switch_step: Step at which the step size changes.
        tol, patience: Stopping rule of :class:`AdamAscent`; the default
            ``tol = 0`` runs all steps, as the paper does.
    """

    steps: int = 500
    step_sizes: tuple = (5e-3, 3e-3)
    switch_step: int = 100
    tol: float = 0.0
    patience: int = 1

    def hyper(self) -> tuple:
        return (float(self.step_sizes[0]), float(self.step_sizes[1]), float(self.switch_step))

    def init_state(self, x) -> tuple:
        return ()

    def state_spec(self, spec) -> tuple:
        return ()

    def update(self, x, grad, state, t, hyper):
        early, late, switch = hyper
        return x + tf.where(t < switch, early, late) * grad, state


@dataclasses.dataclass(frozen=True)
class AdamAscent:
    """Adam ascent on ``F`` with a stopping rule on the relative objective change.

    Each step moves every pixel by at most about ``learning_rate`` (Adam's
    per-pixel normalisation), so step sizes are in image-intensity units. The
    learning rate decays as ``learning_rate / sqrt(1 + t / decay_steps)``,
    which damps the oscillation caused by the TV subgradient.

    Stopping rule: the loop ends after ``patience`` consecutive steps with
    ``|F_t - F_{t-1}| <= tol · (F_t - F_0)`` (the last step changed the
    objective by less than ``tol`` of the total gain so far, objective summed
    over the batch), or after ``max_steps``. The gain is signed: while the
    objective is below its start the loop never stops early. (With a large λ
    Adam's first steps move every pixel by about ``learning_rate`` and raise
    the TV term far above the ELBO gain; a rule on ``|F_t - F_0|`` then
    stopped after 4 steps with ``X̂`` far from ``Y``, and ε(λ) rose
    spuriously at large λ.)

    On trained BraTS priors at the calibrated λ = 12 the objective stays below
    its start for dozens of steps, so the rule does not fire and ``max_steps``
    decides. The lesion-map AUROC keeps rising with the number of steps (on
    a whole 128 px FLAIR test volume 0.812 after 30, 0.830 after 50, 0.846
    after 80), so ``max_steps`` is a speed/quality dial. The default 30 gives
    the paper schedule's quality
    (``benchmarks/convergence.py``, ``benchmarks/restoration_speed.py``; README):
    0.958 / 0.812 / 0.826 / 0.947 against the 500 paper steps' 0.953 / 0.804 /
    0.824 / 0.950 (128 px FLAIR VAE: a calibration case, a whole test volume;
    64 px T2 VAE: a whole test volume, a calibration case); 50 steps give
    0.966 / 0.830 / 0.856 / 0.948 in 5/3 of the time.

    Args:
        max_steps: Upper bound on the number of steps.
        learning_rate: Initial Adam step size.
        decay_steps: Time scale of the step-size decay.
        beta1, beta2, epsilon: Adam constants.
        tol: Relative objective change of the stopping rule (0 disables it).
        patience: Consecutive calm steps required to stop.
    """

    max_steps: int = 30
    learning_rate: float = 0.1
    decay_steps: float = 10.0
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    tol: float = 0.02
    patience: int = 2

    @property
    def steps(self) -> int:
        return self.max_steps

    def hyper(self) -> tuple:
        return (float(self.learning_rate), float(self.decay_steps), float(self.beta1), float(self.beta2),
                float(self.epsilon))

    def init_state(self, x) -> tuple:
        return (np.zeros_like(x), np.zeros_like(x))

    def state_spec(self, spec) -> tuple:
        return (spec, spec)

    def update(self, x, grad, state, t, hyper):
        lr, decay, b1, b2, eps = hyper
        m, v = state
        m = b1 * m + (1.0 - b1) * grad
        v = b2 * v + (1.0 - b2) * tf.square(grad)
        n = t + 1.0
        step = lr / tf.sqrt(1.0 + t / decay) * tf.sqrt(1.0 - b2 ** n) / (1.0 - b1 ** n)
        return x + step * m / (tf.sqrt(v) + eps), (m, v)


#: Named schedules accepted wherever a schedule is expected.
SCHEDULES = {"paper": GradientAscent(), "fast": AdamAscent()}


def get_schedule(schedule, max_steps: int | None = None):
    """A schedule object from a name, a :func:`schedule_config` dict or a schedule instance.

    Args:
        schedule: ``"paper"``, ``"fast"`` (see :data:`SCHEDULES`), a dict
            written by :func:`schedule_config` (as stored in a calibration),
            or a :class:`GradientAscent` / :class:`AdamAscent`.
        max_steps: Optional step limit replacing the schedule's own
            (``steps`` of the paper schedule, ``max_steps`` of the fast one).

    Returns:
        A schedule instance.

    Raises:
        ConfigError: for an unknown name, unknown settings or a step limit below 1.

    Example:
        >>> get_schedule("fast", max_steps=50).max_steps
        50
    """
    if isinstance(schedule, Mapping):
        settings = dict(schedule)
        base = get_schedule(settings.pop("name", None))
        known = {f.name for f in dataclasses.fields(base)}
        if set(settings) - known:
            raise ConfigError(f"unknown settings {sorted(set(settings) - known)} for the restoration schedule "
                              f"{schedule_config(base)['name']!r}")
        resolved = dataclasses.replace(base, **{k: tuple(v) if isinstance(v, list) else v
                                                for k, v in settings.items()})
    elif isinstance(schedule, (GradientAscent, AdamAscent)):
        resolved = schedule
    elif isinstance(schedule, str) and schedule in SCHEDULES:
        resolved = SCHEDULES[schedule]
    else:
        raise ConfigError(f"unknown restoration schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if max_steps is None:
        return resolved
    if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
        raise ConfigError(f"max_steps must be a positive integer, got {max_steps!r}")
    field = "steps" if isinstance(resolved, GradientAscent) else "max_steps"
    return dataclasses.replace(resolved, **{field: int(max_steps)})


def schedule_config(schedule) -> dict:
    """JSON-ready settings of a schedule, ``{"name": ..., <fields>}``; :func:`get_schedule` reads them back.

    Example:
        >>> schedule_config("paper")["steps"]
        500
    """
    resolved = get_schedule(schedule)
    name = "paper" if isinstance(resolved, GradientAscent) else "fast"
    return {"name": name, **{k: list(v) if isinstance(v, tuple) else v
                             for k, v in dataclasses.asdict(resolved).items()}}


def describe_schedule(schedule) -> str:
    """One-line description, e.g. ``"fast (Adam, at most 30 steps)"``."""
    resolved = get_schedule(schedule)
    if isinstance(resolved, GradientAscent):
        return f"paper (gradient ascent, {resolved.steps} steps)"
    return f"fast (Adam, at most {resolved.max_steps} steps)"


def calibrated_schedule(requested=None, max_steps: int | None = None, calibrated=None, *, source=None):
    """The schedule to restore with, given what was asked and what the thresholds were calibrated with.

    MAP-TV maps, and so their calibrated thresholds and λ, depend on the
    schedule. Without a request the calibrated schedule is used (``paper``
    when there is no calibration); ``max_steps`` alone changes the calibrated
    schedule's step limit.

    Args:
        requested: Schedule name, dict or instance, or ``None``.
        max_steps: Optional step limit.
        calibrated: The schedule stored with the calibration (name or
            :func:`schedule_config` dict), or ``None``.
        source: Calibration file named in the error message.

    Returns:
        A schedule instance.

    Raises:
        ConfigError: when the resolved schedule differs from the calibrated one.
    """
    base = requested if requested is not None else (calibrated if calibrated is not None else "paper")
    schedule = get_schedule(base, max_steps)
    if calibrated is not None and schedule_config(schedule) != schedule_config(calibrated):
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}the map-tv thresholds and λ were calibrated with the "
                          f"{describe_schedule(calibrated)} schedule, not {describe_schedule(schedule)}; "
                          "calibrate again with it, or leave out --schedule and --max-steps")
    return schedule


# --------------------------------------------------------------------------- restorer
#: Pixels per restoration batch when :class:`Restorer` picks the batch size: 160 slices of 128 × 128.
#: With the paper-size VAE at 128 px such a batch peaks at about 2.5 GB of memory, and per-slice step
#: time no longer falls with the batch size beyond 64 slices on a 2-core CPU.
AUTO_BATCH_PIXELS = 160 * 128 * 128


def restoration_batch_size(image_size: int, batch_size: int | None = None) -> int:
    """Slices per restoration batch: ``batch_size``, or :data:`AUTO_BATCH_PIXELS` worth of slices.

    Raises:
        ConfigError: for a batch size below 1.

    Example:
        >>> restoration_batch_size(128), restoration_batch_size(256), restoration_batch_size(128, 32)
        (160, 40, 32)
    """
    if batch_size is None:
        batch_size = max(1, AUTO_BATCH_PIXELS // int(image_size) ** 2)
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    return int(batch_size)


class Restorer:
    """MAP-TV restoration of batches of slices with one compiled loop.

    Args:
        model: A model with ``log_density``, ``image_size`` and ``channels``
            (any :class:`~tfuad.models.base.AnomalyModel`).
        lam: TV weight λ (may be changed later through :attr:`lam`; no retrace).
        schedule: ``"paper"``, ``"fast"`` or a :class:`GradientAscent` /
            :class:`AdamAscent` instance.
        batch_size: Maximum slices per optimisation batch; ``None`` (default)
            restores all slices of a call at once where memory allows: up to
            :data:`AUTO_BATCH_PIXELS` pixels per batch (a whole 155-slice
            volume at 128 × 128, 40 slices at 256 × 256).
        jit_compile: Compile the loop with XLA.
        precision: Precision of the network: ``"float32"``,
            ``"mixed_bfloat16"``, ``"auto"``, or ``None`` (default) for the
            model's own. The iterate, the optimiser state, the TV term and the
            objective are float32 in every case.
        tv_region: Pixel pairs of the TV term: ``"image"`` (default, all
            pairs: with a mask the brain border is charged) or ``"brain"``
            (only pairs inside the mask given to :meth:`restore`; without a
            mask both are the same).

    Attributes:
        steps_taken_: Steps run for each batch of the last :meth:`restore`.
        precision: The resolved precision of the network.

    Example:
        >>> restorer = Restorer(model, lam=3.0, schedule="paper", batch_size=64)   # doctest: +SKIP
        >>> maps = restorer.lesion_map(volume_slices, mask=brain_slices)           # doctest: +SKIP
    """

    def __init__(self, model, lam: float = 1.0, schedule="paper", batch_size: int | None = None,
                 jit_compile: bool = False, precision: str | None = None, tv_region: str = "image"):
        if not callable(getattr(model, "log_density", None)):
            raise ConfigError(f"{type(model).__name__} has no log_density(x) and cannot be restored")
        self.model = model
        own = precision_of(model)
        self.precision = own if precision is None else resolve_precision(precision)
        if self.precision != own and not hasattr(model, "dtype_policy"):
            raise ConfigError(f"{type(model).__name__} is not a Keras model and cannot run at {self.precision}")
        self.lam = lam
        self.schedule = get_schedule(schedule)
        self.tv_region = check_tv_region(tv_region)
        self.slice_shape = (int(model.image_size), int(model.image_size), int(model.channels))
        self.batch_size = restoration_batch_size(self.slice_shape[0], batch_size)
        self.jit_compile = bool(jit_compile)
        self.steps_taken_: list[int] = []
        self._loop = self._make_loop()

    @property
    def lam(self) -> float:
        """TV weight λ (a positive float)."""
        return self._lam

    @lam.setter
    def lam(self, value):
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"lam must be a finite non-negative number, got {value}")
        self._lam = value

    @property
    def loop_function(self):
        """The compiled ``tf.function`` (e.g. for ``experimental_get_tracing_count()``)."""
        return self._loop

    def _make_loop(self):
        model, schedule = self.model, self.schedule
        pairs_in_mask = self.tv_region == "brain"
        spec = tf.TensorSpec((None,) + self.slice_shape, tf.float32)
        real = tf.TensorSpec((), tf.float32)
        count = tf.TensorSpec((), tf.int32)
        hyper_spec = tuple(real for _ in schedule.hyper())

        def loop(x, y, mask, state, lam, step0, n_steps, hyper, tol, patience):
            def body(i, x, state, f_first, f_prev, calm):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(x)
                    objective = tf.reduce_sum(map_objective(model, x, y, lam, mask if pairs_in_mask else None))
                grad = tape.gradient(objective, x) * mask
                f_first = tf.where(tf.equal(i, 0), objective, f_first)
                quiet = (i > 0) & (tf.abs(objective - f_prev) <= tol * (objective - f_first))
                calm = tf.where(quiet, calm + 1, 0)
                x, state = schedule.update(x, grad, state, tf.cast(step0 + i, tf.float32), hyper)
                return i + 1, x, state, f_first, objective, calm

            def cond(i, x, state, f_first, f_prev, calm):
                return (i < n_steps) & (calm < patience)

            zero = tf.constant(0.0)
            with loop_invariant_weights():  # folded and adjoint kernels: built once, read at every step
                i, x, state, _, _, _ = tf.while_loop(
                    cond, body, (tf.constant(0), x, state, zero, zero, tf.constant(0)))
            return x, state, i

        signature = [spec, spec, spec, schedule.state_spec(spec), real, count, count, hyper_spec, real, count]
        return tf.function(loop, input_signature=signature, jit_compile=self.jit_compile, autograph=False)

    # ------------------------------------------------------------------ inputs
    def _prepare(self, y, mask):
        """Validate; return ``(y4, mask4, active slice indices)`` as float32 4-D arrays."""
        y = np.asarray(y, dtype=np.float32)
        size, _, channels = self.slice_shape
        if y.ndim == 3 and channels == 1:
            y4 = y[..., None]
        elif y.ndim == 4:
            y4 = y
        else:
            raise DimensionError(None, f"slices must have shape (N, {size}, {size}[, {channels}]), got {y.shape}")
        if y4.shape[1:] != self.slice_shape:
            raise DimensionError(None, f"slices must be {self.slice_shape[:2]} with {channels} channel(s) "
                                       f"for this model, got {y.shape}")
        if not np.all(np.isfinite(y4)):
            raise NonFiniteError(None, "slices contain NaN or infinite values")
        if mask is None:
            m4 = np.ones(y4.shape, np.float32)
        else:
            mask = np.asarray(mask)
            if mask.ndim == 3:
                mask = mask[..., None]
            if mask.ndim != 4 or mask.shape[:3] != y4.shape[:3] or mask.shape[3] not in (1, channels):
                raise DimensionError(None, f"mask shape {mask.shape} does not match slices {y.shape}")
            m4 = np.broadcast_to(mask != 0, y4.shape).astype(np.float32)
        active = np.flatnonzero(m4.reshape(len(m4), -1).any(axis=1))
        return y4, m4, active

    def _chunks(self, active):
        """Split active slice indices into near-equal batches; return them and the padded size."""
        n_chunks = math.ceil(len(active) / self.batch_size)
        size = math.ceil(len(active) / n_chunks)
        return [active[i:i + size] for i in range(0, len(active), size)], size

    def _call(self, x, y, m, state, step0, n_steps, tol, patience):
        """Run the compiled loop on arrays or tensors; return ``(x, state, steps)`` tensors.

        The loop is traced on its first call, so at :attr:`precision`.
        """
        tensor = (lambda v: tf.convert_to_tensor(v, tf.float32))
        with computing_at(self.model, self.precision):
            return self._loop(
                tensor(x), tensor(y), tensor(m), tf.nest.map_structure(tensor, state),
                tf.constant(self.lam, tf.float32), tf.constant(step0, tf.int32), tf.constant(n_steps, tf.int32),
                tuple(tf.constant(h, tf.float32) for h in self.schedule.hyper()),
                tf.constant(tol, tf.float32), tf.constant(patience, tf.int32),
            )

    def _run(self, x, y, m, state, step0, n_steps, tol, patience):
        x, state, steps = self._call(x, y, m, state, step0, n_steps, tol, patience)
        return x.numpy(), tf.nest.map_structure(lambda t: t.numpy(), state), int(steps)

    def _batches(self, y4, m4, active):
        """Padded ``(indices, y, mask)`` batches of the active slices."""
        if len(active) == 0:
            return
        chunks, size = self._chunks(active)
        for idx in chunks:
            yb = np.zeros((size,) + self.slice_shape, np.float32)
            mb = np.zeros_like(yb)
            yb[:len(idx)], mb[:len(idx)] = y4[idx], m4[idx]
            yield idx, yb, mb

    # ------------------------------------------------------------------- API
    def restore(self, y, mask=None) -> np.ndarray:
        """Restored slices ``X̂`` with the schedule (and its stopping rule).

        Args:
            y: Slices ``(N, S, S)`` or ``(N, S, S, C)`` in model space.
            mask: Optional brain mask of the same spatial shape; pixels
                outside it are kept fixed and slices without brain are copied.

        Returns:
            float32 array of ``y``'s shape. :attr:`steps_taken_` records the
            steps run for each batch.
        """
        shape = np.shape(y)
        y4, m4, active = self._prepare(y, mask)
        out = y4.copy()
        self.steps_taken_ = []
        s = self.schedule
        for idx, yb, mb in self._batches(y4, m4, active):
            x, _, steps = self._run(yb, yb, mb, s.init_state(yb), 0, s.steps, s.tol, s.patience)
            out[idx] = x[:len(idx)]
            self.steps_taken_.append(steps)
        return out.reshape(shape)

    def restore_tensor(self, y, mask=None):
        """Restoration ``X̂`` of one batch of slices, in TensorFlow ops (graph-mode API).

        Runs the compiled optimisation loop once on the whole batch from
        ``X₀ = Y`` with the current :attr:`lam` and the schedule (stopping rule
        included), as :meth:`restore` does for a batch of at most
        :attr:`batch_size` slices; the batch is not split. Usable eagerly and
        inside a ``tf.function`` (e.g. a serving signature); λ and the schedule
        are baked in as constants when traced. Inputs are not validated: use
        :meth:`restore` for arrays from outside.

        Args:
            y: float32 tensor ``(N, S, S, C)`` of slices in model space.
            mask: Optional tensor broadcastable to ``y`` (bool or float);
                pixels where it is 0 do not change. Default: all pixels move.

        Returns:
            float32 tensor ``X̂`` of ``y``'s shape.

        Example:
            >>> @tf.function(input_signature=[tf.TensorSpec((None, 64, 64, 1))])   # doctest: +SKIP
            ... def restore(y):
            ...     return restorer.restore_tensor(y, tf.not_equal(y, 0.0))
        """
        y = tf.convert_to_tensor(y, tf.float32)
        mask = tf.ones_like(y) if mask is None else tf.broadcast_to(tf.cast(mask, tf.float32), tf.shape(y))
        s = self.schedule
        spec = tf.TensorSpec((None,) + self.slice_shape, tf.float32)
        state = tf.nest.map_structure(lambda _: tf.zeros_like(y), s.state_spec(spec))
        return self._call(y, y, mask, state, 0, s.steps, s.tol, s.patience)[0]

    def lesion_map(self, y, mask=None) -> np.ndarray:
        """Lesion map ``|Y - X̂|`` (0 outside the mask), same shape as ``y``."""
        y = np.asarray(y, dtype=np.float32)
        return np.abs(y - self.restore(y, mask))

    def trajectory(self, y, mask=None, checkpoints: Iterable[int] = (0, 100, 200, 300, 400, 500)):
        """Yield ``(steps, X̂)`` after each number of steps in ``checkpoints``.

        The optimisation runs once, continuing from one checkpoint to the next
        (the schedule's step-size sequence and optimiser state carry over);
        the stopping rule is disabled so every checkpoint is reached.
        """
        marks = sorted({int(c) for c in checkpoints})
        if not marks or marks[0] < 0:
            raise ConfigError(f"checkpoints must be non-negative step counts, got {list(checkpoints)}")
        shape = np.shape(y)
        y4, m4, active = self._prepare(y, mask)
        batches = [(idx, yb, mb, yb, self.schedule.init_state(yb)) for idx, yb, mb in self._batches(y4, m4, active)]
        done = 0
        for mark in marks:
            out = y4.copy()
            for j, (idx, yb, mb, xb, state) in enumerate(batches):
                if mark > done:
                    xb, state, _ = self._run(xb, yb, mb, state, done, mark - done, 0.0, 1)
                    batches[j] = (idx, yb, mb, xb, state)
                out[idx] = xb[:len(idx)]
            done = mark
            yield mark, out.reshape(shape)


# --------------------------------------------------------------------------- λ selection
def select_lambda(curve: Mapping, rtol: float = 0.0) -> float:
    """The smallest λ whose ε(λ) is at the minimum of ``curve``.

    Args:
        curve: ``{λ: ε(λ)}``.
        rtol: Values within ``rtol · |min ε|`` of the minimum count as minimal.
    """
    if not curve:
        raise ConfigError("the λ curve is empty")
    values = {float(k): float(v) for k, v in curve.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise NonFiniteError(None, f"the λ curve has non-finite values: {values}")
    best = min(values.values())
    return min(k for k, v in values.items() if v <= best + rtol * abs(best))


def choose_lambda(model, healthy_slices, lambdas, schedule="paper", mask=None, batch_size: int | None = None,
                  jit_compile: bool = False, rtol: float = 0.0, precision: str | None = None,
                  tv_region: str = "image"):
    """Choose λ on healthy slices (Chen et al. 2020, Section 2.2.2, Eq. 7).

    ``ε(λ) = (1/S) Σ_s ||Y_s - X̂_λ,s||_1``: the mean over healthy slices of
    the ℓ1 change made by the restoration; the smallest λ at the minimum of ε
    is chosen.

    ε(λ) depends on the schedule, not only on the objective. With the brain
    mask the TV term also charges a constant offset of ``X - Y`` at the brain
    border, so the maximiser of ``ELBO - λ TV`` approaches ``Y`` as λ grows and
    a schedule that maximises well gives a monotonically falling ε(λ) (the
    rule then picks the largest λ of the grid). The paper schedule's fixed step
    makes the TV subgradient oscillate with an amplitude of about ``α λ``,
    which raises ε again at large λ: that is where its interior minimum comes
    from. On the demo prior of ``docs/demo_vae_lambda_study.png`` the paper
    schedule's minimum (λ = 8) is the λ with the *lowest* lesion AUROC, and
    the fast schedule's curve falls monotonically; check the chosen λ on a
    lesioned validation case (``benchmarks/convergence.py --lam``).

    The border term is not what removes the dip (``benchmarks/lambda_rule.py``,
    ``docs/lambda_rule.png``, the three 128 px FLAIR VAE folds, λ in 0.25…64):
    with the fast schedule ε(λ) falls monotonically for ``tv_region="image"``,
    for ``tv_region="brain"`` and without any mask alike, and is lowest at
    λ = 64 in every fold. Adam normalises each pixel's step by its gradient's
    size, so once λ TV dominates the step no longer shrinks with λ and ε
    levels off at the oscillation of the TV subgradient instead of rising.
    With the paper schedule both TV regions dip (at λ = 4 on fold 0, 8
    slices).

    Args:
        model: The normative model.
        healthy_slices: ``(S, H, W[, C])`` lesion-free validation slices.
        lambdas: Candidate λ values.
        schedule, batch_size, jit_compile: As :class:`Restorer`.
        precision: Precision of the network (see :class:`Restorer`).
        mask: Optional brain masks of the slices.
        rtol: Tolerance of :func:`select_lambda`.
        tv_region: Pixel pairs of the TV term (see :class:`Restorer`).

    Returns:
        ``(best_lambda, curve)`` with ``curve = {λ: ε(λ)}`` in increasing λ.

    Example:
        >>> best, curve = choose_lambda(model, healthy, [0.5, 1, 2, 4])     # doctest: +SKIP
    """
    lambdas = sorted({float(v) for v in lambdas})
    if not lambdas:
        raise ConfigError("choose_lambda needs at least one λ value")
    slices = np.asarray(healthy_slices, np.float32)
    restorer = Restorer(model, lam=lambdas[0], schedule=schedule, batch_size=batch_size, jit_compile=jit_compile,
                        precision=precision, tv_region=tv_region)
    curve = {}
    for lam in lambdas:
        restorer.lam = lam
        change = np.abs(slices - restorer.restore(slices, mask))
        curve[lam] = float(change.reshape(len(slices), -1).sum(axis=1).mean())
    return select_lambda(curve, rtol), curve


def plot_lambda_curve(curve: Mapping, best: float, out_png):
    """Plot ε(λ) with the chosen λ marked (cf. the paper's Fig. 10a); written atomically.

    Returns:
        The PNG path.
    """
    out = check_png(out_png)
    lams = sorted(float(k) for k in curve)
    values = [float(curve[k]) for k in sorted(curve, key=float)]
    fig = new_figure(5.0, 3.5)
    ax = fig.add_subplot()
    ax.plot(lams, values, "o-", color="tab:blue", label="ε(λ)")
    ax.axvline(float(best), color="tab:red", linestyle="--", label=f"chosen λ = {float(best):g}")
    ax.set_xlabel("λ (TV weight)")
    ax.set_ylabel("mean ℓ1 change on healthy slices")
    ax.legend()
    return save_figure(fig, out)


# --------------------------------------------------------------------------- convergence
def convergence_curve(restorer: Restorer, y, truth, mask=None,
                      checkpoints: Iterable[int] = (0, 50, 100, 150, 200, 250, 300, 350, 400, 450, 500)):
    """AUROC of the lesion map after each number of steps (cf. the paper's Fig. 10c).

    Args:
        restorer: A :class:`Restorer`.
        y: Slices with lesions ``(N, S, S[, C])``.
        truth: Binary lesion labels of the same spatial shape.
        mask: Optional brain mask; AUROC is computed on brain pixels (all
            pixels without a mask).
        checkpoints: Step counts.

    Returns:
        ``{steps: auroc}``.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, np.float32)
    truth = _per_pixel(np.asarray(truth) != 0, "truth", y.shape[:3])
    brain = np.ones(truth.shape, bool) if mask is None else _per_pixel(np.asarray(mask) != 0, "mask", y.shape[:3])
    labels = truth[brain]
    if labels.all() or not labels.any():
        raise ConfigError("AUROC needs both lesion and healthy pixels inside the mask")
    curve = {}
    for steps, x_hat in restorer.trajectory(y, mask, checkpoints):
        score = _per_pixel(np.abs(y - x_hat), "lesion map", y.shape[:3])
        curve[steps] = float(roc_auc_score(labels, score[brain]))
    return curve


def _per_pixel(a, what, spatial):
    """``(N, S, S)`` view of a per-pixel array given as ``(N, S, S)`` or ``(N, S, S, C)`` (summed over C)."""
    if a.ndim == 4:
        a = a.sum(axis=-1) if a.dtype != bool else a.any(axis=-1)
    if a.shape != tuple(spatial):
        raise DimensionError(None, f"{what} shape {a.shape} does not match slices {tuple(spatial)}")
    return a
