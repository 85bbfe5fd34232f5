"""What goes into checkpoints beyond Lightning's own: the run's config, and slim exported copies."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from genlab.errors import ConfigError
from genlab.utils.checkpoint_reader import read_checkpoint
from genlab.utils.checkpoint_writer import AtomicCheckpointIO
from genlab.utils.config import save_config_tree
from genlab.utils.files import write_text_atomically
from genlab.utils.run_folder import CONFIG, CONFIG_TREE

log = logging.getLogger(__name__)


class RunCheckpointIO(AtomicCheckpointIO):
    """A Trainer plugin: the run's checkpoints, written atomically (AtomicCheckpointIO), each holding the run's
    resolved config (plain containers) under "config".

    With it a checkpoint is self-contained: `src.eval` and `src.sample` rebuild the model (and, for eval, the data)
    from `config["model"]` and `config["data"]`, with no config files at hand. Here rather than in a callback's
    on_save_checkpoint, which Lightning skips for `callbacks.model_checkpoint.save_weights_only=true`: a weights-only
    checkpoint serves src.eval and src.sample as well (a resume needs a full one, and says so).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        super().save_checkpoint({**checkpoint, "config": self.config}, path, storage_options)


class SaveRunConfig(Callback):
    """Write the run's resolved config in the run `folder` as config.yaml (and config_tree.log, if `config_tree`)
    when its training or its test starts (RunCheckpointIO puts it in every checkpoint).

    The files are written after every check of the run, Lightning's restoring of a checkpoint and the sanity check
    included: a resume that is refused leaves the run folder it was asked to continue as it was.
    """

    def __init__(self, config: dict[str, Any], folder: Path | None = None, config_tree: bool = False) -> None:
        self.config = config
        self.folder = folder
        self.config_tree = config_tree
        self.written = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def _write(self, trainer: L.Trainer) -> None:
        if self.folder is None or self.written or not trainer.is_global_zero:
            return
        config = OmegaConf.create(self.config)
        if self.config_tree:
            save_config_tree(config, self.folder / CONFIG_TREE)
        write_text_atomically(self.folder / CONFIG, OmegaConf.to_yaml(config), "the config")
        self.written = True  # once: the test after training finds it written


class ExportBestCheckpoint(Callback):
    """At the end of fitting, write the best checkpoint's weights and config to `path`.

    The copy holds what inference needs (state_dict, hyper_parameters, config) and no optimizer
    state, so it is small enough to commit; it is written atomically, so a crash never leaves a
    half-written file at `path`.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning(f"No best checkpoint to export to {self.path}")
            return
        checkpoint = read_checkpoint(best)
        # what Lightning's load_from_checkpoint reads (the version: for its format migrations), and our config
        keep = ("state_dict", "hyper_parameters", "config", "epoch", "global_step", "pytorch-lightning_version")
        slim = {key: checkpoint[key] for key in keep}
        slim["exported_from"] = str(best)
        AtomicCheckpointIO().save_checkpoint(slim, self.path)
        log.info(f"Exported {best} to {self.path}")


class RequireMonitoredMetric(Callback):
    """Refuse a `monitor.metric` that nothing logs, at the end of the sanity check rather than after an epoch.

    The sanity check's validation shows what the model logs; callbacks that log at validation ends but
    skip the sanity check (SampleFID) name theirs in `logged_metrics`.
    """

    def __init__(self, metric: str | None) -> None:
        self.metric = metric

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        promised = {name for callback in trainer.callbacks for name in getattr(callback, "logged_metrics", ())}
        logged = set(trainer.callback_metrics) | promised
        if self.metric and self.metric not in logged:
            raise ConfigError(
                f"monitor.metric={self.metric!r} is never logged by {type(pl_module).__name__}; its validation logs "
                f"{', '.join(sorted(logged)) or 'nothing'} (or monitor.metric=null to keep the latest checkpoint)"
            )
