"""The run directory: everything a trained model needs later, in one folder.

Layout::

    RUN_DIR/config.json          model name and arguments, preprocessing, intensity
                                 statistics, data and training settings, version
    RUN_DIR/model.keras          the trained model (Keras format; the best epoch's weights)
    RUN_DIR/history.csv          one row of loss terms, validation L1/SSIM and learning rate per epoch
    RUN_DIR/checkpoints/         last epoch's and best epoch's weights + optimiser state,
                                 ``state.json`` (for --resume)
    RUN_DIR/logs/                TensorBoard logs
    RUN_DIR/reconstructions.png  healthy validation slices beside their reconstructions
    RUN_DIR/loss_curves.png      the curves of ``history.csv``
    RUN_DIR/calibration-<method>.json   thresholds (and the method's own settings, e.g.
                                 MAP-TV's λ) written by ``tfuad calibrate``
    RUN_DIR/<setting>_curve.png  selection curves drawn at calibration (``lambda_curve.png``)

Only these entries are tfuad's (:data:`RUN_ENTRIES`): ``--overwrite`` removes
them and nothing else, and only in a folder whose ``config.json`` is a tfuad
run's (:meth:`RunDir.is_run`).

Example:
    >>> run = RunDir("runs/svae")             # doctest: +SKIP
    >>> model = run.load_model()              # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from tfuad.errors import ConfigError, CorruptFileError
from tfuad.files import read_json, write_json

__all__ = ["RunDir", "RUN_ENTRIES", "RUN_KEYS", "write_json", "read_json"]

#: Keys that make a ``config.json`` recognisably a tfuad run's.
RUN_KEYS = ("model", "training", "preprocess", "tfuad_version")
#: Keys every run's ``config.json`` holds (read by training, calibration, detection and export).
REQUIRED_KEYS = ("model", "model_kwargs", "training", "preprocess", "data", "tfuad_version")
#: Names (glob patterns) of the entries tfuad writes into a run directory.
RUN_ENTRIES = ("config.json", "model.keras", "history.csv", "checkpoints", "logs", "calibration.json",
               "calibration-*.json", "*_curve.png", "reconstructions.png", "loss_curves.png")


def is_temporary_of(name: str, pattern: str) -> bool:
    """Whether ``name`` is a temporary file :func:`tfuad.files.atomic_path` made for a ``pattern`` file.

    Example:
        >>> is_temporary_of(".model.keras.x1y2.keras", "model.keras")
        True
        >>> is_temporary_of("model.keras", "model.keras")
        False
    """
    return fnmatch.fnmatchcase(name, f".{pattern}.*")


class RunDir:
    """Paths and loaders of one training run.

    Args:
        path: The run directory.
    """

    def __init__(self, path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    model_path = property(lambda self: self.path / "model.keras")
    history_path = property(lambda self: self.path / "history.csv")
    checkpoint_dir = property(lambda self: self.path / "checkpoints")
    state_path = property(lambda self: self.path / "checkpoints" / "state.json")
    log_dir = property(lambda self: self.path / "logs")
    reconstructions_path = property(lambda self: self.path / "reconstructions.png")
    loss_curves_path = property(lambda self: self.path / "loss_curves.png")

    def calibration_path(self, method: str) -> Path:
        """The calibration file of a scoring method."""
        return self.path / f"calibration-{method}.json"

    def curve_path(self, setting: str) -> Path:
        """The figure of a setting chosen at calibration (``lambda`` → ``lambda_curve.png``)."""
        if not setting.isidentifier():
            raise ConfigError(f"{self.path}: {setting!r} cannot name a calibration curve")
        return self.path / f"{setting}_curve.png"

    def stale_calibration(self, method: str, *, weighted: bool = True) -> str | None:
        """Why the calibration of ``method`` cannot be used now, or ``None`` when it can.

        Args:
            method: The scoring method.
            weighted: Whether the method's maps depend on the weights (all but the intensity baseline):
                then the calibration must carry the fingerprint of the current ``model.keras``.

        Returns:
            ``None``, ``"is missing"``, ``"has no weights fingerprint"`` or ``"was made for other weights"``.
        """
        path = self.calibration_path(method)
        if not path.is_file():
            return "is missing"
        return self.weights_mismatch(read_json(path).get("weights")) if weighted else None

    def weights_mismatch(self, fingerprint: str | None) -> str | None:
        """Why maps made with the weights of ``fingerprint`` do not fit ``model.keras`` now, or ``None``.

        Returns:
            ``None``, ``"has no weights fingerprint"`` or ``"was made for other weights"``.
        """
        if fingerprint is None:
            return "has no weights fingerprint"
        return None if fingerprint == self.weights_fingerprint() else "was made for other weights"

    def weights_fingerprint(self) -> str:
        """SHA-256 of ``model.keras``: calibrations store it and are refused once the weights change."""
        import hashlib

        digest = hashlib.sha256()
        with open(self.require_model(), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def exists(self) -> bool:
        """True when the folder holds a ``config.json`` (see :meth:`is_run` for whether it is tfuad's)."""
        return self.config_path.is_file()

    def is_empty(self) -> bool:
        return not self.path.exists() or not any(self.path.iterdir())

    def missing_run_keys(self) -> list:
        """Keys of :data:`RUN_KEYS` that ``config.json`` lacks (all of them when it is not a JSON object)."""
        try:
            config = json.loads(self.config_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return list(RUN_KEYS)
        return [k for k in RUN_KEYS if not isinstance(config, dict) or k not in config]

    def is_run(self) -> bool:
        """True when ``config.json`` is recognisably a tfuad run's (it holds every key of :data:`RUN_KEYS`)."""
        return self.exists() and not self.missing_run_keys()

    def config(self) -> dict:
        """The run's ``config.json``.

        Raises:
            ConfigError: no ``config.json``, not valid JSON, or a required key
                missing (the message names the file and the key).
        """
        if not self.exists():
            raise ConfigError(f"{self.path}: not a tfuad run directory (no config.json)")
        config = read_json(self.config_path)
        if not isinstance(config, dict):
            raise ConfigError(f"{self.config_path}: not a tfuad run's config (a JSON object is expected)")
        for key in REQUIRED_KEYS:
            if key not in config:
                raise ConfigError(f"{self.config_path}: missing key {key!r}; the run's config is incomplete")
        return config

    def require_model(self) -> Path:
        if not self.model_path.is_file():
            raise ConfigError(f"{self.path}: holds no trained model (model.keras); finish or resume training first")
        return self.model_path

    def load_model(self, compile: bool = False):
        """Load the trained model (custom classes are registered on import).

        Raises:
            ConfigError: no model, or Keras refuses the file (e.g. a ``Lambda``
                layer, which safe mode does not deserialise).
            CorruptFileError: ``model.keras`` is truncated or not a ``.keras`` archive.
        """
        import keras

        import tfuad.models as zoo

        zoo.model_class(self.config()["model"])  # imports and registers the class
        path = self.require_model()
        check_keras_archive(path)
        try:
            return keras.models.load_model(path, compile=compile)
        except (ValueError, TypeError, KeyError, OSError) as err:
            text = " ".join(str(err).split())
            if "Lambda" in text and "safe_mode" in text:
                raise ConfigError(f"{path}: holds a Lambda layer (arbitrary code), which tfuad does not load "
                                  "(Keras safe mode); use a model trained by tfuad") from None
            raise ConfigError(f"{path}: cannot load the model ({text[:300]})") from None

    def preprocess_config(self):
        """The :class:`~tfuad.data.preprocessing.PreprocessConfig` the model was trained with."""
        from tfuad.data.preprocessing import PreprocessConfig

        try:
            return PreprocessConfig.from_dict(self.config()["preprocess"])
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            if isinstance(err, ConfigError):
                raise ConfigError(f"{self.config_path}: 'preprocess': {err}") from None
            raise ConfigError(f"{self.config_path}: 'preprocess' is not a valid preprocessing record "
                              f"({' '.join(str(err).split())})") from None

    def intensity_stats(self) -> dict:
        return self.config().get("intensity_stats") or {}

    # -- the folder as a whole ------------------------------------------------
    def own_entries(self) -> list:
        """Entries of the folder that tfuad writes (:data:`RUN_ENTRIES` and their temporaries)."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir()
                      if any(fnmatch.fnmatchcase(p.name, pat) or is_temporary_of(p.name, pat)
                             for pat in RUN_ENTRIES))

    def clear(self) -> list:
        """Remove tfuad's own entries (links are removed, never followed); returns the names kept.

        Raises:
            ConfigError: the folder is a symbolic link or its config is not a tfuad run's.
        """
        self.check_replaceable()
        for entry in self.own_entries():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
        return sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []

    def check_replaceable(self) -> None:
        """Refuse, with one line, to replace anything but a tfuad run reached without a symbolic link.

        Raises:
            ConfigError: ``path`` is a symbolic link, or its ``config.json`` is not a tfuad run's.
        """
        if self.path.is_symlink():
            raise ConfigError(f"{self.path}: is a symbolic link; --overwrite does not replace a run through "
                              "a link (give the folder it points to)")
        missing = self.missing_run_keys() if self.exists() else list(RUN_KEYS)
        if missing:
            raise ConfigError(f"{self.config_path}: not a tfuad run's config (no {', '.join(map(repr, missing))}); "
                              "--overwrite replaces only tfuad runs, choose another --out")

    def check_writable(self) -> None:
        """Check, by writing a probe file, that the run directory can be created and written.

        Raises:
            ConfigError: an ancestor is not a folder, or the folder (or its nearest
                existing ancestor) is read-only or otherwise not writable.
        """
        target = self.path.absolute()
        probe_dir = target
        while not probe_dir.exists() and not probe_dir.is_symlink():
            probe_dir = probe_dir.parent
        if not probe_dir.is_dir():
            raise ConfigError(f"{self.path}: cannot create the run directory ({probe_dir} is not a folder)")
        try:
            fd, probe = tempfile.mkstemp(prefix=".tfuad-write-probe-", dir=probe_dir)
        except OSError as err:
            where = "" if probe_dir == target else f" (in {probe_dir})"
            raise ConfigError(f"{self.path}: not writable{where}: {err.strerror or err}") from None
        os.close(fd)
        with contextlib.suppress(OSError):
            os.remove(probe)


def check_keras_archive(path) -> None:
    """Refuse a ``.keras`` file that is not a complete zip archive, with one line.

    Raises:
        CorruptFileError: truncated, damaged or not a zip archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise CorruptFileError(path, f"corrupt or truncated .keras file ({' '.join(str(err).split())})") from None
    if bad is not None:
        raise CorruptFileError(path, f"corrupt or truncated .keras file (member {bad!r} fails its checksum)")
