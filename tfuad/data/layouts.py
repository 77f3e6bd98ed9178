"""Find the subjects of a dataset on disk: which file holds which modality and label.

Discovery only lists files (no voxel is read), so it is fast on large folders.
Supported layouts, detected from what a folder contains:

``brats``
    ``<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz``; ``seg`` is the lesion mask.
    The dataset root (a folder of case folders) or a single case folder.
``mslub``
    ``patientNN/{FLAIR,T1,T1POST,T2}_<anything>.nii.gz`` and
    ``GOLD_STANDARD_<anything>.nii.gz`` (the lesion mask); ``T1POST`` becomes
    ``t1ce``. The dataset root or a single patient folder.
``ixi``
    ``IXI<id>-<site>-<n>_<MOD>.nii.gz`` flat in one folder (``-<MOD>`` too); T1,
    T2 and PD are kept. IXI volunteers are healthy: ``Subject.healthy`` is True.
``bids``
    ``sub-*/[ses-*/]anat/*_{T1w,T2w,FLAIR,PDw}.nii.gz``, lesion masks
    ``derivatives/<pipeline>/sub-*/[ses-*/]anat/*_label-lesion_mask.nii.gz``; a
    session is a subject ``sub-X_ses-Y``. See :mod:`tfuad.data.bids`.
``manifest``
    A CSV file (or a folder holding ``manifest.csv``), see :func:`read_manifest`.
``tfuad-demo``
    A manifest with a ``tfuad_demo.json`` file reading ``{"layout": "tfuad-demo"}``
    beside it; its ``train`` and ``calib`` subjects are healthy.

Modality names are lower-case: ``flair``, ``t1``, ``t1ce``, ``t2``, ``pd``.

Example:
    >>> ds = discover("../shared/data/brats18")                     # doctest: +SKIP
    >>> ds.layout, len(ds), ds.modalities                           # doctest: +SKIP
    ('brats', 15, ['flair', 't1', 't1ce', 't2'])
    >>> train = ds.with_protocol("brats-healthy-slices").split("train")  # doctest: +SKIP
    >>> train.subjects[0].image("flair")                            # doctest: +SKIP
    PosixPath('.../Brats18_2013_11_1/Brats18_2013_11_1_flair.nii.gz')
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tfuad.data.splits import SPLITS
from tfuad.errors import ConfigError, DatasetError, MissingModalityError

__all__ = [
    "Subject",
    "Dataset",
    "discover",
    "read_manifest",
    "normalize_modality",
    "LAYOUTS",
    "PROTOCOLS",
    "MANIFEST_NAME",
    "DEMO_MARKER_NAME",
]

#: Layout names accepted by :func:`discover`, in auto-detection order.
LAYOUTS = ("manifest", "tfuad-demo", "bids", "brats", "mslub", "ixi")

#: File name read as the manifest of a folder.
MANIFEST_NAME = "manifest.csv"

#: File beside a manifest that marks it as the built-in demo dataset.
DEMO_MARKER_NAME = "tfuad_demo.json"

#: Named subject splits. ``brats-healthy-slices``: train and calibrate on the
#: tumour-free slices of the ``train``/``calib`` cases, test on whole ``test`` volumes.
PROTOCOLS: dict[str, dict[str, list[str]]] = {
    "brats-healthy-slices": {
        "train": [
            "Brats18_2013_11_1",
            "Brats18_2013_23_1",
            "Brats18_2013_3_1",
            "Brats18_CBICA_ABM_1",
            "Brats18_CBICA_ALU_1",
            "Brats18_CBICA_AME_1",
            "Brats18_TCIA01_201_1",
            "Brats18_TCIA01_378_1",
            "Brats18_TCIA01_499_1",
            "Brats18_TCIA02_135_1",
        ],
        "calib": ["Brats18_TCIA02_370_1", "Brats18_TCIA03_265_1"],
        "test": ["Brats18_TCIA10_628_1", "Brats18_TCIA10_637_1"],
    },
}

_NII = r"\.nii(?:\.gz)?"
_BRATS_FILE = r"^{case}_(flair|t1|t1ce|t2|seg)" + _NII + "$"
_MSLUB_IMAGE = re.compile(r"^(FLAIR|T1POST|T1|T2)_.+" + _NII + "$", re.IGNORECASE)
_MSLUB_MASK = re.compile(r"^GOLD_STANDARD_.+" + _NII + "$", re.IGNORECASE)
_IXI_FILE = re.compile(r"^(IXI\d+-[A-Za-z]+-\d+)[-_]([A-Za-z0-9]+)(?:[-_].*)?" + _NII + "$")
_IXI_KEPT = ("t1", "t2", "pd")
_MODALITY_ALIASES = {"t1post": "t1ce"}
_MANIFEST_FIELDS = ("subject", "split", "brain_mask", "lesion_mask", "healthy", "qc")
_TRUE = ("1", "true", "yes", "y")
_FALSE = ("0", "false", "no", "n")
_LOOKED_FOR = (
    "looked for: manifest (manifest.csv), "
    "bids (sub-*/[ses-*/]anat/*_{T1w,T2w,FLAIR}.nii.gz), "
    "brats (<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz), "
    "mslub (<patient>/{FLAIR,T1,T1POST,T2}_*.nii.gz, GOLD_STANDARD_*.nii.gz), "
    "ixi (IXI<id>-<site>-<n>_{T1,T2,PD}.nii.gz)"
)


def normalize_modality(name: str) -> str:
    """The canonical lower-case name of a modality (``"T1POST"`` -> ``"t1ce"``).

    Example:
        >>> normalize_modality(" FLAIR "), normalize_modality("T1POST")
        ('flair', 't1ce')
    """
    key = str(name).strip().lower()
    return _MODALITY_ALIASES.get(key, key)


def _short_list(items, limit: int = 10) -> str:
    items = [str(i) for i in items]
    if not items:
        return "none"
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


@dataclass
class Subject:
    """The files of one subject.

    Attributes:
        id: Subject identifier (case folder name, IXI prefix or manifest value).
        images: Modality (lower-case) -> image file.
        lesion_mask: Lesion label file (BraTS ``seg``, MSLUB gold standard), or ``None``.
        brain_mask: Brain mask file, or ``None`` (then it is computed elsewhere).
        split: Split name such as ``"train"``, ``"calib"`` or ``"test"``, or ``None``.
        healthy: True when the subject is known to be lesion-free (IXI volunteers,
            manifest rows marked healthy); it then needs no lesion mask.
        source: The folder (or manifest file) the subject was found in; named in errors.

    Example:
        >>> s = Subject("sub-01", {"flair": Path("sub-01_flair.nii.gz")})
        >>> s.image("FLAIR").name
        'sub-01_flair.nii.gz'
    """

    id: str
    images: dict[str, Path]
    lesion_mask: Path | None = None
    brain_mask: Path | None = None
    split: str | None = None
    healthy: bool = False
    source: Path | None = field(default=None, repr=False)

    def __post_init__(self):
        images = {}
        for name, path in self.images.items():
            _put(images, normalize_modality(name), Path(path), self.source or self.id)
        self.images = dict(sorted(images.items()))
        self.lesion_mask = None if self.lesion_mask is None else Path(self.lesion_mask)
        self.brain_mask = None if self.brain_mask is None else Path(self.brain_mask)

    @property
    def modalities(self) -> list[str]:
        """Sorted modalities this subject has."""
        return sorted(self.images)

    def image(self, modality: str) -> Path:
        """The image file of ``modality`` (case-insensitive, ``T1POST`` = ``t1ce``).

        Raises:
            MissingModalityError: naming the subject's folder, the modality and
                the modalities the subject does have.
        """
        key = normalize_modality(modality)
        if key not in self.images:
            raise MissingModalityError(
                self.source or self.id,
                f"subject {self.id} has no {key!r} image (has: {_short_list(self.modalities)})",
            )
        return self.images[key]

    def require_lesion_mask(self) -> Path:
        """The lesion mask file, for healthy-slice selection and evaluation.

        Raises:
            MissingModalityError: when the subject has no lesion mask; the message
                says whether it is healthy (lesion-free by definition) or unlabelled.
        """
        if self.lesion_mask is not None:
            return self.lesion_mask
        if self.healthy:
            problem = (
                f"no lesion mask file for subject {self.id}: it is marked healthy "
                "(lesion-free), so its lesion mask is all zeros"
            )
        else:
            problem = (
                f"no lesion mask (seg) for subject {self.id}: usable for inference only, "
                "not for healthy-slice selection or evaluation"
            )
        raise MissingModalityError(self.source or self.id, problem)


@dataclass
class Dataset:
    """Subjects found under one root, in a fixed order.

    Attributes:
        root: The dataset folder, or the manifest file for manifest layouts.
        layout: One of :data:`LAYOUTS`.
        subjects: The subjects, with unique ids.
        left_out: Ids of manifest rows whose ``qc`` column says ``fail`` (a registration that
            failed ``tfuad preprocess``'s quality control), left out of ``subjects`` unless
            :func:`discover` was asked to include them.

    Example:
        >>> ds = discover("data/brats18")                           # doctest: +SKIP
        >>> ds.select(["Brats18_2013_3_1"]).subjects[0].lesion_mask  # doctest: +SKIP
    """

    root: Path
    layout: str
    subjects: list[Subject]
    left_out: list[str] = field(default_factory=list)

    def __post_init__(self):
        seen = set()
        for subject in self.subjects:
            if subject.id in seen:
                raise DatasetError(self.root, f"subject id {subject.id!r} appears twice")
            seen.add(subject.id)

    def __len__(self) -> int:
        return len(self.subjects)

    def __iter__(self):
        return iter(self.subjects)

    @property
    def ids(self) -> list[str]:
        """Subject ids, in order."""
        return [s.id for s in self.subjects]

    @property
    def modalities(self) -> list[str]:
        """Sorted modalities present in at least one subject."""
        return sorted({m for s in self.subjects for m in s.images})

    def _derive(self, subjects) -> Dataset:
        return Dataset(self.root, self.layout, list(subjects))

    def subject(self, id: str) -> Subject:
        """The subject called ``id``.

        Raises:
            DatasetError: when no subject has that id.
        """
        for s in self.subjects:
            if s.id == id:
                return s
        raise DatasetError(self.root, f"no subject {id!r} (subjects: {_short_list(self.ids)})")

    def select(self, ids) -> Dataset:
        """The subjects listed in ``ids`` (a list, or one id), in that order.

        Raises:
            DatasetError: for an unknown, repeated or empty list of ids.
        """
        ids = [ids] if isinstance(ids, str) else list(ids)
        if not ids:
            raise DatasetError(self.root, "no subject id given to select")
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise DatasetError(self.root, f"subject ids listed more than once: {_short_list(repeated)}")
        by_id = {s.id: s for s in self.subjects}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise DatasetError(
                self.root, f"unknown subject ids: {_short_list(unknown)} (subjects: {_short_list(self.ids)})"
            )
        return self._derive(by_id[i] for i in ids)

    def split(self, name: str) -> Dataset:
        """The subjects whose ``split`` is ``name``.

        Raises:
            DatasetError: when no subject is in that split (the message lists the splits present).
        """
        chosen = [s for s in self.subjects if s.split == name]
        if not chosen:
            present = sorted({s.split for s in self.subjects if s.split is not None})
            raise DatasetError(self.root, f"no subject in split {name!r} (splits: {_short_list(present)})")
        return self._derive(chosen)

    def with_protocol(self, name: str) -> Dataset:
        """A copy whose subjects carry the splits of protocol ``name``.

        Subjects the protocol does not list are kept, with ``split=None``.

        Raises:
            ConfigError: for an unknown protocol name.
            DatasetError: when the dataset lacks cases the protocol lists.
        """
        if name not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}")
        split_of = {i: split for split, ids in PROTOCOLS[name].items() for i in ids}
        present = set(self.ids)
        missing = [i for i in split_of if i not in present]
        if missing:
            raise DatasetError(
                self.root, f"protocol {name!r} needs subjects missing here: {', '.join(missing)}"
            )
        return self._derive(dataclasses.replace(s, split=split_of.get(s.id)) for s in self.subjects)


def _put(files: dict, key: str, path: Path, owner: Path) -> None:
    """Record ``files[key] = path``, refusing two files for one role."""
    if key in files:
        raise DatasetError(owner, f"two files for {key!r}: {files[key].name} and {path.name}")
    files[key] = path


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def _brats_case(folder: Path) -> Subject | None:
    pattern = re.compile(_BRATS_FILE.format(case=re.escape(folder.name)), re.IGNORECASE)
    files = {}
    for path in _files(folder):
        match = pattern.match(path.name)
        if match:
            _put(files, match.group(1).lower(), path, folder)
    if not files:
        return None
    seg = files.pop("seg", None)
    if not files:
        raise DatasetError(folder, "case folder has a seg file but no image")
    return Subject(folder.name, files, lesion_mask=seg, source=folder)


def _mslub_patient(folder: Path) -> Subject | None:
    files = {}
    for path in _files(folder):
        match = _MSLUB_IMAGE.match(path.name)
        if match:
            _put(files, normalize_modality(match.group(1)), path, folder)
        elif _MSLUB_MASK.match(path.name):
            _put(files, "gold standard", path, folder)
    if not files:
        return None
    mask = files.pop("gold standard", None)
    if not files:
        raise DatasetError(folder, "patient folder has a GOLD_STANDARD mask but no image")
    return Subject(folder.name, files, lesion_mask=mask, source=folder)


def _per_folder(root: Path, read_one) -> list[Subject]:
    """Subjects of a root of subject folders, or of ``root`` itself as one subject."""
    subjects = [s for s in map(read_one, _subfolders(root)) if s is not None]
    if not subjects:
        single = read_one(root)
        subjects = [single] if single is not None else []
    return subjects


def _read_brats(root: Path) -> list[Subject]:
    return _per_folder(root, _brats_case)


def _read_mslub(root: Path) -> list[Subject]:
    return _per_folder(root, _mslub_patient)


def _read_ixi(root: Path) -> list[Subject]:
    images: dict[str, dict[str, Path]] = {}
    for path in _files(root):
        match = _IXI_FILE.match(path.name)
        if match and match.group(2).lower() in _IXI_KEPT:
            _put(images.setdefault(match.group(1), {}), match.group(2).lower(), path, root)
    return [Subject(i, images[i], healthy=True, source=root) for i in sorted(images)]


def _read_bids(root: Path) -> list[Subject]:
    from tfuad.data.bids import is_bids_root, read_bids

    return read_bids(root) if is_bids_root(root) else []


def _read_bids_pipeline(root: Path, derivatives: str) -> Dataset:
    from tfuad.data.bids import is_bids_root, read_bids

    if not is_bids_root(root):
        raise ConfigError(f"{root}: is not a BIDS dataset (sub-*/[ses-*/]anat folders); a derivatives pipeline "
                          f"({derivatives!r}) is chosen only for one")
    return Dataset(root, "bids", read_bids(root, derivatives=derivatives))


_FOLDER_READERS = {"bids": _read_bids, "brats": _read_brats, "mslub": _read_mslub, "ixi": _read_ixi}


def _parse_bool(text: str, csv_path: Path, line: int) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise DatasetError(
        csv_path, f"line {line}: healthy value {text!r} is not one of {', '.join(_TRUE + _FALSE)}"
    )


def _is_demo(csv_path: Path) -> bool:
    marker = csv_path.parent / DEMO_MARKER_NAME
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(marker, f"unreadable JSON ({err})") from None
    return isinstance(info, dict) and info.get("layout") == "tfuad-demo"


def _manifest_columns(fieldnames, csv_path: Path) -> list[str]:
    if not fieldnames:
        raise DatasetError(csv_path, "line 1: empty file, expected a header with a 'subject' column")
    columns = [str(c).strip().lower() for c in fieldnames]
    if "subject" not in columns:
        raise DatasetError(
            csv_path, f"line 1: missing required column 'subject' (columns: {', '.join(columns)})"
        )
    roles = [c if c in _MANIFEST_FIELDS else normalize_modality(c) for c in columns]
    repeated = sorted({r for r in roles if roles.count(r) > 1})
    if repeated or "" in roles:
        problem = f"columns repeated: {', '.join(repeated)}" if repeated else "a column has no name"
        raise DatasetError(csv_path, f"line 1: {problem}")
    return roles


def _manifest_file(cell: str, column: str, csv_path: Path, line: int) -> Path | None:
    if not cell.strip():
        return None
    path = Path(cell.strip()).expanduser()
    if not path.is_absolute():
        path = csv_path.parent / path
    if not path.is_file():
        from tfuad.data.dicom import is_dicom_folder

        if is_dicom_folder(path):  # a DICOM series stands wherever a NIfTI file does
            return path
        raise DatasetError(
            csv_path, f"line {line}: column {column!r} file {cell.strip()!r} does not exist ({path})"
        )
    return path


def _read_manifest(csv_path: Path, demo: bool, include_failed_qc: bool = False) -> Dataset:
    subjects, first_line, left_out = [], {}, []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            roles = _manifest_columns(next(reader, None), csv_path)
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(roles):
                    raise DatasetError(
                        csv_path, f"line {line}: {len(row)} cells but the header has {len(roles)} columns"
                    )
                cells = dict(zip(roles, row))
                sid = cells["subject"].strip()
                if not sid:
                    raise DatasetError(csv_path, f"line {line}: empty subject id")
                if sid in first_line:
                    raise DatasetError(
                        csv_path, f"line {line}: duplicate subject id {sid!r} (first on line {first_line[sid]})"
                    )
                first_line[sid] = line
                if cells.get("qc", "").strip().lower() == "fail" and not include_failed_qc:
                    left_out.append(sid)
                    continue
                split = cells.get("split", "").strip().lower() or None
                if split is not None and split not in SPLITS:
                    raise DatasetError(
                        csv_path, f"line {line}: split {cells['split'].strip()!r} of subject {sid!r} is not one "
                        f"of {', '.join(SPLITS)} (or empty)"
                    )
                images = {}
                for role, cell in cells.items():
                    if role not in _MANIFEST_FIELDS:
                        path = _manifest_file(cell, role, csv_path, line)
                        if path is not None:
                            images[role] = path
                if not images:
                    raise DatasetError(csv_path, f"line {line}: subject {sid!r} has no image")
                healthy_cell = cells.get("healthy", "")
                healthy = (
                    _parse_bool(healthy_cell, csv_path, line)
                    if healthy_cell.strip()
                    else demo and split in ("train", "calib")
                )
                subjects.append(
                    Subject(
                        sid,
                        images,
                        lesion_mask=_manifest_file(cells.get("lesion_mask", ""), "lesion_mask", csv_path, line),
                        brain_mask=_manifest_file(cells.get("brain_mask", ""), "brain_mask", csv_path, line),
                        split=split,
                        healthy=healthy,
                        source=csv_path,
                    )
                )
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(csv_path, f"cannot read the manifest ({err})") from None
    if not subjects:
        failed = f" (all {len(left_out)} failed quality control; include them on request)" if left_out else ""
        raise DatasetError(csv_path, "manifest lists no subject" + failed)
    subjects.sort(key=lambda s: s.id)
    return Dataset(csv_path, "tfuad-demo" if demo else "manifest", subjects, sorted(left_out))


def read_manifest(csv_path) -> Dataset:
    """Read a manifest CSV file.

    Columns: ``subject`` (required), ``split``, ``brain_mask``, ``lesion_mask`` and
    ``healthy`` (``1/0``, ``true/false``, ``yes/no``) and ``qc`` (``pass``/``fail``, written by
    ``tfuad preprocess``; ``fail`` rows are left out, see :func:`discover`) are optional; every other
    column is a modality (lower-cased, ``T1POST`` read as ``t1ce``). Paths are
    relative to the CSV's folder or absolute; an empty cell means missing.
    ``healthy`` defaults to False, except in the demo layout (a ``tfuad_demo.json``
    with ``{"layout": "tfuad-demo"}`` beside the CSV) where ``train`` and
    ``calib`` subjects default to healthy.

    Args:
        csv_path: The manifest file.

    Returns:
        A :class:`Dataset` with layout ``"manifest"`` or ``"tfuad-demo"``, rooted at
        the CSV file, subjects sorted by id.

    Raises:
        DatasetError: naming the CSV file and line for a missing ``subject`` column,
            a duplicate subject id, a file that does not exist, a bad ``healthy``
            value, a ``split`` other than ``train``, ``calib``, ``test`` or empty,
            a row without image, or a manifest without rows.

    Example:
        >>> # subject,split,flair,lesion_mask
        >>> # sub-01,train,sub-01/flair.nii.gz,
        >>> ds = read_manifest("data/manifest.csv")          # doctest: +SKIP
        >>> ds.split("train").subjects[0].image("flair")     # doctest: +SKIP
    """
    path = Path(os.fspath(csv_path)).expanduser().resolve()
    if not path.is_file():
        raise DatasetError(path, "manifest file does not exist")
    return _read_manifest(path, _is_demo(path))


def discover(path, *, layout: str | None = None, include_failed_qc: bool = False,
             derivatives: str | None = None) -> Dataset:
    """Find the subjects of a dataset folder or a manifest CSV file.

    Args:
        path: A dataset folder (BraTS root or case, MSLUB root or patient, IXI
            folder, folder with ``manifest.csv``) or a manifest ``.csv`` file.
        layout: Force one of :data:`LAYOUTS` instead of detecting it.
        include_failed_qc: Keep manifest rows whose ``qc`` is ``fail`` (by default they are
            left out and named in :attr:`Dataset.left_out`).
        derivatives: Read a BIDS dataset's lesion and brain masks only from
            ``derivatives/<derivatives>`` (:func:`tfuad.data.bids.read_bids`; the commands'
            ``--derivatives-pipeline``); ``None``: from every pipeline but tfuad's own outputs.

    Returns:
        A :class:`Dataset` with subjects sorted by id.

    Raises:
        ConfigError: for an unknown ``layout`` name, or ``derivatives`` for a path that is not a
            BIDS dataset.
        DatasetError: when ``path`` is neither a folder nor a CSV file, or no
            subject of a known (or the forced) layout is found; the message names
            the path and the layouts looked for.

    Example:
        >>> discover("../shared/data/ixi_t1").layout                 # doctest: +SKIP
        'ixi'
        >>> discover("runs/demo_data/manifest.csv").layout           # doctest: +SKIP
        'tfuad-demo'
    """
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"unknown dataset layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    root = Path(os.fspath(path)).expanduser().resolve()
    if derivatives is not None:
        return _read_bids_pipeline(root, derivatives)
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DatasetError(root, f"not a dataset folder nor a manifest .csv file; {_LOOKED_FOR}")
        if layout in _FOLDER_READERS:
            raise DatasetError(root, f"is a manifest file, not a {layout} dataset folder")
        return _read_manifest(root, _is_demo(root) if layout is None else layout == "tfuad-demo", include_failed_qc)
    if not root.is_dir():
        raise DatasetError(root, f"does not exist; expected a dataset folder or a manifest .csv file; {_LOOKED_FOR}")

    manifest = root / MANIFEST_NAME
    if layout in (None, "manifest", "tfuad-demo") and manifest.is_file():
        return _read_manifest(manifest, _is_demo(manifest) if layout is None else layout == "tfuad-demo",
                              include_failed_qc)
    if layout in ("manifest", "tfuad-demo"):
        raise DatasetError(root, f"no {MANIFEST_NAME} in this folder (layout {layout!r} was asked)")
    for name in [layout] if layout else _FOLDER_READERS:
        try:
            subjects = _FOLDER_READERS[name](root)
        except OSError as err:
            raise DatasetError(root, f"cannot list the folder ({err.strerror or err})") from None
        if subjects:
            return Dataset(root, name, sorted(subjects, key=lambda s: s.id))
    asked = f"no subject of the {layout} layout found" if layout else "no recognised dataset layout"
    raise DatasetError(root, f"{asked}; {_LOOKED_FOR}")
