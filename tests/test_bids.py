"""BIDS datasets as a layout (T1w/T2w/FLAIR -> t1/t2/flair, masks from derivatives) and detect's
outputs as a BIDS derivatives dataset, on tiny trees of real NIfTI files."""
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from helpers import cli

from tfuad.data.bids import derivative_prefix, parse_name, read_bids
from tfuad.data.layouts import discover
from tfuad.errors import DatasetError


def _nii(path, value=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((4, 5, 6), value, np.float32), np.eye(4)), path)
    return path


@pytest.fixture()
def bids_root(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"}))
    (root / "participants.tsv").write_text("participant_id\tage\thealthy\tsplit\nsub-01\t30\t1\ttrain\n"
                                           "sub-02\t61\t0\ttest\n")
    for name in ("sub-01_T1w", "sub-01_FLAIR", "sub-01_ce-gadolinium_T1w", "sub-01_T2starw"):
        _nii(root / "sub-01" / "anat" / f"{name}.nii.gz")
    (root / "sub-01" / "anat" / "sub-01_T1w.json").write_text("{}")
    for ses in ("1", "2"):
        for suffix in ("T1w", "T2w", "FLAIR"):
            _nii(root / "sub-02" / f"ses-{ses}" / "anat" / f"sub-02_ses-{ses}_acq-3d_{suffix}.nii.gz")
    manual = root / "derivatives" / "manual"
    _nii(manual / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_label-lesion_mask.nii.gz")
    _nii(manual / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_space-MNI152NLin2009cAsym_label-lesion_mask.nii.gz")
    _nii(manual / "sub-01" / "anat" / "sub-01_desc-brain_mask.nii.gz")
    return root


def test_a_bids_tree_is_found_with_modalities_masks_and_participants(bids_root):
    ds = discover(bids_root)
    assert ds.layout == "bids"
    assert ds.ids == ["sub-01", "sub-02_ses-1", "sub-02_ses-2"]  # a session is a volume of its own
    one, s1, s2 = ds.subjects
    assert one.modalities == ["flair", "t1", "t1ce"]  # T2starw is not a tfuad modality; ce- T1w is t1ce
    assert one.image("t1").name == "sub-01_T1w.nii.gz" and one.image("t1ce").name == "sub-01_ce-gadolinium_T1w.nii.gz"
    assert s1.modalities == ["flair", "t1", "t2"] and s1.image("t2").name == "sub-02_ses-1_acq-3d_T2w.nii.gz"
    assert s1.lesion_mask.name == "sub-02_ses-1_label-lesion_mask.nii.gz"  # the MNI-space one is not on the image grid
    assert s2.lesion_mask is None and one.lesion_mask is None
    assert one.brain_mask.name == "sub-01_desc-brain_mask.nii.gz"
    assert (one.healthy, one.split, s1.healthy, s1.split) == (True, "train", False, "test")
    assert discover(bids_root / "sub-02").ids == ["sub-02_ses-1", "sub-02_ses-2"]  # one subject's folder


def test_ambiguous_files_are_refused_naming_both(bids_root):
    _nii(bids_root / "sub-01" / "anat" / "sub-01_run-2_FLAIR.nii.gz")
    with pytest.raises(DatasetError, match="two FLAIR images for one session: sub-01_FLAIR.nii.gz and "
                                           "sub-01_run-2_FLAIR.nii.gz"):
        discover(bids_root)
    (bids_root / "sub-01" / "anat" / "sub-01_run-2_FLAIR.nii.gz").unlink()

    other = bids_root / "derivatives" / "rater2" / "sub-02" / "ses-1" / "anat"
    _nii(other / "sub-02_ses-1_desc-lesion_mask.nii.gz")
    with pytest.raises(DatasetError, match="two lesion masks for sub-02 session 1: derivatives/manual/.* and "
                                           "derivatives/rater2/"):
        discover(bids_root)
    chosen = read_bids(bids_root, derivatives="rater2")
    assert chosen[1].lesion_mask.parent == other
    with pytest.raises(DatasetError, match="no derivatives folder 'rater3' \\(derivatives/: manual, rater2\\)"):
        read_bids(bids_root, derivatives="rater3")


def test_the_derivatives_pipeline_is_chosen_on_the_command_line(bids_root, tmp_path, demo_data):
    other = bids_root / "derivatives" / "rater2" / "sub-02" / "ses-1" / "anat"
    _nii(other / "sub-02_ses-1_desc-lesion_mask.nii.gz")
    both = cli("data", "info", bids_root)
    assert both.exit_code == 1 and "two lesion masks for sub-02 session 1" in both.output
    chosen = cli("data", "info", bids_root, "--derivatives-pipeline", "rater2")
    assert chosen.exit_code == 0, chosen.output
    assert "  sub-02_ses-1 [test]: flair, t1, t2; lesion mask\n" in chosen.output

    out = tmp_path / "prep"
    cli("preprocess", bids_root, "--out", out, "--modality", "flair", "--steps", "reorient",
        "--derivatives-pipeline", "rater2", check=True)
    records = {s: json.loads((out / s / "preprocess.json").read_text())["inputs"] for s in ("sub-01", "sub-02_ses-1")}
    assert records["sub-02_ses-1"]["lesion_mask"] == str(other / "sub-02_ses-1_desc-lesion_mask.nii.gz")
    assert records["sub-01"]["brain_mask"] is None  # its brain mask is in derivatives/manual, not read
    assert discover(out).subject("sub-02_ses-1").lesion_mask.is_file()

    unknown = cli("data", "info", bids_root, "--derivatives-pipeline", "rater3")
    assert unknown.exit_code == 1 and "no derivatives folder 'rater3' (derivatives/: manual, rater2)" in unknown.output
    not_bids = cli("data", "info", demo_data, "--derivatives-pipeline", "manual")
    assert not_bids.exit_code == 1 and "is not a BIDS dataset" in not_bids.output
    for command in (["train"], ["calibrate"], ["evaluate"], ["crossval"], ["preprocess"], ["detect"], ["data", "info"]):
        text = cli(*command, "--help", check=True).output
        assert "--derivatives-pipeline NAME" in text and "derivatives/NAME/" in " ".join(text.split()), command


def test_derivative_names_follow_the_source_entities():
    assert parse_name("sub-01_ses-2_acq-mprage_T1w.nii.gz") == ({"sub": "01", "ses": "2", "acq": "mprage"}, "T1w")
    assert parse_name("IXI002-Guys-0828_T1.nii.gz") is None
    folder, prefix = derivative_prefix("sub-02_ses-1", "/data/sub-02_ses-1_acq-3d_FLAIR.nii.gz")
    assert (folder.as_posix(), prefix) == ("sub-02/ses-1/anat", "sub-02_ses-1_acq-3d")
    assert derivative_prefix("Brats18_2013_3_1", "/x/Brats18_2013_3_1_flair.nii.gz")[1] == "sub-Brats18201331"


def test_detect_writes_a_bids_derivatives_dataset_that_reads_back(tmp_path, trained_run, demo_data):
    subjects = discover(demo_data).split("test").subjects
    root = tmp_path / "ds"
    (root / "sub-a" / "anat").mkdir(parents=True)
    shutil.copy2(subjects[0].image("flair"), root / "sub-a" / "anat" / "sub-a_FLAIR.nii.gz")
    (root / "sub-b" / "ses-pre" / "anat").mkdir(parents=True)
    shutil.copy2(subjects[1].image("flair"), root / "sub-b" / "ses-pre" / "anat" / "sub-b_ses-pre_FLAIR.nii.gz")
    out = root / "derivatives" / "tfuad"
    cli("detect", root, "--model", trained_run, "--out", out, "--bids-derivatives", check=True)

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "tfuad"
    a, b = out / "sub-a" / "anat", out / "sub-b" / "ses-pre" / "anat"
    assert {p.name for p in a.iterdir()} == {
        "sub-a_desc-anomaly_FLAIR.nii.gz", "sub-a_desc-anomaly_FLAIR.json", "sub-a_label-lesion_mask.nii.gz",
        "sub-a_label-lesion_mask.json", "sub-a_desc-overview_FLAIR.png", "detection.json"}
    assert (b / "sub-b_ses-pre_label-lesion_mask.nii.gz").is_file()
    assert json.loads((a / "sub-a_label-lesion_mask.json").read_text())["Type"] == "Lesion"
    mask = nib.load(b / "sub-b_ses-pre_label-lesion_mask.nii.gz")
    np.testing.assert_allclose(mask.affine, nib.load(subjects[1].image("flair")).affine, atol=1e-5)
    assert "**/detection.json" in (out / ".bidsignore").read_text(encoding="utf-8")

    # tfuad's own derivatives are predictions: the dataset still reads without them, or with them when named
    assert [s.lesion_mask for s in discover(root).subjects] == [None, None]
    predicted = read_bids(root, derivatives="tfuad")
    assert [s.lesion_mask.name for s in predicted] == ["sub-a_label-lesion_mask.nii.gz",
                                                      "sub-b_ses-pre_label-lesion_mask.nii.gz"]
