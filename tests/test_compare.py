"""tfuad compare: two hand-made report folders, numbers checked by hand."""
import csv
import json
import math

import pytest
from click.testing import CliRunner

from tfuad.errors import ConfigError
from tfuad.metrics import bootstrap_mean
from tfuad.reports.compare import ReportFolderError, compare_reports, load_report

COLUMNS = ["subject", "method", "auroc", "auprc", "best_dice", "dice@p98", "fpr@p98", "dice@fpr@0.05",
           "fpr@fpr@0.05"]


def _write_report(folder, model, rows):
    """rows: (subject, method, dice@fpr@0.05) triples; other columns get filler values."""
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"model": model, "dataset": "data", "modality": "flair",
                                                     "methods": []}))
    with open(folder / "per_subject.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for subject, method, value in rows:
            writer.writerow({"subject": subject, "method": method, "auroc": 0.9, "auprc": 0.5, "best_dice": 0.7,
                             "dice@p98": 0.1, "fpr@p98": 0.02, "dice@fpr@0.05": value, "fpr@fpr@0.05": 0.05})
    return folder


@pytest.fixture()
def reports(tmp_path):
    a = _write_report(tmp_path / "runA", "sae", [
        ("s1", "residual", 0.6), ("s2", "residual", 0.8), ("s3", "residual", 0.4), ("s4", "residual", 0.6),
        ("s1", "intensity", 0.2), ("s2", "intensity", 0.3), ("s3", "intensity", 0.1), ("s4", "intensity", "nan"),
    ])
    b = _write_report(tmp_path / "runB", "vae", [
        ("s1", "residual", 0.5), ("s2", "residual", 0.6), ("s3", "residual", 0.2), ("s5", "residual", 0.9),
    ])
    return a, b


def test_compare_numbers_by_hand(reports, tmp_path):
    out = tmp_path / "cmp"
    result = compare_reports(reports, out, resamples=1000, seed=0)
    rows = {r["label"]: r for r in result["rows"]}
    assert list(rows) == ["runA:residual", "runA:intensity", "runB:residual"]
    assert rows["runA:residual"]["mean"] == pytest.approx(0.6) and rows["runA:residual"]["n"] == 4
    assert rows["runA:intensity"]["mean"] == pytest.approx(0.2)
    assert (rows["runA:intensity"]["n"], rows["runA:intensity"]["n_undefined"]) == (3, 1)
    assert rows["runB:residual"]["mean"] == pytest.approx(0.55)
    for row in rows.values():
        values = [v for v in row["values"].values() if not math.isnan(v)]
        assert min(values) <= row["low"] <= row["mean"] <= row["high"] <= max(values)
        again = bootstrap_mean(values, resamples=1000, seed=0)
        assert (row["low"], row["high"]) == (again["low"], again["high"])

    pairs = {(p["a"], p["b"]): p for p in result["pairs"]}
    assert len(pairs) == 3
    # residual - intensity in runA: s1..s3 only (s4 undefined for intensity): 0.4, 0.5, 0.3
    p = pairs[("runA:residual", "runA:intensity")]
    assert (p["n"], p["n_undefined"]) == (3, 1)
    assert p["mean_difference"] == pytest.approx(0.4) and p["fraction_le_0"] == 0.0
    assert p["wilcoxon_p"] == pytest.approx(2 / 8)       # all 3 differences positive: 2 of 8 sign patterns
    assert 0.3 <= p["low"] <= 0.4 <= p["high"] <= 0.5
    # runA residual - runB residual: only s1..s3 are in both reports: 0.1, 0.2, 0.2
    p = pairs[("runA:residual", "runB:residual")]
    assert p["n"] == 3 and p["mean_difference"] == pytest.approx(0.5 / 3)
    # intensity - runB residual: -0.3, -0.3, -0.1: every resample is <= 0
    p = pairs[("runA:intensity", "runB:residual")]
    assert p["mean_difference"] == pytest.approx(-0.7 / 3) and p["fraction_le_0"] == 1.0

    saved = json.loads((out / "compare.json").read_text())
    assert saved["metric"] == "dice@fpr@0.05" and saved["resamples"] == 1000 and saved["seed"] == 0
    assert saved["rows"][0]["values"]["s2"] == 0.8
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert "| runA:residual | sae | 4 | 0 | 0.600 |" in md
    assert "| runA:intensity | sae | 3 | 1 | 0.200 |" in md
    assert "| runA:residual | runA:intensity | 3 | 0.400 |" in md and "| 0.000 | 0.250 |" in md
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_compare_is_reproducible_and_seeded(reports, tmp_path):
    a = compare_reports(reports, tmp_path / "a", resamples=500, seed=3)
    b = compare_reports(reports, tmp_path / "b", resamples=500, seed=3)
    c = compare_reports(reports, tmp_path / "c", resamples=500, seed=4)
    assert a == b
    assert [r["low"] for r in a["rows"]] != [r["low"] for r in c["rows"]]


def test_other_metric_column(reports, tmp_path):
    result = compare_reports(reports, tmp_path / "o", metric="best_dice", resamples=200)
    assert all(r["mean"] == pytest.approx(0.7) for r in result["rows"])


def test_refuses_folders_that_are_not_reports(reports, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{}")
    with pytest.raises(ReportFolderError, match="no per_subject.csv") as err:
        compare_reports([reports[0], broken], tmp_path / "x")
    assert "\n" not in str(err.value) and "broken" in str(err.value)
    with pytest.raises(ReportFolderError, match="not a folder"):
        load_report(tmp_path / "absent")
    with pytest.raises(ReportFolderError, match="has no column 'dice@fpr@0.2'"):
        load_report(reports[0], "dice@fpr@0.2")
    bad = _write_report(tmp_path / "bad", "sae", [("s1", "residual", "oops")])
    with pytest.raises(ReportFolderError, match="line 2"):
        load_report(bad)
    twice = _write_report(tmp_path / "twice", "sae", [("s1", "residual", 0.1), ("s1", "residual", 0.2)])
    with pytest.raises(ReportFolderError, match="twice"):
        load_report(twice)
    assert not (tmp_path / "x").exists()


def test_folders_of_the_same_name_are_told_apart_by_their_paths(reports, tmp_path):
    other = _write_report(tmp_path / "elsewhere" / "runA", "sae", [("s1", "residual", 0.3)])
    result = compare_reports([reports[0], other], tmp_path / "y")
    labels = [row["label"] for row in result["rows"]]
    assert f"{reports[0].parent.name}/runA:residual" in labels and "elsewhere/runA:residual" in labels


def test_comparison_refuses_two_reports_of_one_name(reports):
    from tfuad.reports.compare import comparison, load_report

    one = load_report(reports[0])
    with pytest.raises(ConfigError, match="both named 'runA'"):
        comparison([one, dict(one, path="elsewhere/runA")], resamples=100)


def test_cli_compare(reports, tmp_path):
    from tfuad.cli.main import main

    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(main, ["compare", *map(str, reports), "--out", str(out), "--seed", "1",
                                  "--resamples", "300"])
    assert result.exit_code == 0, result.output
    assert "runB:residual" in result.output
    assert {p.name for p in out.iterdir()} == {"compare.md", "compare.json", "compare.png"}
    assert json.loads((out / "compare.json").read_text())["resamples"] == 300
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(main, ["compare", str(reports[0]), str(empty), "--out", str(tmp_path / "z")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "not an evaluation report" in lines[0]
