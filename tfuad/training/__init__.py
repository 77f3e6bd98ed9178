"""Training: run directories, resumable checkpoints and the training loop."""
from tfuad.training.run import RunDir
from tfuad.training.trainer import TrainConfig, train

__all__ = ["RunDir", "TrainConfig", "train"]
