"""Compare evaluation reports: means with intervals, paired differences and a strip plot.

Reads several report folders written by ``tfuad evaluate`` (``summary.json``
and ``per_subject.csv``); every (report, method) pair is one *row*, labelled
``<report folder name>:<method>``. For one per-subject metric (a column of
``per_subject.csv``, default ``dice@fpr@0.05``: Dice at the threshold that
limits the healthy false-positive rate to 5 %):

* per row, the mean over subjects with a percentile-bootstrap interval
  (:func:`~tfuad.metrics.bootstrap_mean`);
* per pair of rows, over the subjects *both* scored, the mean difference
  with a paired-bootstrap interval, the fraction of resamples ≤ 0 and the
  Wilcoxon signed-rank p-value (:func:`~tfuad.metrics.paired_comparison`).

:func:`compare_reports` writes ``compare.md`` (both tables), ``compare.json``
(every number, per-subject values included) and ``compare.png`` (per-subject
values of every row as a strip plot with the mean and its interval).

Example:
    >>> compare_reports(["reports/sae", "reports/vae"], "comparison")   # doctest: +SKIP
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from tfuad.canvas import check_png, new_figure, save_figure
from tfuad.errors import ConfigError, DataError
from tfuad.files import read_json, write_json, write_text
from tfuad.metrics.checks import check_count, check_fraction, check_seed
from tfuad.metrics.uncertainty import bootstrap_mean, paired_comparison

__all__ = ["distinct_names", "ReportFolderError", "DEFAULT_METRIC", "load_report", "comparison",
           "comparison_markdown", "plot_comparison", "compare_reports"]

#: Per-subject column compared by default: Dice at the 5 % healthy false-positive-rate threshold.
DEFAULT_METRIC = "dice@fpr@0.05"

_REQUIRED_COLUMNS = ("subject", "method")


class ReportFolderError(DataError):
    """A folder is not a readable evaluation report (``summary.json`` + ``per_subject.csv``)."""


def _number(cell, path: Path, line: int, column: str) -> float:
    text = (cell or "").strip()
    if text == "" or text.lower() in ("nan", "n/a", "none"):
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ReportFolderError(path, f"line {line}: {column} value {text!r} is not a number") from None
    if math.isinf(value):
        raise ReportFolderError(path, f"line {line}: {column} value {text!r} is infinite")
    return value


def load_report(folder, metric: str = DEFAULT_METRIC) -> dict:
    """Read one evaluation report folder.

    Args:
        folder: A folder written by ``tfuad evaluate``.
        metric: The ``per_subject.csv`` column to read.

    Returns:
        ``{"name", "path", "summary", "methods": {method: {subject: value}}}``;
        undefined values (empty or ``nan`` cells) are NaN.

    Raises:
        ReportFolderError: not a folder, no ``summary.json`` or
            ``per_subject.csv``, a broken file, a missing column, a non-numeric
            value or a subject listed twice for one method.

    Example:
        >>> load_report("reports/sae")["methods"]["residual"]["BraTS_001"]   # doctest: +SKIP
        0.61
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportFolderError(folder, "is not a folder (an evaluation report folder is expected)")
    missing = [n for n in ("summary.json", "per_subject.csv") if not (folder / n).is_file()]
    if missing:
        raise ReportFolderError(folder, f"is not an evaluation report: no {' and no '.join(missing)} "
                                "(write one with tfuad evaluate)")
    try:
        summary = read_json(folder / "summary.json")
    except ConfigError as err:
        raise ReportFolderError(folder / "summary.json", str(err).split(": ", 1)[-1]) from None
    if not isinstance(summary, dict):
        raise ReportFolderError(folder / "summary.json", "is not a JSON object")
    path = folder / "per_subject.csv"
    methods: dict = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            lacking = [c for c in _REQUIRED_COLUMNS if c not in columns]
            if lacking:
                raise ReportFolderError(path, f"lacks the column(s) {', '.join(lacking)}")
            if metric not in columns:
                known = [c for c in columns if c not in _REQUIRED_COLUMNS]
                raise ReportFolderError(path, f"has no column {metric!r} (columns: {', '.join(known)})")
            for line, row in enumerate(reader, start=2):
                subject, method = (row.get("subject") or "").strip(), (row.get("method") or "").strip()
                if not subject or not method:
                    raise ReportFolderError(path, f"line {line}: empty subject or method")
                values = methods.setdefault(method, {})
                if subject in values:
                    raise ReportFolderError(path, f"line {line}: subject {subject!r} appears twice for {method!r}")
                values[subject] = _number(row.get(metric), path, line, metric)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ReportFolderError(path, f"cannot be read as CSV ({err})") from None
    if not methods:
        raise ReportFolderError(path, "has no per-subject rows")
    return {"name": folder.resolve().name, "path": os.fspath(folder), "summary": summary, "methods": methods}


def distinct_names(reports: list) -> list:
    """Name each report by the shortest end of its path that no other report shares.

    Folders called alike (``demo/report`` and ``demo/cv/report``) become ``report`` and ``cv/report``.

    Example:
        >>> rs = [{"name": "report", "path": "a/report"}, {"name": "report", "path": "a/cv/report"}]
        >>> [r["name"] for r in distinct_names(rs)]
        ['a/report', 'cv/report']
    """
    parts = [Path(os.path.abspath(r["path"])).parts for r in reports]
    named = []
    for report, mine in zip(reports, parts):
        others = [p for p in parts if p is not mine]
        depth = 1
        while depth < len(mine) and any(p[-depth:] == mine[-depth:] for p in others):
            depth += 1
        named.append({**report, "name": "/".join(mine[-depth:])})
    return named


def comparison(reports, *, metric: str = DEFAULT_METRIC, resamples: int = 2000, confidence: float = 0.95,
               seed: int = 0) -> dict:
    """Means with intervals per row and paired differences per pair of rows.

    Args:
        reports: Loaded reports (:func:`load_report`).
        metric: Name of the compared per-subject column (recorded).
        resamples: Bootstrap samples per interval.
        confidence: Interval coverage, in (0, 1).
        seed: Seed of every bootstrap (each uses ``numpy.random.default_rng(seed)``).

    Returns:
        ``{"metric", "resamples", "confidence", "seed", "reports": [...],
        "rows": [{"label", "report", "method", "mean", "low", "high", "n",
        "n_undefined", "note", "values": {subject: value}}, ...],
        "pairs": [{"a", "b", "n", "mean_difference", "low", "high",
        "fraction_le_0", "wilcoxon_p", ...}, ...]}``. Pairs compare row
        ``a`` minus row ``b`` over the subjects present in both.

    Raises:
        ConfigError: two rows with the same label (two report folders of the same name).

    Example:
        >>> r = {"name": "run", "path": "run", "summary": {},
        ...      "methods": {"residual": {"s1": 0.5, "s2": 0.7}, "intensity": {"s1": 0.1, "s2": 0.3}}}
        >>> c = comparison([r], resamples=500)
        >>> [row["label"] for row in c["rows"]], round(c["pairs"][0]["mean_difference"], 3)
        (['run:residual', 'run:intensity'], 0.4)
    """
    resamples = check_count(resamples, "resamples", minimum=1)
    confidence = check_fraction(confidence, "confidence")
    seed = check_seed(seed)
    rows, seen = [], {}
    for report in reports:
        for method, values in report["methods"].items():
            label = f"{report['name']}:{method}"
            if label in seen:
                raise ConfigError(f"two report folders are both named {report['name']!r} ({seen[label]} and "
                                  f"{report['path']}); rename or copy one so the rows can be told apart")
            seen[label] = report["path"]
            stats = bootstrap_mean(list(values.values()), resamples=resamples, confidence=confidence, seed=seed)
            rows.append({"label": label, "report": report["path"], "method": method,
                         **{k: stats[k] for k in ("mean", "low", "high", "n", "n_undefined", "note")},
                         "values": dict(values)})
    if not rows:
        raise ConfigError("no report to compare")
    pairs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            common = [s for s in a["values"] if s in b["values"]]
            result = paired_comparison([a["values"][s] for s in common], [b["values"][s] for s in common],
                                       resamples=resamples, confidence=confidence, seed=seed)
            pairs.append({"a": a["label"], "b": b["label"], **{k: v for k, v in result.items()
                                                               if k not in ("resamples", "confidence", "seed")}})
    return {"metric": metric, "resamples": resamples, "confidence": confidence, "seed": seed,
            "method": "percentile bootstrap over subjects; paired bootstrap and Wilcoxon signed-rank for pairs",
            "reports": [{"name": r["name"], "path": r["path"], "model": r["summary"].get("model"),
                         "dataset": r["summary"].get("dataset"), "modality": r["summary"].get("modality")}
                        for r in reports],
            "rows": rows, "pairs": pairs}


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(x) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:.2g}" if x < 0.001 else f"{x:.3f}"


def _interval(low, high) -> str:
    return "n/a" if math.isnan(low) or math.isnan(high) else f"[{_fmt(low)}, {_fmt(high)}]"


def comparison_markdown(result: dict) -> str:
    """The two tables of :func:`comparison` as Markdown.

    Example:
        >>> r = {"name": "run", "path": "run", "summary": {}, "methods": {"residual": {"s1": 0.5, "s2": 0.7}}}
        >>> print(comparison_markdown(comparison([r], resamples=100)).splitlines()[0])
        # Comparison: dice@fpr@0.05
    """
    pct = f"{100 * result['confidence']:g} %"
    models = {r["path"]: r.get("model") for r in result["reports"]}
    lines = [f"# Comparison: {result['metric']}", "",
             f"Mean of `{result['metric']}` over subjects with a {pct} percentile-bootstrap interval "
             f"({result['resamples']} resamples of subjects, seed {result['seed']}). Subjects where the metric "
             "is undefined (NaN) are left out and counted.", "",
             f"| row | model | subjects | undefined | mean | {pct} interval |", "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['label']} | {models.get(row['report']) or 'n/a'} | {row['n']} | {row['n_undefined']} "
                     f"| {_fmt(row['mean'])} | {_interval(row['low'], row['high'])} |")
    if result["pairs"]:
        lines += ["", "## Paired differences (A − B)", "",
                  "Over the subjects both rows scored: mean difference with a paired-bootstrap interval, the "
                  "fraction of resamples whose mean difference is ≤ 0, and the two-sided Wilcoxon signed-rank "
                  "p-value (zero differences dropped).", "",
                  f"| A | B | subjects | mean difference | {pct} interval | resamples ≤ 0 | Wilcoxon p |",
                  "|---|---|---|---|---|---|---|"]
        for p in result["pairs"]:
            lines.append(f"| {p['a']} | {p['b']} | {p['n']} | {_fmt(p['mean_difference'])} | "
                         f"{_interval(p['low'], p['high'])} | {_fmt(p['fraction_le_0'])} | {_p(p['wilcoxon_p'])} |")
    notes = [f"- {r['label']}: {r['note']}" for r in result["rows"] if r["note"]]
    notes += [f"- {p['a']} − {p['b']}: {p['note']}" for p in result["pairs"] if p["note"]]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def plot_comparison(result: dict, out_png) -> Path:
    """Strip plot: per-subject values of every row, its mean and interval.

    Points are jittered horizontally (seeded, so the figure is reproducible).

    Example:
        >>> import tempfile, os
        >>> r = {"name": "run", "path": "run", "summary": {}, "methods": {"residual": {"s1": 0.5, "s2": 0.7}}}
        >>> plot_comparison(comparison([r], resamples=100), os.path.join(tempfile.mkdtemp(), "c.png")).name
        'c.png'
    """
    out = check_png(out_png)
    rows = result["rows"]
    rng = np.random.default_rng(result.get("seed", 0))
    fig = new_figure(max(4.5, 1.3 * len(rows) + 2.0), 4.5)
    ax = fig.subplots()
    everything = []
    for x, row in enumerate(rows):
        values = np.array([v for v in row["values"].values() if not math.isnan(v)], float)
        everything.extend(values.tolist())
        ax.scatter(x + rng.uniform(-0.18, 0.18, values.size), values, s=16, alpha=0.6, zorder=2)
        if not math.isnan(row["mean"]):
            low, high = row["low"], row["high"]
            err = None if math.isnan(low) else [[row["mean"] - low], [high - row["mean"]]]
            ax.errorbar([x + 0.3], [row["mean"]], yerr=err, fmt="D", color="k", capsize=4, markersize=5, zorder=3,
                        label=f"mean, {100 * result['confidence']:g} % interval" if x == 0 else None)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["label"] for r in rows], rotation=20 if len(rows) > 3 else 0, ha="right"
                       if len(rows) > 3 else "center", fontsize="small")
    ax.set_xlim(-0.6, len(rows) - 0.3)
    if everything and min(everything) >= 0.0 and max(everything) <= 1.0:
        ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(result["metric"])
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{result['metric']} per subject ({result['resamples']} bootstrap resamples)", fontsize="medium")
    if any(not math.isnan(r["mean"]) for r in rows):
        ax.legend(loc="best", fontsize="small")
    return save_figure(fig, out)


def compare_reports(report_dirs, out_dir, *, metric: str = DEFAULT_METRIC, resamples: int = 2000,
                    confidence: float = 0.95, seed: int = 0) -> dict:
    """Read report folders, compare them and write ``compare.md``, ``compare.json``, ``compare.png``.

    Args:
        report_dirs: Folders written by ``tfuad evaluate``.
        out_dir: Output folder (created).
        metric: ``per_subject.csv`` column to compare, e.g. ``dice@fpr@0.05``,
            ``dice@p98``, ``best_dice``, ``auroc``.
        resamples: Bootstrap samples per interval.
        confidence: Interval coverage, in (0, 1).
        seed: Bootstrap seed.

    Returns:
        The :func:`comparison` result (also in ``compare.json``).

    Raises:
        ReportFolderError: a folder that is not a readable report or lacks ``metric``.
        ConfigError: no folder given, or two folders of the same name.
    """
    report_dirs = list(report_dirs)
    if not report_dirs:
        raise ConfigError("no report folder given to compare")
    reports = distinct_names([load_report(d, metric) for d in report_dirs])
    result = comparison(reports, metric=metric, resamples=resamples, confidence=confidence, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / "compare.json")
    write_text(comparison_markdown(result), out / "compare.md")
    plot_comparison(result, out / "compare.png")
    return result
