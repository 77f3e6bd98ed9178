"""Histogram standardisation across subjects and scanners (Nyúl & Udupa, 1999).

MR intensities have no fixed unit: the same tissue gets different values on
different scanners, protocols and even sessions. Chen et al. (2020) therefore
match every subject's histogram to a reference before z-scoring. This module
implements the standard piecewise-linear landmark method:

1. *Fit*: for each training subject, take landmark percentiles of its brain
   intensities (by default the 1st, the deciles and the 99th), map them
   linearly so the first landmark lands on ``scale[0]`` and the last on
   ``scale[1]``, and average over subjects. The averages are the *standard
   landmarks*.
2. *Apply*: map a new subject's own landmarks onto the standard landmarks
   with a piecewise-linear function (linear extrapolation outside the first
   and last landmark), so corresponding tissues get corresponding values.

The fitted :class:`HistogramStandardizer` is saved as JSON with the model
(and by ``tfuad preprocess``), so test subjects are mapped exactly as the
training subjects were.

Example:
    >>> rng = np.random.default_rng(0)
    >>> a = rng.gamma(4.0, 50.0, 10_000)           # one scanner
    >>> b = 3.0 * a + 200.0                         # another: scaled and shifted
    >>> std = HistogramStandardizer.fit([a])
    >>> bool(np.allclose(std.apply(b), std.apply(a), atol=1e-6))
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfuad.errors import ArrayError, ConfigError, DataError, EmptyMaskError
from tfuad.files import read_json, write_json

__all__ = ["DEFAULT_LANDMARKS", "landmarks", "piecewise_linear", "HistogramStandardizer"]

#: Landmark percentiles of Nyúl & Udupa: the 1st, the deciles and the 99th.
DEFAULT_LANDMARKS = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)


def _check_percentiles(percentiles) -> tuple:
    try:
        p = tuple(float(v) for v in percentiles)
    except (TypeError, ValueError):
        raise ConfigError(f"landmark percentiles must be numbers, got {percentiles!r}") from None
    if len(p) < 2 or any(not 0.0 <= v <= 100.0 for v in p) or any(b <= a for a, b in zip(p, p[1:])):
        raise ConfigError(f"landmark percentiles must be >= 2 increasing values in [0, 100], got {percentiles!r}")
    return p


def _voxels(data, mask, what="volume") -> np.ndarray:
    """Finite brain voxels of ``data`` (all voxels when ``mask`` is None)."""
    path = getattr(data, "path", None)
    data = np.asarray(getattr(data, "data", data), dtype=np.float64)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != data.shape:
            raise DataError(path, f"{what} shape {data.shape} and brain mask shape {mask.shape} differ")
        if not mask.any():
            raise EmptyMaskError(path, "brain mask has no non-zero voxel")
        data = data[mask]
    data = data.ravel()
    if data.size == 0 or not np.isfinite(data).all():
        raise DataError(path, f"{what} has no voxels or non-finite values inside the brain")
    return data


def landmarks(voxels, percentiles=DEFAULT_LANDMARKS) -> np.ndarray:
    """Landmark intensities (percentiles) of a set of brain voxels.

    Args:
        voxels: Array of intensities (any shape; flattened).
        percentiles: Increasing percentiles in ``[0, 100]``.

    Returns:
        float64 array, one intensity per percentile.

    Raises:
        DataError: the landmarks are not strictly increasing (e.g. a constant
            image), so no piecewise-linear map exists.

    Example:
        >>> landmarks(np.arange(101.0), (0, 50, 100)).tolist()
        [0.0, 50.0, 100.0]
    """
    p = _check_percentiles(percentiles)
    values = np.percentile(np.asarray(voxels, dtype=np.float64).ravel(), p)
    if np.any(np.diff(values) <= 0):
        raise DataError(None, f"intensity landmarks at percentiles {list(p)} are not increasing "
                              f"({np.round(values, 4).tolist()}): the image has too few distinct values")
    return values


def piecewise_linear(values, source, target) -> np.ndarray:
    """Map ``values`` so each ``source`` landmark lands on its ``target``.

    Between landmarks the map is linear; below the first and above the last it
    extends the first and last segment linearly.

    Args:
        values: Array of intensities.
        source: Increasing landmarks of the input.
        target: Landmarks they map to (same length, increasing).

    Returns:
        float64 array of ``values``' shape.

    Example:
        >>> piecewise_linear(np.array([-1.0, 0.5, 3.0]), [0.0, 1.0, 2.0], [0.0, 10.0, 20.0]).tolist()
        [-10.0, 5.0, 30.0]
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 1 or source.size < 2:
        raise ArrayError(f"source and target must be 1D of equal length >= 2, got {source.shape}, {target.shape}")
    values = np.asarray(values, dtype=np.float64)
    out = np.interp(values, source, target)
    lo_slope = (target[1] - target[0]) / (source[1] - source[0])
    hi_slope = (target[-1] - target[-2]) / (source[-1] - source[-2])
    below, above = values < source[0], values > source[-1]
    out[below] = target[0] + (values[below] - source[0]) * lo_slope
    out[above] = target[-1] + (values[above] - source[-1]) * hi_slope
    return out


@dataclass(frozen=True)
class HistogramStandardizer:
    """A fitted piecewise-linear landmark standardisation.

    Attributes:
        percentiles: Landmark percentiles.
        standard: Standard landmark intensities (one per percentile).

    Example:
        >>> v = np.linspace(0.0, 1.0, 1001)
        >>> s = HistogramStandardizer.fit([v], percentiles=(0, 50, 100))
        >>> s.standard
        (0.0, 0.5, 1.0)
        >>> HistogramStandardizer.from_dict(s.to_dict()) == s
        True
    """

    percentiles: tuple
    standard: tuple

    def __post_init__(self):
        p = _check_percentiles(self.percentiles)
        try:
            s = tuple(float(v) for v in self.standard)
        except (TypeError, ValueError):
            raise ConfigError(f"standard landmarks must be numbers, got {self.standard!r}") from None
        if len(s) != len(p) or not np.all(np.isfinite(s)) or any(b <= a for a, b in zip(s, s[1:])):
            raise ConfigError(f"standard landmarks must be {len(p)} finite increasing values, got {self.standard!r}")
        object.__setattr__(self, "percentiles", p)
        object.__setattr__(self, "standard", s)

    @classmethod
    def fit(cls, volumes, masks=None, *, percentiles=DEFAULT_LANDMARKS, scale=(0.0, 1.0)) -> HistogramStandardizer:
        """Learn the standard landmarks from reference subjects.

        Args:
            volumes: Iterable of arrays (or :class:`~tfuad.data.nifti.Volume`).
                Pass one volume to standardise to a single reference subject.
            masks: Matching iterable of brain masks, or None to use every voxel.
            percentiles: Landmark percentiles.
            scale: Where the first and last landmark of every reference
                subject are mapped before averaging.

        Returns:
            The fitted standardiser.

        Raises:
            ValueError: no volumes.
            DataError, EmptyMaskError: a volume is unusable.
        """
        p = _check_percentiles(percentiles)
        lo, hi = (float(v) for v in scale)
        if not hi > lo:
            raise ConfigError(f"scale must be (low, high) with high > low, got {scale!r}")
        volumes = list(volumes)
        masks = [None] * len(volumes) if masks is None else list(masks)
        if not volumes:
            raise ArrayError("HistogramStandardizer.fit needs at least one volume")
        if len(masks) != len(volumes):
            raise ArrayError(f"{len(volumes)} volumes but {len(masks)} masks")
        mapped = []
        for volume, mask in zip(volumes, masks):
            marks = landmarks(_voxels(volume, mask), p)
            mapped.append(lo + (marks - marks[0]) * (hi - lo) / (marks[-1] - marks[0]))
        return cls(p, tuple(np.mean(mapped, axis=0).tolist()))

    def apply(self, data, mask=None) -> np.ndarray:
        """Standardise one subject.

        The landmarks are taken from the voxels inside ``mask`` (all voxels
        when None); the map is applied to the whole array, so call it on the
        brain voxels or set the background afterwards.

        Args:
            data: Array (or :class:`~tfuad.data.nifti.Volume`).
            mask: Brain mask of the same shape, or None.

        Returns:
            float64 array of ``data``'s shape on the standard scale.
        """
        values = np.asarray(getattr(data, "data", data), dtype=np.float64)
        source = landmarks(_voxels(data, mask), self.percentiles)
        return piecewise_linear(values, source, self.standard)

    def to_dict(self) -> dict:
        """JSON-compatible dict."""
        return {"method": "nyul", "percentiles": list(self.percentiles), "standard": list(self.standard)}

    @classmethod
    def from_dict(cls, d: dict) -> HistogramStandardizer:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: not a dict of this form.
        """
        if not isinstance(d, dict) or d.get("method", "nyul") != "nyul" or \
                not {"percentiles", "standard"} <= set(d):
            raise ConfigError(f"not a histogram standardiser record: {d!r}"[:200])
        return cls(tuple(d["percentiles"]), tuple(d["standard"]))

    def save(self, path) -> Path:
        """Write the standardiser as JSON, atomically.

        Returns:
            The path written.
        """
        return write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path) -> HistogramStandardizer:
        """Read a standardiser written by :meth:`save`.

        Raises:
            ConfigError: the file is missing, not JSON, or not a standardiser.
        """
        record = read_json(path)
        try:
            return cls.from_dict(record)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
