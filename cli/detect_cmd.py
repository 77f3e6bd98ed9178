"""``tfuad detect INPUT...``: anomaly maps and lesion masks for new scans."""
from __future__ import annotations

import click

from tfuad.cli.options import (
    FPR,
    batch_size_option,
    derivatives_option,
    method_option,
    precision_option,
    schedule_options,
)


@click.command("detect")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", "run_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Trained and calibrated run directory.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: one folder per subject (OUT/<subject>/).")
@method_option()
@click.option("--fpr", type=FPR, default=None,
              help="Threshold at this calibrated FPR limit (e.g. 0.05) [default: 0.05].")
@click.option("--percentile", type=float, default=None, help="Use the calibrated percentile threshold instead (98).")
@click.option("--modality", default=None,
              help="Modality to read from dataset folders; must be the model's [default: the model's].")
@click.option("--brain-mask", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Brain mask for a single input file [default: its non-zero voxels].")
@click.option("--force", is_flag=True,
              help="Add outputs to an existing OUT/<subject> folder that tfuad detect did not write (its other "
                   "files are kept). Without it such a folder is refused.")
@click.option("--shard", default=None, metavar="K/N",
              help="Score only shard K of N of the subjects (K from 0, e.g. $SLURM_ARRAY_TASK_ID/10): every N-th "
                   "of the sorted subject ids from position K. Shards may share --out.")
@click.option("--bids-derivatives", is_flag=True,
              help="Write OUT as a BIDS derivatives dataset: dataset_description.json and "
                   "OUT/sub-X/[ses-Y/]anat/sub-X_[ses-Y_]desc-anomaly_<suffix>.nii.gz, ..._label-lesion_mask.nii.gz.")
@click.option("--raw", is_flag=True,
              help="INPUTs are raw scans (scanner space, whole head): each is preprocessed as the run's training "
                   "data were (reorientation, N4, registration, brain extraction, standardisation: the steps "
                   "'tfuad preprocess' recorded and 'tfuad train' copied into the run), scored on the template "
                   "grid, and its map (linear) and mask (nearest neighbour) are written back on the scan's own "
                   "grid, affine and header. Without --raw the inputs must already be preprocessed.")
@click.option("--template-space", is_flag=True,
              help="With --raw, also write the template-grid map, mask, preprocessed image and brain mask "
                   "(<name>_template.nii.gz).")
@derivatives_option
@schedule_options()
@precision_option
@batch_size_option
def command(inputs, run_dir, out_dir, method, fpr, percentile, modality, brain_mask, force, shard, bids_derivatives,
            raw, template_space, derivatives, schedule, max_steps, precision, batch_size):
    """Detect lesions in INPUT volumes (NIfTI files or dataset folders).

    For each subject writes the folder OUT/<subject>/, as one set (a killed run
    leaves no mixed files): <subject>_anomaly.nii.gz (continuous map) and
    <subject>_lesions.nii.gz (binary mask at the calibrated threshold), both
    with the input's affine and header so they overlay it in ITK-SNAP or
    FSLeyes, <subject>_overview.png, and detection.json (run, method,
    threshold, input). A file's subject is its name without extension; a
    dataset's subjects keep their ids. Inputs are never modified, and an
    existing OUT/<subject> is replaced only when tfuad detect wrote it; a set
    finished before for the same input, run, method and threshold is kept, not
    redone. INPUT may also be a folder holding one DICOM series, or a BIDS
    dataset.

    \b
    Example:
      tfuad detect sub-01_flair.nii.gz --model runs/svae --out detections --fpr 0.05
      tfuad detect bids_root --model runs/svae --out bids_root/derivatives/tfuad --bids-derivatives \\
          --shard $SLURM_ARRAY_TASK_ID/10
      tfuad detect scanner_T1.nii.gz --raw --model runs/ixi_svae --out detections --template-space
    """
    from tfuad.data.shards import parse_shard
    from tfuad.workflows.detect import detect_to_files

    detect_to_files(run_dir, inputs, out_dir, method=method, fpr=fpr, percentile=percentile, modality=modality,
                    brain_mask=brain_mask, force=force, batch_size=batch_size, schedule=schedule,
                    max_steps=max_steps, precision=precision, log=click.echo,
                    shard=parse_shard(shard) if shard is not None else None, bids_derivatives=bids_derivatives,
                    raw=raw, template_space=template_space, derivatives=derivatives)
