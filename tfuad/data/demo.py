"""The built-in demo dataset: synthetic T1/T2/FLAIR brains made from the MNI152 template.

Every subject starts from the MNI152 2009 grey-matter, white-matter and brain
templates that nilearn ships inside its package (nothing is downloaded). Each
subject gets its own anatomy (a slight global scaling and rotation, a smooth
random deformation and a larger or smaller ventricular system), T1-, T2- and
FLAIR-like contrasts with per-subject tissue intensities and scanner gain, a
smooth multiplicative bias field and Rician noise. Test subjects carry one of
four lesion types, chosen so that the data show when a normative model is
needed and when an intensity threshold is enough:

* ``ms``: periventricular white-matter lesions, bright in FLAIR and T2;
* ``tumour``: a mass with a necrotic centre, a surrounding edema and mass
  effect, bright in FLAIR and T2;
* ``cavity``: fluid-filled cavities in the deep white matter (old-infarct- or
  cyst-like) holding the subject's own CSF: dark in FLAIR, as bright as the
  ventricles in T2, so no global threshold separates them from healthy CSF;
* ``heterotopia``: grey-matter nodules in the periventricular white matter,
  iso-intense to the subject's own cortex in every contrast: visible only by
  where they are.

Volumes are skull-stripped (background exactly 0) on the 2 mm MNI grid
(91 x 109 x 91).

Layout written to ``out_dir``::

    tfuad_demo.json          layout marker, seed, size and subject counts
    manifest.csv             subject,split,t1,t2,flair,brain_mask,lesion_mask
    sub-train000/sub-train000_{t1,t2,flair}.nii.gz, sub-train000_brainmask.nii.gz
    sub-calib000/...
    sub-test000/... and sub-test000_seg.nii.gz (lesion mask, uint8 0/1)

Example:
    >>> manifest = make_demo_dataset("demo_data", seed=0)          # doctest: +SKIP
    >>> render_demo_overview(manifest, "demo_overview.png")       # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import csv
import functools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from tfuad.data.layouts import DEMO_MARKER_NAME, MANIFEST_NAME, read_manifest
from tfuad.data.nifti import load_mask, load_volume, save_volume
from tfuad.errors import ConfigError, DatasetError
from tfuad.files import atomic_path

__all__ = [
    "make_demo_dataset",
    "render_demo_overview",
    "mni152_tissues",
    "TissueTemplate",
    "DEMO_LAYOUT",
    "DEMO_SIZES",
    "MODALITIES",
    "MANIFEST_COLUMNS",
    "LESION_KINDS",
    "LESION_DESCRIPTIONS",
    "demo_lesion_types",
]

#: Value of ``"layout"`` in the marker file.
DEMO_LAYOUT = "tfuad-demo"

#: Subjects per split, ``(train, calib, test)``, of each size preset.
DEMO_SIZES = {"small": (6, 2, 8), "large": (30, 6, 16)}

#: The contrasts written for every subject.
MODALITIES = ("t1", "t2", "flair")

#: Header of ``manifest.csv``; file paths are relative to the dataset folder.
MANIFEST_COLUMNS = ("subject", "split", "t1", "t2", "flair", "brain_mask", "lesion_mask")

_VERSION = 2
_TEMPLATE_NAME = "MNI152 2009 (nilearn), 2 mm"
_SPLITS = ("train", "calib", "test")
#: Test subject ``i`` carries lesions of kind ``LESION_KINDS[i % 4]``.
LESION_KINDS = ("ms", "tumour", "cavity", "heterotopia")
#: What each lesion kind looks like, for tables and figures.
LESION_DESCRIPTIONS = {
    "ms": "bright: MS-like lesions",
    "tumour": "bright: tumour-like mass",
    "cavity": "dark in FLAIR, CSF-bright in T2: fluid cavity",
    "heterotopia": "iso-intense: grey-matter nodules",
}
#: MS-like lesion fragments smaller than this (voxels) are removed.
_MIN_LESION_VOXELS = 5
_SUBJECT_DIR = re.compile(r"^sub-(train|calib|test)\d{3}$")
_FILE_SUFFIXES = (*MODALITIES, "brainmask", "seg")

#: The FSL 2 mm MNI bounding box (91 x 109 x 91 voxels) inside nilearn's 2 mm grid.
_CROP = (slice(4, 95), slice(4, 113), slice(0, 91))

#: Mean intensity of CSF, GM and WM in each contrast (before per-subject variation).
_TISSUE_MEANS = {
    "t1": (0.30, 0.62, 0.86),
    "t2": (1.00, 0.62, 0.42),
    "flair": (0.12, 0.62, 0.48),
}
#: Mean intensity of the lesion compartments in each contrast.
_LESION_MEANS = {
    "ms": {"t1": 0.50, "t2": 0.85, "flair": 0.95},
    "solid": {"t1": 0.48, "t2": 0.78, "flair": 0.88},
    "necrosis": {"t1": 0.24, "t2": 0.95, "flair": 0.72},
    "edema": {"t1": 0.58, "t2": 0.82, "flair": 0.98},
    # These take a mix of the subject's own tissue intensities (weights given with the lesion):
    # nothing but their place tells them apart.
    "cavity": "own",
    "heterotopia": "own",
}


@dataclass(frozen=True)
class TissueTemplate:
    """Tissue probability maps of the MNI152 2009 template on the 2 mm grid.

    All arrays are read-only float32 of shape ``(91, 109, 91)`` in RAS+ voxel order.

    Attributes:
        gm, wm, csf: Grey matter, white matter and CSF probabilities (zero outside the brain).
        brain: Brain mask (1 inside, 0 outside).
        ventricles: The two lateral ventricles (1 inside, 0 outside).
        affine: The voxel-to-MNI affine (2 mm voxels).
    """

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    ventricles: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple:
        return self.gm.shape


@functools.lru_cache(maxsize=1)
def mni152_tissues() -> TissueTemplate:
    """Load the MNI152 2009 tissue templates that nilearn ships (no download).

    CSF is the brain mask minus grey and white matter; the lateral ventricles are
    the two largest deep CSF regions. The result is cached.

    Returns:
        A :class:`TissueTemplate`.

    Example:
        >>> tpl = mni152_tissues()
        >>> tpl.shape
        (91, 109, 91)
    """
    from nilearn import datasets  # imported here: slow, and only needed to build the demo

    def load(image):
        image = image.slicer[_CROP]
        return np.asarray(image.get_fdata(), dtype=np.float32), image.affine

    brain, affine = load(datasets.load_mni152_brain_mask(resolution=2))
    brain = (brain > 0).astype(np.float32)
    gm = np.clip(load(datasets.load_mni152_gm_template(resolution=2))[0], 0, 1) * brain
    wm = np.clip(load(datasets.load_mni152_wm_template(resolution=2))[0], 0, 1) * brain
    csf = np.clip(brain - gm - wm, 0, 1)
    deep_csf = (csf > 0.5) & (ndi.distance_transform_edt(brain) > 8)
    labels, _ = ndi.label(deep_csf)
    largest = np.argsort(np.bincount(labels.ravel())[1:])[-2:] + 1
    ventricles = np.isin(labels, largest).astype(np.float32)
    arrays = [gm, wm, csf, brain, ventricles]
    for array in arrays:
        array.setflags(write=False)
    return TissueTemplate(*arrays, affine=np.asarray(affine, dtype=float))


# --------------------------------------------------------------------------- anatomy


@functools.cache
def _upsampling(n_coarse: int, n: int) -> np.ndarray:
    """``(n, n_coarse)`` matrix doing :func:`scipy.ndimage.zoom` (cubic spline) along one axis."""
    return np.stack([ndi.zoom(e, n / n_coarse, order=3, mode="nearest", grid_mode=True)
                     for e in np.eye(n_coarse, dtype=np.float32)], axis=1)


def _smooth_field(rng, coarse_shape, shape) -> np.ndarray:
    """Smooth random field: unit Gaussian noise on a coarse grid, cubic-upsampled to ``shape``.

    The spline zoom is separable, so it is applied one axis at a time as a small
    matrix product; leading axes of ``coarse_shape`` (components) are kept.
    """
    field = rng.standard_normal(coarse_shape).astype(np.float32)
    lead = len(coarse_shape) - len(shape)
    for axis, n in enumerate(shape, start=lead):
        field = np.moveaxis(np.tensordot(_upsampling(field.shape[axis], n), field, axes=(1, axis)), 0, axis)
    return field


def _rotation(angles) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@functools.lru_cache(maxsize=1)
def _ventricle_push() -> np.ndarray:
    """Displacement field (peak length 1 voxel) pointing towards the ventricles.

    Sampling the template at ``x + a * push`` enlarges the ventricles for ``a > 0``
    and shrinks them for ``a < 0``.
    """
    smooth = ndi.gaussian_filter(mni152_tissues().ventricles, 4.0)
    grad = np.stack(np.gradient(smooth)).astype(np.float32)
    grad /= np.sqrt((grad ** 2).sum(axis=0)).max()
    grad.setflags(write=False)
    return grad


def _subject_anatomy(rng, tpl: TissueTemplate) -> dict:
    """Warp the template into a new subject: tissue maps, brain mask and ventricles."""
    shape = tpl.shape
    grid = np.indices(shape, dtype=np.float32)
    centre = np.array(ndi.center_of_mass(tpl.brain), dtype=np.float32)
    scale = np.exp(rng.normal(0.0, 0.04, 3))
    matrix = (_rotation(np.deg2rad(rng.normal(0.0, 2.0, 3))) / scale).astype(np.float32)
    rel = grid - centre[:, None, None, None]
    coords = np.tensordot(matrix, rel, axes=1) + centre[:, None, None, None]
    coords += 1.6 * _smooth_field(rng, (3, 5, 6, 5), shape)    # ~3 mm, large-scale shape
    coords += 0.6 * _smooth_field(rng, (3, 11, 13, 11), shape)  # ~1 mm, local variation
    # Positive: ventricles grow (as with age-related atrophy); negative: they shrink.
    coords += float(np.clip(rng.normal(0.6, 0.7), -1.0, 2.0)) * _ventricle_push()
    brain = ndi.map_coordinates(tpl.brain, coords, order=1, mode="constant") > 0.5
    inside = coords[:, brain]  # tissue is only sampled where the warped brain is
    maps = {"brain": brain}
    for name in ("gm", "wm", "csf", "ventricles"):
        maps[name] = np.zeros(shape, np.float32)
        maps[name][brain] = ndi.map_coordinates(getattr(tpl, name), inside, order=1, mode="constant")
    return _normalised(maps)


def _normalised(maps: dict) -> dict:
    """Binarise the brain mask and make GM + WM + CSF sum to one inside it."""
    brain = maps["brain"] > 0.5
    tissues = np.stack([maps["csf"], maps["gm"], maps["wm"]]) * brain
    total = tissues.sum(axis=0)
    empty = brain & (total <= 1e-3)
    tissues[0][empty] = 1.0  # brain voxels without tissue: fluid
    tissues /= np.maximum(tissues.sum(axis=0), 1e-3)
    return {"csf": tissues[0], "gm": tissues[1], "wm": tissues[2], "brain": brain,
            "ventricles": maps["ventricles"] > 0.5}


# --------------------------------------------------------------------------- lesions


def _ramp(rho: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-ness: 1 well inside ``rho < 1``, 0 well outside, 0.5 on the border."""
    return np.clip((1.0 - rho) / width + 0.5, 0.0, 1.0)


def _rough_ellipsoid(rng, centre, radii, shape, reach: float, roughness: float, grain: float):
    """Normalised radius (< 1 inside) of a randomly oriented ellipsoid with an irregular border.

    Returns:
        ``(box, rho)``: the slices of the box around ``centre`` that extends
        ``reach`` voxels, and ``rho`` in that box.
    """
    box, offsets = _box(centre, reach, shape)
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    axes = (q * np.sign(np.diag(r))).astype(np.float32)
    local = np.tensordot(axes.T, offsets, axes=1) / np.asarray(radii, np.float32)[:, None, None, None]
    return box, np.sqrt((local ** 2).sum(axis=0)) + roughness * _blob_noise(rng, local.shape[1:], grain)


def _box(centre, reach: float, shape):
    """Slices of the box reaching ``reach`` voxels around ``centre``, and each voxel's offset from it."""
    box = tuple(slice(max(int(c - reach), 0), min(int(c + reach) + 1, n)) for c, n in zip(centre, shape))
    offsets = np.stack(np.meshgrid(*[np.arange(b.start, b.stop, dtype=np.float32) - c for b, c in zip(box, centre)],
                                   indexing="ij"))
    return box, offsets


def _blob_noise(rng, shape, grain: float) -> np.ndarray:
    """Smooth unit-variance noise (Gaussian-filtered, clipped to +-2) for irregular borders."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), grain)
    return np.clip(noise / max(float(noise.std()), 1e-6), -2.0, 2.0)


def _pick(rng, candidates: np.ndarray) -> np.ndarray:
    points = np.argwhere(candidates)
    return points[rng.integers(len(points))].astype(np.float32) + rng.uniform(-0.4, 0.4, 3).astype(np.float32)


def _ms_lesions(rng, anatomy: dict) -> dict:
    """Several small periventricular (and a few deep) white-matter lesions."""
    shape = anatomy["brain"].shape
    wm = anatomy["wm"]
    to_ventricle = ndi.distance_transform_edt(~anatomy["ventricles"])
    core_wm = (wm > 0.85) & anatomy["brain"]
    periventricular = core_wm & (to_ventricle >= 1.5) & (to_ventricle <= 5)
    deep = core_wm & (to_ventricle > 5)
    fraction = np.zeros(shape, np.float32)
    contrast = np.ones(shape, np.float32)
    for _ in range(int(rng.integers(4, 11))):
        centre = _pick(rng, periventricular if rng.random() < 0.75 or not deep.any() else deep)
        radius = rng.uniform(1.6, 3.6)
        radii = radius * np.array([rng.uniform(1.1, 1.6), 1.0, rng.uniform(0.7, 1.0)])
        box, rho = _rough_ellipsoid(rng, centre, radii, shape, 2.0 * radii.max() + 2,
                                    roughness=0.15, grain=1.0)
        soft = _ramp(rho, 0.35)
        stronger = soft > fraction[box]
        fraction[box] = np.where(stronger, soft, fraction[box])
        contrast[box] = np.where(stronger, np.float32(np.exp(rng.normal(0.0, 0.06))), contrast[box])
    fraction *= wm  # the lesion replaces white matter, not the GM/CSF part of a voxel
    label = _without_specks((fraction >= 0.25) & (wm >= 0.5) & anatomy["brain"], fraction)
    return {"label": label, "layers": [("ms", fraction, contrast)]}


def _blobs(rng, anatomy: dict, region: np.ndarray, count: int, radius: tuple, roughness: float) -> np.ndarray:
    """Soft fraction (0..1) of ``count`` rough, slightly elongated blobs centred in ``region``."""
    shape = anatomy["brain"].shape
    fraction = np.zeros(shape, np.float32)
    for _ in range(count):
        centre = _pick(rng, region)
        radii = rng.uniform(*radius) * np.array([rng.uniform(1.0, 1.3), 1.0, rng.uniform(0.8, 1.0)])
        box, rho = _rough_ellipsoid(rng, centre, radii, shape, 2.0 * radii.max() + 2, roughness=roughness,
                                    grain=1.0)
        fraction[box] = np.maximum(fraction[box], _ramp(rho, 0.35))
    return fraction


def _without_specks(label: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Drop 3D pieces of ``label`` too small to count as lesions (and their fraction, in place)."""
    pieces, _ = ndi.label(label)
    specks = np.isin(pieces, np.flatnonzero(np.bincount(pieces.ravel()) < _MIN_LESION_VOXELS))
    fraction[specks] = 0.0
    return label & ~specks


def _cavities(rng, anatomy: dict) -> dict:
    """One to three fluid-filled cavities in the deep white matter (old-infarct- or cyst-like).

    The cavity fills a voxel with the tissue mix of a typical ventricle voxel of
    the same subject (its median CSF fraction, the rest white matter): in FLAIR
    it is as dark as the ventricles, in T2 as bright; only its place in the
    white matter, far from any ventricle, makes it a lesion.
    """
    to_ventricle = ndi.distance_transform_edt(~anatomy["ventricles"])
    depth = ndi.distance_transform_edt(anatomy["brain"])
    region = (anatomy["wm"] > 0.9) & (to_ventricle > 8) & (depth > 10)
    fraction = _blobs(rng, anatomy, region, int(rng.integers(1, 4)), (3.5, 5.5), roughness=0.1)
    fraction *= anatomy["brain"]
    label = _without_specks((fraction >= 0.5) & anatomy["brain"], fraction)
    fill = float(np.median(anatomy["csf"][anatomy["ventricles"]]))
    return {"label": label, "layers": [("cavity", fraction, {"csf": fill, "wm": 1.0 - fill})]}


def _heterotopia(rng, anatomy: dict) -> dict:
    """Grey-matter nodules along the ventricles (periventricular nodular heterotopia).

    The nodules replace white matter with the tissue mix of a typical
    grey-matter voxel of the same subject (its median grey-matter fraction
    where grey matter dominates, the rest CSF), in every contrast: no
    intensity of theirs is abnormal, their place is.
    """
    to_ventricle = ndi.distance_transform_edt(~anatomy["ventricles"])
    core_wm = (anatomy["wm"] > 0.85) & anatomy["brain"]
    region = core_wm & (to_ventricle >= 2) & (to_ventricle <= 5)
    fraction = _blobs(rng, anatomy, region, int(rng.integers(3, 7)), (2.6, 4.0), roughness=0.12)
    fraction *= anatomy["wm"]  # the nodules replace white matter, not the CSF or GM part of a voxel
    label = _without_specks((fraction >= 0.4) & (anatomy["wm"] >= 0.5) & anatomy["brain"], fraction)
    grey = float(np.median(anatomy["gm"][anatomy["gm"] > 0.5]))
    return {"label": label, "layers": [("heterotopia", fraction, {"gm": grey, "csf": 1.0 - grey})]}


def _mass_effect(anatomy: dict, centre, radius: float, strength: float) -> dict:
    """Push tissue radially away from ``centre`` (the tumour displaces its surroundings)."""
    box, rel = _box(centre, 4.0 * radius, anatomy["brain"].shape)
    shrink = 1.0 - strength * np.exp(-(rel ** 2).sum(axis=0) / (2.0 * (1.2 * radius) ** 2))
    source = centre[:, None, None, None] + rel * shrink
    moved = {}
    for name in ("csf", "gm", "wm", "brain", "ventricles"):
        full = anatomy[name].astype(np.float32)
        full[box] = ndi.map_coordinates(full, source, order=1, mode="nearest")
        moved[name] = full
    return _normalised(moved)


def _tumour(rng, anatomy: dict) -> tuple[dict, dict]:
    """A mass with necrotic centre and solid rim, surrounded by white-matter edema."""
    shape = anatomy["brain"].shape
    core_radius = rng.uniform(6.0, 8.5)
    edema_width = rng.uniform(3.0, 5.0)
    depth = ndi.distance_transform_edt(anatomy["brain"])
    candidates = (anatomy["wm"] > 0.6) & (depth > core_radius + 4)
    centre = _pick(rng, candidates)
    anatomy = _mass_effect(anatomy, centre, core_radius, strength=rng.uniform(0.35, 0.55))
    radii = core_radius * rng.uniform(0.85, 1.15, 3)
    box, rho = _rough_ellipsoid(rng, centre, radii, shape, 2.0 * (radii.max() + edema_width) + 2,
                                roughness=0.12, grain=1.5)
    core = _ramp(rho, 0.15)
    necrosis = _ramp(rho / rng.uniform(0.4, 0.6), 0.4) * core
    beyond = (rho - 1.0) * core_radius / edema_width + 0.35 * _blob_noise(rng, rho.shape, 2.0)
    tissue = anatomy["wm"][box] + 0.3 * anatomy["gm"][box]  # edema follows the white matter
    edema = _ramp(beyond, 0.6) * tissue * (1.0 - core)
    # One connected mass: the component holding the centre; edema fades out just beyond it.
    pieces, _ = ndi.label((core >= 0.5) | (edema >= 0.4))
    mass = ndi.binary_fill_holes(pieces == pieces[tuple(int(round(c)) - b.start for c, b in zip(centre, box))])
    edema *= ndi.binary_dilation(mass, iterations=1)
    layers = []
    for name, part in (("necrosis", necrosis), ("solid", core - necrosis), ("edema", edema)):
        full = np.zeros(shape, np.float32)
        full[box] = part
        layers.append((name, full, 1.0))
    label = np.zeros(shape, bool)
    label[box] = mass
    return anatomy, {"label": label & anatomy["brain"], "layers": layers}


# --------------------------------------------------------------------------- contrasts


def _contrasts(rng, anatomy: dict, lesions: dict | None) -> dict:
    """T1-, T2- and FLAIR-like images with bias field, Rician noise and a zero background."""
    shape = anatomy["brain"].shape
    texture = 1.0 + 0.025 * _smooth_field(rng, (23, 27, 23), shape)
    shared_bias = 0.08 * _smooth_field(rng, (3, 3, 3), shape)
    images = {}
    for modality in MODALITIES:
        csf, gm, wm = (np.asarray(_TISSUE_MEANS[modality]) * np.exp(rng.normal(0.0, 0.04, 3))).astype(np.float32)
        healthy = csf * anatomy["csf"] + gm * anatomy["gm"] + wm * anatomy["wm"]
        image = healthy.copy()
        for name, fraction, contrast in [] if lesions is None else lesions["layers"]:
            if isinstance(contrast, dict):  # a mix of the subject's own tissue intensities
                value = np.float32(sum(w * {"csf": csf, "gm": gm, "wm": wm}[t] for t, w in contrast.items()))
            else:
                value = np.float32(_LESION_MEANS[name][modality] * np.exp(rng.normal(0.0, 0.04))) * contrast
            # MS and heterotopia fractions replace white matter; the others replace the voxel content.
            image += fraction * (value - (wm if name in ("ms", "heterotopia") else healthy))
        bias = np.exp(shared_bias + 0.05 * _smooth_field(rng, (3, 3, 3), shape))
        gain = float(1000.0 * np.exp(rng.normal(0.0, 0.15)))
        clean = (gain * image * texture * bias).astype(np.float32)
        sigma = np.float32(gain * wm * rng.uniform(0.01, 0.025))
        real = clean + sigma * rng.standard_normal(shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(shape, dtype=np.float32)
        images[modality] = (np.sqrt(real ** 2 + imag ** 2) * anatomy["brain"]).astype(np.float32)
    return images


def _synthesise(seed: int, split: str, index: int) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """One subject from its own random stream: images, brain mask and lesion mask (or ``None``)."""
    stream = np.random.SeedSequence(seed, spawn_key=(_SPLITS.index(split), index))
    rng = np.random.default_rng(stream)
    tpl = mni152_tissues()
    anatomy = _subject_anatomy(rng, tpl)
    lesions = None
    if split == "test":
        kind = LESION_KINDS[index % len(LESION_KINDS)]
        if kind == "tumour":
            anatomy, lesions = _tumour(rng, anatomy)
        else:
            lesions = {"ms": _ms_lesions, "cavity": _cavities, "heterotopia": _heterotopia}[kind](rng, anatomy)
    images = _contrasts(rng, anatomy, lesions)
    return images, anatomy["brain"], None if lesions is None else lesions["label"]


# --------------------------------------------------------------------------- files


def _demo_marker(folder: Path) -> dict | None:
    """The marker of the demo dataset in ``folder``, or ``None`` if it holds none."""
    try:
        info = json.loads((folder / DEMO_MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) and info.get("layout") == DEMO_LAYOUT else None


def _prepare_folder(out: Path, keep: set) -> None:
    """Create ``out`` or clear an earlier demo dataset from it; refuse any other content."""
    if out.exists() and not out.is_dir():
        raise DatasetError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if _demo_marker(out) is None:
            raise DatasetError(out, f"folder is not empty and holds no tfuad demo dataset ({DEMO_MARKER_NAME});"
                                    " choose a new or empty folder")
        (out / MANIFEST_NAME).unlink(missing_ok=True)  # the old manifest no longer describes the files
        for folder in out.iterdir():
            if folder.is_dir() and _SUBJECT_DIR.match(folder.name) and folder.name not in keep:
                for suffix in _FILE_SUFFIXES:
                    (folder / f"{folder.name}_{suffix}.nii.gz").unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    folder.rmdir()
    out.mkdir(parents=True, exist_ok=True)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _counts(size: str, n_train, n_calib, n_test) -> dict:
    if size not in DEMO_SIZES:
        raise ConfigError(f"unknown demo size {size!r}; choose one of: {', '.join(DEMO_SIZES)}")
    counts = {}
    for split, preset, value in zip(_SPLITS, DEMO_SIZES[size], (n_train, n_calib, n_test)):
        value = preset if value is None else value
        low = 1 if split == "train" else 0
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= 999:
            raise ConfigError(f"n_{split} must be an integer from {low} to 999, got {value!r}")
        counts[split] = int(value)
    return counts


def make_demo_dataset(out_dir, *, seed: int = 0, size: str = "small", n_train: int | None = None,
                      n_calib: int | None = None, n_test: int | None = None,
                      progress: bool = False) -> Path:
    """Write the demo dataset: healthy train/calib subjects and lesioned test subjects.

    Subjects are drawn from independent random streams keyed by ``(seed, split,
    index)``, so the same seed always gives byte-identical volumes and a subject
    does not change when the counts change. Test subject ``i`` carries lesions
    of kind ``LESION_KINDS[i % 4]``: MS-like, tumour-like, fluid cavities,
    grey-matter heterotopia (recorded as ``lesion_types`` in the marker file).

    Args:
        out_dir: New or empty folder, or a folder holding an earlier demo dataset
            (which is replaced).
        seed: Non-negative integer seed.
        size: ``"small"`` (6 train, 2 calib, 8 test: two of each lesion kind; about
            half a minute) or ``"large"`` (30, 6, 16).
        n_train, n_calib, n_test: Subject counts overriding the size preset.
        progress: Print one line per subject to stderr.

    Returns:
        The path of ``manifest.csv``.

    Raises:
        DatasetError: ``out_dir`` is a file, or a non-empty folder that is not a demo dataset.
        ConfigError: unknown ``size``, bad counts or seed.

    Example:
        >>> manifest = make_demo_dataset("demo_data", seed=1, n_train=2, n_calib=1, n_test=2)  # doctest: +SKIP
        >>> manifest.name                                                                   # doctest: +SKIP
        'manifest.csv'
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    counts = _counts(size, n_train, n_calib, n_test)
    names = [(split, i, f"sub-{split}{i:03d}") for split in _SPLITS for i in range(counts[split])]
    out = Path(out_dir)
    _prepare_folder(out, {name for _, _, name in names})
    tpl = mni152_tissues()
    kinds = {name: LESION_KINDS[i % len(LESION_KINDS)] for split, i, name in names if split == "test"}
    marker = {"layout": DEMO_LAYOUT, "version": _VERSION, "seed": int(seed), "size": size,
              "modalities": list(MODALITIES), "subjects": counts, "template": _TEMPLATE_NAME,
              "lesion_types": kinds}
    _write_text(out / DEMO_MARKER_NAME, json.dumps(marker, indent=2) + "\n")
    rows = []
    for number, (split, index, name) in enumerate(names, 1):
        if progress:
            print(f"demo: {number}/{len(names)} {name}", file=sys.stderr, flush=True)
        images, brain, label = _synthesise(int(seed), split, index)
        row = {"subject": name, "split": split, "lesion_mask": ""}
        for key, array, dtype in [*[(m, images[m], np.float32) for m in MODALITIES],
                                  ("brain_mask", brain, np.uint8), ("lesion_mask", label, np.uint8)]:
            if array is None:
                continue
            suffix = {"brain_mask": "brainmask", "lesion_mask": "seg"}.get(key, key)
            relative = f"{name}/{name}_{suffix}.nii.gz"
            save_volume(array, tpl.affine, out / relative, dtype=dtype)
            row[key] = relative
        rows.append(row)
    with atomic_path(out / MANIFEST_NAME) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return out / MANIFEST_NAME


def demo_lesion_types(dataset_root) -> dict:
    """``{test subject: lesion kind}`` of the demo dataset in ``dataset_root``; empty for other datasets.

    Args:
        dataset_root: The dataset folder or its ``manifest.csv``.

    Returns:
        Lesion kinds (keys of :data:`LESION_DESCRIPTIONS`) from the marker file.

    Example:
        >>> demo_lesion_types("demo_data")["sub-test002"]          # doctest: +SKIP
        'cavity'
    """
    path = Path(dataset_root)
    marker = _demo_marker(path.parent if path.suffix == ".csv" else path) or {}
    kinds = marker.get("lesion_types", {})
    return {str(k): str(v) for k, v in kinds.items()} if isinstance(kinds, dict) else {}


# --------------------------------------------------------------------------- figure


def render_demo_overview(manifest_path, out_png, *, n_lesioned: int = 4) -> Path:
    """Draw one axial slice of every contrast for a healthy and some lesioned subjects.

    Rows: the first healthy subject, then up to ``n_lesioned`` subjects with a
    lesion mask (outlined in red) on the slice with the most lesion voxels, the
    first of each lesion kind before a second of any; the healthy row shows the
    same slice as the first lesioned row.

    Args:
        manifest_path: ``manifest.csv`` of a demo dataset (or its folder).
        out_png: The PNG file to write (atomically).
        n_lesioned: How many lesioned subjects to show.

    Returns:
        The written path.

    Example:
        >>> render_demo_overview("demo_data/manifest.csv", "docs/demo.png")   # doctest: +SKIP
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from tfuad.canvas import DPI, axial_to_display, save_figure

    path = Path(manifest_path)
    dataset = read_manifest(path / MANIFEST_NAME if path.is_dir() else path)
    healthy = [s for s in dataset.subjects if s.healthy][:1]
    kinds = (_demo_marker(dataset.root.parent) or {}).get("lesion_types", {})
    lesioned, rank = [], {}
    for subject in (s for s in dataset.subjects if s.lesion_mask is not None):
        kind = kinds.get(subject.id, subject.id)
        rank[kind] = rank.get(kind, -1) + 1
        lesioned.append((rank[kind], len(lesioned), subject))  # first of every kind, then second, ...
    lesioned = [subject for *_, subject in sorted(lesioned, key=lambda t: t[:2])][:max(int(n_lesioned), 0)]
    if not healthy and not lesioned:
        raise DatasetError(path, "manifest lists no subject to draw")
    rows = []
    for subject in lesioned:
        volumes = [load_volume(subject.image(m)) for m in MODALITIES]
        mask = load_mask(subject.lesion_mask, volumes[0], what="lesion mask")
        z = int(np.argmax(mask.sum(axis=(0, 1))))
        label = LESION_DESCRIPTIONS.get(kinds.get(subject.id), "lesions")
        rows.append((f"{subject.id}\n{label}", volumes, mask, z))
    for subject in healthy:
        volumes = [load_volume(subject.image(m)) for m in MODALITIES]
        z = rows[0][3] if rows else volumes[0].shape[2] // 2
        rows.insert(0, (f"{subject.id} (healthy)", volumes, None, z))
    figure = Figure(figsize=(3 * 2.4, len(rows) * 2.6), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), len(MODALITIES), squeeze=False)
    for r, (title, volumes, mask, z) in enumerate(rows):
        for c, (modality, volume) in enumerate(zip(MODALITIES, volumes)):
            ax = axes[r, c]
            plane = axial_to_display(volume.data[:, :, z])
            inside = volume.data[volume.data > 0]
            top = float(np.percentile(inside, 99.5)) if inside.size else 1.0
            ax.imshow(plane, cmap="gray", vmin=0.0, vmax=top, interpolation="nearest")
            if mask is not None and mask[:, :, z].any():
                ax.contour(axial_to_display(mask[:, :, z]).astype(float), levels=[0.5], colors="red",
                           linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(modality.upper(), fontsize=10)
            if c == 0:
                ax.set_ylabel(title, fontsize=7)
    figure.suptitle("tfuad demo data (axial slices, MNI152 2 mm grid)", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, Path(out_png))
