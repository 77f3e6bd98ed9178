"""The ``tfuad`` command: ``tfuad COMMAND --help`` explains each step.

Pipeline::

    tfuad data demo      write the built-in demo dataset
    tfuad preprocess     raw scans to model-ready volumes (registration, brain extraction, standardisation)
    tfuad merge          one manifest and QC table from the outputs of sharded preprocess/detect runs
    tfuad train MODEL    train a normative model on healthy slices
    tfuad calibrate      thresholds (98th percentile, FPR limits) and λ for MAP-TV
    tfuad detect         anomaly maps and lesion masks for new scans (NIfTI in, NIfTI out)
    tfuad evaluate       metrics with intervals, tables and figures on a labelled dataset
    tfuad crossval MODEL k-fold cross-validation: train, calibrate and evaluate every fold, one report
    tfuad compare        several evaluation reports side by side, with paired tests
    tfuad export         SavedModel with TF-Serving signatures
"""
from __future__ import annotations

import os
import sys

import click

from tfuad.errors import TfuadError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN kernels make the MAP-TV restoration step about 1.5x faster on CPUs where TensorFlow leaves
# them off by default (benchmarks/restoration_speed.py); export TF_ENABLE_ONEDNN_OPTS=0 to opt out.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


class _Group(click.Group):
    """Turns :class:`TfuadError` into a one-line ``Error: ...`` and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TfuadError as err:
            raise click.ClickException(str(err)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tfuad")
def main():
    """Unsupervised anomaly segmentation in brain MRI.

    Learn what healthy brains look like from healthy scans, then find and
    delineate lesions in new scans as deviations from that norm. Methods of
    Baur et al. 2018 (AE/VAE/GAN zoo, residual maps) and Chen et al. 2020
    (VAE/GMVAE priors, MAP-TV restoration).

    \b
    Quick start on the built-in demo data (scripts/demo.sh runs the same steps):
      tfuad data demo --out demo_data
      tfuad train vae --data demo_data --modality flair --out runs/vae --image-size 64 --epochs 20
      tfuad calibrate runs/vae --data demo_data --method residual --method intensity
      tfuad detect demo_data/sub-test002/sub-test002_flair.nii.gz --model runs/vae --out detections --fpr 0.05
      tfuad evaluate --model runs/vae --data demo_data --out report
    """
    if click.get_current_context().invoked_subcommand in TENSORFLOW_COMMANDS:
        import_tensorflow_quietly()


#: Commands that run networks: TensorFlow is imported before them, its start-up lines filtered.
TENSORFLOW_COMMANDS = ("train", "calibrate", "detect", "evaluate", "crossval", "export")
#: Start-up lines of TensorFlow and its CUDA and oneDNN layers that say nothing to a user.
STARTUP_NOISE = ("absl::InitializeLog", "cudart_stub", "cuInit", "cuda_platform", "cuda_executor", "cuda drivers",
                 "oneDNN custom operations", "cpu_feature_guard", "To enable the following instructions",
                 "rebuild TensorFlow with the appropriate compiler flags", "Unable to register cu",
                 "computation placer")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and start its devices with the process's error output captured.

    TensorFlow's C++ layers write their start-up messages straight to file
    descriptor 2 before any log level applies; they are read back and only
    lines that are not start-up noise (:data:`STARTUP_NOISE`) are passed on.
    """
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # loads the device libraries; the runtime stays unstarted
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        lines = capture.read().decode("utf-8", "replace").splitlines()
    for line in lines:
        if line.strip() and not any(noise in line for noise in STARTUP_NOISE):
            print(line, file=sys.stderr)


def _register():
    from tfuad.cli import (
        calibrate_cmd,
        compare_cmd,
        crossval_cmd,
        data_cmd,
        detect_cmd,
        evaluate_cmd,
        export_cmd,
        merge_cmd,
        preprocess_cmd,
        train_cmd,
    )

    main.add_command(data_cmd.data)
    main.add_command(train_cmd.train)
    for module in (calibrate_cmd, detect_cmd, evaluate_cmd, crossval_cmd, compare_cmd, export_cmd, preprocess_cmd,
                   merge_cmd):
        main.add_command(module.command)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
