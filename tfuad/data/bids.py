"""BIDS datasets in, BIDS derivatives out.

Reading (layout ``bids`` of :func:`tfuad.data.layouts.discover`)::

    ROOT/dataset_description.json                   (marks the root; optional when sub-*/ folders exist)
    ROOT/participants.tsv                           optional columns ``healthy`` (1/0) and ``split``
    ROOT/sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_<entity>-<value>...]_<suffix>.nii[.gz]
    ROOT/derivatives/<pipeline>/sub-<label>/[ses-<label>/]anat/<source entities>[_space-orig]_label-lesion_mask.nii.gz

Suffixes become tfuad modalities: ``T1w`` -> ``t1`` (``t1ce`` when the file has a
``ce-`` entity), ``T2w`` -> ``t2``, ``FLAIR`` -> ``flair``, ``PDw`` -> ``pd``; other
suffixes are ignored. A subject is ``sub-<label>``, or ``sub-<label>_ses-<label>``
when the dataset has sessions (each session is a volume of its own). Two files of
one modality in one session (runs, acquisitions) are refused, naming both.

Lesion masks follow the BIDS derivatives convention for masks
(``..._label-lesion_mask.nii.gz``; ``desc-lesion`` and the ``roi`` suffix are read too)
and brain masks likewise with ``label-brain`` / ``desc-brain``; a mask must be in the
image's own space: no ``space-`` entity, or ``space-orig``. They are looked for in
every pipeline folder under ``ROOT/derivatives/`` (and in the raw ``anat`` folders) except
those ``tfuad detect`` wrote (their masks are predictions, not labels);
``read_bids(root, derivatives="NAME")`` reads only ``derivatives/NAME``, and so does
:func:`tfuad.data.layouts.discover` with ``derivatives`` (the commands'
``--derivatives-pipeline NAME``). A subject with masks in two pipelines is refused,
naming both files.

Writing (``tfuad detect --bids-derivatives``): the output folder becomes a BIDS
derivatives dataset (:func:`write_dataset_description`), each subject's set in
``OUT/sub-<label>/[ses-<label>/]anat/`` named by :func:`derivative_names`.

Example:
    >>> parse_name("sub-01_ses-2_acq-mprage_T1w.nii.gz")
    ({'sub': '01', 'ses': '2', 'acq': 'mprage'}, 'T1w')
    >>> derivative_names("sub-01_ses-2", "FLAIR")["lesions"]
    'sub-01_ses-2_label-lesion_mask.nii.gz'
"""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

from tfuad.errors import DatasetError

__all__ = ["SUFFIX_MODALITIES", "BIDS_VERSION", "parse_name", "is_bids_root", "read_bids",
           "derivative_prefix", "derivative_names", "write_dataset_description", "modality_suffix", "sidecar"]

#: BIDS suffix -> tfuad modality (``T1w`` with a ``ce-`` entity is ``t1ce``).
SUFFIX_MODALITIES = {"T1w": "t1", "T2w": "t2", "FLAIR": "flair", "PDw": "pd"}
#: BIDS version written into ``dataset_description.json``.
BIDS_VERSION = "1.9.0"

_NAME = re.compile(r"^((?:[a-zA-Z0-9]+-[a-zA-Z0-9]+_)*[a-zA-Z0-9]+-[a-zA-Z0-9]+)_([a-zA-Z0-9]+)(\.nii(?:\.gz)?)$")
_MASK_SUFFIXES = ("mask", "roi")
_NATIVE_SPACES = (None, "orig")
_TRUE, _FALSE = ("1", "true", "yes", "y"), ("0", "false", "no", "n")


def parse_name(name: str) -> tuple[dict, str] | None:
    """``(entities, suffix)`` of a BIDS NIfTI file name, or None when it is not one.

    Example:
        >>> parse_name("sub-07_FLAIR.nii")
        ({'sub': '07'}, 'FLAIR')
        >>> parse_name("notes.nii.gz") is None
        True
    """
    match = _NAME.match(Path(name).name)
    if not match:
        return None
    entities = dict(pair.split("-", 1) for pair in match.group(1).split("_"))
    if "sub" not in entities:
        return None
    return entities, match.group(2)


def modality_suffix(modality: str) -> str:
    """The BIDS suffix of a tfuad modality (``"t1ce"`` -> ``"T1w"``; unknown ones unchanged).

    Example:
        >>> modality_suffix("flair")
        'FLAIR'
    """
    reverse = {v: k for k, v in SUFFIX_MODALITIES.items()}
    return reverse.get(modality, "T1w" if modality == "t1ce" else modality)


def _anat_folders(subject_dir: Path) -> list[tuple[str | None, Path]]:
    """``(session label or None, anat folder)`` of one ``sub-*`` folder."""
    found = []
    if (subject_dir / "anat").is_dir():
        found.append((None, subject_dir / "anat"))
    for ses in sorted(p for p in subject_dir.glob("ses-*") if p.is_dir()):
        if (ses / "anat").is_dir():
            found.append((ses.name[4:], ses / "anat"))
    return found


def _subject_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("sub-*") if p.is_dir() and _anat_folders(p))


def is_bids_root(path) -> bool:
    """True for a folder with ``sub-*/[ses-*/]anat`` folders, or a single ``sub-*`` folder.

    Example:
        >>> import tempfile
        >>> is_bids_root(tempfile.mkdtemp())
        False
    """
    root = Path(os.fspath(path))
    if not root.is_dir():
        return False
    return bool(_subject_dirs(root)) or (root.name.startswith("sub-") and bool(_anat_folders(root)))


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith((".nii", ".nii.gz")))


def _participants(root: Path) -> dict:
    """``participant_id`` -> row of ``participants.tsv`` (lower-case columns), or {}."""
    path = root / "participants.tsv"
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(path, f"cannot read participants.tsv ({err})") from None
    table = {}
    for line, row in enumerate(rows, start=2):
        row = {str(k).strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
        if not row.get("participant_id"):
            raise DatasetError(path, f"line {line}: no participant_id")
        table[row["participant_id"]] = {**row, "_line": line}
    return table


def _healthy_and_split(row: dict, path: Path) -> tuple[bool, str | None]:
    from tfuad.data.splits import SPLITS

    healthy = row.get("healthy", "").lower()
    if healthy and healthy not in _TRUE + _FALSE:
        raise DatasetError(path, f"line {row['_line']}: healthy value {healthy!r} is not one of "
                                 f"{', '.join(_TRUE + _FALSE)}")
    split = row.get("split", "").lower() or None
    if split is not None and split not in SPLITS:
        raise DatasetError(path, f"line {row['_line']}: split {split!r} is not one of {', '.join(SPLITS)} (or empty)")
    return healthy in _TRUE, split


def _mask_role(entities: dict, suffix: str) -> str | None:
    if suffix not in _MASK_SUFFIXES or entities.get("space") not in _NATIVE_SPACES:
        return None
    for role in ("lesion", "brain"):
        if entities.get("label", "").lower() == role or entities.get("desc", "").lower() == role:
            return role
    return None


def _pipelines(root: Path, derivatives: str | None) -> list[Path]:
    base = root / "derivatives"
    if derivatives is not None:
        chosen = base / derivatives
        if not chosen.is_dir():
            present = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
            raise DatasetError(root, f"no derivatives folder {derivatives!r} (derivatives/: "
                                     f"{', '.join(present) or 'none'})")
        return [chosen]
    return sorted(p for p in base.iterdir() if p.is_dir() and not _made_by_tfuad(p)) if base.is_dir() else []


def _made_by_tfuad(pipeline: Path) -> bool:
    """True for a derivatives folder ``tfuad detect`` wrote: its masks are predictions, not labels."""
    try:
        description = json.loads((pipeline / "dataset_description.json").read_text(encoding="utf-8"))
        return any(g.get("Name") == "tfuad" for g in description.get("GeneratedBy", []))
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def _masks(root: Path, pipelines: list[Path], subject_dir: Path, session: str | None) -> dict:
    """``{"lesion": path, "brain": path}`` of one subject session, from the raw tree and the pipelines."""
    folders = [subject_dir / (f"ses-{session}" if session else "") / "anat"]
    folders += [p / subject_dir.name / (f"ses-{session}" if session else "") / "anat" for p in pipelines]
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in _nifti_files(folder):
            parsed = parse_name(path.name)
            if parsed is None or parsed[0].get("ses") != session:
                continue
            role = _mask_role(*parsed)
            if role is None:
                continue
            if role in found:
                raise DatasetError(subject_dir, f"two {role} masks for {subject_dir.name}"
                                   + (f" session {session}" if session else "")
                                   + f": {found[role].relative_to(root)} and {path.relative_to(root)}")
            found[role] = path
    return found


def _images(anat: Path, session: str | None) -> dict:
    images: dict[str, Path] = {}
    for path in _nifti_files(anat):
        parsed = parse_name(path.name)
        if parsed is None or parsed[1] not in SUFFIX_MODALITIES or parsed[0].get("ses") != session:
            continue
        entities, suffix = parsed
        modality = "t1ce" if suffix == "T1w" and "ce" in entities else SUFFIX_MODALITIES[suffix]
        if modality in images:
            raise DatasetError(anat, f"two {suffix} images for one session: {images[modality].name} and "
                                     f"{path.name}; keep one (or list the subjects in a manifest)")
        images[modality] = path
    return images


def read_bids(root, *, derivatives: str | None = None) -> list:
    """The subjects of a BIDS dataset (or of one ``sub-*`` folder).

    Args:
        root: The dataset folder (with ``sub-*`` folders), or one ``sub-*`` folder.
        derivatives: Read masks only from ``derivatives/<derivatives>`` (default: every pipeline).

    Returns:
        :class:`tfuad.data.layouts.Subject` list, sorted by id.

    Raises:
        DatasetError: two images of one modality in a session, two lesion (or brain) masks
            for a subject, a bad ``participants.tsv`` row, or an unknown ``derivatives`` name.
    """
    from tfuad.data.layouts import Subject

    root = Path(os.fspath(root))
    if root.name.startswith("sub-") and not _subject_dirs(root) and _anat_folders(root):
        subject_dirs, dataset_root = [root], root.parent
    else:
        subject_dirs, dataset_root = _subject_dirs(root), root
    participants = _participants(dataset_root)
    pipelines = _pipelines(dataset_root, derivatives)
    subjects = []
    for subject_dir in subject_dirs:
        row = participants.get(subject_dir.name)
        healthy, split = _healthy_and_split(row, dataset_root / "participants.tsv") if row else (False, None)
        for session, anat in _anat_folders(subject_dir):
            images = _images(anat, session)
            if not images:
                continue
            masks = _masks(dataset_root, pipelines, subject_dir, session)
            sid = subject_dir.name + (f"_ses-{session}" if session else "")
            subjects.append(Subject(sid, images, lesion_mask=masks.get("lesion"), brain_mask=masks.get("brain"),
                                    split=split, healthy=healthy, source=anat))
    return sorted(subjects, key=lambda s: s.id)


def derivative_prefix(subject: str, image=None) -> tuple[Path, str]:
    """``(folder, file-name prefix)`` of a subject's outputs in a BIDS derivatives tree.

    The entities come from the image's BIDS file name when it has one (``sub``, ``ses``
    and the others before the suffix), else from a subject id of the form
    ``sub-X[_ses-Y]``, else ``sub-<the id's letters and digits>``.

    Example:
        >>> derivative_prefix("sub-01_ses-2", "sub-01_ses-2_acq-fast_FLAIR.nii.gz")
        (PosixPath('sub-01/ses-2/anat'), 'sub-01_ses-2_acq-fast')
        >>> derivative_prefix("IXI002-Guys-0828")
        (PosixPath('sub-IXI002Guys0828/anat'), 'sub-IXI002Guys0828')
    """
    parsed = parse_name(Path(image).name) if image is not None else None
    if parsed is None:
        parsed = parse_name(f"{subject}_x.nii.gz")
    if parsed is not None:
        entities = parsed[0]
    else:
        label = re.sub(r"[^a-zA-Z0-9]", "", subject)
        if not label:
            raise DatasetError(image or subject, f"subject id {subject!r} has no letter or digit for a BIDS label")
        entities = {"sub": label}
    entities = {k: v for k, v in entities.items() if k not in ("space", "desc", "label")}
    folder = Path(f"sub-{entities['sub']}") / (f"ses-{entities['ses']}" if "ses" in entities else "") / "anat"
    return folder, "_".join(f"{k}-{v}" for k, v in entities.items())


def derivative_names(prefix: str, suffix: str) -> dict:
    """The file names of one subject's detection set in a BIDS derivatives tree.

    ``anomaly``: the continuous map, a processed image of the source's suffix
    (``<prefix>_desc-anomaly_<suffix>.nii.gz``); ``lesions``: the binary lesion mask
    (``<prefix>_label-lesion_mask.nii.gz``, the BIDS mask convention); ``overview``: the figure.
    Each NIfTI file gets a JSON sidecar of the same name.

    Example:
        >>> derivative_names("sub-01", "T1w")["anomaly"]
        'sub-01_desc-anomaly_T1w.nii.gz'
    """
    return {"anomaly": f"{prefix}_desc-anomaly_{suffix}.nii.gz",
            "lesions": f"{prefix}_label-lesion_mask.nii.gz",
            "overview": f"{prefix}_desc-overview_{suffix}.png"}


def write_dataset_description(out, *, name: str, version: str, source=None) -> Path:
    """Write ``OUT/dataset_description.json`` (a BIDS derivatives dataset) and ``OUT/.bidsignore``.

    ``.bidsignore`` lists tfuad's own records and figures (``detection.json``, PNGs,
    ``shards/``), which BIDS does not define.
    """
    from tfuad.files import write_json, write_text

    out = Path(out)
    description = {"Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
                   "GeneratedBy": [{"Name": "tfuad", "Version": version,
                                    "Description": "unsupervised anomaly segmentation of brain MRI"}]}
    if source is not None:
        description["SourceDatasets"] = [{"URL": Path(os.fspath(source)).resolve().as_uri()}]
    path = write_json(description, out / "dataset_description.json")
    write_text("**/detection.json\n**/*.png\nshards/\n", out / ".bidsignore")
    return path


def sidecar(path, fields: dict) -> Path:
    """Write the JSON sidecar of a NIfTI output (same name, ``.json``)."""
    from tfuad.files import write_json

    name = Path(path).name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
    return write_json(json.loads(json.dumps(fields, default=str)), Path(path).with_name(stem + ".json"))
