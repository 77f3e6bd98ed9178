"""SavedModel export with TF-Serving signatures (installed as ``tfuad.export``)."""
