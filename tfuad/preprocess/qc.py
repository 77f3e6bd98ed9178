"""Quality control: an automatic registration score per subject, and figures.

:func:`registration_qc` scores a subject once it is on the template grid, so a
misregistered scan does not pass unnoticed: the correlation of its image with
the template inside the template's brain mask, and, for whole-head scans whose
brain mask is the template's carried over, how much of that mask lies outside
the subject's head or within a few millimetres of the head's surface (where the
scalp and skull are, not the brain), and the subject's residual tilt
(:func:`residual_rotation`: the rotation, with a free shift, that would align it
best with the template). Each is compared with a threshold of
:data:`QC_THRESHOLDS`; a subject passes when all are met.

The tilt catches what the other scores let pass: a registration that settled
with the brain nodded 10 to 20 degrees and shifted to fit, the frontal lobe on
the orbits, still correlates about 0.3 with the template and keeps the brain
mask inside the head. The scores are meaningful for T1 scans (a template of
another contrast would need its own thresholds).

Each subject's figure shows axial slices through the brain and one coronal and
one sagittal slice of the preprocessed image, with the brain mask outlined in
red (and the lesion mask in cyan); the montage shows one axial and one
sagittal slice per subject, so a person can check a hundred subjects at a glance.

Example:
    >>> import numpy as np, tempfile, os
    >>> img = np.random.default_rng(0).random((20, 24, 18)); mask = img > 0.3
    >>> plot_subject_qc(img, mask, os.path.join(tempfile.mkdtemp(), "s.png")).name
    's.png'
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from tfuad.canvas import axial_to_display, check_png, new_figure, save_figure
from tfuad.errors import ArrayError, DataError
from tfuad.preprocess.registration import head_mask, similarity

__all__ = ["qc_word", "QC_THRESHOLDS", "SURFACE_MM", "TILT_SEARCH_DEG", "TILT_STEP_DEG", "TILT_SHIFT_MM",
           "TILT_SPACING_MM", "residual_rotation", "registration_qc", "failed_scores", "qc_summary", "check_qc",
           "plot_subject_qc", "plot_montage"]

#: Pass thresholds of :func:`registration_qc`: ``similarity`` at least, the others at most.
#: The first three were chosen on the 40 IXI T1 scans as registered before scalp removal (36 good and 4
#: misregistered by eye), each in the gap between the worst good scan and the best failed one: similarity
#: 0.342 against 0.215, brain outside head 0.0012 against 0.073, brain near surface 0.0076 against 0.048
#: (README, "Registration quality control"). ``tilt`` (degrees) was chosen on the same scans registered three
#: times (whole head; also without the scalp; with the rotation search of
#: :func:`~tfuad.preprocess.registration.register`): the registrations good by eye tilt at most 4.7 degrees
#: (IXI632 whole head; IXI212 4.4 without the scalp; at most 1.4 with the search), the ones nodded by eye
#: at least 7.6 (IXI383 whole head; IXI213 13.9 and 20, IXI329 11.2, IXI239 10.5); 6 lies in the gap.
#: IXI452 (5.2 and 5.4 before the search) fails by similarity.
QC_THRESHOLDS = {"similarity": 0.28, "brain_outside_head": 0.02, "brain_near_surface": 0.02, "tilt": 6.0}
#: Depth (mm) below the head's surface that the brain does not reach (scalp and skull are thicker).
SURFACE_MM = 4.0
#: :func:`residual_rotation` tries rotations up to this many degrees about each axis, in steps of
#: :data:`TILT_STEP_DEG`, each with shifts up to :data:`TILT_SHIFT_MM` in its plane, comparing the images
#: every :data:`TILT_SPACING_MM` (after a Gaussian smoothing of half that).
TILT_SEARCH_DEG = 20.0
TILT_STEP_DEG = 2.5
TILT_SHIFT_MM = 8.0
TILT_SPACING_MM = 6.0


def residual_rotation(image, template_image, template_mask, *, voxel_mm: float = 1.0) -> np.ndarray:
    """The rotation (degrees) about each axis that would best align a registered image with the template.

    For each voxel axis in turn (left-right: pitch, posterior-anterior: roll,
    inferior-superior: yaw), the image is turned about the centre of the
    template's brain mask by every angle within :data:`TILT_SEARCH_DEG` (steps
    of :data:`TILT_STEP_DEG`) and shifted in the plane of the rotation by up to
    :data:`TILT_SHIFT_MM`, and correlated with the template inside its brain
    mask (both smoothed, sampled every :data:`TILT_SPACING_MM`). The angle
    whose best shift correlates best, refined by a parabola through its
    neighbours, is that axis's residual rotation: about 0 for a good
    registration, the error for a tilted one (a tilt beyond the search reads as
    its bound). The shift matters: a registration that converged to a wrong
    pitch has also moved the brain to fit it, so a rotation alone does not undo it.

    Args:
        image: Subject image on the template grid (canonical RAS+ order, isotropic voxels).
        template_image: The template.
        template_mask: The template's brain mask.
        voxel_mm: Voxel size (mm) of the grid.

    Returns:
        float array of 3 angles (degrees, right-handed about the +i, +j, +k voxel axes).

    Raises:
        ArrayError: the arrays are not 3D volumes on one grid, or the mask is empty.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> tpl = ndi.gaussian_filter(rng.random((40, 40, 40)), 2.0); mask = np.zeros(tpl.shape, bool)
        >>> mask[8:32, 8:32, 8:32] = True
        >>> bool(np.abs(residual_rotation(tpl, tpl, mask, voxel_mm=2.0)).max() < 0.5)
        True
    """
    image = np.asarray(image, dtype=np.float64)
    image = np.where(np.isfinite(image), image, 0.0)
    template_mask = np.asarray(template_mask, dtype=bool)
    if image.ndim != 3 or not image.shape == np.shape(template_image) == template_mask.shape or not template_mask.any():
        raise ArrayError(f"residual rotation needs a 3D image, template and non-empty mask on one grid; got "
                         f"{image.shape}, {np.shape(template_image)}, {template_mask.shape}")
    stride = max(1, int(round(TILT_SPACING_MM / voxel_mm)))
    voxels = np.argwhere(template_mask)
    centre = voxels.mean(axis=0)
    points = voxels[(voxels % stride == 0).all(axis=1)].astype(np.float64)
    sigma = stride / 2.0
    reference = ndi.gaussian_filter(np.asarray(template_image, dtype=np.float64), sigma)[tuple(points.T.astype(int))]
    reference = (reference - reference.mean()) / max(float(np.linalg.norm(reference - reference.mean())), 1e-12)
    image = ndi.gaussian_filter(image, sigma)
    angles = np.arange(-TILT_SEARCH_DEG, TILT_SEARCH_DEG + 1e-9, TILT_STEP_DEG)
    step = TILT_SHIFT_MM / 2.0 / voxel_mm
    shifts = [(a * step, b * step) for a in range(-2, 3) for b in range(-2, 3)]
    out = np.zeros(3)
    for axis in range(3):
        i, j = (k for k in range(3) if k != axis)
        profile = np.empty(len(angles))
        for n, angle in enumerate(np.deg2rad(angles)):
            rotation = np.eye(3)
            rotation[[i, i, j, j], [i, j, i, j]] = np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)
            turned = (points - centre) @ rotation.T + centre
            best = -np.inf
            for di, dj in shifts:
                coords = turned.copy()
                coords[:, i] += di
                coords[:, j] += dj
                values = ndi.map_coordinates(image, coords.T, order=1, mode="constant")
                values = values - values.mean()
                best = max(best, float(values @ reference) / max(float(np.linalg.norm(values)), 1e-12))
            profile[n] = best
        k = int(np.argmax(profile))
        out[axis] = angles[k]
        if 0 < k < len(angles) - 1:
            curve = profile[k - 1] - 2.0 * profile[k] + profile[k + 1]
            if curve < 0:
                out[axis] += TILT_STEP_DEG * 0.5 * (profile[k - 1] - profile[k + 1]) / curve
    return out


def registration_qc(image, brain, template_image, template_mask, *, whole_head: bool = True,
                    voxel_mm: float = 1.0, thresholds: dict | None = None) -> dict:
    """Automatic quality score of one subject on the template grid, with a pass/fail flag.

    Scores:

    * ``similarity``: Pearson correlation of the subject's image with the
      template inside the template's brain mask (a T1 template: about 0.5 for
      a well registered T1 scan, near 0 for a wrong level or scale);
    * ``brain_outside_head`` (whole-head scans only): fraction of the brain
      mask outside the subject's head (:func:`head_mask`);
    * ``brain_near_surface`` (whole-head scans only): fraction of the brain
      mask less than :data:`SURFACE_MM` below the head's surface, where only
      scalp and skull are; a mask scaled over the skull reaches there;
    * ``tilt``: the largest of the residual rotations about the three axes
      (degrees, :func:`residual_rotation`; ``rotation`` lists all three:
      pitch, roll, yaw): below 5 for the good registrations of the IXI scans,
      7.6 and more for the nodded ones.

    Args:
        image: Subject image on the template grid (whole head or brain only), not yet masked.
        brain: Its brain mask.
        template_image: The template.
        template_mask: The template's brain mask.
        whole_head: Whether ``image`` is a whole-head scan (the mask scores apply).
        voxel_mm: Voxel size (mm) of the grid.
        thresholds: Overrides :data:`QC_THRESHOLDS`.

    Returns:
        ``{"similarity", "brain_outside_head", "brain_near_surface", "tilt", "rotation",
        "thresholds", "pass", "failed"}``: the mask scores are None for brain-only scans;
        ``failed`` lists the scores that missed their threshold.

    Example:
        >>> from tfuad.preprocess.template import load_template    # doctest: +SKIP
        >>> tpl = load_template(2)                                   # doctest: +SKIP
        >>> registration_qc(tpl.image, tpl.mask, tpl.image, tpl.mask, whole_head=False)["pass"]  # doctest: +SKIP
        True
    """
    image = np.asarray(image, dtype=np.float64)
    brain = np.asarray(brain, dtype=bool)
    template_mask = np.asarray(template_mask, dtype=bool)
    template_image = np.asarray(template_image, dtype=np.float64)
    if not image.shape == brain.shape == template_image.shape == template_mask.shape:
        raise ArrayError(f"registration QC needs one grid; got {image.shape}, {brain.shape}, "
                         f"{template_image.shape}, {template_mask.shape}")
    limits = {**QC_THRESHOLDS, **(thresholds or {})}
    a, b = image[template_mask], template_image[template_mask]
    a = np.where(np.isfinite(a), a, 0.0)
    score = similarity(a, b)
    rotation = residual_rotation(image, template_image, template_mask, voxel_mm=voxel_mm)
    scores = {"similarity": round(score, 4), "brain_outside_head": None, "brain_near_surface": None,
              "tilt": round(float(np.abs(rotation).max()), 1), "rotation": [round(float(r), 1) for r in rotation]}
    if whole_head and brain.any():
        head = head_mask(image)
        depth = ndi.distance_transform_edt(np.pad(head, 1, mode="edge"))[1:-1, 1:-1, 1:-1] * float(voxel_mm)
        scores["brain_outside_head"] = round(float((brain & ~head).sum() / brain.sum()), 4)
        scores["brain_near_surface"] = round(float((brain & head & (depth <= SURFACE_MM)).sum() / brain.sum()), 4)
    failed = failed_scores(scores, limits)
    return {**scores, "thresholds": limits, "pass": not failed, "failed": failed}


def failed_scores(scores: dict, thresholds: dict | None = None) -> list:
    """The QC scores that miss their threshold: ``similarity`` below it, the others above (None: not scored).

    Example:
        >>> failed_scores({"similarity": 0.2, "brain_outside_head": None, "brain_near_surface": 0.0, "tilt": 7.0})
        ['similarity', 'tilt']
    """
    limits = {**QC_THRESHOLDS, **(thresholds or {})}
    return [k for k in QC_THRESHOLDS if scores.get(k) is not None
            and (scores[k] < limits[k] if k == "similarity" else scores[k] > limits[k])]


def qc_summary(qc: dict) -> str:
    """One line of a QC result: each score against its threshold.

    Example:
        >>> qc_summary({"similarity": 0.12, "brain_outside_head": 0.0, "brain_near_surface": None,
        ...             "thresholds": QC_THRESHOLDS, "pass": False, "failed": ["similarity"]})
        'QC fail: similarity 0.120 < 0.28 (failed), brain outside head 0.000 <= 0.02'
    """
    parts = []
    for key in QC_THRESHOLDS:
        if qc.get(key) is None:
            continue
        bad = key in qc["failed"]
        op = ("<" if bad else ">=") if key == "similarity" else (">" if bad else "<=")
        unit, digits = (" deg", 1) if key == "tilt" else ("", 3)
        mark = " (failed)" if bad else ""
        parts.append(f"{key.replace('_', ' ')} {qc[key]:.{digits}f}{unit} {op} {qc['thresholds'][key]:.{digits - 1}f}"
                     f"{unit}{mark}")
    return ("QC pass: " if qc["pass"] else "QC fail: ") + ", ".join(parts)


def qc_word(qc: dict | None) -> str:
    """The manifest's ``qc`` cell: ``pass``, ``fail``, or empty for a subject that was not registered.

    Example:
        >>> qc_word(None), qc_word({"pass": False})
        ('', 'fail')
    """
    return "" if qc is None else ("pass" if qc["pass"] else "fail")


def check_qc(qc: dict, path) -> dict:
    """``qc`` when it passed; otherwise a :class:`~tfuad.errors.DataError` naming ``path`` and the scores.

    Example:
        >>> check_qc({"similarity": 0.5, "thresholds": QC_THRESHOLDS, "pass": True, "failed": []}, "a.nii")["pass"]
        True
    """
    if not qc["pass"]:
        raise DataError(path, "registration to the template failed quality control: " + qc_summary(qc))
    return qc


def _panels(data: np.ndarray, brain: np.ndarray, n_axial: int) -> list:
    """(title, image, mask, lesion index) panels: axial slices through the brain, mid coronal, mid sagittal."""
    inside = np.argwhere(brain) if brain.any() else np.argwhere(np.ones(brain.shape, bool))
    lo, hi = inside.min(axis=0), inside.max(axis=0)
    centre = ((lo + hi) // 2).astype(int)
    zs = np.linspace(lo[2], hi[2], n_axial + 2)[1:-1].round().astype(int) if n_axial else []
    panels = [(f"z={z}", (slice(None), slice(None), int(z))) for z in zs]
    panels.append((f"y={centre[1]}", (slice(None), int(centre[1]), slice(None))))
    panels.append((f"x={centre[0]}", (int(centre[0]), slice(None), slice(None))))
    return panels


def _draw(ax, data, brain, lesion, index, window) -> None:
    # axial_to_display turns any slice of a RAS+ volume so its last axis points up.
    ax.imshow(axial_to_display(data[index]), cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
    for mask, colour in ((brain, "red"), (lesion, "cyan")):
        if mask is not None:
            shown = axial_to_display(mask[index])
            if shown.any() and not shown.all():
                ax.contour(shown.astype(np.float32), levels=[0.5], colors=[colour], linewidths=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _window(data, brain) -> tuple:
    values = data[brain] if brain.any() else data.ravel()
    lo, hi = np.percentile(values, [0.5, 99.5])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def plot_subject_qc(data, brain, out_png, *, lesion=None, title: str | None = None, n_axial: int = 4,
                    failed: bool = False) -> Path:
    """One subject's QC figure: ``n_axial`` axial slices, a coronal and a sagittal slice, mask outlined.

    Args:
        data: 3D image (canonical RAS+ order).
        brain: 3D boolean brain mask.
        out_png: PNG file to write (atomically).
        lesion: Optional 3D boolean lesion mask (cyan outline).
        title: Figure title.
        n_axial: Number of axial slices.
        failed: Mark the subject as failing QC (red title and frame).

    Returns:
        The written path.
    """
    out = check_png(out_png)
    data, brain = np.asarray(data, dtype=np.float32), np.asarray(brain, dtype=bool)
    lesion = None if lesion is None else np.asarray(lesion, dtype=bool)
    panels = _panels(data, brain, n_axial)
    window = _window(data, brain)
    fig = new_figure(1.6 * len(panels), 2.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, index) in zip(axes, panels):
        _draw(ax, data, brain, lesion, index, window)
        ax.set_title(label, fontsize="x-small")
    if title:
        fig.suptitle(title, fontsize="small", color=FAIL_COLOUR if failed else "black")
    if failed:
        _frame(fig)
    return save_figure(fig, out)


#: Colour of a subject that failed QC in the figures.
FAIL_COLOUR = "#d62728"


def _frame(fig, axes=None) -> None:
    """A red frame around the figure, or around the bounding box of ``axes``."""
    from matplotlib.patches import Rectangle

    if axes is None:
        box = (0.003, 0.003, 0.994, 0.994)
    else:
        fig.canvas.draw()  # the constrained layout places the axes
        boxes = [ax.get_position() for ax in axes]
        x0, y0 = min(b.x0 for b in boxes), min(b.y0 for b in boxes)
        x1, y1 = max(b.x1 for b in boxes), max(b.y1 for b in boxes)
        box = (x0 - 0.003, y0 - 0.003, x1 - x0 + 0.006, y1 - y0 + 0.006)  # the red title stays above
    fig.add_artist(Rectangle(box[:2], box[2], box[3], transform=fig.transFigure, fill=False,
                             edgecolor=FAIL_COLOUR, linewidth=1.6))


def plot_montage(items, out_png, *, columns: int = 4, cell: float = 1.05, failed=()) -> Path:
    """Montage of many subjects: an axial and a sagittal slice each, brain mask outlined.

    Subjects in ``failed`` (registration QC) get a red title reading ``QC FAIL`` and a red frame.

    Args:
        items: ``(subject, paths)`` pairs with ``paths["image"]`` and ``paths["brain_mask"]``.
        out_png: PNG file to write.
        columns: Subjects per row.
        cell: Size (inches) of one slice.
        failed: Subjects to mark as failing QC.

    Returns:
        The written path.
    """
    from tfuad.data.nifti import load_mask, load_volume

    out = check_png(out_png)
    items = list(items)
    if not items:
        raise ArrayError("no subject to draw")
    columns = max(1, min(int(columns), len(items)))
    rows = math.ceil(len(items) / columns)
    fig = new_figure(2 * cell * columns, cell * rows + 0.3)
    axes = fig.subplots(rows, 2 * columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i, (subject, paths) in enumerate(items):
        volume = load_volume(paths["image"])
        brain = load_mask(paths["brain_mask"], volume, what="brain mask")
        panels = _panels(volume.data, brain, 0)
        axial = ("", (slice(None), slice(None), int(np.argwhere(brain)[:, 2].mean().round())))
        window = _window(volume.data, brain)
        for j, (_, index) in enumerate((axial, panels[1])):
            ax = axes[i // columns, 2 * (i % columns) + j]
            ax.set_axis_on()
            _draw(ax, volume.data, brain, None, index, window)
        bad = subject in failed
        axes[i // columns, 2 * (i % columns)].set_title(subject + (" QC FAIL" if bad else ""), fontsize=6,
                                                        loc="left", color=FAIL_COLOUR if bad else "black")
    marked = [i for i, (subject, _) in enumerate(items) if subject in failed]
    for i in marked:
        _frame(fig, [axes[i // columns, 2 * (i % columns) + j] for j in (0, 1)])
    return save_figure(fig, out)
