"""Checkpoints as untrusted data: genlab's own models and datamodules rebuilt from checked values (rebuild.py), and
the checkpoint a training run resumes from (resume.py). Files are read by genlab/utils/checkpoint_reader.py alone."""

from genlab.checkpoints.rebuild import (
    DATA_CLASSES,
    MODEL_CLASSES,
    build_model,
    datamodule_from,
    load_model,
    model_class,
    model_from,
)
from genlab.utils.checkpoint_reader import CheckpointError, read_checkpoint

__all__ = [
    "DATA_CLASSES",
    "MODEL_CLASSES",
    "CheckpointError",
    "build_model",
    "datamodule_from",
    "load_model",
    "model_class",
    "model_from",
    "read_checkpoint",
]
