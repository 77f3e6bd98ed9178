"""The built-in demo dataset: layout, determinism, anatomy, contrasts and lesions on real files."""
import csv
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from tfuad.data.demo import (
    LESION_DESCRIPTIONS,
    LESION_KINDS,
    MANIFEST_COLUMNS,
    demo_lesion_types,
    make_demo_dataset,
    mni152_tissues,
    render_demo_overview,
)
from tfuad.data.layouts import read_manifest
from tfuad.errors import ConfigError, DatasetError

COUNTS = {"train": 2, "calib": 1, "test": 4}  # test000..003: MS-like, tumour-like, cavity, heterotopia
KINDS = {"sub-test000": "ms", "sub-test001": "tumour", "sub-test002": "cavity", "sub-test003": "heterotopia"}
SHAPE = (91, 109, 91)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    manifest = make_demo_dataset(out, seed=0, n_train=COUNTS["train"], n_calib=COUNTS["calib"],
                                 n_test=COUNTS["test"])
    return manifest


def _rows(manifest):
    with open(manifest, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _load(manifest, row, column):
    return np.asanyarray(nib.load(manifest.parent / row[column]).dataobj)


def _row(manifest, subject):
    return next(r for r in _rows(manifest) if r["subject"] == subject)


def test_manifest_marker_and_files(demo):
    with open(demo, newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == list(MANIFEST_COLUMNS)
    rows = _rows(demo)
    assert [r["split"] for r in rows] == ["train"] * 2 + ["calib"] + ["test"] * 4
    assert [r["subject"] for r in rows] == ["sub-train000", "sub-train001", "sub-calib000", *KINDS]
    marker = json.loads((demo.parent / "tfuad_demo.json").read_text())
    assert marker["layout"] == "tfuad-demo" and marker["version"] == 2 and marker["seed"] == 0
    assert marker["subjects"] == COUNTS and marker["modalities"] == ["t1", "t2", "flair"]
    assert marker["lesion_types"] == KINDS
    assert demo_lesion_types(demo) == KINDS == demo_lesion_types(demo.parent)
    assert set(LESION_KINDS) == set(LESION_DESCRIPTIONS) == set(KINDS.values())
    affine = mni152_tissues().affine
    np.testing.assert_allclose(affine[:3, 3], [-90.0, -126.0, -72.0])
    for row in rows:
        assert bool(row["lesion_mask"]) == (row["split"] == "test")
        for column in ("t1", "t2", "flair", "brain_mask", "lesion_mask"):
            if not row[column]:
                continue
            assert row[column] == f"{row['subject']}/{row['subject']}_" + {
                "brain_mask": "brainmask", "lesion_mask": "seg"}.get(column, column) + ".nii.gz"
            img = nib.load(demo.parent / row[column])
            assert img.shape == SHAPE
            np.testing.assert_allclose(img.affine, affine)
            assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
            expected = np.uint8 if column.endswith("mask") else np.float32
            assert img.get_data_dtype() == expected
    # The layout reader recognises the dataset and marks train/calib subjects healthy.
    dataset = read_manifest(demo)
    assert dataset.layout == "tfuad-demo"
    assert {s.id: s.healthy for s in dataset.subjects} == {
        r["subject"]: r["split"] != "test" for r in rows}


def test_same_seed_same_voxels_independent_of_counts_other_seed_differs(demo, tmp_path):
    again = make_demo_dataset(tmp_path / "again", seed=0, n_train=1, n_calib=0, n_test=1)
    assert [r["subject"] for r in _rows(again)] == ["sub-train000", "sub-test000"]
    for subject in ("sub-train000", "sub-test000"):
        first, second = _row(demo, subject), _row(again, subject)
        for column in ("t1", "t2", "flair", "brain_mask", "lesion_mask"):
            if first[column]:
                a, b = _load(demo, first, column), _load(again, second, column)
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (subject, column)
    # Regenerating into an existing demo folder replaces it; another seed gives other voxels.
    other = make_demo_dataset(tmp_path / "again", seed=1, n_train=1, n_calib=0, n_test=0)
    assert other == again
    assert [r["subject"] for r in _rows(other)] == ["sub-train000"]
    assert not (tmp_path / "again" / "sub-test000").exists()
    assert json.loads((tmp_path / "again" / "tfuad_demo.json").read_text())["seed"] == 1
    a = _load(demo, _row(demo, "sub-train000"), "t1")
    b = _load(other, _row(other, "sub-train000"), "t1")
    assert not np.array_equal(a, b)
    assert not np.array_equal(_load(demo, _row(demo, "sub-train000"), "brain_mask"),
                              _load(other, _row(other, "sub-train000"), "brain_mask"))


def test_skull_stripped_background_is_zero_and_brains_differ(demo):
    masks = []
    for row in _rows(demo):
        brain = _load(demo, row, "brain_mask").astype(bool)
        assert 150_000 < brain.sum() < 320_000  # 1.2 to 2.6 litres of 8 mm3 voxels
        masks.append(brain)
        for modality in ("t1", "t2", "flair"):
            image = _load(demo, row, modality)
            assert np.isfinite(image).all()
            assert np.all(image[~brain] == 0.0)
            assert np.all(image[brain] > 0.0)
    overlaps = [(a & b).sum() / (a | b).sum() for a, b in zip(masks, masks[1:])]
    assert all(0.7 < o < 0.995 for o in overlaps), overlaps  # same template, own anatomy


def test_tissue_contrast_ordering(demo):
    tpl = mni152_tissues()
    wm = ndi.binary_erosion(tpl.wm > 0.95)
    gm = ndi.binary_erosion(tpl.gm > 0.9)
    csf = ndi.binary_erosion(tpl.ventricles > 0.5)
    for row in _rows(demo):
        if row["split"] == "test":
            continue
        means = {m: [float(_load(demo, row, m)[r].mean()) for r in (csf, gm, wm)]
                 for m in ("t1", "t2", "flair")}
        t1, t2, flair = means["t1"], means["t2"], means["flair"]
        assert t1[2] > t1[1] > t1[0], (row["subject"], t1)  # T1: WM > GM > CSF
        assert t2[0] > t2[1] > t2[2], (row["subject"], t2)  # T2: CSF > GM > WM
        assert flair[1] > flair[0] and flair[2] > flair[0], (row["subject"], flair)  # FLAIR: dark CSF


def test_lesions_inside_brain_and_visible(demo):
    white = mni152_tissues().wm > 0.8
    for row in [r for r in _rows(demo) if KINDS.get(r["subject"]) in ("ms", "tumour")]:
        kind = KINDS[row["subject"]]
        seg = _load(demo, row, "lesion_mask")
        assert set(np.unique(seg)) == {0, 1}
        lesion = seg.astype(bool)
        brain = _load(demo, row, "brain_mask").astype(bool)
        assert lesion.any() and not (lesion & ~brain).any()
        pieces, n = ndi.label(lesion)
        sizes = np.bincount(pieces.ravel())[1:]
        if kind == "ms":
            assert n >= 2 and sizes.min() >= 5 and sizes.max() < 1000, sizes
        else:
            assert n == 1 and 1000 <= sizes[0] <= 15000, sizes
        ring = ndi.binary_dilation(lesion, iterations=3) & ~ndi.binary_dilation(lesion) & white & brain
        assert ring.sum() > 20
        flair, t2, t1 = (_load(demo, row, m) for m in ("flair", "t2", "t1"))
        assert flair[lesion].mean() > 1.2 * flair[ring].mean()
        assert t2[lesion].mean() > 1.2 * t2[ring].mean()
        assert t1[lesion].mean() < 0.9 * t1[ring].mean()


def test_cavities_and_heterotopia_carry_intensities_found_in_healthy_brain(demo):
    """The hard lesions carry no abnormal intensity: a cavity is as dark (FLAIR) or bright (T2) as the
    subject's own CSF, a grey-matter nodule lies in the middle of the healthy intensity range."""
    for row in _rows(demo):
        kind = KINDS.get(row["subject"])
        if kind not in ("cavity", "heterotopia"):
            continue
        lesion = _load(demo, row, "lesion_mask").astype(bool)
        brain = _load(demo, row, "brain_mask").astype(bool)
        healthy = brain & ~ndi.binary_dilation(lesion, iterations=2)
        pieces, n = ndi.label(lesion)
        sizes = np.bincount(pieces.ravel())[1:]
        assert (1 if kind == "cavity" else 2) <= n <= 6 and sizes.min() >= 5 and 50 <= lesion.sum() <= 3000, sizes
        assert (mni152_tissues().wm[lesion] > 0.3).mean() > 0.6  # in the white matter
        core = ndi.binary_erosion(lesion) if kind == "cavity" else lesion
        flair, t2 = _load(demo, row, "flair"), _load(demo, row, "t2")
        # Fraction of healthy brain voxels at least as extreme as the lesion's median intensity.
        darker = (flair[healthy] <= np.median(flair[core])).mean()
        brighter_t2 = (t2[healthy] >= np.median(t2[core])).mean()
        if kind == "cavity":  # dark in FLAIR, CSF-bright in T2, like the healthy CSF
            assert 0.005 < darker < 0.1 and 0.005 < brighter_t2 < 0.1, (darker, brighter_t2)
            ring = ndi.binary_dilation(lesion, iterations=3) & ~ndi.binary_dilation(lesion) & brain
            assert np.median(flair[core]) < 0.5 * np.median(flair[ring])
        else:  # grey matter: mid-range in every contrast
            assert 0.2 < darker < 0.95 and 0.1 < brighter_t2 < 0.8, (darker, brighter_t2)


def _healthy_percentile(manifest, modality, q=95.0):
    """The ``q``th percentile of healthy brain voxels, each subject divided by its brain median."""
    values = []
    for row in _rows(manifest):
        if row["split"] != "test":
            brain = _load(manifest, row, "brain_mask").astype(bool)
            image = _load(manifest, row, modality)[brain]
            values.append(image / np.median(image))
    return float(np.percentile(np.concatenate(values), q))


def test_a_global_threshold_finds_the_bright_lesions_only(demo):
    """At the healthy 95th percentile (intensity / brain median): FLAIR finds MS and tumour lesions,
    misses every cavity voxel and finds grey-matter nodules only with many times their volume of healthy
    cortex; in T2 the lesions are as bright as CSF: the tumour is missed, and a threshold that finds the
    CSF-filled cavity finds all the CSF of the brain with it."""
    found = {}
    for modality in ("flair", "t2"):
        threshold = _healthy_percentile(demo, modality)
        for row in _rows(demo):
            if row["split"] != "test":
                continue
            brain = _load(demo, row, "brain_mask").astype(bool)
            lesion = _load(demo, row, "lesion_mask").astype(bool)
            image = _load(demo, row, modality)
            above = image / np.median(image[brain]) > threshold
            found[modality, KINDS[row["subject"]]] = ((above & lesion).sum() / lesion.sum(),
                                                      (above & brain & ~lesion).sum() / (above & lesion).sum()
                                                      if (above & lesion).any() else np.inf)
    assert found["flair", "ms"][0] > 0.8 and found["flair", "tumour"][0] > 0.8, found
    assert found["flair", "tumour"][1] < 5, found  # a large bright lesion: mostly lesion above the threshold
    assert found["flair", "cavity"][0] < 0.01, found
    assert found["flair", "heterotopia"][1] > 10, found  # healthy voxels above the threshold per lesion voxel
    assert found["t2", "tumour"][0] < 0.2, found
    assert found["t2", "cavity"][1] > 10, found


def test_refuses_foreign_folder_and_bad_options(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not empty") as err:
        make_demo_dataset(foreign, n_train=1, n_calib=0, n_test=0)
    assert str(foreign) in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        make_demo_dataset(tmp_path / "file")
    with pytest.raises(ConfigError, match="size"):
        make_demo_dataset(tmp_path / "new", size="medium")
    with pytest.raises(ConfigError, match="n_train"):
        make_demo_dataset(tmp_path / "new", n_train=0)
    with pytest.raises(ConfigError, match="seed"):
        make_demo_dataset(tmp_path / "new", seed=-1)
    assert not (tmp_path / "new").exists()


def test_overview_figure_shows_contrasts_and_lesion_outline(demo, tmp_path):
    import matplotlib.image as mpimg

    out = render_demo_overview(demo, tmp_path / "fig" / "overview.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(out)[..., :3]
    assert pixels.shape[0] > 1.5 * pixels.shape[1] > 450  # five rows (healthy, four lesion kinds) of three panels
    assert pixels.std() > 0.1
    red = (pixels[..., 0] > 0.8) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    assert red.sum() > 50  # the lesion outlines
    assert [p.name for p in out.parent.iterdir()] == ["overview.png"]  # no temporary file left
