"""Rigid and affine registration to a template with SimpleITK, and resampling.

Registration maximises Mattes mutual information (so any MR contrast can be
registered to the T1 template) over a multi-resolution pyramid, evaluating the
metric on a random fraction of the voxels, which keeps it to seconds per
subject at 2 mm. A rigid stage is followed by an affine stage started from
the rigid result.

Where registration starts decides where it ends: from a pose 10 to 20 degrees
away from the template's, the affine stage often settles with the brain pitched
(nodded) and shifted, the frontal lobe sunk onto the orbits, while the
correlation with the template stays passable (IXI213, IXI329, IXI239 and
IXI383 of the 40 IXI T1 scans; IXI338 failed). Heads lie in the scanner nodded
by varying amounts, so every start is tried at each pitch of
:data:`PITCHES`: both stages run on the coarse pyramid levels from each (a
screen costing a third of a full registration), the :data:`KEEP` with the best
mutual information go on to the finest level, and the one with the best mutual
information over the whole template brain is kept. Of the 80 candidates of
four IXI scans run to the end, those that ended upright (correlation with the
template above 0.4) finished at -0.11 to -0.19, those that ended nodded (below
0.3) at -0.02 to -0.09; at the screen the two overlap (-0.12 to -0.42 against
-0.08 to -0.20), which is why more than one screened start is finished.

The template is brain only. A whole-head scan is registered twice: as it is, and
without its scalp (:func:`strip_scalp`: the voxels less than :data:`SCALP_MM`
below the head's surface set to 0), so the bright rim of the scalp cannot be
matched to the template's brain outline (matched so, the head is shrunk into
the brain mask, which is how registration failed on several IXI scans); the
result whose whole image correlates better with the template inside its brain
mask is kept.

Transforms map template (fixed) points to subject (moving) points, as ITK
resampling needs them; :func:`transform_record` writes them as plain numbers,
also as a 4x4 RAS matrix from template to subject world coordinates.

Example:
    >>> transform, info = register(subject_image, template_image)        # doctest: +SKIP
    >>> on_template = resample(subject_image, template_image, transform)  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import time

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from tfuad.errors import ArrayError, ConfigError
from tfuad.preprocess.io import RAS_TO_LPS, from_sitk

__all__ = ["register", "head_mask", "strip_scalp", "resample", "transform_record", "transform_from_record", "KINDS",
           "INTERPOLATORS", "SCALP_MM", "WHOLE_HEAD_RATIO", "PITCHES", "KEEP"]

#: Registration models, each stage of the previous one plus more degrees of freedom.
KINDS = ("rigid", "affine")
#: Depth (mm) below a whole-head scan's surface that :func:`strip_scalp` removes before registration:
#: the scalp and most of the skull (together 10 to 15 mm over the adult cranial vault), not the brain.
SCALP_MM = 8.0
#: A scan whose head (:func:`head_mask`) is less than this many times the template's brain volume is
#: taken as skull-stripped, and keeps its outer layer: the 40 IXI heads (with some neck) are 1.76 to
#: 2.99 times the MNI152 brain, skull-stripped demo and BraTS brains 0.66 to 1.14 times.
WHOLE_HEAD_RATIO = 1.45
#: Initial rotations (degrees) about the template's left-right axis tried from every rigid start.
PITCHES = (-20.0, -10.0, 0.0, 10.0, 20.0)
#: Screened starts of each image (best mutual information on the coarse levels) taken to the finest level.
KEEP = 3
#: Interpolation names accepted by :func:`resample`.
INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}


def _stage(fixed, moving, transform, *, shrink, smoothing, sampling, iterations, seed, fixed_mask):
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(float(sampling), int(seed) + 1)  # ITK reads seed 0 as "the wall clock"
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=int(iterations),
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-4)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel(list(smoothing))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return {"metric": float(method.GetMetricValue()), "iterations": int(method.GetOptimizerIteration()),
            "stop": method.GetOptimizerStopConditionDescription()}


@contextlib.contextmanager
def _one_thread():
    """SimpleITK filters on one thread inside the block: threaded sums vary in order, and so would results."""
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


@_one_thread()  # SimpleITK on one thread for the whole call (a context manager is also a decorator)
def register(moving: sitk.Image, fixed: sitk.Image, fixed_mask: sitk.Image | None = None, *,
             kind: str = "affine", shrink=(4, 2, 1), smoothing=(2.0, 1.0, 0.0), sampling: float = 0.1,
             iterations: int = 200, seed: int = 0, margin: float = 8.0, scalp_mm: float = 0.0,
             pitches=PITCHES, keep: int = KEEP) -> tuple:
    """Register ``moving`` (a subject) to ``fixed`` (the template).

    The subject is first brought to the template's voxel size (Gaussian
    smoothing, then resampling on its own extent) when its voxels are finer,
    which keeps 1 mm inputs fast. Registration starts from two rigid poses
    (centres of mass aligned, crowns aligned; see :func:`_rigid_starts`),
    each turned by every angle of ``pitches`` about the left-right axis; all
    run on the coarse pyramid levels, the ``keep`` best by mutual information
    go on to the finest level, and the result with the best mutual
    information over the whole template brain is kept. With a template brain
    mask, the rigid stage evaluates the metric inside the mask dilated by
    ``margin`` / 2 mm and the affine stage inside the mask itself, so the
    scalp and neck of whole-head scans do not pull the scaling. SimpleITK
    runs on one thread throughout, so a seed gives one result.

    Args:
        moving: Subject image (whole head or skull-stripped).
        fixed: Template image.
        fixed_mask: Template brain mask, or None.
        kind: ``"rigid"`` (6 parameters) or ``"affine"`` (12; rigid first).
        shrink: Shrink factor of each pyramid level (coarse to fine).
        smoothing: Gaussian sigma (voxels) of each level.
        sampling: Fraction of voxels sampled for the metric (random, seeded).
        iterations: Most regular-step gradient-descent iterations per level.
        seed: Seed of the voxel sampling (same seed, same result; ITK gets ``seed + 1``, as it reads 0 as
            "seed from the clock").
        margin: Twice the dilation (mm) of the template brain mask in the rigid stage.
        scalp_mm: For a whole-head ``moving`` scan, also register it without the layer this deep (mm)
            below its surface (:func:`strip_scalp`; :data:`SCALP_MM` suits adult heads) and keep the
            better of the two by correlation with the template; 0: the image as it is only. With a
            template brain mask, a scan whose head is smaller than :data:`WHOLE_HEAD_RATIO` times the
            template brain is taken as skull-stripped and registered as it is.
        pitches: Initial rotations (degrees) about the left-right axis tried from each start.
        keep: Screened starts of each image taken to the finest pyramid level.

    Returns:
        ``(transform, record)``: an ``sitk.Transform`` mapping template points
        to subject points, and a dict of the settings, the start kept, the
        metric and iterations of each stage (coarse levels, then the finest),
        the screen's and the finished starts' metrics, and seconds taken.

    Raises:
        ConfigError: unknown ``kind`` or bad settings.

    Example:
        >>> transform, record = register(subject, template, template_mask)   # doctest: +SKIP
        >>> record["start"]                                                   # doctest: +SKIP
        'crown, pitch -20'
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown registration {kind!r}; choose one of: {', '.join(KINDS)}")
    if len(shrink) != len(smoothing) or not 0.0 < sampling <= 1.0 or scalp_mm < 0 or not pitches or keep < 1:
        raise ConfigError("registration needs one smoothing sigma per shrink factor, 0 < sampling <= 1, "
                          "scalp_mm >= 0, at least one pitch and keep >= 1")
    start = time.perf_counter()
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = _coarsen(sitk.Cast(moving, sitk.sitkFloat32), min(fixed.GetSpacing()))
    head_ratio = None
    if scalp_mm > 0 and fixed_mask is not None:
        head_ratio = _volume(head_mask(from_sitk(moving)[0]), moving) / _volume(fixed_mask > 0, fixed)
        if head_ratio < WHOLE_HEAD_RATIO:
            scalp_mm = 0.0
    settings = dict(shrink=tuple(int(s) for s in shrink), smoothing=tuple(float(s) for s in smoothing),
                    sampling=float(sampling), iterations=int(iterations), seed=int(seed))
    coarse = {**settings, "shrink": settings["shrink"][:-1] or settings["shrink"],
              "smoothing": settings["smoothing"][:-1] or settings["smoothing"]}
    fine = {**settings, "shrink": settings["shrink"][-1:], "smoothing": settings["smoothing"][-1:]}
    metric_mask = None if fixed_mask is None else _dilate(fixed_mask, margin / 2.0)
    brain = None if fixed_mask is None else sitk.Cast(fixed_mask > 0, sitk.sitkUInt8)
    variants = {"whole": moving}
    if scalp_mm > 0:
        variants["scalp removed"] = strip_scalp(moving, scalp_mm)
    results = {}
    for variant, image in variants.items():
        screened = []
        for name, start_transform in _rigid_starts(fixed, image).items():
            for pitch in pitches:
                transform = sitk.Euler3DTransform(start_transform)
                transform.SetRotation(float(np.deg2rad(pitch)), 0.0, 0.0)
                stages = {"rigid": _stage(fixed, image, transform, fixed_mask=metric_mask, **coarse)}
                if kind == "affine":
                    transform = _as_affine(transform)
                    stages["affine"] = _stage(fixed, image, transform, fixed_mask=brain, **coarse)
                screened.append((stages[kind]["metric"], f"{name}, pitch {pitch:+g}", transform, stages))
        screened.sort(key=lambda c: c[0])
        candidates = []
        for _, name, transform, stages in screened[:keep]:
            if len(settings["shrink"]) > 1:
                stages["finest level"] = _stage(fixed, image, transform, fixed_mask=metric_mask if kind == "rigid"
                                                else brain, **fine)
            candidates.append((_metric(fixed, image, transform, brain), name, transform, stages))
        best = min(candidates, key=lambda c: c[0])
        correlation = _correlation(fixed, moving, best[2], brain) if len(variants) > 1 else None
        results[variant] = (correlation, best, {c[1]: round(c[0], 5) for c in candidates},
                            {c[1]: round(c[0], 5) for c in screened})
    variant = max(results, key=lambda v: -np.inf if results[v][0] is None else results[v][0])
    _, (score, name, transform, stages), starts, screen = results[variant]
    record = {"kind": kind, "metric": "mattes_mutual_information", "bins": 32, **settings,
              "template_mask": fixed_mask is not None, "margin_mm": float(margin), "scalp_mm": float(scalp_mm),
              "head_to_template_brain": None if head_ratio is None else round(float(head_ratio), 3),
              "image": variant,
              "correlations": {v: None if r[0] is None else round(r[0], 4) for v, r in results.items()},
              "registered_at_mm": list(moving.GetSpacing()), "pitches": [float(p) for p in pitches],
              "start": name, "stages": stages, "final_metric": score, "starts": starts, "screen": screen,
              "seconds": round(time.perf_counter() - start, 3)}
    return transform, record


def _correlation(fixed, moving, transform, mask) -> float:
    """Pearson correlation of ``moving`` through ``transform`` with ``fixed`` inside ``mask`` (higher is better)."""
    on_fixed = sitk.GetArrayFromImage(resample(moving, fixed, transform)).ravel()  # a view would outlive its image
    inside = sitk.GetArrayViewFromImage(mask).ravel() > 0 if mask is not None else slice(None)
    return similarity(on_fixed[inside], sitk.GetArrayViewFromImage(fixed).ravel()[inside])


def similarity(a, b) -> float:
    """Pearson correlation of two arrays of equal size, 0.0 when either is constant (the QC's similarity).

    Example:
        >>> similarity(np.arange(4.0), 2 * np.arange(4.0) + 1)
        1.0
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0


def _volume(mask, image: sitk.Image) -> float:
    """Volume (mm^3) of a binary mask: an ``sitk.Image``, or an array on ``image``'s grid."""
    count = float(np.count_nonzero(sitk.GetArrayViewFromImage(mask) if isinstance(mask, sitk.Image) else mask))
    return count * float(np.prod(image.GetSpacing()))


def _metric(fixed, moving, transform, mask) -> float:
    """Mattes mutual information of ``transform`` on every voxel of ``mask`` (lower is better)."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.NONE)
    if mask is not None:
        method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform, inPlace=False)
    return float(method.MetricEvaluate(fixed, moving))


def _coarsen(image: sitk.Image, spacing: float) -> sitk.Image:
    """``image`` smoothed and resampled to ``spacing`` mm voxels where its voxels are finer."""
    old = np.asarray(image.GetSpacing(), dtype=float)
    if old.min() >= spacing * 0.99:
        return image
    new = np.maximum(old, spacing)
    sigma = np.sqrt(np.maximum(new ** 2 - old ** 2, 0.0)) / 2.355  # FWHM of the new voxel
    smooth = sitk.SmoothingRecursiveGaussian(image, [float(max(s, 1e-3)) for s in sigma])
    size = [int(np.ceil(n * o / s)) for n, o, s in zip(image.GetSize(), old, new)]
    return sitk.Resample(smooth, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         tuple(float(s) for s in new), image.GetDirection(), 0.0, image.GetPixelID())


def _dilate(mask: sitk.Image, mm: float) -> sitk.Image:
    """Binary mask grown by ``mm`` (Euclidean distance)."""
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    if mm <= 0:
        return mask
    distance = sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    return sitk.Cast(distance <= mm, sitk.sitkUInt8)


def _top_slab_centre(image: sitk.Image, depth: float) -> np.ndarray:
    """LPS centre of the foreground (Otsu) within ``depth`` mm below its highest point."""
    data, affine = from_sitk(sitk.OtsuThreshold(image, 0, 1))
    points = np.argwhere(data > 0)
    if len(points) == 0:
        points = np.argwhere(np.ones(data.shape, bool))
    world = points @ affine[:3, :3].T + affine[:3, 3]
    top = world[:, 2].max()
    return RAS_TO_LPS @ world[world[:, 2] > top - depth].mean(axis=0)


def _rigid_starts(fixed: sitk.Image, moving: sitk.Image) -> dict:
    """Rigid starting points: centres of mass aligned, and crowns (tops of the head) aligned.

    The second start copes with whole-head scans whose neck and face pull the
    centre of mass away from the brain's: the centre of the top 80 mm of the
    subject's foreground is put on the centre of the top 72 mm of the
    template's brain raised by a typical scalp and skull thickness (8 mm).
    """
    moments = sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS))
    fixed_centre = _top_slab_centre(fixed, 72.0) + RAS_TO_LPS @ np.array([0.0, 0.0, 4.0])
    moving_centre = _top_slab_centre(moving, 80.0)
    crown = sitk.Euler3DTransform()
    crown.SetCenter(tuple(float(v) for v in fixed_centre))
    crown.SetTranslation(tuple(float(v) for v in moving_centre - fixed_centre))
    return {"centres of mass": moments, "crown": crown}


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1D sample (the level that best splits it in two classes)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2.0
    weight = np.cumsum(hist).astype(float)
    total = np.cumsum(hist * centres)
    below = total / np.maximum(weight, 1.0)
    above = (total[-1] - total) / np.maximum(weight[-1] - weight, 1.0)
    return float(centres[int(np.argmax(weight * (weight[-1] - weight) * (below - above) ** 2))])


def head_mask(image) -> np.ndarray:
    """The head (foreground) of a whole-head scan: tissue against air, holes filled.

    Voxels above half the Otsu threshold of the volume, closed (2 iterations),
    with holes filled in every axial slice and in 3D, so the dark skull and
    CSF inside the head count as head.

    Args:
        image: 3D image (canonical RAS+ order), air dark.

    Returns:
        3D boolean mask.

    Example:
        >>> img = np.zeros((30, 30, 30)); img[5:25, 5:25, 5:25] = 100.0; img[10:20, 10:20, 10:20] = 1.0
        >>> int(head_mask(img).sum())
        8000
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ArrayError(f"expected a 3D image, got shape {image.shape}")
    finite = image[np.isfinite(image)]
    if finite.size == 0 or finite.max() <= finite.min():
        return np.zeros(image.shape, bool)
    pad = 3  # closing erodes at the array's border: pad with the border's values first
    mask = np.pad(image > 0.5 * _otsu(finite), pad, mode="edge")
    mask = ndi.binary_closing(mask, iterations=2)[pad:-pad, pad:-pad, pad:-pad]
    for k in range(mask.shape[2]):
        mask[:, :, k] = ndi.binary_fill_holes(mask[:, :, k])
    return ndi.binary_fill_holes(mask)


def strip_scalp(image: sitk.Image, mm: float = SCALP_MM) -> sitk.Image:
    """A whole-head image with the voxels less than ``mm`` below the head's surface set to 0.

    The head is :func:`head_mask`; depth is the Euclidean distance (mm) to the
    nearest voxel outside it. What is left is the brain, the inner skull and
    whatever lies deeper than ``mm`` (the neck), as a brain-only template expects.

    Args:
        image: Whole-head scan (any spacing).
        mm: Depth removed.

    Returns:
        float32 ``sitk.Image`` on the same grid.

    Example:
        >>> head = np.zeros((40, 40, 40), np.float32); head[5:35, 5:35, 5:35] = 1.0
        >>> out = strip_scalp(sitk.GetImageFromArray(head), 6.0)
        >>> int(sitk.GetArrayFromImage(out).sum())
        5832
    """
    from tfuad.preprocess.io import to_sitk

    data, affine = from_sitk(sitk.Cast(image, sitk.sitkFloat32))
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    head = head_mask(data)
    depth = ndi.distance_transform_edt(np.pad(head, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    out = to_sitk(np.where(depth > float(mm), data, 0.0).astype(np.float32), affine)
    out.CopyInformation(image)
    return out


def resample(image: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None, *,
             interpolation: str = "linear", default: float = 0.0) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid through ``transform`` (reference -> image points).

    Args:
        image: Image to resample.
        reference: Grid to resample onto.
        transform: Maps reference points to ``image`` points; identity when None.
        interpolation: ``"linear"``, ``"nearest"`` (labels and masks) or ``"bspline"``.
        default: Value outside ``image``.

    Returns:
        ``sitk.Image`` on ``reference``'s grid, of ``image``'s pixel type.
    """
    if interpolation not in INTERPOLATORS:
        raise ConfigError(f"unknown interpolation {interpolation!r}; choose one of: {', '.join(INTERPOLATORS)}")
    transform = sitk.Transform() if transform is None else transform
    return sitk.Resample(image, reference, transform, INTERPOLATORS[interpolation], float(default),
                         image.GetPixelID())


def _as_affine(transform: sitk.Transform) -> sitk.AffineTransform:
    """A new ``AffineTransform`` equal to a rigid or affine transform."""
    affine = sitk.AffineTransform(3)
    affine.SetCenter(transform.GetCenter())
    affine.SetMatrix(transform.GetMatrix())
    affine.SetTranslation(transform.GetTranslation())
    return affine


def _homogeneous(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 LPS matrix of an affine-like transform (``x -> A (x - c) + t + c``)."""
    affine = _as_affine(transform)
    matrix = np.asarray(affine.GetMatrix(), dtype=float).reshape(3, 3)
    centre = np.asarray(affine.GetCenter(), dtype=float)
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = np.asarray(affine.GetTranslation(), dtype=float) + centre - matrix @ centre
    return out


def transform_record(transform: sitk.Transform) -> dict:
    """Plain-number description of an affine (or rigid) transform.

    Returns:
        ``{"type", "lps_matrix", "ras_matrix", "parameters", "fixed_parameters"}``:
        4x4 matrices mapping template world points to subject world points (LPS
        as ITK, RAS as NIfTI) and ITK's own parameter lists.
    """
    lps = _homogeneous(transform)
    flip = np.eye(4)
    flip[:3, :3] = RAS_TO_LPS
    ras = flip @ lps @ flip
    return {"type": transform.GetName(), "direction": "template world point -> subject world point",
            "lps_matrix": np.round(lps, 6).tolist(), "ras_matrix": np.round(ras, 6).tolist(),
            "parameters": list(transform.GetParameters()), "fixed_parameters": list(transform.GetFixedParameters())}


def transform_from_record(record: dict) -> sitk.AffineTransform:
    """Rebuild the transform of :func:`transform_record` (as an ``AffineTransform``)."""
    lps = np.asarray(record["lps_matrix"], dtype=float)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(tuple(lps[:3, :3].ravel()))
    affine.SetTranslation(tuple(lps[:3, 3]))
    return affine
