"""Dataset discovery: BraTS, MSLUB, IXI, manifests and the demo layout."""
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tfuad.data.layouts import (
    PROTOCOLS,
    Dataset,
    Subject,
    discover,
    normalize_modality,
    read_manifest,
)
from tfuad.errors import ConfigError, DatasetError, MissingModalityError

BRATS_MODS = ("flair", "t1", "t1ce", "t2")
MSLUB_SUFFIX = "N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"


def nii(path: Path, value: float = 1.0) -> Path:
    """Write a real 4x4x4 NIfTI file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), value, np.float32), np.eye(4)), str(path))
    return path


def make_brats(root: Path, cases, *, without_seg=()) -> Path:
    for case in cases:
        for mod in BRATS_MODS:
            nii(root / case / f"{case}_{mod}.nii.gz")
        if case not in without_seg:
            nii(root / case / f"{case}_seg.nii.gz", 0)
    return root


def make_mslub(root: Path, patients) -> Path:
    for patient in patients:
        for mod in ("FLAIR", "T1", "T1POST", "T2"):
            nii(root / patient / f"{mod}_{MSLUB_SUFFIX}")
        nii(root / patient / "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz", 0)
    return root


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- BraTS -------------------------------------------------------------------

def test_brats_root_finds_cases_sorted_with_seg_as_lesion_mask(tmp_path):
    root = make_brats(tmp_path / "brats", ["Brats18_B_1", "Brats18_A_1", "Brats18_C_1"],
                      without_seg=["Brats18_C_1"])
    (tmp_path / "brats" / "notes").mkdir()  # an unrelated folder is ignored
    nii(tmp_path / "brats" / "Brats18_A_1" / "other_flair.nii.gz")  # not <case>_<mod>: ignored

    ds = discover(root)

    assert ds.layout == "brats"
    assert ds.root == root.resolve()
    assert ds.ids == ["Brats18_A_1", "Brats18_B_1", "Brats18_C_1"]
    assert ds.modalities == list(BRATS_MODS)
    a = ds.subject("Brats18_A_1")
    assert a.image("flair") == root.resolve() / "Brats18_A_1" / "Brats18_A_1_flair.nii.gz"
    assert a.image("T1CE").name == "Brats18_A_1_t1ce.nii.gz"
    assert a.require_lesion_mask().name == "Brats18_A_1_seg.nii.gz"
    assert "seg" not in a.images and a.healthy is False and a.split is None
    assert ds.subject("Brats18_C_1").lesion_mask is None


def test_brats_case_without_seg_is_usable_for_inference_only(tmp_path):
    ds = discover(make_brats(tmp_path, ["Brats18_X_1"], without_seg=["Brats18_X_1"]))
    subject = ds.subject("Brats18_X_1")
    assert subject.image("flair").is_file()
    with pytest.raises(MissingModalityError) as err:
        subject.require_lesion_mask()
    message = str(err.value)
    assert "no lesion mask (seg) for subject Brats18_X_1" in message
    assert "inference only" in message and "healthy-slice selection or evaluation" in message
    assert message.startswith(str(tmp_path.resolve() / "Brats18_X_1"))
    assert "\n" not in message


def test_single_brats_case_folder(tmp_path):
    make_brats(tmp_path, ["Brats18_Y_1"])
    ds = discover(tmp_path / "Brats18_Y_1")
    assert ds.layout == "brats" and ds.ids == ["Brats18_Y_1"]
    assert ds.subjects[0].lesion_mask.name == "Brats18_Y_1_seg.nii.gz"


def test_missing_modality_error_names_folder_modality_and_what_exists(tmp_path):
    root = tmp_path / "brats"
    nii(root / "Brats18_Z_1" / "Brats18_Z_1_flair.nii.gz")
    nii(root / "Brats18_Z_1" / "Brats18_Z_1_t2.nii.gz")
    subject = discover(root).subject("Brats18_Z_1")
    with pytest.raises(MissingModalityError) as err:
        subject.image("T1ce")
    message = str(err.value)
    assert str(root.resolve() / "Brats18_Z_1") in message
    assert "'t1ce'" in message and "has: flair, t2" in message


def test_brats_case_with_seg_only_is_an_error(tmp_path):
    nii(tmp_path / "Brats18_S_1" / "Brats18_S_1_seg.nii.gz")
    with pytest.raises(DatasetError, match="seg file but no image"):
        discover(tmp_path)


def test_two_files_for_one_modality_is_an_error(tmp_path):
    make_brats(tmp_path, ["Brats18_D_1"])
    nii(tmp_path / "Brats18_D_1" / "Brats18_D_1_flair.nii")
    with pytest.raises(DatasetError, match=r"two files for 'flair'"):
        discover(tmp_path)


# --- MSLUB -------------------------------------------------------------------

def test_mslub_root_and_single_patient(tmp_path):
    root = make_mslub(tmp_path / "mslub", ["patient02", "patient01"])
    for ds in (discover(root), discover(root / "patient01")):
        assert ds.layout == "mslub"
        assert ds.modalities == ["flair", "t1", "t1ce", "t2"]
        p = ds.subject("patient01")
        assert p.image("t1ce").name.startswith("T1POST_")
        assert p.image("T1POST") == p.image("t1ce")
        assert p.image("t1").name.startswith("T1_")
        assert p.require_lesion_mask().name.startswith("GOLD_STANDARD_")
    assert discover(root).ids == ["patient01", "patient02"]
    assert discover(root / "patient01").ids == ["patient01"]


# --- IXI ---------------------------------------------------------------------

def test_ixi_flat_folder_keeps_t1_t2_pd_and_marks_healthy(tmp_path):
    for name in ("IXI012-HH-1211_T1", "IXI012-HH-1211_T2", "IXI012-HH-1211_PD", "IXI012-HH-1211_MRA",
                 "IXI002-Guys-0828-T1", "IXI002-Guys-0828-DTI-00", "IXI099-IOP-0001_MRA"):
        nii(tmp_path / f"{name}.nii.gz")
    (tmp_path / "readme.txt").write_text("not an image")

    ds = discover(tmp_path)

    assert ds.layout == "ixi"
    # IXI099 has only MRA, which is not kept: it is not a subject
    assert ds.ids == ["IXI002-Guys-0828", "IXI012-HH-1211"]
    assert ds.subject("IXI012-HH-1211").modalities == ["pd", "t1", "t2"]
    assert ds.subject("IXI002-Guys-0828").modalities == ["t1"]
    subject = ds.subject("IXI012-HH-1211")
    assert subject.healthy is True and subject.lesion_mask is None
    with pytest.raises(MissingModalityError, match="marked healthy"):
        subject.require_lesion_mask()


# --- manifests ---------------------------------------------------------------

def test_manifest_relative_absolute_and_empty_cells(tmp_path):
    data = tmp_path / "data"
    a_flair = nii(data / "a" / "flair.nii.gz")
    nii(data / "a" / "t1post.nii.gz")
    nii(data / "a" / "brain.nii.gz")
    nii(data / "a" / "lesion.nii.gz")
    b_flair = nii(tmp_path / "elsewhere" / "b_flair.nii.gz")
    csv_path = write_csv(
        data / "list.csv",
        "Subject,Split,FLAIR,T1POST,brain_mask,lesion_mask,healthy\n"
        "sub-b,TEST," + str(b_flair) + ",,,,\n"
        "sub-a,train,a/flair.nii.gz,a/t1post.nii.gz,a/brain.nii.gz,a/lesion.nii.gz,yes\n"
        ",,,,,,\n",
    )

    ds = discover(csv_path)

    assert ds.layout == "manifest" and ds.root == csv_path.resolve()
    assert ds.ids == ["sub-a", "sub-b"]
    a, b = ds.subjects
    assert a.image("flair") == a_flair.resolve()
    assert a.modalities == ["flair", "t1ce"]
    assert a.brain_mask.name == "brain.nii.gz" and a.lesion_mask.name == "lesion.nii.gz"
    assert a.split == "train" and a.healthy is True
    assert b.image("flair") == b_flair and b.modalities == ["flair"]
    assert b.split == "test" and b.healthy is False
    assert b.lesion_mask is None and b.brain_mask is None
    assert ds.modalities == ["flair", "t1ce"]
    assert read_manifest(csv_path).ids == ds.ids


def test_folder_with_manifest_is_read_as_manifest_even_with_brats_cases(tmp_path):
    make_brats(tmp_path, ["Brats18_M_1"])
    write_csv(tmp_path / "manifest.csv", "subject,flair\nonly,Brats18_M_1/Brats18_M_1_flair.nii.gz\n")
    assert discover(tmp_path).layout == "manifest"
    assert discover(tmp_path).ids == ["only"]
    assert discover(tmp_path, layout="brats").ids == ["Brats18_M_1"]


def test_demo_layout_marks_train_and_calib_healthy(tmp_path):
    for sid in ("d0", "d1", "d2", "d3"):
        nii(tmp_path / f"{sid}_flair.nii.gz")
    write_csv(
        tmp_path / "manifest.csv",
        "subject,split,flair,healthy\n"
        "d0,train,d0_flair.nii.gz,\n"
        "d1,calib,d1_flair.nii.gz,\n"
        "d2,test,d2_flair.nii.gz,\n"
        "d3,train,d3_flair.nii.gz,no\n",
    )
    plain = discover(tmp_path)
    assert plain.layout == "manifest"
    assert [s.healthy for s in plain] == [False, False, False, False]

    (tmp_path / "tfuad_demo.json").write_text(json.dumps({"layout": "tfuad-demo", "seed": 0}))
    demo = discover(tmp_path)
    assert demo.layout == "tfuad-demo"
    assert {s.id: s.healthy for s in demo} == {"d0": True, "d1": True, "d2": False, "d3": False}
    assert discover(tmp_path / "manifest.csv").layout == "tfuad-demo"
    assert discover(tmp_path, layout="manifest").layout == "manifest"


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("name,flair\nx,x.nii.gz\n", 1, "missing required column 'subject'"),
        ("subject,flair\nx,x.nii.gz\ny,x.nii.gz\nx,x.nii.gz\n", 4, "duplicate subject id 'x' (first on line 2)"),
        ("subject,flair\nx,x.nii.gz\ny,nowhere/y.nii.gz\n", 3, "column 'flair' file 'nowhere/y.nii.gz' does not exist"),
        ("subject,flair,lesion_mask\nx,x.nii.gz,gone.nii.gz\n", 2, "column 'lesion_mask' file 'gone.nii.gz'"),
        ("subject,flair,healthy\nx,x.nii.gz,maybe\n", 2, "healthy value 'maybe'"),
        ("subject,flair\nx,x.nii.gz,extra\n", 2, "3 cells but the header has 2 columns"),
        ("subject,flair,t1\nx,,\n", 2, "subject 'x' has no image"),
        ("subject,flair,FLAIR\nx,x.nii.gz,x.nii.gz\n", 1, "columns repeated: flair"),
        ("subject,flair\n,x.nii.gz\n", 2, "empty subject id"),
    ],
)
def test_bad_manifest_names_file_line_and_problem(tmp_path, text, line, problem):
    nii(tmp_path / "x.nii.gz")
    csv_path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(DatasetError) as err:
        read_manifest(csv_path)
    message = str(err.value)
    assert message.startswith(f"{csv_path.resolve()}: line {line}: ")
    assert problem in message
    assert "\n" not in message


def test_manifest_without_rows_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="manifest lists no subject"):
        read_manifest(write_csv(tmp_path / "m.csv", "subject,flair\n"))


# --- errors on the path itself ------------------------------------------------

def test_missing_path_other_file_and_unrecognised_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*looked for: manifest.*brats.*mslub.*ixi"):
        discover(tmp_path / "nope")
    with pytest.raises(DatasetError, match="not a dataset folder nor a manifest .csv file"):
        discover(nii(tmp_path / "single.nii.gz"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as err:
        discover(empty)
    assert str(err.value).startswith(f"{empty}: no recognised dataset layout; looked for: manifest")
    assert "\n" not in str(err.value)


def test_forced_layout_mismatch_and_unknown_layout(tmp_path):
    root = make_brats(tmp_path / "brats", ["Brats18_F_1"])
    with pytest.raises(DatasetError, match="no subject of the ixi layout found"):
        discover(root, layout="ixi")
    with pytest.raises(DatasetError, match="no manifest.csv in this folder"):
        discover(root, layout="manifest")
    with pytest.raises(ConfigError, match="unknown dataset layout 'nifti'.*brats"):
        discover(root, layout="nifti")


# --- Dataset operations ---------------------------------------------------------

def test_select_split_subject_and_duplicates(tmp_path):
    ds = discover(make_brats(tmp_path, ["Brats18_A_1", "Brats18_B_1", "Brats18_C_1"]))
    assert ds.select(["Brats18_C_1", "Brats18_A_1"]).ids == ["Brats18_C_1", "Brats18_A_1"]
    assert ds.select("Brats18_B_1").ids == ["Brats18_B_1"]
    with pytest.raises(DatasetError, match="unknown subject ids: Brats18_Q_1"):
        ds.select(["Brats18_A_1", "Brats18_Q_1"])
    with pytest.raises(DatasetError, match="more than once: Brats18_A_1"):
        ds.select(["Brats18_A_1", "Brats18_A_1"])
    with pytest.raises(DatasetError, match="no subject 'Brats18_Q_1'"):
        ds.subject("Brats18_Q_1")
    with pytest.raises(DatasetError, match=r"no subject in split 'train' \(splits: none\)"):
        ds.split("train")
    with pytest.raises(DatasetError, match="appears twice"):
        Dataset(tmp_path, "brats", [ds.subjects[0], ds.subjects[0]])


def test_subject_normalises_modality_names_and_paths():
    s = Subject("s", {"T2": "b.nii.gz", "FLAIR": "a.nii.gz"}, lesion_mask="l.nii.gz")
    assert list(s.images) == ["flair", "t2"]
    assert s.image("flair") == Path("a.nii.gz") and s.lesion_mask == Path("l.nii.gz")
    assert normalize_modality(" T1POST ") == "t1ce"
    with pytest.raises(DatasetError, match="two files for 't1ce'"):
        Subject("s", {"t1ce": "a.nii.gz", "T1POST": "b.nii.gz"})


def test_protocol_assigns_splits_and_names_missing_cases(tmp_path):
    protocol = PROTOCOLS["brats-healthy-slices"]
    listed = [case for ids in protocol.values() for case in ids]
    extra = "Brats18_CBICA_AVG_1"
    root = tmp_path / "brats"
    for case in listed + [extra]:
        nii(root / case / f"{case}_flair.nii.gz")

    ds = discover(root).with_protocol("brats-healthy-slices")

    for split, ids in protocol.items():
        assert ds.split(split).ids == sorted(ids)
    assert ds.subject(extra).split is None
    assert len(ds) == len(listed) + 1

    dropped = listed[3], listed[-1]
    partial = discover(root).select([i for i in discover(root).ids if i not in dropped])
    with pytest.raises(DatasetError) as err:
        partial.with_protocol("brats-healthy-slices")
    assert f"missing here: {dropped[0]}, {dropped[1]}" in str(err.value)
    with pytest.raises(ConfigError, match="unknown protocol 'nope'.*brats-healthy-slices"):
        ds.with_protocol("nope")


def test_protocol_splits_are_disjoint_and_sized():
    protocol = PROTOCOLS["brats-healthy-slices"]
    assert {k: len(v) for k, v in protocol.items()} == {"train": 10, "calib": 2, "test": 2}
    everything = [case for ids in protocol.values() for case in ids]
    assert len(set(everything)) == len(everything)


# --- real data -------------------------------------------------------------------

@pytest.mark.shared_data
def test_real_brats(shared_data):
    ds = discover(shared_data / "brats18")
    assert ds.layout == "brats" and len(ds) == 15
    assert ds.modalities == list(BRATS_MODS)
    unlabelled = [s.id for s in ds if s.lesion_mask is None]
    assert unlabelled == ["Brats18_CBICA_AVG_1"]
    assert all(s.lesion_mask.is_file() for s in ds if s.lesion_mask is not None)
    with pytest.raises(MissingModalityError, match="inference only"):
        ds.subject("Brats18_CBICA_AVG_1").require_lesion_mask()


@pytest.mark.shared_data
def test_real_brats_protocol_matches_readme(shared_data):
    ds = discover(shared_data / "brats18").with_protocol("brats-healthy-slices")
    assert {k: len(ds.split(k)) for k in ("train", "calib", "test")} == {"train": 10, "calib": 2, "test": 2}
    readme = (shared_data / "README.md").read_text(encoding="utf-8")
    section = readme.split("brats-healthy-slices", 1)[1]
    named = re.findall(r"\bBrats18_\w+", section)
    protocol = PROTOCOLS["brats-healthy-slices"]
    assert named == protocol["train"] + protocol["calib"] + protocol["test"]


@pytest.mark.shared_data
def test_real_mslub(shared_data):
    for ds in (discover(shared_data / "mslub"), discover(shared_data / "mslub" / "patient07")):
        assert ds.layout == "mslub" and ds.ids == ["patient07"]
        patient = ds.subjects[0]
        assert patient.modalities == ["flair", "t1", "t1ce", "t2"]
        assert patient.require_lesion_mask().name.startswith("GOLD_STANDARD_")


@pytest.mark.shared_data
def test_real_ixi(shared_data):
    ds = discover(shared_data / "ixi_t1")
    assert ds.layout == "ixi" and len(ds) == 40 and ds.modalities == ["t1"]
    assert all(s.healthy and s.image("t1").is_file() for s in ds)
    assert all(re.fullmatch(r"IXI\d+-HH-\d+", s.id) for s in ds)
