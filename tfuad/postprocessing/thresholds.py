"""Thresholds calibrated on healthy data, and the :class:`Calibration` record.

Two rules from the papers, both using only healthy (lesion-free) voxels:

* Baur et al. (2018): the 98th percentile of the post-processed residuals of
  healthy brain voxels (:func:`percentile_threshold`);
* Chen et al. (2020): the smallest threshold whose false-positive rate on
  healthy brain voxels does not exceed a limit, e.g. 1 %, 5 % or 10 %
  (:func:`fpr_threshold`).

Voxels are labelled anomalous when ``score > threshold``. FPR thresholds are
exact on the calibration values: they are values of the data, so with float32
score maps they compare exactly at detection time.

Example:
    >>> import numpy as np
    >>> healthy = np.arange(100.0)
    >>> cal = calibrate([healthy[:50], healthy[50:]], method="ae", fprs=(0.05,))
    >>> cal.threshold_for(fpr=0.05), cal.threshold_for(percentile=98)
    (94.0, 97.02)
"""
from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tfuad.errors import ArrayError, ConfigError, DataError
from tfuad.files import write_text

__all__ = [
    "DEFAULT_FPRS",
    "percentile_threshold",
    "fpr_threshold",
    "fpr_thresholds",
    "position_weights",
    "POSITION_BINS",
    "brain_values",
    "pool_values",
    "fpr_key",
    "percentile_key",
    "Calibration",
    "calibrate",
]

#: FPR limits of Chen et al. (2020).
DEFAULT_FPRS = (0.01, 0.05, 0.10)
#: Position bins of :func:`position_weights` along each brain's extent.
POSITION_BINS = 10


def pool_values(values) -> np.ndarray:
    """Concatenate healthy score values into one finite 1D array.

    Args:
        values: One array, or an iterable (e.g. a generator over subjects) of arrays of
            any shape; each is flattened. Floating dtypes are kept (float32 maps
            stay float32), other dtypes become float64.

    Returns:
        numpy.ndarray, 1D

    Raises:
        ValueError: If there are no values or some are NaN/Inf.

    Example:
        >>> import numpy as np
        >>> pool_values(iter([np.ones((2, 2), np.float32), np.zeros(3, np.float32)])).shape
        (7,)
    """
    if isinstance(values, np.ndarray):
        parts = [values]
    elif isinstance(values, Iterable) and not isinstance(values, (str, bytes)):
        parts = [np.asarray(v) for v in values]
        if parts and all(p.ndim == 0 for p in parts):  # a plain list of numbers
            parts = [np.asarray(parts)]
    else:
        parts = [np.asarray(values)]
    parts = [p.ravel() for p in parts]
    if not parts:
        raise ArrayError("no healthy values to calibrate on (empty input)")
    pooled = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if pooled.size == 0:
        raise ArrayError("no healthy values to calibrate on (empty input)")
    if not (np.issubdtype(pooled.dtype, np.floating) or np.issubdtype(pooled.dtype, np.integer)
            or pooled.dtype == bool):
        raise ArrayError(f"healthy values must be real-valued, got dtype {pooled.dtype}")
    if not np.issubdtype(pooled.dtype, np.floating):
        pooled = pooled.astype(np.float64)
    finite = np.isfinite(pooled)
    if not finite.all():
        raise ArrayError(f"healthy values contain {int((~finite).sum())} NaN/Inf entries")
    return pooled


def brain_values(score_map, brain_mask) -> np.ndarray:
    """Score values of the voxels inside a mask, for calibration.

    Args:
        score_map: Post-processed score map of a healthy subject.
        brain_mask: Voxels that count as healthy brain (same shape).

    Returns:
        numpy.ndarray, 1D, same dtype as ``score_map``.

    Example:
        >>> import numpy as np
        >>> brain_values(np.arange(4.0).reshape(2, 2), [[True, False], [False, True]])
        array([0., 3.])
    """
    score_map = np.asarray(score_map)
    brain_mask = np.asarray(brain_mask)
    if score_map.shape != brain_mask.shape:
        raise ArrayError(f"brain mask shape {brain_mask.shape} differs from score map shape {score_map.shape}")
    return score_map[brain_mask.astype(bool, copy=False)]


def _check_fpr(fpr) -> float:
    if isinstance(fpr, bool) or not isinstance(fpr, numbers.Real) or not 0.0 <= fpr < 1.0:
        raise ArrayError(f"FPR limit must be a number in [0, 1), got {fpr!r}")
    return float(fpr)


def _max_false_positives(n: int, fpr: float) -> int:
    """Largest ``k`` with ``k / n <= fpr`` (evaluated in floating point, as checked)."""
    k = min(int(math.floor(fpr * n)), n - 1)
    while k + 1 <= n - 1 and (k + 1) / n <= fpr:
        k += 1
    while k > 0 and k / n > fpr:
        k -= 1
    return k


def percentile_threshold(healthy_values, q: float = 98.0) -> float:
    """The ``q``-th percentile of healthy values (Baur et al. 2018 use ``q=98``).

    Computed with :func:`numpy.percentile` (linear interpolation).

    Args:
        healthy_values: See :func:`pool_values`.
        q: Percentile in [0, 100].

    Returns:
        float

    Example:
        >>> percentile_threshold(range(101), q=98)
        98.0
    """
    if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0.0 <= q <= 100.0:
        raise ArrayError(f"percentile must be a number in [0, 100], got {q!r}")
    return float(np.percentile(pool_values(healthy_values), q))


def fpr_thresholds(healthy_values, fprs=DEFAULT_FPRS, *, weights=None) -> dict:
    """Smallest thresholds meeting several FPR limits on healthy values.

    For each limit ``f`` the result ``t`` is the smallest real number such
    that the fraction of healthy values strictly greater than ``t`` is at most
    ``f``. It is always one of the values (the ``k+1``-th largest, where ``k``
    is the number of false positives allowed), so ties are handled exactly:
    ``t`` meets the limit on the calibration data, and any smaller number
    does not. Thresholds are non-increasing as the limit grows.

    With ``weights`` the fraction is one of weight: ``t`` is the smallest value
    whose healthy values strictly above it weigh at most ``f`` of the total
    (equal weights give the unweighted thresholds). Weights let calibration
    voxels stand for the voxels a threshold will meet, e.g. reweighted to the
    brain's axial profile when the healthy slices are only its top and bottom.

    Args:
        healthy_values: See :func:`pool_values`.
        fprs: Limits in [0, 1). ``0`` gives the maximum value.
        weights: Optional non-negative finite weights, one per value of the pooled
            ``healthy_values`` (same order), with a positive sum.

    Returns:
        dict: ``{fpr: threshold}`` with float keys and values.

    Example:
        >>> import numpy as np
        >>> values = np.array([0, 1, 1, 1, 2, 3, 4, 5, 6, 9], np.float32)
        >>> fpr_thresholds(values, fprs=(0.1, 0.5, 0.7))
        {0.1: 6.0, 0.5: 2.0, 0.7: 1.0}
        >>> fpr_thresholds(values, fprs=(0.5, 0.6), weights=[1, 1, 1, 1, 1, 1, 1, 1, 1, 11])
        {0.5: 9.0, 0.6: 5.0}
    """
    fprs = [_check_fpr(f) for f in fprs]
    if not fprs:
        raise ArrayError("no FPR limit given")
    values = pool_values(healthy_values)
    if weights is not None:
        return _weighted_fpr_thresholds(values, weights, fprs)
    n = values.size
    index = {f: n - 1 - _max_false_positives(n, f) for f in fprs}
    ranked = np.partition(values, sorted(set(index.values())))
    return {f: float(ranked[i]) for f, i in index.items()}


def _weighted_fpr_thresholds(values: np.ndarray, weights, fprs) -> dict:
    w = np.asarray(weights, np.float64).ravel()
    if w.shape != values.shape:
        raise ArrayError(f"{w.size} weights for {values.size} healthy values")
    if not np.all(np.isfinite(w)) or (w < 0).any() or not w.sum() > 0:
        raise ArrayError("weights must be finite, non-negative and not all zero")
    order = np.argsort(values, kind="stable")
    ranked, cumulative = values[order], np.cumsum(w[order])
    total = cumulative[-1]
    above = total - cumulative[np.searchsorted(ranked, ranked, side="right") - 1]  # weight strictly above
    share = above / total  # non-increasing along ``ranked``; 0 at the maximum
    return {f: float(ranked[int(np.argmax(share <= f))]) for f in fprs}


def _position_bins(brain: np.ndarray, axis: int, bins: int) -> np.ndarray:
    """Each brain voxel's bin along ``axis`` over the brain's extent, ``0 .. bins-1``; ``-1`` off the brain."""
    other = tuple(a for a in range(brain.ndim) if a != axis)
    z = np.flatnonzero(brain.any(axis=other))
    per_slice = np.full(brain.shape[axis], -1, np.int64)
    if z.size:
        rel = (np.arange(z[0], z[-1] + 1) - z[0]) / (z[-1] - z[0] + 1)
        per_slice[z[0]:z[-1] + 1] = np.minimum((rel * bins).astype(np.int64), bins - 1)
    shape = [1] * brain.ndim
    shape[axis] = -1
    return np.where(brain, per_slice.reshape(shape), -1)


def position_weights(brain_masks, healthy_masks, *, bins: int = POSITION_BINS, axis: int = -1):
    """Weights that let calibration voxels stand for whole brains along one axis.

    Healthy calibration voxels often come from a few positions only (in BraTS, the
    tumour-free top and bottom slices of lesioned brains), while a threshold meets
    every position of a test brain. Each volume's extent along ``axis`` (first to last
    brain slice) is cut into ``bins`` equal bins; a calibration voxel in bin ``b``
    weighs ``p(b) / q(b)``, where ``p`` is the share of all brain voxels of the volumes
    in that bin and ``q`` the share of calibration voxels. The weighted calibration
    voxels then have the brains' profile along the axis, as far as they cover it: bins
    with no calibration voxel cannot be stood for and are left out (``coverage``).

    Args:
        brain_masks: One boolean brain mask per volume.
        healthy_masks: Boolean masks of the same shapes; a volume's calibration voxels
            are ``brain & healthy``.
        bins: Number of position bins (≥ 1).
        axis: The axis of the profile (the slice axis).

    Returns:
        ``(weights, coverage)``: a float64 array per volume with the weights of its voxels
        ``values[brain & healthy]`` (C order), and the share of brain voxels whose bin holds
        a calibration voxel (1 when every position is represented).

    Raises:
        tfuad.errors.ArrayError: On masks of different shapes, or no calibration voxel.

    Example:
        >>> import numpy as np
        >>> brain = np.ones((1, 1, 4), bool)
        >>> healthy = np.array([[[True, True, True, False]]])
        >>> weights, coverage = position_weights([brain], [healthy], bins=2)
        >>> weights[0].tolist(), coverage
        ([0.75, 0.75, 1.5], 1.0)
    """
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
        raise ArrayError(f"bins must be a positive integer, got {bins!r}")
    all_bins, kept = [], []
    for brain, healthy in zip(brain_masks, healthy_masks, strict=True):
        brain, healthy = np.asarray(brain, bool), np.asarray(healthy, bool)
        if brain.shape != healthy.shape:
            raise ArrayError(f"brain mask {brain.shape} and healthy mask {healthy.shape} differ in shape")
        where = _position_bins(brain, axis % brain.ndim, bins)
        all_bins.append(where[brain])
        kept.append(where[brain & healthy])
    p = np.bincount(np.concatenate(all_bins), minlength=bins).astype(np.float64) if all_bins else np.zeros(bins)
    q = np.bincount(np.concatenate(kept), minlength=bins).astype(np.float64) if kept else np.zeros(bins)
    if not q.sum() > 0:
        raise ArrayError("no calibration voxel inside the brain masks")
    ratio = np.divide(p / p.sum(), q / q.sum(), out=np.zeros(bins), where=q > 0)
    return [ratio[k] for k in kept], float(p[q > 0].sum() / p.sum())


def fpr_threshold(healthy_values, fpr: float) -> float:
    """Smallest threshold whose FPR on healthy values is at most ``fpr``.

    See :func:`fpr_thresholds` (Chen et al. 2020, Section 2.2.3).

    Example:
        >>> fpr_threshold(range(100), fpr=0.05)
        94.0
    """
    return fpr_thresholds(healthy_values, (fpr,))[_check_fpr(fpr)]


def _number_key(value: float) -> str:
    return format(float(value), ".10g")


def fpr_key(fpr: float) -> str:
    """Name of an FPR threshold in :attr:`Calibration.thresholds`, e.g. ``"fpr@0.01"``."""
    return f"fpr@{_number_key(_check_fpr(fpr))}"


def percentile_key(q: float) -> str:
    """Name of a percentile threshold in :attr:`Calibration.thresholds`, e.g. ``"p98"``."""
    return f"p{_number_key(q)}"


@dataclass
class Calibration:
    """Thresholds of one model, calibrated on healthy data.

    Attributes:
        method: What produced the score maps (model name, ``"map-tv"``, ...).
        thresholds: ``{"p98": t, "fpr@0.01": t, ...}``, see :func:`fpr_key` and
            :func:`percentile_key`.
        n_voxels: Number of healthy values the thresholds were computed from.
        subject_ids: Calibration subjects.
        postprocess: The :class:`~tfuad.postprocessing.PostprocessConfig` (as a dict) the
            calibration maps were processed with; detection must use the same.
        extra: Other calibrated settings, e.g. ``{"lambda": 2.4}`` for MAP-TV.
        weights: Fingerprint of the model weights the maps came from (``None`` for
            methods without a model); detection refuses a calibration whose
            fingerprint no longer matches the run's weights.

    Example:
        >>> cal = Calibration("ae", {"p98": 0.3, "fpr@0.05": 0.25}, n_voxels=1000)
        >>> cal.threshold_for(fpr=0.05)
        0.25
    """

    method: str
    thresholds: dict
    n_voxels: int
    subject_ids: list = field(default_factory=list)
    postprocess: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    weights: str | None = None

    def __post_init__(self):
        if not isinstance(self.method, str) or not self.method:
            raise ConfigError(f"calibration method must be a non-empty string, got {self.method!r}")
        if not isinstance(self.thresholds, Mapping) or not self.thresholds:
            raise ConfigError("calibration has no thresholds")
        bad = {k: v for k, v in self.thresholds.items()
               if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)}
        if bad:
            raise ConfigError(f"calibration thresholds must be finite numbers, got {bad}")
        self.thresholds = {str(k): float(v) for k, v in self.thresholds.items()}
        self.n_voxels = int(self.n_voxels)
        self.subject_ids = [str(s) for s in self.subject_ids]
        self.postprocess = dict(self.postprocess)
        self.extra = dict(self.extra)

    @property
    def fprs(self) -> list:
        """The calibrated FPR limits, ascending."""
        return sorted(float(k[4:]) for k in self.thresholds if k.startswith("fpr@"))

    def threshold_for(self, *, fpr: float | None = None, percentile: float | None = None) -> float:
        """The threshold calibrated for an FPR limit or a percentile (give exactly one).

        Raises:
            tfuad.errors.ConfigError: If that limit or percentile was not calibrated.
        """
        if (fpr is None) == (percentile is None):
            raise ConfigError("give exactly one of fpr= or percentile=")
        key = fpr_key(fpr) if fpr is not None else percentile_key(percentile)
        if key not in self.thresholds:
            what = f"FPR limit {fpr:g}" if fpr is not None else f"percentile {percentile:g}"
            raise ConfigError(f"{what} was not calibrated for {self.method!r}; "
                              f"calibrated thresholds: {', '.join(sorted(self.thresholds))}")
        return self.thresholds[key]

    def to_dict(self) -> dict:
        """JSON-serialisable ``dict``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Calibration:
        """Inverse of :meth:`to_dict`."""
        missing = [k for k in ("method", "thresholds", "n_voxels") if k not in data]
        if missing:
            raise ConfigError(f"calibration lacks field(s) {missing}")
        unknown = sorted(set(data) - {"method", "thresholds", "n_voxels", "subject_ids", "postprocess", "extra",
                                   "weights"})
        if unknown:
            raise ConfigError(f"calibration has unknown field(s) {unknown}")
        return cls(**data)

    def to_json(self, path) -> Path:
        """Write the calibration to ``path`` atomically; returns the path."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)
        write_text(text + "\n", path)
        return Path(path)

    @classmethod
    def from_json(cls, path) -> Calibration:
        """Read a file written by :meth:`to_json`.

        Raises:
            tfuad.errors.DataError: If the file is missing, not JSON, or not a calibration.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise DataError(path, "no such calibration file")
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(path, f"not a readable JSON calibration ({type(err).__name__}: {err})") from err
        if not isinstance(data, dict):
            raise DataError(path, "not a calibration (JSON object expected)")
        try:
            return cls.from_dict(data)
        except (ConfigError, TypeError) as err:
            raise DataError(path, f"not a valid calibration: {err}") from err


def calibrate(healthy_values, *, method: str, fprs=DEFAULT_FPRS, percentiles=(98.0,),
              subject_ids=(), postprocess: Mapping | None = None, extra: Mapping | None = None,
              weights: str | None = None) -> Calibration:
    """Compute percentile and FPR-limited thresholds from healthy values.

    All values are kept (no subsampling), so the FPR guarantee is exact on the
    calibration data; pass float32 brain values (about 1.5 M per BraTS volume).

    Args:
        healthy_values: Post-processed scores of healthy brain voxels, e.g. a generator of
            :func:`brain_values` over calibration subjects.
        method: Name stored in the calibration.
        fprs: FPR limits (Chen et al. 2020).
        percentiles: Percentiles (Baur et al. 2018 use 98).
        subject_ids: Sequence of str.
        postprocess: ``PostprocessConfig.to_dict()`` of the maps.
        extra: Other calibrated settings.
        weights: Fingerprint of the model weights the maps came from.

    Returns:
        Calibration

    Example:
        >>> cal = calibrate([[0.0, 1.0, 2.0, 3.0]], method="vae", fprs=(0.25,), percentiles=())
        >>> cal.thresholds
        {'fpr@0.25': 2.0}
    """
    values = pool_values(healthy_values)
    thresholds = {percentile_key(q): percentile_threshold(values, q) for q in percentiles}
    if fprs:
        thresholds.update({fpr_key(f): t for f, t in fpr_thresholds(values, fprs).items()})
    return Calibration(method=method, thresholds=thresholds, n_voxels=values.size,
                       subject_ids=list(subject_ids), postprocess=dict(postprocess or {}),
                       extra=dict(extra or {}), weights=weights)
