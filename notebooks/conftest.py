"""Notebooks run by ``pytest --nbmake`` (and ``make test``) use quick mode unless told otherwise.

The kernel inherits this process's environment; ``TFUAD_NOTEBOOK_QUICK=0`` runs them in full.
"""
import os

os.environ.setdefault("TFUAD_NOTEBOOK_QUICK", "1")
