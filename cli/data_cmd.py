"""``tfuad data``: the demo dataset and a look at dataset folders."""
from __future__ import annotations

import click

from tfuad.cli.options import derivatives_option


@click.group()
def data():
    """Datasets: make the demo dataset, inspect a dataset folder."""


@data.command("demo")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write the dataset into (created; must be empty or an earlier demo dataset).")
@click.option("--seed", default=0, show_default=True, help="Random seed: the same seed writes the same data.")
@click.option("--size", type=click.Choice(["small", "large"]), default="small", show_default=True,
              help="small: a few subjects for quick runs and CI; large: more subjects for real comparisons.")
@click.option("--figure", type=click.Path(dir_okay=False), default=None,
              help="Also draw an overview PNG of the contrasts and lesions.")
def demo(out_dir, seed, size, figure):
    """Write the built-in demo dataset.

    Synthetic T1-, T2- and FLAIR-like scans made from the MNI152 2009 template
    that nilearn ships (tissue maps, smooth random deformations, bias fields,
    noise), healthy subjects for training and calibration, and subjects with
    MS-like white-matter lesions or tumour-like masses with ground-truth masks
    for testing. Layout: OUT/manifest.csv, OUT/<subject>/<subject>_<modality>.nii.gz.
    """
    from tfuad.data.demo import make_demo_dataset, render_demo_overview

    manifest = make_demo_dataset(out_dir, seed=seed, size=size, progress=True)
    click.echo(f"wrote {manifest}")
    if figure:
        click.echo(f"wrote {render_demo_overview(manifest, figure)}")


@data.command("info")
@click.argument("dataset", type=click.Path(exists=True))
@click.option("--protocol", default=None, help="Assign splits from a named protocol (e.g. brats-healthy-slices).")
@derivatives_option
def info(dataset, protocol, derivatives):
    """List the subjects, modalities, masks and splits found in DATASET (a folder or manifest CSV)."""
    from tfuad.data.layouts import discover

    ds = discover(dataset, derivatives=derivatives)
    if protocol:
        ds = ds.with_protocol(protocol)
    click.echo(f"{ds.root}: layout {ds.layout}, {len(ds.subjects)} subjects, modalities {', '.join(ds.modalities)}")
    for s in ds.subjects:
        lesion = "lesion mask" if s.lesion_mask else ("healthy" if getattr(s, "healthy", False) else "no lesion mask")
        split = f" [{s.split}]" if s.split else ""
        click.echo(f"  {s.id}{split}: {', '.join(sorted(s.images))}; {lesion}")
