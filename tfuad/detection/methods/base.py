"""What every scoring method is: prepared slices in, anomaly maps out.

A scoring method turns a batch of preprocessed slices ``Y`` (model space,
``(N, S, S, 1)``) and their brain masks into anomaly maps of the same shape,
and optionally an estimate ``X̂`` of the healthy slices (a reconstruction or a
restoration). It says what it needs from the model, what it calibrates beyond
thresholds, and how it is built into a serving graph. Thresholds, the 3D
post-processing and whole volumes are handled alike for every method
(:class:`~tfuad.detection.detector.Detector`, the workflows).

Every concrete subclass names itself with ``name``; the registry
(:data:`tfuad.detection.methods.METHODS`) is built from the classes
themselves, so adding a method is one new module in this folder.

Example:
    >>> from tfuad.detection.methods import get_method
    >>> get_method("intensity").needs is None
    True
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from tfuad.errors import ConfigError

__all__ = ["ScoringMethod", "registry"]

_REGISTRY: dict[str, type] = {}


def registry() -> dict[str, type]:
    """``{name: class}`` of every scoring method defined so far, in definition order."""
    return dict(_REGISTRY)


class ScoringMethod:
    """Base class of the scoring methods (template hooks for subclasses).

    Args:
        model: The trained model (``None`` for methods that need none).
        background: The preprocessing background value (pixels equal to it lie outside the brain).
        batch_size: Slices per forward pass or optimisation batch (``None``: the method's default).
        precision: Precision of the network (``float32``, ``mixed_bfloat16``, ``auto``); ``None``: the
            calibrated one, else the model's own (see :func:`tfuad.precision.inference_precision`).

    Subclasses set the class attributes and override :meth:`slice_maps` and
    :meth:`graph_maps`; methods with settings of their own (MAP-TV's λ and
    schedule) also override :meth:`calibrate_settings`, :meth:`settings` and
    :meth:`configure`.
    """

    #: Name used by the command line, calibration files and reports (set by subclasses).
    name: ClassVar[str] = ""
    #: Row label in reports.
    label: ClassVar[str] = ""
    #: One line for ``--help``.
    summary: ClassVar[str] = ""
    #: What the model must provide: ``"reconstruct"``, ``"log_density"`` (a proper ELBO), or ``None``.
    needs: ClassVar[str | None] = "reconstruct"
    #: The settings the method chooses on healthy data besides thresholds (MAP-TV: ``("lambda",)``).
    calibrates: ClassVar[tuple] = ()
    #: Which deviations from the healthy estimate count: ``"absolute"`` ``|y − x̂|`` (the papers), or
    #: ``"positive"`` ``max(y − x̂, 0)``, only brighter than healthy (for hyperintense lesions, e.g. in FLAIR).
    polarity: ClassVar[str] = "absolute"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.name in _REGISTRY:
                raise ConfigError(f"two scoring methods are called {cls.name!r}")
            _REGISTRY[cls.name] = cls

    def __init__(self, model=None, *, background: float = 0.0, batch_size: int | None = None,
                 precision: str | None = None):
        from tfuad.precision import inference_precision

        if self.needs is not None and model is None:
            raise ConfigError(f"method {self.name!r} needs a trained model")
        if model is not None and not self.supports(model):
            raise ConfigError(f"method {self.name!r} needs a model with {self.requirement()}; "
                              f"{type(model).__name__} has none")
        self.model = model
        self.background = float(background)
        self.batch_size = None if batch_size is None else int(batch_size)
        self._precision_request = precision
        self.precision = inference_precision(precision, None, self._own_precision())

    def _own_precision(self) -> str | None:
        from tfuad.models.base import precision_of

        return None if self.model is None else precision_of(self.model)

    # -- what the method needs -----------------------------------------------------------------
    @classmethod
    def supports(cls, model) -> bool:
        """Whether ``model`` (an instance or class) provides what this method needs."""
        return cls.needs is None or callable(getattr(model, cls.needs, None))

    @classmethod
    def recommended(cls, model) -> bool:
        """Whether the method suits ``model`` well (``calibrate --method all`` takes these)."""
        return cls.supports(model)

    @classmethod
    def requirement(cls) -> str:
        """What :attr:`needs` means, in words."""
        return {"reconstruct": "a reconstruct(x) method", "log_density": "a log_density(x) method",
                None: "nothing"}[cls.needs]

    @property
    def costly(self) -> bool:
        """True when scoring runs an optimisation per image.

        Calibration then scores only the calibration subjects (not every training volume) for the
        percentile threshold.
        """
        return False

    # -- maps ----------------------------------------------------------------------------------
    def slice_maps(self, slices: np.ndarray, brain: np.ndarray | None = None):
        """Anomaly maps of ``(N, S, S, 1)`` float32 slices.

        Returns:
            ``(maps, estimate)``: float32 maps of the slices' shape and the
            healthy estimate X̂ (``None`` when the method makes none).
        """
        raise NotImplementedError

    def graph_maps(self, slices, brain):
        """The same as :meth:`slice_maps` in graph mode, for a serving signature.

        Args:
            slices: float32 tensor ``(N, S, S, C)``.
            brain: bool tensor of the same shape.

        Returns:
            ``(maps, estimate)`` tensors; ``estimate`` may be ``None``.
        """
        raise NotImplementedError

    def deviation(self, slices, estimate):
        """The anomaly map of ``slices`` against their healthy ``estimate``, per :attr:`polarity`.

        Takes NumPy arrays (returns float32 NumPy) or tensors (returns a tensor, for graphs).

        Example:
            >>> import numpy as np
            >>> from tfuad.detection.methods import get_method
            >>> y, x = np.array([1.0, 0.0]), np.array([0.5, 0.5])
            >>> get_method("intensity")().deviation(y, x).tolist(), get_method("residual-positive").polarity
            ([0.5, 0.5], 'positive')
        """
        if isinstance(slices, np.ndarray) and isinstance(estimate, np.ndarray):
            difference = np.asarray(slices, np.float32) - np.asarray(estimate, np.float32)
            return np.maximum(difference, 0.0) if self.polarity == "positive" else np.abs(difference)
        import tensorflow as tf

        difference = slices - estimate
        return tf.nn.relu(difference) if self.polarity == "positive" else tf.abs(difference)

    def estimate_key(self):
        """What the healthy estimate X̂ depends on besides the slices and the weights (hashable), or ``None``.

        Two methods of one run whose keys are equal make the same X̂ of the same slices and differ
        only in how they score the deviation from it (:attr:`polarity`), so an evaluation of both
        computes X̂ once (:meth:`~tfuad.detection.detector.Detector.run_volume` with ``shared``).
        ``None`` (the default) shares nothing.

        Example:
            >>> from tfuad.detection.methods import get_method
            >>> get_method("intensity")().estimate_key() is None
            True
        """
        return None

    def settings_key(self):
        """What the choice of the method's own settings depends on besides the model (hashable), or ``None``.

        Two methods of one run with equal keys choose the same settings on the same healthy slices
        (MAP-TV's λ does not depend on the polarity of the map), so a calibration of both searches
        once (:func:`~tfuad.workflows.calibrate.calibrate_methods`). ``None`` (the default) shares
        nothing.
        """
        return None

    def build(self) -> None:
        """Build what :meth:`graph_maps` needs (e.g. compiled loops) before a serving graph is traced."""

    # -- calibration beyond thresholds ---------------------------------------------------------
    def calibrate_settings(self, slices: np.ndarray, brains: np.ndarray, *, log=print) -> dict:
        """Choose the method's own settings on healthy calibration slices (default: none).

        Returns:
            JSON-ready settings, stored in the calibration's ``extra`` and given
            back to :meth:`configure` at detection time. A ``"curve"`` entry
            ``{"x": name, "y": name, "values": {x: y}, "chosen": x, "setting": name}``
            is drawn beside the calibration (the run's ``<setting>_curve.png``).
        """
        return {}

    def settings(self) -> dict:
        """The settings in force that the thresholds depend on (stored with a calibration)."""
        return {} if self.model is None else {"precision": self.precision}

    def configure(self, stored: dict, *, source=None) -> None:
        """Apply settings stored with a calibration (``source`` names the file in errors).

        Raises:
            ConfigError: a requested precision differs from the calibrated one.
        """
        from tfuad.precision import inference_precision

        if self.model is not None:
            self.precision = inference_precision(self._precision_request, stored.get("precision"),
                                                 self._own_precision(), source=source)

    def describe(self) -> str:
        """One line for logs (:meth:`_describe`, marked when only the positive part counts)."""
        return ("positive " if self.polarity == "positive" else "") + self._describe()

    def _describe(self) -> str:
        """What the method is, in a few words (subclasses say more)."""
        return self.name
