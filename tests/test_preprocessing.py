"""Tests of tfuad.data.preprocessing on real NIfTI files and real BraTS data."""
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tfuad.data.nifti import load_volume, save_like
from tfuad.data.preprocessing import (
    PreparedVolume,
    PreprocessConfig,
    SliceGeometry,
    brain_mask_from_image,
    fit_intensity_stats,
    healthy_slice_indices,
    normalize_intensity,
    prepare_volume,
)
from tfuad.errors import (
    ConfigError,
    DataError,
    EmptyMaskError,
    GeometryMismatchError,
    MissingModalityError,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _ellipsoid(shape, centre, radii):
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _brain_image(shape=(30, 36, 12), seed=0):
    """A skull-stripped-like image: positive values in an ellipsoid, 0 outside."""
    rng = np.random.default_rng(seed)
    brain = _ellipsoid(shape, [s / 2 for s in shape], [shape[0] * 0.35, shape[1] * 0.4, shape[2] * 0.6])
    data = np.where(brain, rng.uniform(50, 400, shape), 0.0).astype(np.float32)
    return data, brain


def _save(path, array, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


# --------------------------------------------------------------------------- config

def test_config_round_trip_and_defaults():
    cfg = PreprocessConfig(image_size=64, normalization="zscore", percentiles=[1, 99], healthy_margin=2)
    d = cfg.to_dict()
    assert d["percentiles"] == [1.0, 99.0]
    assert PreprocessConfig.from_dict(d) == cfg
    assert cfg.background_value == -3.5
    assert PreprocessConfig().background_value == 0.0
    assert PreprocessConfig(background=-1).background_value == -1.0
    assert PreprocessConfig.from_dict({}) == PreprocessConfig()


@pytest.mark.parametrize("bad", [
    {"image_sise": 64},
    {"image_size": 2},
    {"normalization": "minmax"},
    {"percentiles": (99, 1)},
    {"healthy_margin": -1},
    {"min_brain_fraction": 1.5},
    {"background": float("nan")},
])
def test_config_rejects_unknown_keys_and_bad_values(bad):
    with pytest.raises(ConfigError) as info:
        PreprocessConfig.from_dict(bad)
    assert "\n" not in str(info.value)
    if "image_sise" in bad:
        assert "image_sise" in str(info.value)


# --------------------------------------------------------------------------- masks, normalisation

def test_brain_mask_fills_holes_slice_wise():
    data, brain = _brain_image()
    data[15, 18, :] = 0  # a zero-valued hole inside the brain on every slice
    mask = brain_mask_from_image(data)
    assert np.array_equal(mask, brain)
    assert not brain_mask_from_image(np.zeros((4, 4, 4))).any()


def test_percentile_normalisation_range_and_background():
    data, brain = _brain_image()
    cfg = PreprocessConfig(percentiles=(1, 99), background=-0.25)
    out = normalize_intensity(data, brain, cfg)
    assert out.dtype == np.float32
    inside = out[brain]
    assert inside.min() == 0.0 and inside.max() == 1.0
    assert np.all(out[~brain] == -0.25)
    lo, hi = np.percentile(data[brain], (1, 99))
    v = data[brain][np.argsort(data[brain])[len(inside) // 2]]
    np.testing.assert_allclose(out[data == v][0], (v - lo) / (hi - lo), rtol=1e-5)
    with pytest.raises(DataError, match="constant"):
        normalize_intensity(np.where(brain, 7.0, 0.0), brain, cfg)


def test_zscore_fixed_statistics():
    cfg = PreprocessConfig(normalization="zscore")
    a, brain_a = _brain_image(seed=1)
    b, brain_b = _brain_image(seed=2)
    stats = fit_intensity_stats([a], [brain_a], cfg)
    out = normalize_intensity(a, brain_a, cfg, stats)
    assert abs(out[brain_a].mean()) < 1e-4
    assert abs(out[brain_a].std() - 1.0) < 1e-4
    assert np.all(out[~brain_a] == -3.5)
    # the statistics stay fixed for another subject (not re-estimated per volume)
    b = b * 2.0
    out_b = normalize_intensity(b, brain_b, cfg, stats)
    np.testing.assert_allclose(out_b[brain_b], (b[brain_b] - stats["mean"]) / stats["std"], rtol=1e-5, atol=1e-5)
    assert out_b[brain_b].mean() > 2.0
    pooled = fit_intensity_stats([a, b], [brain_a, brain_b], cfg)
    both = np.concatenate([a[brain_a], b[brain_b]]).astype(np.float64)
    assert pooled["mean"] == pytest.approx(both.mean()) and pooled["std"] == pytest.approx(both.std())
    assert fit_intensity_stats([a], [brain_a], PreprocessConfig()) == {}
    with pytest.raises(ConfigError):
        normalize_intensity(a, brain_a, cfg)


# --------------------------------------------------------------------------- slice geometry

def test_geometry_exact_round_trip_without_resize():
    rng = np.random.default_rng(0)
    mask = np.zeros((20, 16, 5), bool)
    mask[4:13, 5:10, 1:4] = True  # bbox 9 x 5, margin 1 -> 11 x 7 -> square 11
    geo = SliceGeometry.from_mask(mask, image_size=11, crop_margin=1)
    assert geo.box == (3, 14, 4, 11) and geo.side == 11 and not geo.needs_resize
    volume = rng.normal(size=mask.shape).astype(np.float32)
    slices = geo.to_slices(volume, fill=-9)
    assert slices.shape == (5, 11, 11) and slices.dtype == np.float32
    back = geo.to_volume(slices, fill=-7)
    assert np.array_equal(back[3:14, 4:11], volume[3:14, 4:11])
    outside = np.ones(mask.shape, bool)
    outside[3:14, 4:11] = False
    assert np.all(back[outside] == -7)
    # rows run anterior (high y) to posterior, columns follow x (left to right of the image = R axis)
    # (the 7 rows of the plane start after 2 rows of padding)
    assert slices[2, 2, 0] == volume[3, 10, 2] and slices[2, 2, 10] == volume[13, 10, 2]
    assert slices[2, 8, 0] == volume[3, 4, 2]
    # the plane (11 x 7 rows) is centred: 2 padding rows above and below
    assert np.all(slices[:, :2] == -9) and np.all(slices[:, -2:] == -9)
    # masks keep their type and round-trip exactly
    assert geo.to_slices(mask).dtype == bool
    assert np.array_equal(geo.to_volume(geo.to_slices(mask)), mask)
    assert SliceGeometry.from_dict(geo.to_dict()) == geo
    with pytest.raises(ConfigError):
        SliceGeometry.from_dict({**geo.to_dict(), "extra": 1})


def test_round_trip_of_non_ras_file_is_exact(tmp_path):
    """volume -> slices -> volume -> save_like equals an LPS / permuted input voxel for voxel."""
    native, _ = _brain_image(shape=(14, 26, 22), seed=3)
    # file axes: (S->I, R->L, P->A) with anisotropic voxels and an offset
    affine = np.array([[0.0, -0.9, 0.0, 40.0],
                       [0.0, 0.0, 1.1, -30.0],
                       [-2.0, 0.0, 0.0, 20.0],
                       [0.0, 0.0, 0.0, 1.0]])
    src = _save(tmp_path / "lps.nii.gz", native, affine)
    vol = load_volume(src)
    assert vol.shape != native.shape  # really reoriented
    mask = brain_mask_from_image(vol.data)
    side = SliceGeometry.from_mask(mask, image_size=8, crop_margin=1).side
    geo = SliceGeometry.from_mask(mask, image_size=side, crop_margin=1)
    assert not geo.needs_resize
    back = geo.to_volume(geo.to_slices(vol.data))
    out = save_like(back, vol, tmp_path / "back.nii.gz")
    img = nib.load(str(out))
    assert np.array_equal(img.affine, nib.load(str(src)).affine)
    assert np.array_equal(np.asarray(img.dataobj), native)


@pytest.mark.parametrize("size", [12, 40])  # smaller and larger than the 21-voxel square
def test_geometry_resize_is_geometrically_consistent(size):
    shape = (30, 26, 4)
    mask = np.zeros(shape, bool)
    mask[5:24, 4:22, :] = True  # 19 x 18, margin 1 -> 21 x 20 -> square 21
    geo = SliceGeometry.from_mask(mask, image_size=size, crop_margin=1)
    assert geo.side == 21 and geo.needs_resize
    # a constant map is preserved inside the crop box
    const = geo.to_volume(np.full((4, size, size), 0.7, np.float32))
    x0, x1, y0, y1 = geo.box
    np.testing.assert_allclose(const[x0:x1, y0:y1], 0.7, rtol=1e-6)
    assert np.all(np.delete(const, np.s_[x0:x1], axis=0) == 0)
    # a block stays in place within one voxel, through linear and nearest interpolation
    block = np.zeros(shape, np.float32)
    block[8:17, 10:19, :] = 1.0
    for order in (0, 1):
        back = geo.to_volume(geo.to_slices(block, order=order), order=order) > 0.5
        xs = np.flatnonzero(back.any(axis=(1, 2)))
        ys = np.flatnonzero(back.any(axis=(0, 2)))
        assert abs(xs[0] - 8) <= 1 and abs(xs[-1] - 16) <= 1
        assert abs(ys[0] - 10) <= 1 and abs(ys[-1] - 18) <= 1
        assert (back != (block > 0.5)).mean() < 0.05
    # masks use nearest neighbour
    mask_slices = geo.to_slices(block > 0)
    assert mask_slices.dtype == bool and mask_slices.shape == (4, size, size)


def test_healthy_slice_indices_margins():
    lesion = np.zeros((3, 3, 12), bool)
    assert healthy_slice_indices(lesion, 3).tolist() == list(range(12))
    lesion[1, 1, 5] = True
    assert healthy_slice_indices(lesion, 0).tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert healthy_slice_indices(lesion, 2).tolist() == [0, 1, 2, 8, 9, 10, 11]
    lesion[0, 2, 0] = True
    lesion[2, 0, 11] = True
    assert healthy_slice_indices(lesion, 1).tolist() == [2, 3, 7, 8, 9]
    assert healthy_slice_indices(lesion, 6).tolist() == []
    with pytest.raises(ValueError):
        healthy_slice_indices(lesion, -1)


# --------------------------------------------------------------------------- prepare_volume

@pytest.fixture
def subject(tmp_path):
    data, brain = _brain_image(shape=(40, 44, 16), seed=4)
    seg = np.zeros(data.shape, np.int16)
    seg[15:22, 18:24, 7:9] = 2   # edema
    seg[17:19, 20:22, 8] = 4     # enhancing
    return {
        "image": _save(tmp_path / "flair.nii.gz", data),
        "seg": _save(tmp_path / "seg.nii.gz", seg),
        "brain": _save(tmp_path / "brain.nii.gz", brain.astype(np.uint8)),
        "data": data, "brain_mask": brain, "lesion": seg > 0,
    }


def test_prepare_volume_on_nifti_files(subject):
    cfg = PreprocessConfig(image_size=32, healthy_margin=1, min_brain_fraction=0.3)
    prep = prepare_volume(subject["image"], cfg, lesion_mask_path=subject["seg"])
    assert isinstance(prep, PreparedVolume)
    assert prep.slices.shape == (16, 32, 32, 1) and prep.slices.dtype == np.float32
    assert prep.brain.shape == prep.lesion.shape == (16, 32, 32, 1) and prep.brain.dtype == bool
    assert np.array_equal(prep.brain_mask, subject["brain_mask"])
    assert np.array_equal(prep.lesion_mask, subject["lesion"])
    assert prep.slices.min() == 0.0 and prep.slices.max() <= 1.0
    # pixels that no brain voxel contributes to are exactly background
    touched = prep.geometry.to_slices(subject["brain_mask"].astype(np.float32)) > 0
    assert np.all(prep.slices[~touched] == 0.0) and (~touched).sum() > 1000
    assert prep.lesion.any(axis=(1, 2, 3)).nonzero()[0].tolist() == [7, 8]
    healthy = prep.healthy_indices(1)
    assert not set(healthy) & {6, 7, 8, 9} and len(healthy) == 12
    train = prep.training_indices(cfg)
    assert set(train) <= set(healthy)
    assert np.all(prep.brain[train].mean(axis=(1, 2, 3)) >= 0.3)
    assert train.tolist() == [2, 3, 4, 5, 10, 11, 12, 13, 14]  # thin end slices of the ellipsoid dropped
    # maps go back onto the image grid
    back = prep.to_volume(prep.brain)
    assert back.dtype == bool and back.shape == subject["data"].shape
    assert (back != subject["brain_mask"]).mean() < 0.02
    # an explicit brain mask file gives the same result here
    explicit = prepare_volume(subject["image"], cfg, brain_mask_path=subject["brain"])
    assert np.array_equal(explicit.slices, prep.slices)
    assert explicit.lesion is None
    with pytest.raises(MissingModalityError, match="flair.nii.gz"):
        explicit.training_indices(cfg)


def test_prepare_volume_zscore(subject):
    cfg = PreprocessConfig(image_size=24, normalization="zscore")
    stats = fit_intensity_stats([load_volume(subject["image"])], [subject["brain_mask"]], cfg)
    prep = prepare_volume(subject["image"], cfg, stats=stats)
    assert prep.slices.min() == pytest.approx(-3.5)
    with pytest.raises(ConfigError):
        prepare_volume(subject["image"], cfg)


def test_prepare_volume_errors(subject, tmp_path):
    cfg = PreprocessConfig(image_size=32)
    bad_shape = _save(tmp_path / "small_mask.nii.gz", np.ones((40, 44, 15), np.uint8))
    with pytest.raises(GeometryMismatchError, match="small_mask"):
        prepare_volume(subject["image"], cfg, brain_mask_path=bad_shape)
    moved = np.eye(4)
    moved[0, 3] = 5.0
    bad_affine = _save(tmp_path / "moved_seg.nii.gz", np.zeros((40, 44, 16), np.uint8), moved)
    with pytest.raises(GeometryMismatchError, match="moved_seg"):
        prepare_volume(subject["image"], cfg, lesion_mask_path=bad_affine)
    empty = _save(tmp_path / "empty_mask.nii.gz", np.zeros((40, 44, 16), np.uint8))
    with pytest.raises(EmptyMaskError, match="empty_mask"):
        prepare_volume(subject["image"], cfg, brain_mask_path=empty)
    # an empty lesion mask is a lesion-free subject: every slice is healthy
    prep = prepare_volume(subject["image"], cfg, lesion_mask_path=empty)
    assert prep.healthy_indices(3).tolist() == list(range(16))
    blank = _save(tmp_path / "blank_flair.nii.gz", np.zeros((40, 44, 16), np.float32))
    with pytest.raises(EmptyMaskError, match="blank_flair"):
        prepare_volume(blank, cfg)


# --------------------------------------------------------------------------- real data

@pytest.mark.shared_data
@pytest.mark.skipif(not (DATA / "brats18").is_dir(), reason="shared BraTS data not available")
def test_real_brats_flair(record_property):
    case = DATA / "brats18" / "Brats18_TCIA10_628_1"
    cfg = PreprocessConfig(image_size=128, healthy_margin=3)
    prep = prepare_volume(case / "Brats18_TCIA10_628_1_flair.nii.gz", cfg,
                          lesion_mask_path=case / "Brats18_TCIA10_628_1_seg.nii.gz")
    assert prep.slices.shape == (155, 128, 128, 1)
    assert 0.0 <= prep.slices.min() and prep.slices.max() <= 1.0
    tumour = np.flatnonzero(prep.lesion_mask.any(axis=(0, 1)))
    assert tumour.size > 0
    healthy = prep.healthy_indices(cfg.healthy_margin)
    near = {int(z) + d for z in tumour for d in range(-3, 4)}
    assert not near & set(healthy.tolist())
    assert set(healthy.tolist()) | near >= set(range(155))
    train = prep.training_indices(cfg)
    assert 0 < len(train) < len(healthy)
    # the slices map back onto the normalised volume up to interpolation error
    normalized = normalize_intensity(prep.volume.data, prep.brain_mask, cfg)
    err = np.abs(prep.to_volume(prep.slices) - normalized)[prep.brain_mask]
    record_property("roundtrip_mean_abs_error", float(err.mean()))
    record_property("roundtrip_p99_abs_error", float(np.percentile(err, 99)))
    print(f"BraTS FLAIR 128px round trip: mean |err| {err.mean():.4f}, "
          f"p99 {np.percentile(err, 99):.4f}, max {err.max():.4f} (intensities in [0, 1])")
    assert err.mean() < 0.04
    assert np.percentile(err, 99) < 0.3
