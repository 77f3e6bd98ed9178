"""Anomaly maps: reconstruction residuals and MAP-TV restoration."""
