"""Post-processing of anomaly maps and thresholds calibrated on healthy data.

Example:
    >>> from tfuad.postprocessing import PostprocessConfig, postprocess_map, segment, calibrate
"""
from tfuad.postprocessing.filters import (
    PostprocessConfig,
    erode_mask,
    median_filter_3d,
    postprocess_map,
    remove_small_components,
    segment,
)
from tfuad.postprocessing.thresholds import (
    DEFAULT_FPRS,
    Calibration,
    brain_values,
    calibrate,
    fpr_key,
    fpr_threshold,
    fpr_thresholds,
    percentile_key,
    percentile_threshold,
    pool_values,
    position_weights,
)

__all__ = [
    "PostprocessConfig",
    "median_filter_3d",
    "erode_mask",
    "remove_small_components",
    "postprocess_map",
    "segment",
    "DEFAULT_FPRS",
    "Calibration",
    "calibrate",
    "brain_values",
    "pool_values",
    "percentile_threshold",
    "fpr_threshold",
    "fpr_thresholds",
    "position_weights",
    "fpr_key",
    "percentile_key",
]
