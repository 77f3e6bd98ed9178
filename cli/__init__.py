"""The ``tfuad`` command line (installed as ``tfuad.cli``)."""
