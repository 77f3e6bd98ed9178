"""Reconstruction residuals (Baur et al. 2018): anomaly map ``|x − x̂|``.

``x̂`` is the model's deterministic reconstruction (posterior mean for the
variational models, ``G(z*)`` after the latent search for AnoGAN).

``residual-positive`` keeps only ``max(x − x̂, 0)``: where lesions are known to
be hyperintense (FLAIR, T2), a darker-than-healthy residual (the reconstruction
smearing bright tissue, or CSF, into a sulcus) is not a lesion. Later work in
this field often scores FLAIR this way; it is an option, not the papers' rule.

Example:
    >>> method = ResidualMethod(model)                          # doctest: +SKIP
    >>> maps, recon = method.slice_maps(prepared.slices)        # doctest: +SKIP
"""
from __future__ import annotations

from tfuad.detection.methods.base import ScoringMethod

__all__ = ["ResidualMethod", "PositiveResidualMethod"]

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
        import numpy as np

        from tfuad.detection.residual import reconstruct_slices

        slices = np.asarray(slices, np.float32)
        estimate = reconstruct_slices(self.model, slices, self.batch_size or DEFAULT_BATCH, precision=self.precision)
        return self.deviation(slices, estimate), estimate

    def estimate_key(self):
        """The reconstruction depends on the precision and the batching only (both polarities share it)."""
        return ("reconstruction", self.precision, self.batch_size or DEFAULT_BATCH)

    def graph_maps(self, slices, brain):
        from tfuad.models.base import computing_at

        with computing_at(self.model, self.precision):  # traced at the calibrated precision
            estimate = self.model.reconstruct(slices, training=False)
        return self.deviation(slices, estimate), estimate

    def _describe(self) -> str:
        return f"residual of {type(self.model).__name__}"



class PositiveResidualMethod(ResidualMethod):
    """``max(x − x̂, 0)``: only brighter than the reconstruction (hyperintense lesions)."""

    name = "residual-positive"
    label = "residual (positive)"
    summary = "max(x - reconstruction, 0): hyperintense deviations only"
    polarity = "positive"
