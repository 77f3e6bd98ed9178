"""Anomaly maps: scoring methods, their engines and whole volumes.

Scoring methods in :mod:`~tfuad.detection.methods`; their engines, reconstruction residuals in
:mod:`~tfuad.detection.residual` and MAP-TV restoration in :mod:`~tfuad.detection.restoration`; whole
volumes in :mod:`~tfuad.detection.detector`.
"""
