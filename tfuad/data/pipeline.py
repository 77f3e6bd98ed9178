"""tf.data pipelines over prepared axial slices.

* :func:`slice_dataset`: batches for inference or simple training loops;
* :func:`training_batches`: the training stream of ``tfuad train``: epoch
  ``e`` is shuffled and augmented from ``(seed, e)`` alone, so a run resumed at
  any epoch sees exactly the batches an uninterrupted run would;
* :func:`augment_brain_slice`: flip, rotation, scale, shift, intensity scale
  and gamma in TensorFlow ops (stateless, GPU-safe), the background kept.

Example:
    >>> import numpy as np
    >>> x = np.random.rand(10, 32, 32, 1).astype("float32")
    >>> ds = slice_dataset(x, batch_size=4, seed=0)
    >>> [tuple(b.shape) for b in ds]
    [(4, 32, 32, 1), (4, 32, 32, 1), (2, 32, 32, 1)]
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfuad.errors import ArrayError, ConfigError, DatasetError

__all__ = ["slice_dataset", "training_batches", "augment_brain_slice", "collect_slices", "BRAIN_AUGMENTATION"]

#: Ranges of :func:`augment_brain_slice` (``tfuad train --augment``): probability of the
#: left-right mirror, rotation (degrees), isotropic scale, shift (fraction of the side),
#: intensity scale and gamma (the exponent is drawn log-uniformly in ``[1/g, g]``).
BRAIN_AUGMENTATION = {"flip": 0.5, "rotation": 10.0, "scale": 0.1, "shift": 0.04, "intensity": 0.1,
                      "gamma": 1.25}


def augment_brain_slice(x, seed, *, background: float = 0.0, flip: float = 0.5, rotation: float = 10.0,
                        scale: float = 0.1, shift: float = 0.04, intensity: float = 0.1,
                        gamma: float = 1.25):
    """Augment one brain slice the way brains vary, deterministic given ``seed``.

    In order: a left-right mirror (the slice columns reversed, see
    :mod:`tfuad.data.preprocessing`) with probability ``flip``; one bilinear
    resampling that rotates by ``U(-rotation, rotation)`` degrees about the
    centre, scales by ``U(1 - scale, 1 + scale)`` and shifts by
    ``U(-shift, shift)`` of the side along each axis; then, on the offset from
    the background ``d = x - background``, an intensity scale
    ``U(1 - intensity, 1 + intensity)`` and a gamma ``d_max · (d / d_max)^γ``
    of the positive part (``log γ ~ U(-log gamma, log gamma)``).

    Pixels that are background and stay outside the brain after the
    resampling keep exactly the value ``background`` (the resampling fills
    with it and every intensity change maps it to itself). Every draw is
    stateless, so the same ``seed`` gives the same result inside or outside
    ``tf.function``; all operations are TensorFlow ops with CPU and GPU
    kernels (``ImageProjectiveTransformV3``), usable inside ``tf.data``.

    Args:
        x: One slice ``(H, W, C)``.
        seed: Shape ``(2,)`` integer seed.
        background: The intensity outside the brain
            (:attr:`~tfuad.data.preprocessing.PreprocessConfig.background_value`).
        flip: Probability of the left-right mirror.
        rotation: Largest rotation, degrees.
        scale: Largest relative change of size.
        shift: Largest shift, as a fraction of the side.
        intensity: Largest relative change of the intensity scale.
        gamma: Largest gamma factor (``>= 1``; 1 disables it).

    Returns:
        float32 tensor of ``x``'s shape.

    Example:
        >>> x = tf.pad(tf.ones((8, 8, 1)), [[4, 4], [4, 4], [0, 0]])
        >>> a = augment_brain_slice(x, [1, 2]); b = augment_brain_slice(x, [1, 2])
        >>> bool(tf.reduce_all(a == b)), float(a[0, 0, 0])
        (True, 0.0)
    """
    x = tf.convert_to_tensor(x, dtype=tf.float32)
    if x.shape.rank is not None and x.shape.rank != 3:
        raise ArrayError(f"augment_brain_slice expects one slice (H, W, C), got shape {x.shape}")
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=7)

    def uniform(i, low, high):
        return tf.random.stateless_uniform([], seed=seeds[i], minval=low, maxval=high)

    d = x - background
    mirror = uniform(0, 0.0, 1.0) < flip
    d = tf.cond(mirror, lambda: tf.reverse(d, axis=[1]), lambda: d)
    angle = uniform(1, -rotation, rotation) * (math.pi / 180.0)
    size = uniform(2, 1.0 - scale, 1.0 + scale)
    h, w = tf.cast(tf.shape(d)[0], tf.float32), tf.cast(tf.shape(d)[1], tf.float32)
    tx, ty = uniform(3, -shift, shift) * w, uniform(4, -shift, shift) * h
    # output (col, row) -> input: R^-1 (out - centre - shift) / size + centre
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    cos, sin = tf.cos(angle) / size, tf.sin(angle) / size
    ox, oy = cx + tx, cy + ty
    transform = tf.stack([cos, sin, cx - cos * ox - sin * oy, -sin, cos, cy + sin * ox - cos * oy, 0.0, 0.0])
    d = tf.raw_ops.ImageProjectiveTransformV3(
        images=d[tf.newaxis], transforms=transform[tf.newaxis], output_shape=tf.shape(d)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
    d = d * uniform(5, 1.0 - intensity, 1.0 + intensity)
    if gamma != 1.0:
        exponent = tf.exp(uniform(6, -math.log(gamma), math.log(gamma)))
        top = tf.reduce_max(d)
        safe_top = tf.where(top > 0, top, 1.0)
        d = tf.where(d > 0, safe_top * tf.pow(tf.maximum(d, 0.0) / safe_top, exponent), d)
    d.set_shape(x.shape)
    return d + background


def _checked_array(slices) -> np.ndarray:
    array = np.asarray(slices)
    if array.ndim != 4:
        raise DatasetError(None, f"slices must be an array (N, H, W, C), got shape {array.shape}")
    if array.shape[0] == 0:
        raise DatasetError(None, "no slices to build a dataset from")
    if not np.isfinite(array).all():
        raise DatasetError(None, "slices contain NaN or infinite values")
    return array.astype(np.float32, copy=False)


def training_batches(slices, *, batch_size: int, epochs: int, first_epoch: int = 0, seed: int = 0,
                     augment: bool = True, background: float = 0.0) -> tuple[tf.data.Dataset, int]:
    """The batches of epochs ``first_epoch`` .. ``epochs - 1``, one stream, and the steps per epoch.

    Epoch ``e`` visits every slice once in an order drawn from ``(seed, e)``
    (a stateless permutation) and augments the slice at position ``i`` with
    the seed ``fold_in((seed, e), i)`` (:func:`augment_brain_slice`), so the
    stream does not depend on where it starts: resuming at epoch ``e`` gives
    the batches an uninterrupted run gives from epoch ``e`` on. Batches never
    straddle two epochs (the last batch of an epoch may be smaller). Pass the
    steps to ``fit(steps_per_epoch=...)``.

    Args:
        slices: Array ``(N, H, W, C)``.
        batch_size: Slices per batch.
        epochs: One past the last epoch (``fit``'s ``epochs``).
        first_epoch: The first epoch (``fit``'s ``initial_epoch``).
        seed: Seed of orders and augmentations.
        augment: Apply :func:`augment_brain_slice`.
        background: Background intensity kept by the augmentation.

    Returns:
        ``(dataset, steps_per_epoch)``.

    Raises:
        DatasetError: empty, non-finite or wrongly shaped slices.
        ValueError: ``batch_size < 1`` or ``epochs <= first_epoch``.

    Example:
        >>> ds, steps = training_batches(np.zeros((5, 16, 16, 1)), batch_size=2, epochs=3, first_epoch=1)
        >>> steps, [int(b.shape[0]) for b in ds]
        (3, [2, 2, 1, 2, 2, 1])
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if int(epochs) <= int(first_epoch):
        raise ConfigError(f"no epoch to run: epochs={epochs!r}, first_epoch={first_epoch!r}")
    array = _checked_array(slices)
    n = int(array.shape[0])
    data = tf.constant(array)
    base = tf.constant(int(seed), tf.int64)

    def one_epoch(epoch):
        epoch_seed = tf.stack([base, epoch])
        order_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(epoch_seed, num=2))
        order = tf.argsort(tf.random.stateless_uniform([n], seed=order_seed))

        def load(position, index):
            x = tf.gather(data, index)
            if augment:
                x = augment_brain_slice(x, tf.random.experimental.stateless_fold_in(augment_seed, position),
                                        background=background)
            return x

        ds = tf.data.Dataset.from_tensor_slices(tf.cast(order, tf.int64)).enumerate()
        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(int(batch_size))

    ds = tf.data.Dataset.range(int(first_epoch), int(epochs)).flat_map(one_epoch)
    return ds.prefetch(tf.data.AUTOTUNE), math.ceil(n / int(batch_size))


def _as_dataset(slices) -> tf.data.Dataset:
    if isinstance(slices, tf.data.Dataset):
        spec = slices.element_spec
        if not isinstance(spec, tf.TensorSpec) or spec.shape.rank != 3:
            raise DatasetError(None, f"a slice dataset must yield single (H, W, C) tensors, got {spec}")
        return slices.map(lambda x: tf.cast(x, tf.float32))
    return tf.data.Dataset.from_tensor_slices(_checked_array(slices))


def slice_dataset(slices, *, batch_size: int = 8, shuffle: bool = True, seed: int | None = None,
                  cache: bool = True, repeat: bool = False, drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of float32 slices for inference or simple loops (training uses :func:`training_batches`).

    Order of operations: cache, shuffle (reshuffled every epoch), repeat, batch, prefetch.

    Args:
        slices: Array ``(N, H, W, C)``, or a ``tf.data.Dataset`` of single
            ``(H, W, C)`` slices (e.g. decoded from files, where ``cache`` pays).
        batch_size: Slices per batch.
        shuffle: Shuffle with a buffer holding every slice of an array input
            (1024 slices for a dataset input).
        seed: Seed of shuffling; the same seed gives the same stream. ``None`` draws a fresh one.
        cache: Cache the slices of a dataset input in memory after the first
            pass (an array input is in memory already and is not copied).
        repeat: Repeat forever (then pass ``steps_per_epoch`` to ``fit``).
        drop_remainder: Drop a last, smaller batch.

    Returns:
        A ``tf.data.Dataset`` of float32 tensors ``(B, H, W, C)``.

    Raises:
        DatasetError: empty, non-finite or wrongly shaped slices.
        ConfigError: ``batch_size < 1``.

    Example:
        >>> ds = slice_dataset(np.zeros((3, 16, 16, 1)), batch_size=2, shuffle=False)
        >>> [int(b.shape[0]) for b in ds]
        [2, 1]
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31 - 1))
    is_array = not isinstance(slices, tf.data.Dataset)
    ds = _as_dataset(slices)
    if cache and not is_array:
        ds = ds.cache()
    if shuffle:
        buffer = int(np.shape(slices)[0]) if is_array else 1024
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def collect_slices(prepared_volumes, indices_fn) -> np.ndarray:
    """Concatenate selected slices of many prepared volumes.

    Args:
        prepared_volumes: Iterable of :class:`~tfuad.data.preprocessing.PreparedVolume`.
        indices_fn: ``indices_fn(prepared) -> slice indices`` (e.g.
            ``lambda p: p.training_indices(config)``).

    Returns:
        float32 array ``(N, S, S, 1)`` (``N`` may be 0).

    Raises:
        DatasetError: no volumes, or volumes with different slice sizes.

    Example:
        >>> train = collect_slices(prepared, lambda p: p.training_indices(cfg))  # doctest: +SKIP
    """
    parts, shape = [], None
    for prepared in prepared_volumes:
        if shape is None:
            shape = prepared.slices.shape[1:]
        elif prepared.slices.shape[1:] != shape:
            raise DatasetError(prepared.volume.path,
                               f"slices of shape {prepared.slices.shape[1:]} differ from {shape} of other volumes")
        index = np.asarray(indices_fn(prepared), dtype=np.int64).reshape(-1)
        parts.append(prepared.slices[index])
    if shape is None:
        raise DatasetError(None, "no prepared volumes to collect slices from")
    return np.concatenate(parts, axis=0).astype(np.float32, copy=False)
