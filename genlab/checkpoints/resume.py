"""The checkpoint a training run resumes from (`ckpt_path=last` finds it), and whether this run can resume it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from packaging.version import InvalidVersion, Version

from genlab.checkpoints.rebuild import model_class
from genlab.errors import ConfigError
from genlab.utils.checkpoint_reader import CheckpointError, read_checkpoint
from genlab.utils.run_folder import earlier_runs

log = logging.getLogger(__name__)


def resume_path(ckpt_path: str | None, task_dir: Path) -> str | None:
    """The checkpoint to resume from: `ckpt_path` as given, or for `last` the newest `checkpoints/last.ckpt`
    among the earlier runs under `task_dir` (runs/ and multiruns/) started with this run's overrides, aside
    from those in NOT_THE_RUN (genlab/utils/run_folder.py): re-running the same command continues it, and so does the
    same command with a longer trainer.max_steps or max_epochs. None, with a log line, when there is none.
    """
    if ckpt_path != "last":
        if ckpt_path and "://" not in ckpt_path and not Path(ckpt_path).exists() and not Path(ckpt_path).is_symlink():
            raise CheckpointError(f"ckpt_path={ckpt_path}: no such checkpoint file (or ckpt_path=last to resume)")
        return ckpt_path
    if not HydraConfig.initialized():
        raise ConfigError("ckpt_path=last finds earlier runs of the same command line: run through `python -m`")
    candidates = earlier_runs(task_dir, list(HydraConfig.get().overrides.task))
    if not candidates:
        log.warning(
            f"ckpt_path=last: no earlier run of these overrides under {task_dir} has a last.ckpt; starting anew"
        )
        return None
    newest = max(candidates, key=lambda path: path.stat().st_mtime)
    log.info(f"ckpt_path=last: resuming from {newest}")
    return str(newest)


def check_resumable(path: str | Path, target: str) -> dict[str, Any]:
    """Before Lightning resumes from `path`: a readable genlab checkpoint of the family being trained; returned."""
    checkpoint = read_checkpoint(path)
    cls = model_class(checkpoint, path)
    if f"{cls.__module__}.{cls.__qualname__}" != target:
        raise CheckpointError(
            f"ckpt_path={path}: holds a {cls.__name__}, and this run trains a {target.rsplit('.', 1)[1]}: "
            f"resume with the model it was trained as (model= of that run), or start anew without ckpt_path"
        )
    if not isinstance(checkpoint.get("global_step"), int):
        raise CheckpointError(f"{path}: has no training step count ('global_step'); not a checkpoint of a fit")
    if not _is_version(checkpoint.get("pytorch-lightning_version")):  # what Lightning's resume reads first
        raise CheckpointError(
            f"{path}: has no Lightning version ('pytorch-lightning_version'), which a resume reads; not a checkpoint "
            f"of a fit"
        )
    if "optimizer_states" not in checkpoint:  # what Lightning leaves out of a weights-only checkpoint
        raise CheckpointError(
            f"ckpt_path={path}: holds weights only (written with save_weights_only=true), and a resume needs the "
            f"optimizer and loop states of a full checkpoint; evaluate or sample it (src.eval, src.sample), or start "
            f"anew without ckpt_path"
        )
    return checkpoint


def _is_version(value: Any) -> bool:
    try:
        Version(value)
    except (InvalidVersion, TypeError):
        return False
    return True
