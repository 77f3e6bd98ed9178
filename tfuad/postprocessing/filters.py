"""Post-processing of anomaly maps: median filter, brain-mask erosion, small components.

This follows Baur et al. (2018): the residual volume of a subject is smoothed
with a 5×5×5 median filter, multiplied by a slightly eroded brain mask,
thresholded, and 3D connected components smaller than 6 voxels are removed.

The same two functions, :func:`postprocess_map` and :func:`segment`, are used
when calibrating thresholds on healthy data and when detecting lesions, so the
calibration sees maps processed exactly as at detection time.

Example:
    >>> import numpy as np
    >>> residual = np.zeros((12, 12, 12), np.float32)
    >>> residual[4:8, 4:8, 4:8] = 1.0
    >>> brain = np.ones((12, 12, 12), bool)
    >>> config = PostprocessConfig(median_size=3, erosion_iterations=1)
    >>> score = postprocess_map(residual, brain, config)
    >>> int(segment(score, 0.5, config).sum())  # the median rounds off the cube's edges
    32
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage as ndi

from tfuad.arrays import check_real_finite
from tfuad.errors import ArrayError, ConfigError, EmptyMaskError

__all__ = [
    "PostprocessConfig",
    "median_filter_3d",
    "erode_mask",
    "remove_small_components",
    "postprocess_map",
    "segment",
]


def _as_volume(array, name: str) -> np.ndarray:
    """Return ``array`` as a non-empty 3D NumPy array, or raise ``ValueError``."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ArrayError(f"{name} must be a 3D volume, got an array of shape {array.shape}")
    if array.size == 0:
        raise ArrayError(f"{name} is empty (shape {array.shape})")
    return array


def _as_numeric_volume(array, name: str) -> np.ndarray:
    """Return ``array`` as a finite, real-valued 3D array (dtype unchanged)."""
    return check_real_finite(_as_volume(array, name), name)


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ArrayError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_median_size(size) -> int:
    size = _check_int(size, "median size", 1)
    if size % 2 == 0:
        raise ArrayError(f"median size must be odd so the window is centred, got {size}")
    return size


def _check_connectivity(connectivity, ndim: int = 3) -> int:
    connectivity = _check_int(connectivity, "connectivity", 1)
    if connectivity > ndim:
        raise ArrayError(f"connectivity must be between 1 and {ndim}, got {connectivity}")
    return connectivity


def median_filter_3d(volume, size: int = 5) -> np.ndarray:
    """Median filter a volume with a ``size``×``size``×``size`` window.

    Args:
        volume: Residual (or any anomaly score) volume.
        size: Odd window side in voxels; ``1`` returns an unfiltered float32 copy.

    Returns:
        numpy.ndarray of float32: The filtered volume. Borders use SciPy's ``"reflect"`` mode.

    Example:
        >>> import numpy as np
        >>> v = np.zeros((7, 7, 7), np.float32)
        >>> v[3, 3, 3] = 9.0                      # a single salt voxel
        >>> float(median_filter_3d(v, size=3).max())
        0.0
    """
    volume = _as_numeric_volume(volume, "volume").astype(np.float32, copy=False)
    size = _check_median_size(size)
    if size == 1:
        return volume.copy()
    return ndi.median_filter(volume, size=size, mode="reflect")


def erode_mask(mask, iterations: int = 3) -> np.ndarray:
    """Erode a 3D brain mask by ``iterations`` voxel layers (6-connected).

    Each iteration removes the voxels of the mask that touch the background
    through a face, so a cube of side ``n`` becomes a cube of side
    ``n - 2 * iterations``. The edge of the array is not treated as a brain
    boundary (it is the edge of the field of view), so a mask touching the
    array border is eroded only from its inner boundary.

    Args:
        mask: Brain mask; non-zero voxels are brain.
        iterations: Voxel layers to remove; ``0`` returns the mask unchanged (as bool).

    Returns:
        numpy.ndarray of bool

    Example:
        >>> import numpy as np
        >>> cube = np.zeros((12, 12, 12), bool)
        >>> cube[2:10, 2:10, 2:10] = True        # side 8
        >>> int(erode_mask(cube, iterations=2).sum()) == 4 ** 3
        True
    """
    mask = _as_volume(mask, "mask").astype(bool, copy=False)
    iterations = _check_int(iterations, "erosion iterations", 0)
    if iterations == 0:
        return mask.copy()
    structure = ndi.generate_binary_structure(3, 1)
    return ndi.binary_erosion(mask, structure=structure, iterations=iterations, border_value=1)


def remove_small_components(binary, min_size: int = 6, connectivity: int = 3) -> np.ndarray:
    """Remove 3D connected components with fewer than ``min_size`` voxels.

    Args:
        binary: Binary segmentation; non-zero voxels are foreground.
        min_size: Smallest component size kept; ``0`` or ``1`` keeps everything.
        connectivity: Neighbourhood as in :func:`scipy.ndimage.generate_binary_structure`:
            ``1`` = face (6-), ``2`` = face or edge (18-), ``3`` = any touching
            voxel (26-connected).

    Returns:
        numpy.ndarray of bool

    Example:
        >>> import numpy as np
        >>> seg = np.zeros((9, 9, 9), bool)
        >>> seg[1, 1, 1:6] = True                # 5 voxels: removed
        >>> seg[6, 6, 0:6] = True                # 6 voxels: kept
        >>> int(remove_small_components(seg, min_size=6).sum())
        6
    """
    binary = _as_volume(binary, "binary segmentation").astype(bool, copy=False)
    min_size = _check_int(min_size, "min_size", 0)
    connectivity = _check_connectivity(connectivity)
    if min_size <= 1:
        return binary.copy()
    labels, _ = ndi.label(binary, structure=ndi.generate_binary_structure(3, connectivity))
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


@dataclass
class PostprocessConfig:
    """Settings of :func:`postprocess_map` and :func:`segment`.

    Args:
        median_size: Odd side of the median window; ``1`` disables the filter.
        erosion_iterations: Voxel layers removed from the brain mask; ``0`` disables erosion.
        min_component_size: Components with fewer voxels are removed; ``0`` or ``1`` disables.
        connectivity: Connectivity (1, 2 or 3) of the components, see
            :func:`remove_small_components`.

    Example:
        >>> PostprocessConfig.from_dict(PostprocessConfig(median_size=3).to_dict())
        PostprocessConfig(median_size=3, erosion_iterations=3, min_component_size=6, connectivity=3)
    """

    median_size: int = 5
    erosion_iterations: int = 3
    min_component_size: int = 6
    connectivity: int = 3

    def __post_init__(self):
        try:
            _check_median_size(self.median_size)
            _check_int(self.erosion_iterations, "erosion_iterations", 0)
            _check_int(self.min_component_size, "min_component_size", 0)
            _check_connectivity(self.connectivity)
        except ValueError as err:
            raise ConfigError(f"invalid post-processing setting: {err}") from err

    def to_dict(self) -> dict:
        """Plain ``dict`` of the settings (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict) -> PostprocessConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`~tfuad.errors.ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ConfigError(f"unknown post-processing setting(s) {unknown}; known: {sorted(known)}")
        return cls(**config)


def postprocess_map(residual_volume, brain_mask, config: PostprocessConfig | None = None) -> np.ndarray:
    """Turn a residual volume into the anomaly score map that is thresholded.

    Median-filters the residual volume and multiplies it by the eroded brain
    mask. Only the bounding box of the eroded mask (plus half a window) is
    filtered: the result is identical to filtering the whole volume.

    Args:
        residual_volume: Residual of one subject (for example ``x - x̂`` or ``|x - x̂|``).
        brain_mask: Brain mask of the subject.
        config: Defaults to ``PostprocessConfig()`` (Baur et al. 2018 settings).

    Returns:
        numpy.ndarray of float32: Score map, zero outside the eroded brain mask.

    Raises:
        ValueError: On shape mismatch, non-3D or non-finite input.
        tfuad.errors.EmptyMaskError: If the brain mask is empty, before or after erosion.

    Example:
        >>> import numpy as np
        >>> residual = np.ones((10, 10, 10), np.float32)
        >>> brain = np.zeros((10, 10, 10), bool)
        >>> brain[2:8, 2:8, 2:8] = True
        >>> score = postprocess_map(residual, brain, PostprocessConfig(erosion_iterations=1))
        >>> int(score.sum())                     # the 4x4x4 eroded cube
        64
    """
    config = config or PostprocessConfig()
    residual = _as_numeric_volume(residual_volume, "residual volume")
    brain = _as_volume(brain_mask, "brain mask").astype(bool, copy=False)
    if brain.shape != residual.shape:
        raise ArrayError(f"brain mask shape {brain.shape} differs from residual volume shape {residual.shape}")
    if not brain.any():
        raise EmptyMaskError(None, "brain mask has no non-zero voxel")
    eroded = erode_mask(brain, config.erosion_iterations)
    if not eroded.any():
        raise EmptyMaskError(None, f"brain mask of {int(brain.sum())} voxels is empty after "
                                   f"{config.erosion_iterations} erosion iterations")
    radius = config.median_size // 2
    nonzero = np.nonzero(eroded)
    box = tuple(slice(max(int(idx.min()) - radius, 0), min(int(idx.max()) + radius + 1, n))
                for idx, n in zip(nonzero, eroded.shape))
    out = np.zeros(residual.shape, np.float32)
    out[box] = median_filter_3d(residual[box], config.median_size) * eroded[box]
    return out


def segment(score_map, threshold: float, config: PostprocessConfig | None = None) -> np.ndarray:
    """Binary segmentation: voxels with ``score > threshold``, small components removed.

    The comparison is made in the map's own dtype, so a threshold calibrated
    on float32 maps (a float32 value) selects exactly the voxels it did during
    calibration.

    Args:
        score_map: Output of :func:`postprocess_map`.
        threshold: Finite threshold (for example from :class:`~tfuad.postprocessing.Calibration`).
        config: Its ``min_component_size`` and ``connectivity`` are used.

    Returns:
        numpy.ndarray of bool

    Example:
        >>> import numpy as np
        >>> score = np.zeros((8, 8, 8), np.float32)
        >>> score[0, 0, 0] = 5.0                 # a lone voxel
        >>> score[3:6, 3:6, 3:6] = 2.0           # a 27-voxel block
        >>> int(segment(score, 1.0).sum())
        27
    """
    config = config or PostprocessConfig()
    score = _as_numeric_volume(score_map, "score map")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not np.isfinite(threshold):
        raise ArrayError(f"threshold must be a finite number, got {threshold!r}")
    return remove_small_components(score > threshold, config.min_component_size, config.connectivity)
