"""Workflows: the jobs a user runs, composed from the layers below.

* :mod:`~tfuad.workflows.calibrate`: thresholds and method settings on healthy data;
* :mod:`~tfuad.workflows.evaluate`: scores, tables and figures on labelled subjects;
* :mod:`~tfuad.workflows.detect`: volumes in, NIfTI maps, masks and overviews out;
* :mod:`~tfuad.workflows.export`: what a served model bakes in, read and checked.

The command line (``tfuad.cli``) and the SavedModel writer (``tfuad.export``)
are faces over these: they parse, call one workflow and print.
"""
