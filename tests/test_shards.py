"""Cohorts larger than one machine: --shard K/N splits without overlap or gap, reruns skip finished
subjects, and `tfuad merge` makes one manifest and QC table of the shards."""
import csv
import itertools
import json
import random
import shutil

import nibabel as nib
import numpy as np
import pytest
from helpers import cli

from tfuad.data.layouts import discover
from tfuad.data.shards import parse_shard, shard_ids, shard_label
from tfuad.errors import ConfigError

FAST_STEPS = ("--steps", "reorient,normalize")


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 40])
def test_shards_cover_the_cohort_once_whatever_the_input_order(n):
    cohort = [f"IXI{i:03d}-HH-{i % 7}" for i in range(23)]
    shards = [shard_ids(cohort, k, n) for k in range(n)]
    assert sorted(itertools.chain.from_iterable(shards)) == sorted(cohort)  # no gap
    for a, b in itertools.combinations(shards, 2):
        assert not set(a) & set(b)  # no overlap
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
    shuffled = cohort[:]
    random.Random(5).shuffle(shuffled)
    assert [shard_ids(shuffled, k, n) for k in range(n)] == shards  # the split depends on the ids, not their order
    assert [shard_ids(list(reversed(cohort)), k, n) for k in range(n)] == shards


def test_shard_arguments_are_checked():
    assert parse_shard(" 9/10 ") == (9, 10)
    assert shard_label(3, 10) == "shard-3-of-10" and shard_label(3, 100) == "shard-03-of-100"
    for bad in ("10/10", "-1/4", "1/0", "a/3", "3", "1/2/3"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(ConfigError, match="twice: s1"):
        shard_ids(["s1", "s2", "s1"], 0, 2)


def _cohort(folder, n=5, corrupt=None):
    """``n`` small whole-head-like volumes (and a truncated file named ``corrupt``)."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        data = np.zeros((12, 14, 10), np.float32)
        data[2:10, 3:11, 2:8] = rng.uniform(50, 150, size=(8, 8, 6))
        paths.append(folder / f"subj{i:02d}.nii.gz")
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), paths[-1])
    if corrupt:
        paths.append(folder / f"{corrupt}.nii.gz")
        paths[-1].write_bytes(paths[0].read_bytes()[:60])
    return paths


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_preprocess_shards_merge_into_one_manifest_and_qc_table(tmp_path):
    inputs = _cohort(tmp_path / "raw", corrupt="subj99")
    out = tmp_path / "prep"
    for k in (2, 0):  # shard 1 of 3 not yet run
        result = cli("preprocess", *inputs, "--out", out, *FAST_STEPS, "--shard", f"{k}/3", "--calib", 1)
        assert result.exit_code == (1 if k == 2 else 0), result.output
    assert not (out / "manifest.csv").exists()  # a shard writes no manifest: it would hold only its subjects
    early = cli("merge", out, "--out", out)
    assert early.exit_code == 1 and "shards without a record (not run, or still running): preprocess 1/3" in \
        early.output

    assert cli("preprocess", *inputs, "--out", out, *FAST_STEPS, "--shard", "1/3", "--calib", 1).exit_code == 0
    shard_records = [json.loads((out / "shards" / f"shard-{k}-of-3.json").read_text()) for k in range(3)]
    assert [r["subjects"] for r in shard_records] == [["subj00", "subj03"], ["subj01", "subj04"],
                                                      ["subj02", "subj99"]]
    assert shard_records[2]["failed"].keys() == {"subj99"}

    merged = cli("merge", out, "--out", out)
    assert merged.exit_code == 1  # one subject failed: named, and the rest is merged
    assert "1 failed: subj99" in merged.output and "shards without a record" not in merged.output
    dataset = discover(out)
    assert dataset.ids == [f"subj{i:02d}" for i in range(5)]
    assert [s.split for s in dataset.subjects].count("calib") == 1  # --calib picked over the whole cohort, once
    assert all(s.image("t1").is_file() and s.brain_mask.is_file() for s in dataset.subjects)
    qc = {row["subject"]: row for row in _rows(out / "qc.csv")}
    assert {s: r["status"] for s, r in qc.items()} == {**{f"subj{i:02d}": "done" for i in range(5)},
                                                       "subj99": "failed"}
    assert qc["subj03"]["shard"] == "0/3" and "subj99" in qc["subj99"]["error"]
    assert (out / "qc_montage.png").is_file()


def test_a_rerun_skips_finished_subjects_and_merge_reads_separate_folders(tmp_path):
    inputs = _cohort(tmp_path / "raw", n=4)
    outs = [tmp_path / f"shard{k}" for k in range(2)]
    for k, out in enumerate(outs):
        assert cli("preprocess", *inputs, "--out", out, *FAST_STEPS, "--shard", f"{k}/2").exit_code == 0
    record = outs[0] / "subj00" / "preprocess.json"
    before = record.read_bytes()
    rerun = cli("preprocess", *reversed(inputs), "--out", outs[0], *FAST_STEPS, "--shard", "0/2")
    assert rerun.exit_code == 0, rerun.output
    assert "2 subject(s) already finished with these settings, not redone: subj00, subj02" in rerun.output
    assert record.read_bytes() == before
    other = cli("preprocess", *inputs, "--out", outs[0], "--steps", "reorient", "--shard", "0/2")
    assert "already finished" not in other.output  # other settings: redone

    merged_dir = tmp_path / "merged"
    assert cli("merge", *outs, "--out", merged_dir).exit_code == 0
    dataset = discover(merged_dir)
    assert dataset.ids == ["subj00", "subj01", "subj02", "subj03"]
    assert dataset.subject("subj01").image("t1").resolve().parent == (outs[1] / "subj01").resolve()


def test_a_subject_in_two_shard_folders_is_refused(tmp_path):
    inputs = _cohort(tmp_path / "raw", n=2)
    for name in ("a", "b"):
        assert cli("preprocess", *inputs, "--out", tmp_path / name, *FAST_STEPS).exit_code == 0
    result = cli("merge", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "m")
    assert result.exit_code == 1 and "subject 'subj00' has a preprocess record in two places" in result.output


def test_a_standardisation_fit_cannot_be_sharded(tmp_path):
    inputs = _cohort(tmp_path / "raw", n=2)
    result = cli("preprocess", *inputs, "--out", tmp_path / "prep", *FAST_STEPS, "--standardize-fit",
                 "--shard", "0/2")
    assert result.exit_code == 1
    assert "cannot run in shards" in result.output and result.output.count("\n") == 1


def test_detect_shards_skip_finished_sets_and_merge_into_one_table(tmp_path, trained_run, demo_data):
    out = tmp_path / "detections"
    ids = discover(demo_data).ids
    for k in range(2):
        result = cli("detect", demo_data, "--model", trained_run, "--out", out, "--shard", f"{k}/2")
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.name != "shards") == sorted(ids)
    first = sorted(ids)[0]
    before = (out / first / "detection.json").read_bytes()
    rerun = cli("detect", demo_data, "--model", trained_run, "--out", out, "--shard", "0/2")
    assert rerun.exit_code == 0 and rerun.output.count("not redone") == len(sorted(ids)[0::2])
    assert (out / first / "detection.json").read_bytes() == before
    merged = cli("merge", out, "--out", tmp_path / "table")
    assert merged.exit_code == 0, merged.output
    rows = _rows(tmp_path / "table" / "detections.csv")
    assert [r["subject"] for r in rows] == sorted(ids)
    assert {r["shard"] for r in rows} == {"0/2", "1/2"}


def test_a_raw_detect_shard_records_its_failed_scan_and_a_rerun_retries_only_that(tmp_path, raw_run, demo_data):
    scans = tmp_path / "scans"
    scans.mkdir()
    for subject in discover(demo_data).split("test").subjects:
        shutil.copy2(subject.image("flair"), scans / f"{subject.id}.nii.gz")
    empty = scans / "empty.nii.gz"  # nothing to preprocess: no voxel of brain
    nib.save(nib.Nifti1Image(np.zeros((12, 14, 10), np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), empty)
    inputs = sorted(scans.iterdir())
    out = tmp_path / "detections"

    def detect(k):
        return cli("detect", *inputs, "--raw", "--model", raw_run, "--method", "intensity", "--out", out,
                   "--shard", f"{k}/2")

    first = detect(0)  # empty and sub-test001
    assert first.exit_code == 1 and "1 of 2 scans failed" in first.output, first.output
    record = json.loads((out / "shards" / "shard-0-of-2.json").read_text())
    assert record["subjects"] == ["empty", "sub-test001"] and record["done"] == ["sub-test001"]
    assert list(record["failed"]) == ["empty"]
    assert record["failed"]["empty"].startswith(f"subject empty: {empty}: ") and "no non-zero voxel" in \
        record["failed"]["empty"]
    assert detect(1).exit_code == 0
    merged = cli("merge", out, "--out", tmp_path / "table")
    assert merged.exit_code == 1 and "1 failed: empty (errors in detections.csv)" in merged.output, merged.output
    rows = {r["subject"]: r for r in _rows(tmp_path / "table" / "detections.csv")}
    assert {s: r["status"] for s, r in rows.items()} == {"empty": "failed", "sub-test000": "done",
                                                         "sub-test001": "done"}
    assert rows["empty"]["error"] == record["failed"]["empty"] and rows["sub-test001"]["shard"] == "0/2"

    shutil.copy2(inputs[1], empty)  # the scan replaced by a readable one: the rerun retries it, and only it
    before = (out / "sub-test001" / "detection.json").read_bytes()
    rerun = detect(0)
    assert rerun.exit_code == 0, rerun.output
    assert rerun.output.count("not redone") == 1 and (out / "empty" / "empty_lesions.nii.gz").is_file()
    assert (out / "sub-test001" / "detection.json").read_bytes() == before
    record = json.loads((out / "shards" / "shard-0-of-2.json").read_text())
    assert (record["done"], record["skipped"], record["failed"]) == (["empty", "sub-test001"], ["sub-test001"], {})
    assert cli("merge", out, "--out", tmp_path / "table").exit_code == 0


def test_a_merged_manifest_keeps_the_registration_qc_flag(tmp_path):
    """A subject whose registration failed QC in its shard stays out of training after the merge."""
    from tfuad.preprocess.qc import QC_THRESHOLDS

    inputs = _cohort(tmp_path / "raw", n=3)
    out = tmp_path / "prep"
    for k in (0, 1):
        assert cli("preprocess", *inputs, "--out", out, *FAST_STEPS, "--shard", f"{k}/2").exit_code == 0
    record_path = next(out.rglob("subj01*/preprocess.json"), None) or next(
        p for p in out.rglob("preprocess.json") if json.loads(p.read_text()).get("subject") == "subj01")
    record = json.loads(record_path.read_text())
    record["qc"] = {"similarity": 0.1, "thresholds": QC_THRESHOLDS, "pass": False, "failed": ["similarity"]}
    record_path.write_text(json.dumps(record))
    assert cli("merge", out, "--out", out).exit_code == 0
    assert {r["subject"]: r["qc"] for r in _rows(out / "manifest.csv")} == {"subj00": "", "subj01": "fail",
                                                                          "subj02": ""}
    dataset = discover(out)
    assert dataset.ids == ["subj00", "subj02"] and "subj01" in str(dataset.left_out)
