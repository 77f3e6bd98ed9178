"""ANTsPy registration of the whole-head IXI T1 scans, for comparison with the package's SimpleITK one.

Runs in its own environment, because ``antspyx`` pins numpy and scipy below this package's::

    python3 -m venv .venv-ants && .venv-ants/bin/pip install antspyx==0.6.3

For every scan it registers the same input the SimpleITK benchmark registers (the pipeline's N4 and
curvature flow, cached by ``benchmarks/registration_qc.py`` in ``--corrected``) to the same
MNI152 2 mm template (``template.nii.gz``, written into ``--out`` by ``registration_qc.py``), resamples the scan onto
the template grid and writes ``<out>/<label>/<subject>.nii.gz`` with a ``<subject>.json`` record
of the CPU and wall seconds. ``registration_qc.py --label <label>`` then scores those volumes
with the package's QC and draws the montage, exactly as for its own registrations.

Variants (``--variant``):
    affine      ``ants.registration(type_of_transform="Affine")``: mutual information, four
                resolutions, started from the centres of mass; ANTsPy's usual call.
    affine-mask the same with the metric restricted to the template's brain mask dilated by 8 mm.
    search      ``ants.affine_initializer`` first (a search over rotations of ±20° about every
                axis, then a short affine fit from each), then ``Affine`` from its best start.
    n4-affine   ANTsPy's own N4 (``ants.n4_bias_field_correction``, its defaults) on the raw scan in
                place of the pipeline's, then ``Affine``; the N4 seconds are recorded apart.

Example (after ``registration_qc.py ... --out runs/ixi_qc``):
    .venv-ants/bin/python benchmarks/ants_registration.py ../shared/data/ixi_t1 --out runs/ixi_qc \\
        --corrected runs/regqc/corrected --variant affine
    .venv/bin/python benchmarks/registration_qc.py ../shared/data/ixi_t1 --out runs/ixi_qc --label ants_affine
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")  # CPU seconds comparable per scan

import ants  # noqa: E402  (after the thread setting, which ITK reads once)

VARIANTS = ("affine", "affine-mask", "search", "n4-affine")


def register(moving, fixed, variant: str, fixed_mask=None) -> list:
    """The forward transforms of ``moving`` onto ``fixed``."""
    options = {}
    if variant == "affine-mask":
        options["mask"] = fixed_mask
    elif variant == "search":
        options["initial_transform"] = ants.affine_initializer(
            fixed, moving, search_factor=20, radian_fraction=0.12, use_principal_axis=False,
            local_search_iterations=10, txfn=None)
    return ants.registration(fixed, moving, type_of_transform="Affine", **options)["fwdtransforms"]


def one(path: Path, args, fixed, fixed_mask) -> dict:
    """Register one scan (skipped when its record exists) and return its record."""
    sid = path.name.split("_")[0]
    label = args.label or f"ants_{args.variant.replace('-', '_')}"
    folder = args.out / label
    record_path = folder / f"{sid}.json"
    if record_path.is_file():
        return json.loads(record_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    record = {"subject": sid, "image": "head", "start": args.variant}
    if args.variant == "n4-affine":
        raw = ants.image_read(str(path))
        cpu, wall = time.process_time(), time.perf_counter()
        moving = ants.n4_bias_field_correction(raw)
        record["n4_cpu_s"] = round(time.process_time() - cpu, 2)
        record["n4_wall_s"] = round(time.perf_counter() - wall, 2)
    else:
        moving = ants.image_read(str(args.corrected / path.name))
    cpu, wall = time.process_time(), time.perf_counter()
    transforms = register(moving, fixed, args.variant, fixed_mask)
    record["register_cpu_s"] = round(time.process_time() - cpu, 2)
    record["register_wall_s"] = round(time.perf_counter() - wall, 2)
    out = ants.apply_transforms(fixed=fixed, moving=moving, transformlist=transforms, interpolator="linear")
    tmp = folder / f".{sid}.tmp.nii.gz"
    ants.image_write(out, str(tmp))
    tmp.replace(folder / f"{sid}.nii.gz")
    record_path.write_text(json.dumps(record))
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="Folder of IXI T1 scans.")
    parser.add_argument("--out", type=Path, required=True, help="Where registration_qc.py keeps its runs.")
    parser.add_argument("--corrected", type=Path, required=True,
                        help="registration_qc.py's cache of the pipeline's N4 + curvature flow.")
    parser.add_argument("--variant", choices=VARIANTS, default="affine")
    parser.add_argument("--label", default=None, help="Run name (default ants_<variant>).")
    parser.add_argument("--part", default=None, help="K/N: every N-th scan from the K-th (0-based).")
    parser.add_argument("--seed", type=int, default=1,
                        help="Seed of ANTs' random metric sampling (ants.config.set_ants_deterministic), so a "
                             "rerun gives the same volumes; 0: unseeded (ANTs then seeds from the clock), as "
                             "ANTsPy runs by default.")
    args = parser.parse_args(argv)
    if args.seed > 0:
        ants.config.set_ants_deterministic(True, args.seed)
    fixed = ants.image_read(str(args.out / "template.nii.gz"))
    fixed_mask = None
    if args.variant == "affine-mask":
        mask = ants.image_read(str(args.out / "template_brainmask.nii.gz"))
        fixed_mask = ants.iMath(mask, "MD", 4)  # 4 voxels of 2 mm
    scans = sorted(args.data.glob("IXI*_T1.nii.gz"))
    if args.part:
        k, n = (int(v) for v in args.part.split("/"))
        scans = scans[k::n]
    for path in scans:
        print(json.dumps(one(path, args, fixed, fixed_mask)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
