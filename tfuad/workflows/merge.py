"""Merge the outputs of sharded runs into one manifest and QC table.

``tfuad preprocess --shard K/N`` and ``tfuad detect --shard K/N`` leave per-subject
records (``<subject>/preprocess.json``, ``detection.json``) and one record per shard
(``shards/shard-K-of-N.json``) in their output folders; shards may share a folder or
use one each. :func:`merge_shards` reads them all and writes into ``out``:

``manifest.csv``
    the preprocessed dataset (paths relative to ``out``), as an unsharded run writes it;
``qc.csv``
    one row per subject: status (``done`` / ``failed``), shard, split, seconds, the
    registration's final metric and every number of the record's ``qc`` entry, or the
    error line of a failed subject;
``qc_montage.png``
    the QC montage of every preprocessed subject (``montage=False`` leaves it out);
``detections.csv``
    one row per subject of the detect shards: status (``done`` / ``failed``), shard, lesion
    voxels, threshold, method, seconds, folder and input, or the error line of a scan that failed.

Shards that left no record, subjects found in two folders, and subjects that
failed are reported in the result (:class:`MergeResult`), so a cohort with a gap is
seen.

Example:
    >>> result = merge_shards(["prep"], "prep")          # doctest: +SKIP
    >>> result.missing_shards, len(result.subjects)      # doctest: +SKIP
    ([], 40)
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from tfuad.errors import ConfigError, DatasetError
from tfuad.files import atomic_path, ensure_writable_dir, read_json
from tfuad.preprocess.qc import qc_word

__all__ = ["MergeResult", "merge_shards"]

#: Record file names of the two sharded commands.
PREPROCESS_RECORD = "preprocess.json"
DETECTION_RECORD = "detection.json"


@dataclass
class MergeResult:
    """What :func:`merge_shards` found and wrote.

    Attributes:
        subjects: Preprocessed subjects merged into the manifest.
        detections: Subjects with a detection set.
        failed: Subject -> error line, from the shard records (subjects without a record of their
            command only: a failure that a rerun fixed is not listed).
        missing_shards: ``"preprocess 3/10"``-style names of shards that left no record.
        written: Paths of the files written.
    """

    subjects: list = field(default_factory=list)
    detections: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    missing_shards: list = field(default_factory=list)
    written: list = field(default_factory=list)


def _records(folder: Path, name: str, depth: int) -> list[Path]:
    """Record files ``name`` at most ``depth`` folders below ``folder`` (hidden folders skipped)."""
    found = []
    for level in range(1, depth + 1):
        for path in sorted(folder.glob("/".join(["*"] * level) + "/" + name)):
            if not any(part.startswith(".") for part in path.relative_to(folder).parts):
                found.append(path)
    return found


def _shard_records(folders: list[Path]) -> dict:
    """``(command, N)`` -> {K: record} of every ``shards/*.json``."""
    shards: dict = {}
    for folder in folders:
        for path in sorted((folder / "shards").glob("shard-*.json")):
            record = read_json(path)
            try:
                k, n = (int(v) for v in record["shard"])
                command = str(record["command"])
            except (KeyError, TypeError, ValueError):
                raise DatasetError(path, "not a shard record of tfuad (no command and shard K/N)") from None
            shards.setdefault((command, n), {})[k] = {**record, "_folder": folder}
    return shards


def _unique(found: list[tuple[str, Path]], what: str) -> dict:
    by_subject: dict = {}
    for subject, path in found:
        if subject in by_subject and by_subject[subject] != path:
            raise DatasetError(path, f"subject {subject!r} has a {what} in two places: {by_subject[subject]} and "
                                     f"{path}; merge folders of one cohort split once")
        by_subject[subject] = path
    return by_subject


def _relative(path: Path, out: Path) -> str:
    return Path(os.path.relpath(path, out)).as_posix()


def _write_csv(path: Path, columns: list, rows: list) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return path


def _qc_numbers(record: dict) -> dict:
    """The registration's final metric and every scalar of the record's ``qc`` entry."""
    numbers = {}
    for step in record.get("steps", []):
        if step.get("name") == "register" and "final_metric" in step:
            numbers["registration_metric"] = step["final_metric"]
    qc = record.get("qc")
    if isinstance(qc, dict):
        for key, value in qc.items():
            if isinstance(value, (bool, int, float, str)) or value is None:
                numbers[f"qc_{key}"] = value
    return numbers


def _shard_of(shards: dict, command: str) -> dict:
    """Subject -> ``"K/N"`` for the subjects the shard records of ``command`` list."""
    return {subject: f"{k}/{n}" for (cmd, n), by_k in shards.items() if cmd == command
            for k, record in by_k.items() for subject in record.get("subjects", [])}


def _merge_preprocess(records: dict, shards: dict, failed: dict, out: Path, result: MergeResult,
                      montage: bool) -> None:
    modalities = {}
    rows, qc_rows, montage_items = [], [], []
    shard_of = _shard_of(shards, "preprocess")
    for subject, path in sorted(records.items()):
        record = read_json(path)
        modality = (record.get("options") or {}).get("modality")
        modalities.setdefault(modality, path)
        folder = path.parent
        outputs = record.get("outputs") or {}
        if "image" not in outputs or "brain_mask" not in outputs:
            raise DatasetError(path, "record names no image or brain mask output; rerun its shard")
        healthy = record.get("healthy")
        rows.append({"subject": subject, modality: _relative(folder / outputs["image"], out),
                     "brain_mask": _relative(folder / outputs["brain_mask"], out),
                     "lesion_mask": _relative(folder / outputs["lesion_mask"], out) if "lesion_mask" in outputs
                     else "", "split": record.get("split") or "",
                     "healthy": "" if healthy is None else ("1" if healthy else "0"),
                     "qc": qc_word(record.get("qc"))})
        qc_rows.append({"subject": subject, "status": "done", "shard": shard_of.get(subject, ""),
                        "folder": _relative(folder, out), "split": record.get("split") or "",
                        "seconds": record.get("seconds", ""), **_qc_numbers(record)})
        montage_items.append((subject, {"image": folder / outputs["image"],
                                        "brain_mask": folder / outputs["brain_mask"]}))
    if len(modalities) > 1:
        raise ConfigError("the shards preprocessed different modalities: "
                          + ", ".join(f"{m} ({p})" for m, p in modalities.items()))
    for subject, line in sorted(failed.items()):
        if subject not in records:
            qc_rows.append({"subject": subject, "status": "failed", "shard": shard_of.get(subject, ""),
                            "error": line})
    (modality,) = modalities
    result.subjects = sorted(records)
    columns = ["subject", modality, "brain_mask", "lesion_mask", "split", "healthy", "qc"]
    result.written.append(_write_csv(out / "manifest.csv", columns, rows))
    qc_columns = ["subject", "status", "shard", "folder", "split", "seconds"]
    qc_columns += sorted({k for row in qc_rows for k in row} - set(qc_columns) - {"error"}) + ["error"]
    result.written.append(_write_csv(out / "qc.csv", qc_columns, qc_rows))
    if montage and montage_items:
        from tfuad.preprocess.qc import plot_montage

        result.written.append(plot_montage(montage_items, out / "qc_montage.png"))


def _merge_detections(records: dict, shards: dict, failed: dict, out: Path, result: MergeResult) -> None:
    shard_of = _shard_of(shards, "detect")
    rows = []
    for subject, path in sorted(records.items()):
        record = read_json(path)
        rows.append({"subject": subject, "status": "done", "shard": shard_of.get(subject, ""),
                     "lesion_voxels": record.get("lesion_voxels", ""), "threshold": record.get("threshold", ""),
                     "method": record.get("method", ""), "seconds": record.get("seconds", ""),
                     "folder": _relative(path.parent, out), "input": record.get("input", "")})
    rows += [{"subject": subject, "status": "failed", "shard": shard_of.get(subject, ""), "error": line}
             for subject, line in sorted(failed.items())]
    result.detections = sorted(records)
    columns = ["subject", "status", "shard", "lesion_voxels", "threshold", "method", "seconds", "folder", "input",
               "error"]
    result.written.append(_write_csv(out / "detections.csv", columns, rows))


def merge_shards(folders, out_dir, *, montage: bool = True) -> MergeResult:
    """Merge the records of sharded ``preprocess`` and ``detect`` runs.

    Args:
        folders: Output folders of the shards (one shared folder, or one per shard).
        out_dir: Where the manifest and tables go (may be one of ``folders``).
        montage: Also draw the QC montage of every preprocessed subject.

    Returns:
        A :class:`MergeResult`.

    Raises:
        DatasetError: a folder does not exist or holds no record, or one subject has
            records in two folders.
        ConfigError: the shards preprocessed different modalities.
    """
    paths = []
    for folder in folders:
        path = Path(os.fspath(folder)).expanduser().resolve()
        if not path.is_dir():
            raise DatasetError(path, "is not an output folder of tfuad preprocess or detect")
        if path not in paths:
            paths.append(path)
    if not paths:
        raise ConfigError("give at least one shard output folder")
    shards = _shard_records(paths)
    preprocess = _unique([(p.parent.name, p) for f in paths for p in _records(f, PREPROCESS_RECORD, 1)],
                         "preprocess record")
    detections = []
    for f in paths:
        for p in _records(f, DETECTION_RECORD, 3):
            try:
                detections.append((str(read_json(p)["subject"]), p))
            except (KeyError, TypeError):
                raise DatasetError(p, "detection record names no subject") from None
    detections = _unique(detections, "detection record")
    result = MergeResult()
    failed = {"preprocess": {}, "detect": {}}
    for (command, n), by_k in sorted(shards.items()):
        result.missing_shards += [f"{command} {k}/{n}" for k in range(n) if k not in by_k]
        for record in by_k.values():
            failed.setdefault(command, {}).update(record.get("failed") or {})
    # a subject that failed once and succeeded on a rerun (of its own or another shard) is done
    failed_preprocess = {s: line for s, line in failed["preprocess"].items() if s not in preprocess}
    failed_detect = {s: line for s, line in failed["detect"].items() if s not in detections}
    if not preprocess and not detections and not failed_detect:
        raise DatasetError(paths[0], "holds no preprocess.json or detection.json record of tfuad "
                                     "(give the --out folders of the shards)")
    result.failed = {**failed_preprocess, **failed_detect}
    out = ensure_writable_dir(out_dir)
    if preprocess:
        _merge_preprocess(preprocess, shards, failed_preprocess, out, result, montage)
    if detections or failed_detect:
        _merge_detections(detections, shards, failed_detect, out, result)
    return result
