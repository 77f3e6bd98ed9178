"""The run directory: everything a trained model needs later, in one folder.

Layout::

    RUN_DIR/config.json          model name and arguments, preprocessing, intensity
                                 statistics, data and training settings, version
    RUN_DIR/model.keras          the trained model (Keras format)
    RUN_DIR/history.csv          one row of loss terms per epoch
    RUN_DIR/checkpoints/         last epoch's weights + optimiser state (for --resume)
    RUN_DIR/logs/                TensorBoard logs
    RUN_DIR/calibration-<method>.json   thresholds (and the method's own settings,
                                 e.g. MAP-TV's λ) written by ``tfuad calibrate``
    RUN_DIR/<curve>.png          selection curves drawn at calibration (``lambda_curve.png``)

Example:
    >>> run = RunDir("runs/svae")             # doctest: +SKIP
    >>> model = run.load_model()              # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

from tfuad.errors import ConfigError
from tfuad.files import read_json, write_json

__all__ = ["RunDir", "write_json", "read_json"]


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

    def calibration_path(self, method: str) -> Path:
        """The calibration file of a scoring method."""
        return self.path / f"calibration-{method}.json"

    def figure_path(self, name: str) -> Path:
        """A figure drawn into the run (``name`` is a plain file name)."""
        if Path(name).name != name or not name.endswith(".png"):
            raise ConfigError(f"{self.path}: figure name {name!r} is not a plain .png file name")
        return self.path / name

    def weights_fingerprint(self) -> str:
        """SHA-256 of ``model.keras``: calibrations store it and are refused once the weights change."""
        import hashlib

        digest = hashlib.sha256()
        with open(self.require_model(), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def exists(self) -> bool:
        """True when the folder holds a run (a config)."""
        return self.config_path.is_file()

    def is_empty(self) -> bool:
        return not self.path.exists() or not any(self.path.iterdir())

    def config(self) -> dict:
        """The run's ``config.json``."""
        if not self.exists():
            raise ConfigError(f"{self.path}: not a tfuad run directory (no config.json)")
        return read_json(self.config_path)

    def require_model(self) -> Path:
        if not self.model_path.is_file():
            raise ConfigError(f"{self.path}: holds no trained model (model.keras); finish or resume training first")
        return self.model_path

    def load_model(self, compile: bool = False):
        """Load the trained model (custom classes are registered on import)."""
        import keras

        import tfuad.models as zoo

        zoo.model_class(self.config()["model"])  # imports and registers the class
        return keras.models.load_model(self.require_model(), compile=compile)

    def preprocess_config(self):
        """The :class:`~tfuad.data.preprocessing.PreprocessConfig` the model was trained with."""
        from tfuad.data.preprocessing import PreprocessConfig

        return PreprocessConfig.from_dict(self.config()["preprocess"])

    def intensity_stats(self) -> dict:
        return self.config().get("intensity_stats") or {}
