"""MAP-TV restoration (Chen et al. 2020): anomaly map ``|y − x̂|``.

The restoration maximises ``ELBO(X) − λ‖X − Y‖_TV`` from ``X₀ = Y`` (their
Eq. 6) under the model's ELBO; λ is the smallest value minimising the mean
ℓ1 change ``ε(λ) = (1/S) Σ_s ‖Y_s − X̂_λ,s‖₁`` on healthy calibration slices
(their Eq. 7). The maps, so the thresholds and λ, depend on the optimisation
schedule: it is calibrated with λ and enforced afterwards.

``map-tv-positive`` keeps only ``max(y − x̂, 0)`` (see
:mod:`tfuad.detection.methods.residual` for when that suits).

Example:
    >>> method = MapTVMethod(prior, schedule="fast")                     # doctest: +SKIP
    >>> method.calibrate_settings(healthy, brains)["lambda"]            # doctest: +SKIP
    4.0
"""
from __future__ import annotations

from tfuad.detection.methods.base import ScoringMethod
from tfuad.errors import ConfigError

__all__ = ["MapTVMethod", "PositiveMapTVMethod", "DEFAULT_LAMBDAS"]

#: λ grid of the ε(λ) search (the paper searches a wide range; its optima lie in 1–9).
DEFAULT_LAMBDAS = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0)


class MapTVMethod(ScoringMethod):
    """``|y − x̂|`` of the MAP-TV restoration under the model's ELBO.

    Args:
        model: A model with an ELBO (``has_elbo``).
        schedule: ``"paper"``, ``"fast"``, a stored schedule dict, or ``None``
            for the calibrated one (``paper`` before calibration).
        max_steps: Step limit of the schedule (``None``: the schedule's own or the calibrated one).
        lam: λ; ``None`` for the calibrated one.
        lambdas: λ grid of the calibration.
        lambda_slices: Healthy calibration slices used for the λ search.
        background, batch_size, precision: As :class:`~tfuad.detection.methods.base.ScoringMethod`.
    """

    name = "map-tv"
    label = "MAP-TV"
    summary = "|y - MAP-TV restoration| under the model's ELBO (Chen et al. 2020)"
    needs = "log_density"
    calibrates = ("lambda",)

    def __init__(self, model=None, *, schedule=None, max_steps: int | None = None, lam: float | None = None,
                 lambdas=DEFAULT_LAMBDAS, lambda_slices: int = 32, background: float = 0.0,
                 batch_size: int | None = None, precision: str | None = None):
        from tfuad.detection.restoration import get_schedule

        super().__init__(model, background=background, batch_size=batch_size, precision=precision)
        self._request = (schedule, max_steps)
        self.schedule = get_schedule(schedule or "paper", max_steps)  # fails early on a bad name or limit
        self._lam = None if lam is None else float(lam)
        self.lambdas = tuple(float(v) for v in lambdas)
        self.lambda_slices = int(lambda_slices)
        self._restorer = None

    @classmethod
    def recommended(cls, model) -> bool:
        """Only models whose ``log_density`` is a proper ELBO (the priors, the VAEs)."""
        return bool(getattr(model, "has_elbo", False))

    @property
    def costly(self) -> bool:
        return True

    @property
    def lam(self) -> float:
        """λ: given, or set by :meth:`configure` / :meth:`calibrate_settings`."""
        if self._lam is None:
            raise ConfigError("map-tv has no λ: calibrate the run for map-tv first (tfuad calibrate --method map-tv)")
        return self._lam

    def restorer(self):
        """The :class:`~tfuad.detection.restoration.Restorer` (compiled once, reused)."""
        from tfuad.detection.restoration import Restorer

        if self._restorer is None or (self._restorer.schedule, self._restorer.precision) != (self.schedule,
                                                                                              self.precision):
            self._restorer = Restorer(self.model, lam=self.lam, schedule=self.schedule, batch_size=self.batch_size,
                                      precision=self.precision)
        self._restorer.lam = self.lam
        return self._restorer

    def build(self) -> None:
        self.restorer()

    # -- maps ----------------------------------------------------------------------------------
    def slice_maps(self, slices, brain=None):
        import numpy as np

        slices = np.asarray(slices, np.float32)
        restored = self.restorer().restore(slices, mask=brain)
        return self.deviation(slices, restored), restored

    def estimate_key(self):
        """The restoration depends on λ, the schedule, the precision and the batching (both polarities share it)."""
        import json

        from tfuad.detection.restoration import schedule_config

        return ("map-tv", self.lam, json.dumps(schedule_config(self.schedule), sort_keys=True), self.precision,
                self.batch_size)

    def settings_key(self):
        """The λ search depends on the requested schedule, the λ grid, the precision and the batching."""
        import json

        return ("map-tv", json.dumps(self._request, sort_keys=True, default=str), self.lambdas, self.precision,
                self.batch_size)

    def graph_maps(self, slices, brain):
        restored = self.restorer().restore_tensor(slices, brain)
        return self.deviation(slices, restored), restored

    # -- calibration ---------------------------------------------------------------------------
    def calibrate_settings(self, slices, brains, *, log=print) -> dict:
        from tfuad.detection.restoration import choose_lambda

        log(f"choosing λ on {len(slices)} healthy calibration slices over {len(self.lambdas)} values")
        best, curve = choose_lambda(self.model, slices, self.lambdas, schedule=self.schedule, mask=brains,
                                    batch_size=self.batch_size, precision=self.precision)
        self._lam = float(best)
        if float(best) == max(curve):
            log(f"warning: ε(λ) is smallest at the largest λ of the grid ({best:g}), so the curve has no "
                "interior minimum there. The better the schedule maximises the objective, the closer X̂ comes "
                "to Y as λ grows, so a wider grid (--lambdas) may only move the choice further up; check the "
                "lesion maps of a lesioned validation case (benchmarks/convergence.py --lam) before using it")
        log(f"λ = {best:g}")
        return {**self.settings(), "lambda_curve": {str(k): float(v) for k, v in curve.items()},
                "curve": {"x": "λ (TV weight)", "y": "mean ℓ1 change on healthy slices",
                          "values": {str(k): float(v) for k, v in curve.items()}, "chosen": float(best),
                          "setting": "lambda"}}

    def settings(self) -> dict:
        from tfuad.detection.restoration import schedule_config

        out = {**super().settings(), "schedule": schedule_config(self.schedule)}
        if self._lam is not None:
            out["lambda"] = self._lam
        return out

    def configure(self, stored: dict, *, source=None) -> None:
        from tfuad.detection.restoration import calibrated_schedule

        super().configure(stored, source=source)
        self.schedule = calibrated_schedule(*self._request, stored.get("schedule"), source=source)
        if "lambda" not in stored:
            raise ConfigError(f"{source}: the map-tv calibration has no λ ('lambda'); calibrate again")
        if self._lam is None:
            self._lam = float(stored["lambda"])

    def _describe(self) -> str:
        from tfuad.detection.restoration import describe_schedule

        lam = "λ not set" if self._lam is None else f"λ = {self._lam:g}"
        return f"map-tv, {describe_schedule(self.schedule)}, {lam}"


class PositiveMapTVMethod(MapTVMethod):
    """``max(y − x̂, 0)`` of the MAP-TV restoration: only brighter than healthy (hyperintense lesions)."""

    name = "map-tv-positive"
    label = "MAP-TV (positive)"
    summary = "max(y - MAP-TV restoration, 0): hyperintense deviations only"
    polarity = "positive"
