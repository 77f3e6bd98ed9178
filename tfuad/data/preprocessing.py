"""Turn one brain MRI volume into normalised, square axial slices and back.

Two intensity normalisations follow the two reference papers:

* ``"percentile"`` (Baur et al. 2018): each skull-stripped volume is scaled
  into ``[0, 1]`` by robust percentiles of its brain voxels and clipped; the
  background is 0.
* ``"zscore"`` (Chen et al. 2020): ``(I - mu) / sigma`` with ``mu`` and
  ``sigma`` computed once on reference (training) subjects and then fixed for
  every other subject; the background is -3.5.

Slices are cut along the canonical (RAS+) axial axis, cropped in-plane to the
brain's bounding box (plus a margin), padded to a centred square and resized
to ``image_size``. :class:`SliceGeometry` records those steps so any per-slice
map (residuals, restorations, segmentations) maps back exactly onto the input's
voxel grid.

Slice layout: a slice ``s = slices[z, :, :, 0]`` is shown like a radiological
image in the neurological convention, with anterior at the top (row 0) and the
patient's right on the right (increasing column = increasing canonical ``x``).
Hence a left-right mirror of the head is a flip of the slice columns.

Example:
    >>> config = PreprocessConfig(image_size=128)
    >>> prep = prepare_volume("sub_flair.nii.gz", config,
    ...                       lesion_mask_path="sub_seg.nii.gz")   # doctest: +SKIP
    >>> x = prep.slices[prep.training_indices(config)]            # doctest: +SKIP
    >>> volume_map = prep.to_volume(prep.slices)                  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tfuad.data.nifti import Volume, load_mask, load_volume
from tfuad.data.standardize import HistogramStandardizer
from tfuad.errors import ArrayError, ConfigError, DataError, EmptyMaskError, MissingModalityError

__all__ = [
    "PreprocessConfig",
    "NORMALIZATIONS",
    "DEFAULT_BACKGROUND",
    "brain_mask_from_image",
    "fit_intensity_stats",
    "normalize_intensity",
    "SliceGeometry",
    "healthy_slice_indices",
    "PreparedVolume",
    "prepare_volume",
]

#: Background value used when :attr:`PreprocessConfig.background` is ``None``.
DEFAULT_BACKGROUND = {"percentile": 0.0, "zscore": -3.5}
#: Accepted values of :attr:`PreprocessConfig.normalization`.
NORMALIZATIONS = tuple(DEFAULT_BACKGROUND)


@dataclass
class PreprocessConfig:
    """Everything that decides how a volume becomes model input.

    The config is JSON-serialisable (:meth:`to_dict`) and stored with every
    trained model, so inference prepares volumes exactly as training did.

    Args:
        image_size: Side ``S`` of the square slices fed to the model.
        normalization: ``"percentile"`` (per-volume robust scaling of brain
            voxels to ``[0, 1]``, clipped) or ``"zscore"`` (``(I - mu) / sigma``
            with statistics fixed by :func:`fit_intensity_stats`).
        percentiles: Lower and upper percentile mapped to 0 and 1 by
            ``"percentile"`` normalisation.
        background: Intensity given to voxels outside the brain; ``None`` means
            0 for ``"percentile"`` and -3.5 for ``"zscore"``.
        healthy_margin: Axial slices within this many slices of a lesion voxel
            do not count as healthy.
        min_brain_fraction: Training slices need at least this fraction of
            brain pixels in the square slice.
        crop_margin: Voxels kept in-plane around the brain's bounding box.
        standardize: Map every subject's brain histogram onto standard
            landmarks learned from the training subjects (Nyúl–Udupa, see
            :mod:`tfuad.data.standardize`) before normalising, so the same
            tissue gets the same value across subjects and scanners. With
            ``"percentile"`` the standard scale replaces the per-volume
            percentiles (healthy brain spans about ``[0, 1]``; values are
            clipped below at 0, not above, so bright lesions stay bright);
            with ``"zscore"`` the fixed statistics are those of the
            standardised training voxels (Chen et al.).

    Raises:
        ConfigError: for a value out of range.

    Example:
        >>> cfg = PreprocessConfig(image_size=64, normalization="zscore")
        >>> cfg.background_value
        -3.5
        >>> PreprocessConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    image_size: int = 128
    normalization: str = "percentile"
    percentiles: tuple = (0.5, 99.5)
    background: float | None = None
    healthy_margin: int = 3
    min_brain_fraction: float = 0.05
    crop_margin: int = 2
    standardize: bool = False

    def __post_init__(self):
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, (int, np.integer)) \
                or self.image_size < 4:
            raise ConfigError(f"image_size must be an integer >= 4, got {self.image_size!r}")
        self.image_size = int(self.image_size)
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization must be one of {', '.join(NORMALIZATIONS)}; "
                              f"got {self.normalization!r}")
        try:
            lo, hi = (float(p) for p in self.percentiles)
        except (TypeError, ValueError):
            raise ConfigError(f"percentiles must be two numbers, got {self.percentiles!r}") from None
        if not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles!r}")
        self.percentiles = (lo, hi)
        if self.background is not None:
            try:
                self.background = float(self.background)
            except (TypeError, ValueError):
                raise ConfigError(f"background must be a number or null, got {self.background!r}") from None
            if not np.isfinite(self.background):
                raise ConfigError(f"background must be finite, got {self.background!r}")
        for name in ("healthy_margin", "crop_margin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
            setattr(self, name, int(value))
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise ConfigError(f"standardize must be true or false, got {self.standardize!r}")
        self.standardize = bool(self.standardize)
        try:
            self.min_brain_fraction = float(self.min_brain_fraction)
        except (TypeError, ValueError):
            raise ConfigError(f"min_brain_fraction must be a number, got {self.min_brain_fraction!r}") from None
        if not 0.0 <= self.min_brain_fraction <= 1.0:
            raise ConfigError(f"min_brain_fraction must lie in [0, 1], got {self.min_brain_fraction!r}")

    @property
    def background_value(self) -> float:
        """The background intensity actually used (resolves ``background=None``)."""
        return DEFAULT_BACKGROUND[self.normalization] if self.background is None else self.background

    def to_dict(self) -> dict:
        """Plain JSON-compatible dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["percentiles"] = list(self.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; missing keys take their defaults.

        Raises:
            ConfigError: ``d`` is not a dict, has unknown keys or bad values.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"preprocessing config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown preprocessing option(s): {', '.join(map(str, unknown))}; "
                              f"known: {', '.join(sorted(known))}")
        return cls(**d)


def brain_mask_from_image(data) -> np.ndarray:
    """Brain mask of a skull-stripped image: its non-zero voxels, holes filled.

    Skull-stripped scans (e.g. BraTS) have a background of exactly 0. Holes
    enclosed by brain in an axial slice (e.g. a zero-valued necrotic core) are
    filled slice by slice.

    Args:
        data: 3D array in canonical order (axial slices along axis 2).

    Returns:
        Boolean array of ``data``'s shape.

    Example:
        >>> img = np.zeros((5, 5, 1)); img[1:4, 1:4, 0] = 1; img[2, 2, 0] = 0
        >>> int(brain_mask_from_image(img).sum())
        9
    """
    data = np.asarray(data)
    if data.ndim != 3:
        raise ArrayError(f"expected a 3D volume, got shape {data.shape}")
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[:, :, 1] = ndimage.generate_binary_structure(2, 1)  # in-plane connectivity only
    return ndimage.binary_fill_holes(data != 0, structure=structure)


def _brain_voxels(data, mask) -> np.ndarray:
    path = getattr(data, "path", None)
    data = np.asarray(getattr(data, "data", data))
    mask = np.asarray(mask, dtype=bool)
    if data.shape != mask.shape:
        raise ArrayError(f"image shape {data.shape} and brain mask shape {mask.shape} differ")
    if not mask.any():
        raise EmptyMaskError(path, "brain mask has no non-zero voxel")
    return data[mask]


def fit_intensity_stats(volumes, masks, config: PreprocessConfig) -> dict:
    """Intensity statistics learned once on training subjects, then fixed.

    * ``standardize``: the standard histogram landmarks
      (:class:`~tfuad.data.standardize.HistogramStandardizer`), stored under
      ``"standardizer"``.
    * ``"zscore"``: the mean and standard deviation of the brain voxels pooled
      over ``volumes`` (after standardisation when it is on); pass one volume
      to use a single reference subject, as in Chen et al.

    ``"percentile"`` scaling without standardisation is per volume and needs
    no statistics.

    Args:
        volumes: Iterable of 3D arrays or :class:`~tfuad.data.nifti.Volume`.
        masks: Matching iterable of 3D boolean brain masks.
        config: The preprocessing config.

    Returns:
        A JSON-compatible dict (empty when nothing needs fitting).

    Raises:
        ValueError: no volumes, or their brain intensities are constant.

    Example:
        >>> v = np.arange(8.0).reshape(2, 2, 2)
        >>> fit_intensity_stats([v], [v > 0], PreprocessConfig(normalization="zscore"))
        {'mean': 4.0, 'std': 2.0}
    """
    if config.normalization != "zscore" and not config.standardize:
        return {}
    pairs = list(zip(volumes, masks, strict=True))
    if not pairs:
        raise ArrayError("fit_intensity_stats needs at least one volume")
    stats, standardizer = {}, None
    if config.standardize:
        standardizer = HistogramStandardizer.fit([v for v, _ in pairs], [m for _, m in pairs])
        stats["standardizer"] = standardizer.to_dict()
    if config.normalization != "zscore":
        return stats
    n, total, total_sq = 0, 0.0, 0.0
    for volume, mask in pairs:
        voxels = _brain_voxels(volume, mask).astype(np.float64)
        if standardizer is not None:
            voxels = standardizer.apply(voxels)
        n += voxels.size
        total += float(voxels.sum())
        total_sq += float(np.square(voxels).sum())
    mean = total / n
    std = float(np.sqrt(max(total_sq / n - mean * mean, 0.0)))
    if not std > 0:
        raise ArrayError("brain intensities are constant: cannot fit a standard deviation")
    return {"mean": mean, "std": std, **stats}


def normalize_intensity(data, brain_mask, config: PreprocessConfig, stats: dict | None = None) -> np.ndarray:
    """Normalise brain intensities and set the background.

    Args:
        data: 3D image array.
        brain_mask: 3D boolean mask of ``data``'s shape.
        config: Chooses the method and the background value.
        stats: Output of :func:`fit_intensity_stats` (required for
            ``"zscore"`` and for ``standardize``).

    Returns:
        float32 array: brain voxels normalised, other voxels equal to
        ``config.background_value``.

    Raises:
        ConfigError: ``"zscore"`` without valid ``stats``.
        DataError: the brain intensities are constant (``"percentile"``).
        EmptyMaskError: the brain mask is empty.

    Example:
        >>> v = np.array([0.0, 1, 2, 3, 4]).reshape(1, 1, 5)
        >>> cfg = PreprocessConfig(percentiles=(0, 100))
        >>> (normalize_intensity(v, v > 0, cfg) * 3).round().ravel().tolist()
        [0.0, 0.0, 1.0, 2.0, 3.0]
    """
    data = np.asarray(data, dtype=np.float64)
    brain_mask = np.asarray(brain_mask, dtype=bool)
    voxels = _brain_voxels(data, brain_mask)
    if config.standardize:
        if not stats or "standardizer" not in stats:
            raise ConfigError("standardize needs stats {'standardizer': ...} from fit_intensity_stats")
        voxels = HistogramStandardizer.from_dict(stats["standardizer"]).apply(voxels)
    if config.normalization == "zscore":
        if not stats or "mean" not in stats or "std" not in stats or not float(stats["std"]) > 0:
            raise ConfigError("zscore normalization needs stats {'mean', 'std' > 0} from fit_intensity_stats")
        scaled = (voxels - float(stats["mean"])) / float(stats["std"])
    elif config.standardize:
        scaled = np.maximum(voxels, 0.0)
    else:
        lo, hi = np.percentile(voxels, config.percentiles)
        if not hi > lo:
            raise DataError(None, f"brain intensities between percentiles {config.percentiles} are constant ({lo:g})")
        scaled = np.clip((voxels - lo) / (hi - lo), 0.0, 1.0)
    out = np.full(data.shape, config.background_value, dtype=np.float32)
    out[brain_mask] = scaled
    return out


def _check_order(order: int) -> int:
    if order not in range(6):
        raise ArrayError(f"interpolation order must be 0..5, got {order!r}")
    return int(order)


def _resize_planes(block: np.ndarray, side: int, order: int) -> np.ndarray:
    """Resize the square planes of a ``(Z, n, n)`` block to ``(Z, side, side)``."""
    n = block.shape[1]
    if n == side:
        return block
    factor = side / n
    out = ndimage.zoom(block, (1.0, factor, factor), order=order, mode="nearest", grid_mode=True)
    if out.shape[1:] != (side, side):  # guards against a rounding surprise in zoom's output size
        raise RuntimeError(f"resize of {block.shape} gave {out.shape}, expected side {side}")
    return out


@dataclass
class SliceGeometry:
    """How a volume's axial slices map to square model slices, and back.

    Steps of :meth:`to_slices`: crop ``x`` to ``[x0, x1)`` and ``y`` to
    ``[y0, y1)`` (the brain's bounding box over all slices plus a margin),
    lay each axial plane out with anterior up (rows = ``y`` descending,
    columns = ``x``), pad it to a centred ``side × side`` square, and resize
    the square to ``image_size`` when ``side != image_size``.
    :meth:`to_volume` undoes each step; without a resize the round trip is
    exact inside the crop box.

    Attributes:
        volume_shape: Shape ``(X, Y, Z)`` of the canonical volume.
        box: Crop box ``(x0, x1, y0, y1)`` (half-open).
        side: Side of the padded square before resizing.
        image_size: Side ``S`` of the output slices.

    Example:
        >>> mask = np.zeros((10, 8, 3), bool); mask[2:6, 3:5, 1] = True
        >>> g = SliceGeometry.from_mask(mask, image_size=6, crop_margin=1)
        >>> g.box, g.side
        ((1, 7, 2, 6), 6)
        >>> v = np.random.rand(10, 8, 3).astype(np.float32)
        >>> back = g.to_volume(g.to_slices(v))
        >>> bool(np.array_equal(back[1:7, 2:6], v[1:7, 2:6]))
        True
    """

    volume_shape: tuple
    box: tuple
    side: int
    image_size: int

    def __post_init__(self):
        self.volume_shape = tuple(int(s) for s in self.volume_shape)
        self.box = tuple(int(b) for b in self.box)
        self.side, self.image_size = int(self.side), int(self.image_size)
        if len(self.volume_shape) != 3 or min(self.volume_shape) < 1:
            raise ArrayError(f"volume_shape must be 3 positive sizes, got {self.volume_shape}")
        if len(self.box) != 4:
            raise ArrayError(f"box must be (x0, x1, y0, y1), got {self.box}")
        x0, x1, y0, y1 = self.box
        nx, ny, _ = self.volume_shape
        if not (0 <= x0 < x1 <= nx and 0 <= y0 < y1 <= ny):
            raise ArrayError(f"box {self.box} does not fit in the volume {self.volume_shape}")
        if self.side < max(x1 - x0, y1 - y0):
            raise ArrayError(f"side {self.side} is smaller than the box {self.box}")
        if self.image_size < 1:
            raise ArrayError(f"image_size must be positive, got {self.image_size}")

    @classmethod
    def from_mask(cls, brain_mask_3d, image_size: int, crop_margin: int = 0) -> SliceGeometry:
        """Geometry that crops to the in-plane bounding box of a 3D brain mask.

        Args:
            brain_mask_3d: Boolean ``(X, Y, Z)`` mask in canonical order.
            image_size: Side of the output slices.
            crop_margin: Voxels added on each side of the box (clipped to the volume).

        Raises:
            EmptyMaskError: the mask has no voxel.
        """
        mask = np.asarray(brain_mask_3d, dtype=bool)
        if mask.ndim != 3:
            raise ArrayError(f"expected a 3D mask, got shape {mask.shape}")
        if int(crop_margin) < 0:
            raise ArrayError(f"crop_margin must be >= 0, got {crop_margin}")
        if not mask.any():
            raise EmptyMaskError(None, "brain mask has no non-zero voxel")
        xs = np.flatnonzero(mask.any(axis=(1, 2)))
        ys = np.flatnonzero(mask.any(axis=(0, 2)))
        m = int(crop_margin)
        x0, x1 = max(int(xs[0]) - m, 0), min(int(xs[-1]) + 1 + m, mask.shape[0])
        y0, y1 = max(int(ys[0]) - m, 0), min(int(ys[-1]) + 1 + m, mask.shape[1])
        return cls(mask.shape, (x0, x1, y0, y1), max(x1 - x0, y1 - y0), image_size)

    @property
    def n_slices(self) -> int:
        """Number of axial slices ``Z``."""
        return self.volume_shape[2]

    @property
    def pad(self) -> tuple:
        """``(top, left)``: offset of the cropped plane inside the padded square."""
        x0, x1, y0, y1 = self.box
        return (self.side - (y1 - y0)) // 2, (self.side - (x1 - x0)) // 2

    @property
    def needs_resize(self) -> bool:
        """True when the padded square is resized to ``image_size``."""
        return self.side != self.image_size

    def to_dict(self) -> dict:
        """JSON-compatible dict."""
        return {"volume_shape": list(self.volume_shape), "box": list(self.box),
                "side": self.side, "image_size": self.image_size}

    @classmethod
    def from_dict(cls, d: dict) -> SliceGeometry:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: unknown or missing keys, or inconsistent values.
        """
        keys = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or set(d) != keys:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ConfigError(f"slice geometry needs exactly the keys {sorted(keys)}, got {got}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"invalid slice geometry: {err}") from err

    def to_slices(self, volume3d, order: int = 1, fill: float = 0.0) -> np.ndarray:
        """Cut a canonical 3D volume into ``(Z, S, S)`` square axial slices.

        Args:
            volume3d: Array of shape :attr:`volume_shape`. Boolean arrays are
                resized with nearest neighbour and returned as bool.
            order: Spline order of the resize (1 = linear, 0 = nearest).
            fill: Value of the padding.

        Returns:
            Array ``(Z, image_size, image_size)`` of the input's dtype.
        """
        order = _check_order(order)
        volume3d = np.asarray(volume3d)
        if volume3d.shape != self.volume_shape:
            raise ArrayError(f"volume of shape {volume3d.shape} is not on the grid {self.volume_shape}")
        is_bool = volume3d.dtype == bool
        x0, x1, y0, y1 = self.box
        # (x, y, z) -> (z, row, col) with row = y descending (anterior up), col = x.
        planes = np.transpose(volume3d[x0:x1, y0:y1, :], (2, 1, 0))[:, ::-1, :]
        top, left = self.pad
        square = np.full((self.n_slices, self.side, self.side), fill,
                         dtype=np.uint8 if is_bool else volume3d.dtype)
        square[:, top:top + planes.shape[1], left:left + planes.shape[2]] = planes
        out = _resize_planes(square, self.image_size, 0 if is_bool else order)
        return out.astype(bool) if is_bool else out

    def to_volume(self, slices, order: int = 1, fill: float = 0.0) -> np.ndarray:
        """Map ``(Z, S, S)`` (or ``(Z, S, S, 1)``) slices back onto the volume grid.

        The exact inverse of :meth:`to_slices` inside the crop box when no
        resize is involved; with a resize, the slices are resized back to the
        padded square first. Voxels outside the crop box get ``fill``.

        Args:
            slices: Per-slice maps; boolean maps use nearest neighbour.
            order: Spline order of the inverse resize.
            fill: Value outside the crop box.

        Returns:
            Array of :attr:`volume_shape` (dtype of ``slices``).
        """
        order = _check_order(order)
        slices = np.asarray(slices)
        if slices.ndim == 4 and slices.shape[-1] == 1:
            slices = slices[..., 0]
        expected = (self.n_slices, self.image_size, self.image_size)
        if slices.shape != expected:
            raise ArrayError(f"slices of shape {slices.shape} do not match the geometry {expected}")
        is_bool = slices.dtype == bool
        square = _resize_planes(slices.astype(np.uint8) if is_bool else slices, self.side,
                                0 if is_bool else order)
        x0, x1, y0, y1 = self.box
        top, left = self.pad
        planes = square[:, top:top + (y1 - y0), left:left + (x1 - x0)]
        out = np.full(self.volume_shape, fill, dtype=square.dtype)
        out[x0:x1, y0:y1, :] = np.transpose(planes[:, ::-1, :], (2, 1, 0))
        return out.astype(bool) if is_bool else out


def healthy_slice_indices(lesion_mask_3d, margin: int) -> np.ndarray:
    """Axial slices with no lesion voxel within ``margin`` slices.

    Args:
        lesion_mask_3d: Boolean ``(X, Y, Z)`` lesion mask (canonical order).
        margin: Slices ``z`` with a lesion anywhere in ``[z - margin, z + margin]``
            are excluded.

    Returns:
        Sorted int64 array of slice indices.

    Example:
        >>> lesion = np.zeros((2, 2, 10), bool); lesion[0, 0, 4] = True
        >>> healthy_slice_indices(lesion, 2).tolist()
        [0, 1, 7, 8, 9]
    """
    lesion = np.asarray(lesion_mask_3d, dtype=bool)
    if lesion.ndim != 3:
        raise ArrayError(f"expected a 3D lesion mask, got shape {lesion.shape}")
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise ArrayError(f"margin must be an integer >= 0, got {margin!r}")
    has_lesion = lesion.any(axis=(0, 1))
    near = ndimage.binary_dilation(has_lesion, structure=np.ones(2 * int(margin) + 1, bool)) \
        if margin else has_lesion
    return np.flatnonzero(~near).astype(np.int64)


@dataclass
class PreparedVolume:
    """A volume ready for a slice model, with what is needed to map results back.

    Attributes:
        volume: The loaded input (raw intensities), for writing outputs on its grid.
        slices: ``(Z, S, S, 1)`` float32 normalised slices.
        brain: ``(Z, S, S, 1)`` bool brain mask slices.
        lesion: ``(Z, S, S, 1)`` bool lesion slices, or ``None`` without labels.
        geometry: The :class:`SliceGeometry` used.
        brain_mask: 3D bool brain mask on the volume grid (canonical order).
        lesion_mask: 3D bool lesion mask, or ``None``.
    """

    volume: Volume
    slices: np.ndarray
    brain: np.ndarray
    lesion: np.ndarray | None
    geometry: SliceGeometry
    brain_mask: np.ndarray
    lesion_mask: np.ndarray | None

    def _require_lesion(self) -> np.ndarray:
        if self.lesion_mask is None:
            raise MissingModalityError(self.volume.path,
                                       "no lesion labels, so healthy slices cannot be selected")
        return self.lesion_mask

    def healthy_indices(self, margin: int) -> np.ndarray:
        """Slices with no lesion voxel within ``margin`` slices.

        Raises:
            MissingModalityError: the volume was prepared without lesion labels.
        """
        return healthy_slice_indices(self._require_lesion(), margin)

    def brain_fraction(self) -> np.ndarray:
        """Fraction of brain pixels in each square slice, shape ``(Z,)``."""
        return self.brain.reshape(self.brain.shape[0], -1).mean(axis=1)

    def training_indices(self, config: PreprocessConfig) -> np.ndarray:
        """Healthy slices (``config.healthy_margin``) with enough brain (``config.min_brain_fraction``).

        Raises:
            MissingModalityError: the volume was prepared without lesion labels.
        """
        healthy = self.healthy_indices(config.healthy_margin)
        return healthy[self.brain_fraction()[healthy] >= config.min_brain_fraction]

    def to_volume(self, slice_maps) -> np.ndarray:
        """Map per-slice maps ``(Z, S, S[, 1])`` back onto the volume grid (zeros outside the crop)."""
        return self.geometry.to_volume(slice_maps, order=1, fill=0)


def prepare_volume(image_path, config: PreprocessConfig, *, brain_mask_path=None,
                   lesion_mask_path=None, stats: dict | None = None) -> PreparedVolume:
    """Load, mask, normalise and slice one volume.

    Args:
        image_path: NIfTI image (skull-stripped).
        config: The preprocessing config.
        brain_mask_path: Optional brain mask; default is the image's non-zero
            region (:func:`brain_mask_from_image`).
        lesion_mask_path: Optional lesion labels; ``label > 0`` is lesion
            (BraTS whole tumour). May be empty (a lesion-free subject).
        stats: From :func:`fit_intensity_stats`; required for ``"zscore"``.

    Returns:
        A :class:`PreparedVolume`.

    Raises:
        CorruptFileError, DimensionError, NonFiniteError: bad image or mask file.
        GeometryMismatchError: a mask's shape or affine differs from the image's.
        EmptyMaskError: the brain mask (given or derived) is empty.
        ConfigError: ``"zscore"`` without ``stats``.

    Example:
        >>> prep = prepare_volume("flair.nii.gz", PreprocessConfig(image_size=128),
        ...                       lesion_mask_path="seg.nii.gz")    # doctest: +SKIP
        >>> prep.slices.shape                                        # doctest: +SKIP
        (155, 128, 128, 1)
    """
    volume = load_volume(image_path)
    if brain_mask_path is not None:
        brain_mask = load_mask(brain_mask_path, volume, what="brain mask")
    else:
        brain_mask = brain_mask_from_image(volume.data)
        if not brain_mask.any():
            raise EmptyMaskError(os.fspath(image_path),
                                 "image has no non-zero voxel to use as brain mask")
    lesion_mask = None
    if lesion_mask_path is not None:
        lesion_mask = load_mask(lesion_mask_path, volume, what="lesion mask", require_nonempty=False)
    try:
        normalized = normalize_intensity(volume.data, brain_mask, config, stats)
    except DataError as err:
        raise type(err)(image_path, err.problem) from err
    geometry = SliceGeometry.from_mask(brain_mask, config.image_size, config.crop_margin)
    slices = geometry.to_slices(normalized, order=1, fill=config.background_value)
    brain = geometry.to_slices(brain_mask)
    lesion = None if lesion_mask is None else geometry.to_slices(lesion_mask)[..., None]
    return PreparedVolume(
        volume=volume,
        slices=slices[..., None].astype(np.float32),
        brain=brain[..., None],
        lesion=lesion,
        geometry=geometry,
        brain_mask=brain_mask,
        lesion_mask=lesion_mask,
    )
