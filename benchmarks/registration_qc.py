"""Registration of whole-head IXI T1 scans, scored by the registration QC.

For every scan: the pipeline's N4 and curvature flow (cached in ``--out/corrected``), then the
SimpleITK registration to the MNI152 2 mm template with the whole head only (``--scalp-mm 0``)
or also without the scalp (``--scalp-mm 8``, the default for whole-head scans), from the starts
turned by each of ``--pitches`` (default :data:`tfuad.preprocess.registration.PITCHES`; ``0``:
no rotation search), the image resampled onto the template grid, and
:func:`tfuad.preprocess.qc.registration_qc` with the template's brain mask carried over.
Writes the template (``template.nii.gz``, ``template_brainmask.nii.gz``), ``<label>.csv``
(QC scores with the residual rotation, pass/fail, the image and start kept, registration CPU seconds)
and ``<label>_montage.png`` (failures framed in red). ``--part K/N`` runs every N-th scan from the
K-th, so several processes share a batch; a second call without ``--part`` only gathers the table
and montage, judging the stored scores by today's thresholds.

Example:
    python benchmarks/registration_qc.py ../shared/data/ixi_t1 --out runs/regqc --scalp-mm 8 --pitches 0 \\
        --label no_search
    python benchmarks/registration_qc.py ../shared/data/ixi_t1 --out runs/regqc --label after2 \\
        --figure docs/ixi_registration_qc.png
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from tfuad.data.nifti import load_volume, save_volume
from tfuad.preprocess import bias, denoise, registration
from tfuad.preprocess.io import from_sitk, to_sitk
from tfuad.preprocess.qc import QC_THRESHOLDS, failed_scores, plot_montage, registration_qc
from tfuad.preprocess.template import load_template


def corrected(path: Path, cache: Path) -> sitk.Image:
    """The scan after the pipeline's N4 and curvature flow (cached)."""
    out = cache / path.name
    if out.is_file():
        return sitk.ReadImage(str(out), sitk.sitkFloat32)
    volume = load_volume(path)
    image, _ = bias.n4_correct(to_sitk(volume.data, volume.affine), None, shrink=2)
    image, _ = denoise.curvature_flow(image, iterations=3)
    cache.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(out))
    return image


def scores(data: np.ndarray, tpl) -> dict:
    """The QC columns of a registered scan on the template grid."""
    qc = registration_qc(data, tpl.mask, tpl.image, tpl.mask, voxel_mm=float(tpl.resolution))
    return {"qc": "pass" if qc["pass"] else "fail", **{k: qc[k] for k in QC_THRESHOLDS},
            "rotation": " ".join(f"{r:g}" for r in qc["rotation"]), "failed": " ".join(qc["failed"])}


def one(path: Path, out: Path, label: str, scalp_mm: float, pitches: tuple, tpl) -> dict:
    """One scan's row, registered and scored (a stored row scored by today's QC when a score is missing)."""
    sid = path.name.split("_")[0]
    record_path = out / label / f"{sid}.json"
    if record_path.is_file():
        row = json.loads(record_path.read_text())
        if any(k not in row for k in QC_THRESHOLDS):
            row.update(scores(load_volume(out / label / f"{sid}.nii.gz").data, tpl))
            record_path.write_text(json.dumps(row))
        return row
    image = corrected(path, out / "corrected")
    fixed = to_sitk(tpl.image, tpl.affine)
    cpu = time.process_time()
    transform, info = registration.register(image, fixed, to_sitk(tpl.mask, tpl.affine), scalp_mm=scalp_mm,
                                            pitches=pitches)
    cpu = time.process_time() - cpu
    data = from_sitk(registration.resample(image, fixed, transform))[0]
    save_volume(data, tpl.affine, out / label / f"{sid}.nii.gz")
    row = {"subject": sid, **scores(data, tpl), "image": info["image"], "start": info["start"],
           "register_cpu_s": round(cpu, 2), "register_wall_s": info["seconds"]}
    record_path.write_text(json.dumps(row))
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="Folder of IXI T1 scans.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scalp-mm", type=float, default=registration.SCALP_MM)
    parser.add_argument("--pitches", default=",".join(f"{p:g}" for p in registration.PITCHES),
                        help="Initial pitches (degrees, comma-separated) tried from each start.")
    parser.add_argument("--label", default="after")
    parser.add_argument("--part", default=None, help="K/N: every N-th scan from the K-th (0-based).")
    parser.add_argument("--figure", type=Path, default=None, help="Also copy the montage here.")
    args = parser.parse_args(argv)
    tpl = load_template(2)
    args.out.mkdir(parents=True, exist_ok=True)  # the template, also for benchmarks/ants_registration.py
    save_volume(tpl.image, tpl.affine, args.out / "template.nii.gz")
    save_volume(tpl.mask, tpl.affine, args.out / "template_brainmask.nii.gz", dtype=np.uint8)
    pitches = tuple(float(p) for p in args.pitches.split(","))
    scans = sorted(args.data.glob("IXI*_T1.nii.gz"))
    if args.part:
        k, n = (int(v) for v in args.part.split("/"))
        for path in scans[k::n]:
            row = one(path, args.out, args.label, args.scalp_mm, pitches, tpl)
            print(json.dumps(row), flush=True)
        return 0
    rows = [one(path, args.out, args.label, args.scalp_mm, pitches, tpl) for path in scans]
    for row in rows:  # pass/fail from the scores and today's thresholds
        row["failed"] = " ".join(failed_scores(row))
        row["qc"] = "fail" if row["failed"] else "pass"
    with open(args.out / f"{args.label}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    failed = {r["subject"] for r in rows if r["qc"] == "fail"}
    items = [(r["subject"], {"image": args.out / args.label / f"{r['subject']}.nii.gz",
                             "brain_mask": args.out / "template_brainmask.nii.gz"}) for r in rows]
    montage = plot_montage(items, args.out / f"{args.label}_montage.png", failed=failed)
    if args.figure:
        args.figure.write_bytes(montage.read_bytes())
    cpu = [r["register_cpu_s"] for r in rows]
    print(f"{args.label}: {len(rows) - len(failed)} of {len(rows)} pass QC; registration "
          f"{np.mean(cpu):.1f} s CPU per scan (median {np.median(cpu):.1f}); failed: {', '.join(sorted(failed))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
