"""Whole volumes in the serving graph: slice geometry and 3D post-processing in TensorFlow ops.

The ``detect_volume`` signatures give a client what ``tfuad detect`` writes,
so every step after the scoring method is repeated here in graph ops that
run unchanged on a CPU or a GPU (no host round trip, no Python callback):

* :func:`geometry`, :func:`to_slices`, :func:`to_volume`: the crop, pad and
  resize of :class:`tfuad.data.preprocessing.SliceGeometry` and their inverse.
  Resizing follows :func:`scipy.ndimage.zoom` (``grid_mode=True``,
  ``mode="nearest"``): sample positions ``(o + 0.5) · n_in / n_out − 0.5``,
  linear weights (order 1) or rounding half up (order 0), computed in float64
  as SciPy does and rounded to float32 once;
* :func:`median_filter`: the exact median of every ``k × k × k`` window
  (SciPy's ``"reflect"`` border) by ``tf.math.top_k`` over the gathered
  window, for the voxels inside the eroded brain mask only (the others are
  zeroed afterwards anyway), a block of voxels at a time so memory stays
  bounded;
* :func:`erode`: binary erosion with the 6-connected cross, the array border
  counted as brain (SciPy's ``border_value=1``);
* :func:`remove_small_components`: connected components by label
  propagation (every voxel takes the largest label in its neighbourhood,
  then the label its label points to) until nothing changes, then component
  sizes by ``bincount``;
* :func:`postprocess_map`, :func:`segment`: the two functions of
  :mod:`tfuad.postprocessing.filters`.

Example:
    >>> geo = geometry(brain_mask, image_size=128, crop_margin=4)       # doctest: +SKIP
    >>> score = postprocess_map(to_volume(maps, geo), brain_mask, 5, 3) # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

__all__ = [
    "Geometry",
    "geometry",
    "to_slices",
    "to_volume",
    "erode",
    "median_filter",
    "remove_small_components",
    "postprocess_map",
    "segment",
    "MEDIAN_BLOCK_ELEMENTS",
]

#: Window values held at once by :func:`median_filter` (float32: 4 bytes each).
MEDIAN_BLOCK_ELEMENTS = 1 << 24


@dataclass
class Geometry:
    """Scalar int32 tensors of :class:`~tfuad.data.preprocessing.SliceGeometry`.

    Attributes:
        x0, x1, y0, y1: The crop box (half-open).
        side: Side of the padded square.
        top, left: Offset of the cropped plane in the square.
        shape: ``(X, Y, Z)`` of the volume.
    """

    x0: tf.Tensor
    x1: tf.Tensor
    y0: tf.Tensor
    y1: tf.Tensor
    side: tf.Tensor
    top: tf.Tensor
    left: tf.Tensor
    shape: tf.Tensor


def _first_last(any_along):
    index = tf.cast(tf.where(any_along)[:, 0], tf.int32)
    return index[0], index[-1]


def geometry(brain_mask, crop_margin: int) -> Geometry:
    """The slice geometry of ``SliceGeometry.from_mask`` (the brain's in-plane box plus a margin).

    Args:
        brain_mask: bool ``(X, Y, Z)`` with at least one voxel.
        crop_margin: Voxels added on each side of the box.
    """
    shape = tf.shape(brain_mask)
    margin = tf.constant(int(crop_margin), tf.int32)
    xa, xb = _first_last(tf.reduce_any(brain_mask, axis=[1, 2]))
    ya, yb = _first_last(tf.reduce_any(brain_mask, axis=[0, 2]))
    x0, x1 = tf.maximum(xa - margin, 0), tf.minimum(xb + 1 + margin, shape[0])
    y0, y1 = tf.maximum(ya - margin, 0), tf.minimum(yb + 1 + margin, shape[1])
    side = tf.maximum(x1 - x0, y1 - y0)
    return Geometry(x0, x1, y0, y1, side, (side - (y1 - y0)) // 2, (side - (x1 - x0)) // 2, shape)


def _sample_positions(n_in, n_out):
    """SciPy's zoom sample positions (float64) of ``n_out`` outputs on ``n_in`` inputs."""
    zoom = tf.cast(n_in, tf.float64) / tf.cast(n_out, tf.float64)
    return (tf.cast(tf.range(n_out), tf.float64) + 0.5) * zoom - 0.5


def _nearest_index(n_in, n_out):
    """Input index of each output for order-0 zoom (round half up, clamped)."""
    index = tf.cast(tf.floor(_sample_positions(n_in, n_out) + 0.5), tf.int32)
    return tf.clip_by_value(index, 0, n_in - 1)


def _linear_weights(n_in, n_out):
    """Order-1 zoom along one axis: the two input indices and their float64 weights per output.

    Positions beyond the first or last input are moved onto it (SciPy's
    ``"nearest"`` mode), so edge outputs copy an input value.
    """
    position = tf.clip_by_value(_sample_positions(n_in, n_out), 0.0, tf.cast(n_in - 1, tf.float64))
    start = tf.floor(position)
    frac = position - start
    start = tf.cast(start, tf.int32)
    return start, tf.minimum(start + 1, n_in - 1), 1.0 - frac, frac


def _resize_linear(planes, side):
    """Resize ``(Z, n, n)`` float32 planes to ``(Z, side, side)`` exactly as ``ndimage.zoom(order=1)``.

    SciPy sums, in float64, the four neighbours times the row weight times
    the column weight, in this order, and rounds the sum to float32 once;
    doing the same operations in the same order gives the same bits.
    """
    r0, r1, wr0, wr1 = _linear_weights(tf.shape(planes)[1], side)
    c0, c1, wc0, wc1 = _linear_weights(tf.shape(planes)[2], side)
    values = tf.cast(planes, tf.float64)
    total = tf.zeros([tf.shape(planes)[0], side, side], tf.float64)
    for rows, row_weight in ((r0, wr0), (r1, wr1)):
        picked = tf.gather(values, rows, axis=1) * row_weight[None, :, None]
        for cols, col_weight in ((c0, wc0), (c1, wc1)):
            total = total + tf.gather(picked, cols, axis=2) * col_weight[None, None, :]
    return tf.cast(total, tf.float32)


def to_slices(mask, geo: Geometry, image_size: int):
    """Cut a bool ``(X, Y, Z)`` volume into ``(Z, S, S)`` bool slices (nearest neighbour)."""
    cropped = mask[geo.x0:geo.x1, geo.y0:geo.y1, :]
    planes = tf.reverse(tf.transpose(cropped, (2, 1, 0)), axis=[1])
    height, width = geo.y1 - geo.y0, geo.x1 - geo.x0
    square = tf.pad(planes, [[0, 0], [geo.top, geo.side - geo.top - height],
                             [geo.left, geo.side - geo.left - width]])
    index = _nearest_index(geo.side, int(image_size))
    return tf.gather(tf.gather(square, index, axis=1), index, axis=2)


def to_volume(slices, geo: Geometry):
    """Map ``(Z, S, S)`` float32 slice maps back onto the volume grid (0 outside the crop box)."""
    square = _resize_linear(slices, geo.side)
    height, width = geo.y1 - geo.y0, geo.x1 - geo.x0
    planes = square[:, geo.top:geo.top + height, geo.left:geo.left + width]
    block = tf.transpose(tf.reverse(planes, axis=[1]), (2, 1, 0))
    return tf.pad(block, [[geo.x0, geo.shape[0] - geo.x1], [geo.y0, geo.shape[1] - geo.y1], [0, 0]])


def erode(mask, iterations: int):
    """Binary erosion by ``iterations`` layers with the 6-connected cross; the array border is brain."""
    for _ in range(int(iterations)):
        p = tf.pad(mask, [[1, 1]] * 3, constant_values=True)
        core = p[1:-1, 1:-1, 1:-1]
        for a, b in ((p[:-2, 1:-1, 1:-1], p[2:, 1:-1, 1:-1]), (p[1:-1, :-2, 1:-1], p[1:-1, 2:, 1:-1]),
                     (p[1:-1, 1:-1, :-2], p[1:-1, 1:-1, 2:])):
            core = core & a & b
        mask = core
    return mask


def _reflect_index(n, radius: int):
    """Indices of SciPy's ``"reflect"`` extension (``d c b a | a b c d | d c b a``) by ``radius``."""
    period = 2 * n
    index = tf.math.floormod(tf.range(-radius, n + radius), period)
    return tf.where(index >= n, period - 1 - index, index)


def _window_offsets(size: int):
    """``(size³, 3)`` int32 offsets of a window's voxels from its first corner."""
    r = tf.range(size)
    grid = tf.stack(tf.meshgrid(r, r, r, indexing="ij"), axis=-1)
    return tf.reshape(grid, [-1, 3])


def median_filter(volume, size: int, where=None, block_elements: int = MEDIAN_BLOCK_ELEMENTS):
    """Median of every ``size``³ window of a float32 ``(X, Y, Z)`` volume (SciPy's ``"reflect"`` border).

    Args:
        volume: The volume.
        size: Odd window side; 1 returns the volume.
        where: Optional bool volume: only these voxels are filtered, the others are 0.
        block_elements: Window values gathered at once (bounds the memory).

    Returns:
        float32 volume of ``volume``'s shape; every filtered voxel holds one of its window's values.
    """
    size = int(size)
    if size == 1:
        return volume if where is None else tf.where(where, volume, tf.zeros_like(volume))
    radius, window = size // 2, size ** 3
    shape = tf.shape(volume)
    padded = volume
    for axis in range(3):
        padded = tf.gather(padded, _reflect_index(shape[axis], radius), axis=axis)
    voxels = tf.cast(tf.where(tf.ones_like(volume, tf.bool) if where is None else where), tf.int32)
    offsets = _window_offsets(size)
    count = tf.shape(voxels)[0]
    block = max(1, int(block_elements) // window)

    def body(start, out):
        stop = tf.minimum(start + block, count)
        corner = voxels[start:stop]  # the window of voxel v starts at v in padded coordinates
        values = tf.gather_nd(padded, corner[:, None, :] + offsets[None, :, :])
        median = tf.math.top_k(values, k=window // 2 + 1, sorted=True).values[:, -1]
        return stop, tf.tensor_scatter_nd_update(out, corner, median)

    _, out = tf.while_loop(lambda start, out: start < count, body, (tf.constant(0), tf.zeros_like(volume)))
    return out


def _bounding_box(mask, extra: int = 0):
    """``[(lo, hi)]`` per axis of the voxels of ``mask`` widened by ``extra``, clipped to the array."""
    shape = tf.shape(mask)
    box = []
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        lo, hi = _first_last(tf.reduce_any(mask, axis=others))
        box.append((tf.maximum(lo - extra, 0), tf.minimum(hi + 1 + extra, shape[axis])))
    return box


def _crop(volume, box):
    return volume[box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]]


def _uncrop(block, box, shape):
    return tf.pad(block, [[lo, n - hi] for (lo, hi), n in zip(box, tf.unstack(shape))])


def _max3(labels, axis: int):
    """Largest label among each voxel and its two neighbours along ``axis`` (0 beyond the border)."""
    pad = [[0, 0]] * 3
    pad[axis] = [1, 1]
    p = tf.pad(labels, pad)
    n = tf.shape(labels)[axis]

    def take(start):
        index = [slice(None)] * 3
        index[axis] = slice(start, start + n)
        return p[tuple(index)]

    return tf.maximum(tf.maximum(take(0), take(1)), take(2))


def _neighbourhood_max(labels, connectivity: int):
    """Largest label in each voxel's neighbourhood (``scipy.ndimage.generate_binary_structure(3, c)``)."""
    if connectivity == 3:  # the 3×3×3 cube: separable
        return _max3(_max3(_max3(labels, 0), 1), 2)
    if connectivity == 2:  # union of the three 3×3 plates through the centre
        return tf.maximum(tf.maximum(_max3(_max3(labels, 0), 1), _max3(_max3(labels, 0), 2)),
                          _max3(_max3(labels, 1), 2))
    return tf.maximum(tf.maximum(_max3(labels, 0), _max3(labels, 1)), _max3(labels, 2))  # the 6-cross


def _component_sizes(foreground, connectivity: int):
    """Size of the connected component of every voxel of a bool volume (0 for background)."""
    shape = tf.shape(foreground)
    count = tf.reduce_prod(shape)
    start = tf.where(foreground, tf.reshape(tf.range(1, count + 1), shape), 0)

    def body(labels, _):
        grown = tf.where(foreground, _neighbourhood_max(labels, connectivity), 0)
        flat = tf.reshape(grown, [-1])
        jumped = tf.where(foreground, tf.gather(flat, tf.maximum(grown - 1, 0)), 0)  # label of the label
        return jumped, tf.reduce_any(jumped != labels)

    labels, _ = tf.while_loop(lambda labels, changed: changed, body, (start, tf.constant(True)))
    sizes = tf.math.bincount(tf.reshape(labels, [-1]), minlength=count + 1, dtype=tf.int32)
    return tf.where(foreground, tf.gather(sizes, labels), 0)


def remove_small_components(binary, min_size: int, connectivity: int = 3):
    """Drop connected components with fewer than ``min_size`` voxels from a bool ``(X, Y, Z)`` volume.

    Labels start as voxel numbers and converge to the largest number in each
    component; the loop ends when an iteration changes no label, so the
    result is exact for any shape of component (iterations grow with the
    logarithm of the component's length when it is straight, with its
    length at worst).
    """
    if int(min_size) <= 1:
        return tf.identity(binary)

    def keep_large():
        box = _bounding_box(binary)
        block = _crop(binary, box)
        sizes = _component_sizes(block, int(connectivity))
        return _uncrop(block & (sizes >= int(min_size)), box, tf.shape(binary))

    return tf.cond(tf.reduce_any(binary), keep_large, lambda: tf.identity(binary))


def _assert_brain(mask, message: str):
    check = tf.debugging.Assert(tf.reduce_any(mask), [message])
    with tf.control_dependencies([check]):
        return tf.identity(mask)


def postprocess_map(raw, brain_mask, median_size: int, erosion_iterations: int):
    """Median filter, then zero outside the eroded brain mask (``filters.postprocess_map``).

    Only the box of the eroded mask plus half a window is filtered, with the
    reflect border at that box's faces, as ``tfuad.postprocessing.filters``
    does; voxels inside the eroded mask get the same value either way.

    Raises (at run time):
        tf.errors.InvalidArgumentError: the brain mask is empty, or empty after erosion.
    """
    brain_mask = _assert_brain(brain_mask, "brain_mask has no brain voxel")
    eroded = _assert_brain(erode(brain_mask, erosion_iterations),
                           f"brain_mask is empty after {int(erosion_iterations)} erosion iterations")
    box = _bounding_box(eroded, int(median_size) // 2)
    filtered = median_filter(_crop(raw, box), median_size, where=_crop(eroded, box))
    return _uncrop(filtered, box, tf.shape(raw))


def segment(score, threshold, min_component_size: int, connectivity: int):
    """``score > threshold`` without components smaller than ``min_component_size`` (``filters.segment``)."""
    return remove_small_components(score > threshold, min_component_size, connectivity)
