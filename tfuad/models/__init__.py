"""Model zoo: every model by the name the CLI accepts.

Baur et al. 2018: ``dae``, ``dvae``, ``sae``, ``svae``, ``saegan``, ``anovaegan``, ``anogan``.
Chen et al. 2020: ``vae`` and ``gmvae`` normative priors.

Example:
    >>> from tfuad.models import build_model
    >>> model = build_model("svae", image_size=64)   # doctest: +SKIP
    >>> model = build_model("vae", image_size=128, precision="mixed_bfloat16")   # doctest: +SKIP
"""
from __future__ import annotations

import importlib

from tfuad.errors import ConfigError

# name -> (module, class); imported lazily so ``tfuad --help`` stays fast.
_REGISTRY = {
    "dae": ("tfuad.models.autoencoders", "DenseAE"),
    "dvae": ("tfuad.models.autoencoders", "DenseVAE"),
    "sae": ("tfuad.models.autoencoders", "SpatialAE"),
    "svae": ("tfuad.models.autoencoders", "SpatialVAE"),
    "saegan": ("tfuad.models.adversarial", "SpatialAEGAN"),
    "anovaegan": ("tfuad.models.adversarial", "AnoVAEGAN"),
    "anogan": ("tfuad.models.adversarial", "AnoGAN"),
    "vae": ("tfuad.models.priors", "ResVAE"),
    "gmvae": ("tfuad.models.priors", "GMVAE"),
}

MODEL_NAMES = tuple(_REGISTRY)


def model_class(name: str):
    """The class registered under ``name``.

    Raises:
        ConfigError: for an unknown name (the message lists the known ones).
    """
    key = str(name).lower()
    if key not in _REGISTRY:
        raise ConfigError(f"unknown model name {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    module, cls = _REGISTRY[key]
    return getattr(importlib.import_module(module), cls)


def build_model(name: str, precision: str | None = None, **kwargs):
    """Instantiate the model ``name`` with keyword arguments of its constructor.

    Args:
        name: A name of :data:`MODEL_NAMES`.
        precision: ``"float32"``, ``"mixed_bfloat16"`` or ``"auto"``
            (:func:`tfuad.precision.resolve_precision`); default: Keras'
            global dtype policy. Stored in the model's config as its ``dtype``.
        **kwargs: Constructor arguments.

    Raises:
        ConfigError: for an unknown name or precision, or both ``precision`` and ``dtype``.
    """
    cls = model_class(name)
    if precision is not None:
        from tfuad.precision import resolve_precision

        if "dtype" in kwargs:
            raise ConfigError("give the precision either as precision= or as dtype=, not both")
        kwargs["dtype"] = resolve_precision(precision)
    return cls(**kwargs)
