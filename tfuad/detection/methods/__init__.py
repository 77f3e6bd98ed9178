"""Scoring methods: one module per method, one registry built from the classes.

=============  ===============================================  ==================
name           anomaly map                                      needs
=============  ===============================================  ==================
``residual``   ``|x − x̂|`` of the reconstruction (Baur 2018)    ``reconstruct``
``map-tv``     ``|y − x̂|`` of the MAP-TV restoration (Chen 2020) an ELBO
``intensity``  normalised intensity (non-learned reference)     nothing
=============  ===============================================  ==================

``residual-positive`` and ``map-tv-positive`` keep only ``max(y − x̂, 0)``
(hyperintense lesions); they are options, not part of ``--method all``.

Adding a method is one new module here defining a
:class:`~tfuad.detection.methods.base.ScoringMethod` subclass with a
``name``, imported below: the command line's choices, calibration,
evaluation and export all read :data:`METHODS`.

Example:
    >>> from tfuad.detection.methods import METHOD_NAMES
    >>> METHOD_NAMES
    ('residual', 'map-tv', 'intensity', 'map-tv-positive', 'residual-positive')
"""
from __future__ import annotations

from tfuad.detection.methods import intensity, map_tv, residual  # noqa: F401  (registers the classes)
from tfuad.detection.methods.base import ScoringMethod, registry
from tfuad.errors import ConfigError

__all__ = ["METHODS", "METHOD_NAMES", "ScoringMethod", "get_method", "methods_for"]

#: ``{name: class}`` of every scoring method, in the order of :data:`METHOD_NAMES`.
METHODS = {name: registry()[name] for name in ("residual", "map-tv", "intensity")}
METHODS.update(registry())
#: The method names (the command line's choices).
METHOD_NAMES = tuple(METHODS)


def get_method(name: str) -> type:
    """The method class called ``name``.

    Raises:
        ConfigError: for an unknown name (the message lists the known ones).
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHOD_NAMES)}")
    return METHODS[name]


def methods_for(model) -> list[str]:
    """Names of the methods that suit a model (class or instance), in registry order (``--method all``).

    The positive-part options (``polarity = "positive"``) are left out: they are chosen on purpose.
    """
    return [name for name, cls in METHODS.items() if cls.polarity == "absolute" and cls.recommended(model)]
