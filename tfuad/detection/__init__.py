"""Anomaly maps: scoring methods (:mod:`~tfuad.detection.methods`), their engines (reconstruction
residuals in :mod:`~tfuad.detection.residual`, MAP-TV restoration in
:mod:`~tfuad.detection.restoration`) and whole volumes (:mod:`~tfuad.detection.detector`)."""
