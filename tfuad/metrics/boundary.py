"""Boundary distances between two binary masks, in millimetres: HD95, Hausdorff, ASSD.

Definitions (as in the Medical Segmentation Decathlon and BraTS evaluations,
and in MedPy's ``hd95``/``assd``):

* The **surface** ``S(A)`` of a mask ``A`` is ``A`` minus its binary
  erosion by the ``connectivity`` structuring element (1: faces, i.e. the
  6-neighbourhood in 3D), with everything outside the array counted as
  background — a mask touching the array's edge has surface there.
* ``d(a, S(B))`` is the Euclidean distance, in mm through the voxel
  ``spacing``, from the centre of surface voxel ``a`` of ``A`` to the nearest
  surface voxel of ``B`` (:func:`scipy.ndimage.distance_transform_edt` with
  ``sampling=spacing``).
* **HD95**: the 95th percentile (linear interpolation, :func:`numpy.percentile`)
  of the symmetric surface distances, i.e. of the union of
  ``{d(a, S(B)) : a ∈ S(A)}`` and ``{d(b, S(A)) : b ∈ S(B)}``. With
  ``pooling="max"`` it is instead the larger of the two directed 95th
  percentiles. ``percentile=100`` gives the Hausdorff distance.
* **ASSD** (average symmetric surface distance, Heimann et al. 2009):
  ``(Σ_a d(a, S(B)) + Σ_b d(b, S(A))) / (|S(A)| + |S(B)|)``. (MedPy's
  ``assd`` averages the two directed means instead; both agree when the two
  surfaces have as many voxels.)

Empty masks: when both are empty the distances are undefined (NaN); when
exactly one is empty they are infinite (``inf``): there is no surface to
reach. Summaries over subjects must report those subjects apart rather than
average them.

Only the bounding box of both masks (plus one voxel of margin) is processed,
so large volumes with small lesions are cheap; the distances are exact.

Example:
    >>> import numpy as np
    >>> a = np.zeros((8, 8, 8), bool); a[2:6, 2:6, 2:6] = True
    >>> b = np.roll(a, 1, axis=0)                   # shifted by one voxel of 2 mm
    >>> hd95(a, b, spacing=(2.0, 1.0, 1.0))
    2.0
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import ndimage as ndi

from tfuad.metrics.checks import MetricInputError, as_mask, check_fraction, same_shape

__all__ = ["surface_distances", "hd95", "hausdorff_distance", "average_surface_distance", "boundary_metrics"]

_POOLING = ("union", "max")


def _spacing(spacing, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    if isinstance(spacing, numbers.Real) and not isinstance(spacing, bool):
        spacing = [spacing] * ndim
    try:
        arr = np.asarray(spacing, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise MetricInputError(f"spacing must be {ndim} positive numbers, got {spacing!r}") from None
    if arr.size != ndim or not np.isfinite(arr).all() or (arr <= 0).any():
        raise MetricInputError(f"spacing must be {ndim} positive numbers (one per axis, in mm), got {spacing!r}")
    return arr


def _surface(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    return mask & ~ndi.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(pred, truth, spacing=None, *, connectivity: int = 1) -> tuple:
    """Directed surface distances of two binary masks, in mm.

    Args:
        pred: Binary mask A (any number of dimensions, usually 3).
        truth: Binary mask B, same shape.
        spacing: Voxel size per axis in mm (a number for isotropic voxels);
            default 1.
        connectivity: Erosion neighbourhood that defines the surface, ``1`` ..
            ``ndim`` (1: voxels with a face-neighbour outside the mask).

    Returns:
        ``(d_pred_to_truth, d_truth_to_pred)``: 1D arrays with the distance of
        each surface voxel of A to the surface of B and vice versa (in the
        arrays' C order); empty arrays for an empty mask.

    Raises:
        MetricInputError: different shapes, non-binary masks, bad spacing
            or connectivity.

    Example:
        >>> a = np.zeros((1, 1, 5), bool); a[0, 0, 0] = True
        >>> b = np.zeros_like(a); b[0, 0, 3] = True
        >>> surface_distances(a, b, spacing=(1, 1, 0.5))
        (array([1.5]), array([1.5]))

    One empty mask: every surface voxel of the other is infinitely far.
    """
    pred, truth = same_shape(pred=pred, truth=truth)
    pred, truth = as_mask(pred, "pred"), as_mask(truth, "truth")
    ndim = pred.ndim
    spacing = _spacing(spacing, ndim)
    if isinstance(connectivity, bool) or not isinstance(connectivity, numbers.Integral) \
            or not 1 <= connectivity <= ndim:
        raise MetricInputError(f"connectivity must be an integer between 1 and {ndim}, got {connectivity!r}")
    either = pred | truth
    if not either.any():
        return np.empty(0), np.empty(0)
    box = ndi.find_objects(either.astype(np.int8))[0]
    pred = np.pad(pred[box], 1)
    truth = np.pad(truth[box], 1)
    structure = ndi.generate_binary_structure(ndim, int(connectivity))
    s_pred, s_truth = _surface(pred, structure), _surface(truth, structure)
    if not s_pred.any() or not s_truth.any():      # one mask is empty: its surface is out of reach
        return np.full(int(s_pred.sum()), math.inf), np.full(int(s_truth.sum()), math.inf)
    to_truth = ndi.distance_transform_edt(~s_truth, sampling=spacing)
    to_pred = ndi.distance_transform_edt(~s_pred, sampling=spacing)
    return to_truth[s_pred], to_pred[s_truth]


def _both_empty(d_pt: np.ndarray, d_tp: np.ndarray) -> bool | None:
    """True when both masks are empty, False when exactly one is, None when neither.

    A non-empty mask always has surface voxels, so the distance arrays are
    empty exactly when their mask is.
    """
    p, t = d_pt.size > 0, d_tp.size > 0
    if p and t:
        return None
    return not p and not t


def hd95(pred, truth, spacing=None, *, percentile: float = 95.0, pooling: str = "union",
         connectivity: int = 1) -> float:
    """95th-percentile Hausdorff distance in mm (see the module docstring for the definition).

    Args:
        pred: Binary mask.
        truth: Binary mask, same shape.
        spacing: Voxel size per axis in mm.
        percentile: Percentile of the surface distances, in (0, 100].
        pooling: ``"union"``: percentile of both directed distance sets
            together (MSD, BraTS, MedPy); ``"max"``: the larger of the two
            directed percentiles.
        connectivity: Erosion neighbourhood that defines the surface.

    Returns:
        Distance in mm; NaN when both masks are empty, ``inf`` when exactly one is.

    Example:
        >>> a = np.zeros((1, 1, 20), bool); a[..., :] = True
        >>> b = np.zeros_like(a); b[0, 0, 0] = True
        >>> hd95(a, b), hd95(a, b, pooling="max"), hd95(a, b, percentile=100)
        (18.0, 18.05, 19.0)
    """
    percentile = check_fraction(percentile, "percentile", high=100.0, include_high=True)
    if pooling not in _POOLING:
        raise MetricInputError(f"pooling must be one of {', '.join(_POOLING)}, got {pooling!r}")
    d_pt, d_tp = surface_distances(pred, truth, spacing, connectivity=connectivity)
    empty = _both_empty(d_pt, d_tp)
    if empty is not None:
        return math.nan if empty else math.inf
    if pooling == "union":
        return float(np.percentile(np.concatenate([d_pt, d_tp]), percentile))
    return float(max(np.percentile(d_pt, percentile), np.percentile(d_tp, percentile)))


def hausdorff_distance(pred, truth, spacing=None, *, connectivity: int = 1) -> float:
    """Hausdorff distance in mm: the largest surface distance in either direction.

    Example:
        >>> a = np.zeros((3, 3, 3), bool); a[0, 0, 0] = True
        >>> b = np.zeros_like(a); b[2, 2, 2] = True
        >>> round(hausdorff_distance(a, b), 4)
        3.4641
    """
    return hd95(pred, truth, spacing, percentile=100.0, connectivity=connectivity)


def average_surface_distance(pred, truth, spacing=None, *, connectivity: int = 1) -> float:
    """Average symmetric surface distance (ASSD) in mm, pooled over both surfaces.

    Returns:
        Distance in mm; NaN when both masks are empty, ``inf`` when exactly one is.

    Example:
        >>> a = np.zeros((1, 1, 5), bool); a[..., :] = True
        >>> b = np.zeros_like(a); b[0, 0, 0] = True
        >>> average_surface_distance(a, b)       # (0+1+2+3+4 + 0) / (5 + 1)
        1.6666666666666667
    """
    d_pt, d_tp = surface_distances(pred, truth, spacing, connectivity=connectivity)
    empty = _both_empty(d_pt, d_tp)
    if empty is not None:
        return math.nan if empty else math.inf
    return float((d_pt.sum() + d_tp.sum()) / (d_pt.size + d_tp.size))


def boundary_metrics(pred, truth, spacing=None, *, connectivity: int = 1) -> dict:
    """HD95, Hausdorff distance and ASSD from one pass over the surfaces.

    Returns:
        ``{"hd95", "hausdorff", "assd"}`` in mm; NaN when both masks are
        empty, ``inf`` when exactly one is.

    Example:
        >>> a = np.zeros((1, 1, 5), bool); a[..., :] = True
        >>> b = np.zeros_like(a); b[0, 0, 0] = True
        >>> boundary_metrics(a, b)
        {'hd95': 3.75, 'hausdorff': 4.0, 'assd': 1.6666666666666667}
    """
    d_pt, d_tp = surface_distances(pred, truth, spacing, connectivity=connectivity)
    empty = _both_empty(d_pt, d_tp)
    if empty is not None:
        value = math.nan if empty else math.inf
        return {"hd95": value, "hausdorff": value, "assd": value}
    both = np.concatenate([d_pt, d_tp])
    return {"hd95": float(np.percentile(both, 95.0)), "hausdorff": float(both.max()),
            "assd": float(both.sum() / both.size)}
