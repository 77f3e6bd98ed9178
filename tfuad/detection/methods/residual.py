"""Reconstruction residuals (Baur et al. 2018): anomaly map ``|x − x̂|``.

``x̂`` is the model's deterministic reconstruction (posterior mean for the
variational models, ``G(z*)`` after the latent search for AnoGAN).

Example:
    >>> method = ResidualMethod(model)                          # doctest: +SKIP
    >>> maps, recon = method.slice_maps(prepared.slices)        # doctest: +SKIP
"""
from __future__ import annotations

from tfuad.detection.methods.base import ScoringMethod

__all__ = ["ResidualMethod"]

#: Slices per forward pass by default.
DEFAULT_BATCH = 32


class ResidualMethod(ScoringMethod):
    """``|x − x̂|`` of the model's reconstruction."""

    name = "residual"
    label = "residual"
    summary = "|x - reconstruction| (Baur et al. 2018)"
    needs = "reconstruct"

    @property
    def costly(self) -> bool:
        return bool(getattr(self.model, "iterative", False))

    def slice_maps(self, slices, brain=None):
        from tfuad.detection.residual import residual_maps

        return residual_maps(self.model, slices, self.batch_size or DEFAULT_BATCH, precision=self.precision)

    def graph_maps(self, slices, brain):
        import tensorflow as tf

        from tfuad.models.base import computing_at

        with computing_at(self.model, self.precision):  # traced at the calibrated precision
            estimate = self.model.reconstruct(slices, training=False)
        return tf.abs(slices - estimate), estimate

    def describe(self) -> str:
        return f"residual of {type(self.model).__name__}"

