"""tf.data pipelines over prepared axial slices.

Example:
    >>> import numpy as np
    >>> x = np.random.rand(10, 32, 32, 1).astype("float32")
    >>> ds = slice_dataset(x, batch_size=4, seed=0, augment=True)
    >>> [tuple(b.shape) for b in ds]
    [(4, 32, 32, 1), (4, 32, 32, 1), (2, 32, 32, 1)]
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfuad.errors import DatasetError

__all__ = ["slice_dataset", "augment_slices", "collect_slices"]


def augment_slices(x, seed, *, flip: bool = True, max_scale: float = 0.1, max_shift: float = 0.05):
    """Light, label-free augmentation of one slice, deterministic given ``seed``.

    With probability 1/2 the slice is mirrored left-right (its columns are
    reversed: see :mod:`tfuad.data.preprocessing` for the slice layout), then
    intensities become ``x * a + b`` with ``a ~ U[1 - max_scale, 1 + max_scale]``
    and ``b ~ U[-max_shift, max_shift]``. All draws are stateless, so the same
    ``seed`` always gives the same result, inside or outside ``tf.function``.

    Args:
        x: One slice ``(H, W, C)``.
        seed: Shape ``(2,)`` integer seed (for example ``(base_seed, index)``).
        flip: Allow the left-right mirror.
        max_scale: Largest relative intensity scale change.
        max_shift: Largest additive intensity shift.

    Returns:
        float32 tensor of ``x``'s shape.

    Example:
        >>> x = tf.reshape(tf.range(4, dtype=tf.float32), (2, 2, 1))
        >>> a = augment_slices(x, [1, 2]); b = augment_slices(x, [1, 2])
        >>> bool(tf.reduce_all(a == b))
        True
    """
    x = tf.convert_to_tensor(x, dtype=tf.float32)
    if x.shape.rank is not None and x.shape.rank != 3:
        raise ValueError(f"augment_slices expects one slice (H, W, C), got shape {x.shape}")
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    if flip:
        mirror = tf.random.stateless_uniform([], seed=seeds[0]) < 0.5
        x = tf.cond(mirror, lambda: tf.reverse(x, axis=[1]), lambda: x)
    scale = tf.random.stateless_uniform([], seed=seeds[1], minval=1.0 - max_scale, maxval=1.0 + max_scale)
    shift = tf.random.stateless_uniform([], seed=seeds[2], minval=-max_shift, maxval=max_shift)
    return x * scale + shift


def _as_dataset(slices) -> tf.data.Dataset:
    if isinstance(slices, tf.data.Dataset):
        spec = slices.element_spec
        if not isinstance(spec, tf.TensorSpec) or spec.shape.rank != 3:
            raise DatasetError(None, f"a slice dataset must yield single (H, W, C) tensors, got {spec}")
        return slices.map(lambda x: tf.cast(x, tf.float32))
    array = np.asarray(slices)
    if array.ndim != 4:
        raise DatasetError(None, f"slices must be an array (N, H, W, C), got shape {array.shape}")
    if array.shape[0] == 0:
        raise DatasetError(None, "no slices to build a dataset from")
    if not np.isfinite(array).all():
        raise DatasetError(None, "slices contain NaN or infinite values")
    return tf.data.Dataset.from_tensor_slices(array.astype(np.float32, copy=False))


def slice_dataset(slices, *, batch_size: int = 8, shuffle: bool = True, seed: int | None = None,
                  augment: bool = False, cache: bool = True, repeat: bool = False,
                  drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of float32 slices for training or inference.

    Order of operations: cache, shuffle (reshuffled every epoch), repeat,
    augment (each element gets the seed ``(seed, position in the stream)``,
    so every epoch sees new, reproducible augmentations), batch, prefetch.

    Args:
        slices: Array ``(N, H, W, C)``, or a ``tf.data.Dataset`` of single
            ``(H, W, C)`` slices (e.g. decoded from files, where ``cache`` pays).
        batch_size: Slices per batch.
        shuffle: Shuffle with a buffer holding every slice of an array input
            (1024 slices for a dataset input).
        seed: Seed of shuffling and augmentation; the same seed gives the same
            stream. ``None`` draws a fresh one.
        augment: Apply :func:`augment_slices`.
        cache: Cache the slices of a dataset input in memory after the first
            pass (an array input is in memory already and is not copied).
        repeat: Repeat forever (then pass ``steps_per_epoch`` to ``fit``).
        drop_remainder: Drop a last, smaller batch.

    Returns:
        A ``tf.data.Dataset`` of float32 tensors ``(B, H, W, C)``.

    Raises:
        DatasetError: empty, non-finite or wrongly shaped slices.
        ValueError: ``batch_size < 1``.

    Example:
        >>> ds = slice_dataset(np.zeros((3, 16, 16, 1)), batch_size=2, shuffle=False)
        >>> [int(b.shape[0]) for b in ds]
        [2, 1]
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
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
    if augment:
        base = tf.constant(seed, tf.int64)
        ds = ds.enumerate().map(
            lambda i, x: augment_slices(x, tf.stack([base, i])),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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
