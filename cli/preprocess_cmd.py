"""``tfuad preprocess INPUT...``: raw scans into model-ready volumes on the template grid."""
from __future__ import annotations

import sys

import click

from tfuad.cli.options import derivatives_option


def _steps(ctx, param, value):
    from tfuad.errors import ConfigError
    from tfuad.preprocess.pipeline import DEFAULT_STEPS, parse_steps

    if value is None:
        return DEFAULT_STEPS
    try:
        return parse_steps(value)
    except ConfigError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from None


@click.command("preprocess")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: a dataset (manifest.csv) that train, calibrate and evaluate read directly.")
@click.option("--modality", default="t1", show_default=True,
              help="Modality to read from dataset folders and to name the outputs (t1, t2, flair, ...).")
@click.option("--template", default="mni152", show_default=True, help="Template (the MNI152 2009 of nilearn).")
@click.option("--resolution", type=click.Choice(["1", "2"]), default="2", show_default=True,
              help="Template grid (mm).")
@click.option("--steps", default=None, callback=_steps,
              help="Comma-separated steps [default: reorient,bias,denoise,register,resample,extract,normalize]; "
                   "'all'. Leave out 'extract' for skull-stripped scans (their non-zero voxels are the brain).")
@click.option("--registration", type=click.Choice(["rigid", "affine"]), default="affine", show_default=True)
@click.option("--standardize-fit", is_flag=True,
              help="Learn a histogram standardisation from these subjects; saved as OUT/standardizer.json.")
@click.option("--standardize-reference", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Apply a saved standardizer.json (e.g. of the training set) to these subjects.")
@click.option("--normalize", type=click.Choice(["unit", "none"]), default="unit", show_default=True,
              help="unit: standard scale (or per-volume percentiles) to [0, 1]; none: keep intensities.")
@click.option("--denoise-iterations", default=3, show_default=True, help="Curvature-flow iterations.")
@click.option("--split", type=click.Choice(["train", "calib", "test"]), default=None,
              help="Split written in the manifest for every subject [default: the input's].")
@click.option("--calib", default=0, show_default=True,
              help="Put this many subjects (spread over the sorted ids) in the 'calib' split.")
@click.option("--seed", default=0, show_default=True, help="Seed of the registration's voxel sampling.")
@click.option("--refine-mask/--no-refine-mask", default=False, show_default=True,
              help="Trim dark voxels at the border of the carried-over template brain mask.")
@click.option("--jobs", "workers", default=1, show_default=True, help="Subjects processed in parallel.")
@click.option("--shard", default=None, metavar="K/N",
              help="Run only shard K of N of the cohort (K from 0, e.g. $SLURM_ARRAY_TASK_ID/10): every N-th of "
                   "the sorted subject ids from position K. Shards may share --out; 'tfuad merge' writes the "
                   "manifest and QC table of all of them.")
@derivatives_option
def command(inputs, out_dir, modality, template, resolution, steps, registration, standardize_fit,
            standardize_reference, normalize, denoise_iterations, split, calib, seed, refine_mask, workers, shard,
            derivatives):
    """Preprocess raw scans (NIfTI files or dataset folders) for training and detection.

    Steps, in order, each optional and recorded: reorient, N4 bias-field
    correction, curvature-flow denoising, rigid+affine registration to the
    MNI152 template, atlas-based brain extraction, resampling to the template
    grid, histogram standardisation, normalisation. Lesion masks follow the
    spatial steps (nearest neighbour). Writes OUT/<subject>/ (volume, brain
    mask, lesion mask, preprocess.json), OUT/qc/<subject>.png,
    OUT/qc_montage.png, OUT/qc.csv and OUT/manifest.csv. A subject that fails is
    reported on one line and skipped; the exit code is then 1. Every registered
    subject gets a QC score (correlation with the template, brain mask against
    the head); one that fails QC is still written but marked qc=fail in the
    manifest (training leaves it out unless --include-failed-qc), framed in red
    in the montage and listed at the end. A subject an earlier run
    finished with the same settings is not redone (except with
    --standardize-fit). INPUT may also be a folder holding one DICOM series.

    \b
    Example:
      tfuad preprocess ../shared/data/ixi_t1 --out prep/ixi --standardize-fit --split train --calib 8
      tfuad preprocess ../shared/data/brats18 --out prep/brats --steps reorient,bias,register,resample,normalize \\
          --standardize-reference prep/ixi/standardizer.json --split test
      tfuad preprocess cohort/ --out prep/cohort --standardize-reference prep/ixi/standardizer.json \\
          --shard $SLURM_ARRAY_TASK_ID/10      # then: tfuad merge prep/cohort --out prep/cohort
    """
    from tfuad.errors import ConfigError
    from tfuad.preprocess.pipeline import PreprocessOptions, jobs_from_inputs, run_batch

    if standardize_fit and standardize_reference:
        raise ConfigError("give either --standardize-fit or --standardize-reference, not both")
    options = PreprocessOptions(
        modality=modality.lower(), steps=steps, template=template, resolution=int(resolution),
        registration=registration,
        standardize="fit" if standardize_fit else ("apply" if standardize_reference else None),
        standardizer=standardize_reference, normalize=normalize, denoise_iterations=denoise_iterations,
        split=split, calib=calib, seed=seed, refine_mask=refine_mask)
    from tfuad.data.shards import parse_shard

    shard = parse_shard(shard) if shard is not None else None
    jobs = jobs_from_inputs(inputs, options.modality, derivatives=derivatives)
    result = run_batch(jobs, out_dir, options, workers=workers, log=click.echo, shard=shard)
    seconds = [r["seconds"] for r in result.done.values() if "seconds" in r]
    per = f", {sum(seconds) / len(seconds):.1f} s per subject" if seconds else ""
    total = len(result.done) + len(result.failed)
    of = f"{total} of shard {shard[0]}/{shard[1]} ({len(jobs)} in the cohort)" if shard else f"{len(jobs)}"
    click.echo(f"preprocessed {len(result.done)} of {of} subjects in {result.seconds:.0f} s{per}"
               + (f" ({len(result.skipped)} finished before)" if result.skipped else "")
               + (f"; wrote {result.manifest}" if result.manifest else "")
               + (f"; wrote {result.shard_record}" if result.shard_record else ""))
    if result.qc_failed:
        click.echo(f"{len(result.qc_failed)} failed registration QC (marked qc=fail in the manifest, left out of "
                   "training unless --include-failed-qc):", err=True)
        for subject, line in sorted(result.qc_failed.items()):
            click.echo(f"  {subject}: {line}", err=True)
    if result.failed:
        click.echo(f"{len(result.failed)} failed: {', '.join(sorted(result.failed))}", err=True)
        sys.exit(1)
