"""Report figures are written as valid, non-empty PNG files of the expected size."""
import matplotlib.image as mpimg
import numpy as np
import pytest

from tfuad.metrics import curve_points, per_subject_metrics
from tfuad.reports import (
    axial_to_display,
    plot_detection_overview,
    plot_dice_vs_lesion_size,
    plot_example_grid,
    plot_overlay,
    plot_roc_pr,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(path, size):
    """Assert ``path`` is a PNG of ``size`` = (width, height) pixels that is not blank."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = mpimg.imread(path)
    assert image.shape[:2] == (size[1], size[0])
    assert image[..., :3].std() > 0.01
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []   # no temp file left


def _subject(seed, shape=(32, 32, 8)):
    """A synthetic head: a bright ellipsoid 'brain' with a brighter blob 'lesion'."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    brain = ((grid[0] - 16) / 13) ** 2 + ((grid[1] - 16) / 11) ** 2 + ((grid[2] - 4) / 6) ** 2 <= 1
    lesion = ((grid[0] - 10 - seed) ** 2 + (grid[1] - 19) ** 2 + (grid[2] - 4) ** 2 <= 9) & brain
    image = (0.5 + 0.1 * rng.normal(size=shape) + 0.5 * lesion) * brain
    reconstruction = (0.5 + 0.05 * rng.normal(size=shape)) * brain
    residual = np.abs(image - reconstruction).astype(np.float32)
    return image, reconstruction, residual, brain, lesion


def test_axial_to_display_puts_anterior_up_and_left_on_left():
    s = np.zeros((5, 4))          # rows: x (left -> right), columns: y (posterior -> anterior)
    s[0, 3] = 1.0                 # most left, most anterior
    s[4, 0] = 2.0                 # most right, most posterior
    shown = axial_to_display(s)
    assert shown.shape == (4, 5)
    assert shown[0, 0] == 1.0 and shown[-1, -1] == 2.0
    with pytest.raises(ValueError, match="2D"):
        axial_to_display(np.zeros((2, 2, 2)))


def test_plot_roc_pr_from_scores_and_from_points(tmp_path):
    image, _, residual, brain, lesion = _subject(0)
    raw = (residual[brain], lesion[brain])
    points = curve_points(residual[brain] + 0.2, lesion[brain])
    out = plot_roc_pr({"ae": raw, "vae": points}, tmp_path / "roc_pr.png", title="test")
    assert out == tmp_path / "roc_pr.png"
    _check_png(out, (1000, 460))
    with pytest.raises(ValueError, match="lacks"):
        plot_roc_pr({"x": {"fpr": [0, 1]}}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"\.png"):
        plot_roc_pr({"ae": raw}, tmp_path / "roc.pdf")
    with pytest.raises(ValueError, match="no curves"):
        plot_roc_pr({}, tmp_path / "empty.png")


def test_plot_dice_vs_lesion_size(tmp_path):
    rows = []
    for seed in range(3):
        _, _, residual, brain, lesion = _subject(seed)
        row = per_subject_metrics(residual, residual > 0.3, lesion, brain)
        rows.append({"subject": f"s{seed}", **row})
    _, _, residual, brain, _ = _subject(9)
    rows.append({"subject": "healthy", **per_subject_metrics(residual, residual > 0.3,
                                                             np.zeros_like(brain), brain)})
    out = plot_dice_vs_lesion_size(rows, tmp_path / "dice_size.png")
    _check_png(out, (550, 420))
    with pytest.raises(ValueError, match="no subject with lesion"):
        plot_dice_vs_lesion_size(rows[3:], tmp_path / "none.png")


def test_plot_example_grid(tmp_path):
    rows, labels = [], []
    for seed in range(2):
        image, reconstruction, residual, brain, lesion = _subject(seed)
        z = 4
        rows.append({"input": image[:, :, z], "reconstruction": reconstruction[:, :, z],
                     "residual": residual[:, :, z], "segmentation": residual[:, :, z] > 0.3,
                     "ground truth": lesion[:, :, z]})
        labels.append(f"s{seed} z={z}")
    out = plot_example_grid(rows, tmp_path / "grid.png", row_labels=labels)
    _check_png(out, (1050, 450))
    out = plot_example_grid(rows, tmp_path / "grid3.png", columns=("input", "residual", "ground truth"))
    _check_png(out, (630, 450))
    with pytest.raises(ValueError, match="lacks column"):
        plot_example_grid(rows, tmp_path / "g.png", columns=("input", "missing"))
    with pytest.raises(ValueError, match="background image"):
        plot_example_grid(rows, tmp_path / "g.png", columns=("ground truth", "input"))
    bad = [{**rows[0], "residual": rows[0]["residual"][:-1]}]
    with pytest.raises(ValueError, match="different shapes"):
        plot_example_grid(bad, tmp_path / "g.png")


def test_plot_overlay(tmp_path):
    image, _, residual, brain, lesion = _subject(1)
    z = 4
    out = plot_overlay(image[:, :, z], residual[:, :, z], lesion[:, :, z], tmp_path / "overlay.png",
                       title="overlay")
    _check_png(out, (460, 420))
    out = plot_overlay(image[:, :, z], residual[:, :, z], None, tmp_path / "overlay_nomask.png")
    _check_png(out, (460, 420))
    with pytest.raises(ValueError, match="shape mismatch"):
        plot_overlay(image[:, :, z], residual[:-1, :, z], None, tmp_path / "o.png")


def test_plot_detection_overview(tmp_path):
    image, _, residual, brain, lesion = _subject(2, shape=(32, 32, 16))
    seg = residual > 0.3
    out = plot_detection_overview(image, residual, seg, tmp_path / "overview.png", title="s2: ae")
    _check_png(out, (630, 690))
    out = plot_detection_overview(image, residual, np.zeros_like(seg), tmp_path / "empty.png", n_slices=2)
    _check_png(out, (630, 450))
    with pytest.raises(ValueError, match="one shape"):
        plot_detection_overview(image, residual[:, :, :-1], seg, tmp_path / "bad.png")


def test_reconstruction_comparison_lays_out_models_side_by_side(tmp_path):
    from tfuad.reports.figures import reconstruction_comparison

    image, reconstruction, residual, brain, lesion = _subject(3, shape=(32, 32, 8))
    x, truth = image[:, :, 4], lesion[:, :, 4]
    names = ["dae", "dvae", "sae", "svae", "saegan", "anovaegan", "anogan", "vae", "gmvae"]
    recons = {n: reconstruction[:, :, 4] * (1 + 0.05 * i) for i, n in enumerate(names)}
    fig = reconstruction_comparison(x, recons, truth=truth, path=tmp_path / "all.png", title="one slice")
    _check_png(tmp_path / "all.png", (1820, 425))
    image_axes = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in image_axes[:len(names) + 1]] == ["input", *names]
    residual_axes = image_axes[len(names) + 1:]
    assert len(residual_axes) == len(names) + 1
    shown = residual_axes[1].images[0]
    np.testing.assert_allclose(shown.get_array(), np.abs(x - recons["dae"]), atol=1e-6)
    largest = max(np.percentile(np.abs(x - r), 99.9) for r in recons.values())
    for ax in residual_axes[1:]:
        assert ax.images[0].get_clim() == pytest.approx((0.0, largest), rel=1e-6)
    assert len({ax.images[0].get_clim() for ax in image_axes[:len(names) + 1]}) == 1
    assert residual_axes[0].collections  # the ground-truth contour

    no_truth = reconstruction_comparison(x[..., None], {"sae": recons["sae"][..., None]})
    assert not (tmp_path / "none.png").exists() and len(no_truth.axes) == 6
    assert not no_truth.axes[2].axison  # no ground truth: the first cell of row 2 is empty
    with pytest.raises(ValueError, match="shape mismatch"):
        reconstruction_comparison(x, {"sae": recons["sae"][:-1]})
    with pytest.raises(ValueError, match="at least one reconstruction"):
        reconstruction_comparison(x, {})
    with pytest.raises(ValueError, match="NaN"):
        reconstruction_comparison(x, {"sae": np.full_like(x, np.nan)})
    with pytest.raises(ValueError, match=r"\.png"):
        reconstruction_comparison(x, recons, path=tmp_path / "all.jpg")


def test_plot_convergence(tmp_path):
    from tfuad.reports.figures import plot_convergence

    curves = {"vae": {0: 0.71, 10: 0.80, 50: 0.83}, "gmvae": {0: 0.70, 10: 0.82, 50: 0.85}}
    out = plot_convergence(curves, tmp_path / "convergence.png", title="AUROC vs steps")
    _check_png(out, (500, 360))
    with pytest.raises(ValueError, match="no curves"):
        plot_convergence({}, tmp_path / "c.png")
    with pytest.raises(ValueError, match="non-finite"):
        plot_convergence({"vae": {0: float("nan")}}, tmp_path / "c.png")


def test_overview_slices_follow_the_detections_and_say_why():
    from tfuad.reports.figures import overview_slices

    seg = np.zeros((20, 20, 30), bool)
    seg[2:8, 2:8, 20:23] = True     # 108 voxels, widest on every one of z = 20..22 (the first is taken)
    seg[12:14, 12:14, 5] = True     # 4 voxels at z = 5
    score = np.zeros(seg.shape, np.float32)
    score[15:19, 1:5, 12] = 3.0     # a strong score at z = 12 with nothing segmented
    picks = overview_slices(score + seg, seg, 3)
    assert picks == [(5, "detection 2 by size, 4 voxels"), (12, "high anomaly score"),
                     (20, "largest detection, 108 voxels")]
    assert overview_slices(np.zeros((4, 4, 6)), np.zeros((4, 4, 6), bool), 2) == [
        (3, "middle slice (nothing detected)")]
