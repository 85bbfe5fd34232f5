"""What genlab adds to Lightning's loggers: W&B without its deprecated argument, with checkpoints as artifacts and
`wandb.watch` offline too, hyperparameters beside the final metrics for TensorBoard's HParams tab, and the end of a
run (W&B runs closed, the commands that show or upload what was logged)."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from lightning.pytorch import loggers
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from pydantic import Field
from torch import Tensor
from torch.nn import Module

log = logging.getLogger(__name__)

# the config sections that tell runs apart in TensorBoard's HParams tab (all of it, ~165 keys, is in hparams.yaml)
HPARAM_SECTIONS = ("model", "data", "trainer", "seed")


class WandbLogger(loggers.WandbLogger):
    """Lightning's WandbLogger, less the `anonymous` argument that it passes to wandb.init on every run, offline
    through wandb.init's own `mode` so that `log_model` works offline too, and with `wandb.watch` as a setting.

    wandb removed anonymous mode (wandb/wandb#10909) and now warns in every run that the setting has no effect.
    This reads Lightning's private `_wandb_init`: remove the class (conf/logger/wandb.yaml back to Lightning's)
    once Lightning stops passing `anonymous` and accepts `offline` with `log_model`.

    `watch`: None, or what is logged as histograms every `watch_log_freq` steps: gradients (through `wandb.watch`),
    parameters, or all (both).
    """

    def __init__(
        self,
        *args: Any,
        offline: bool = False,
        watch: Literal["gradients", "parameters", "all"] | None = None,
        watch_log_freq: Annotated[int, Field(ge=1)] = 100,
        **kwargs: Any,
    ) -> None:
        # Lightning refuses offline=True with log_model ("checkpoints cannot be uploaded in offline mode"), but an
        # offline run keeps its artifacts and `wandb sync` uploads them; wandb.init's mode="offline" is what
        # Lightning's offline=True amounts to, less its setting WANDB_MODE for the whole process
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)
        if offline:
            self._wandb_init["mode"] = "offline"
        self.watch_what = watch
        self.watch_log_freq = watch_log_freq
        self.watched_model: Module | None = None  # for parameter histograms (log_metrics)
        self.next_parameters_step = 0

    def log_graph(self, model: Module, input_array: Tensor | None = None) -> None:
        # Lightning hands a logger the model once, here, at the start of fit: where `wandb.watch` can hook it
        if self.watch_what in ("gradients", "all"):
            self.watch(model, log="gradients", log_freq=self.watch_log_freq, log_graph=False)
        if self.watch_what in ("parameters", "all"):
            self.watched_model = model

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        # wandb.watch takes parameter histograms in a forward hook of the module it watches, and no family's
        # training_step calls the LightningModule's forward (they call their networks): taken here instead, at
        # the first logged step `watch_log_freq` steps after the last, under wandb.watch's names
        if self.watched_model is not None and step is not None and step >= self.next_parameters_step:
            import wandb  # here, where W&B logs: importing it costs every other run a second

            weights = self.watched_model.named_parameters()
            metrics = {**metrics, **{f"parameters/{n}": wandb.Histogram(p.detach().float().cpu()) for n, p in weights}}
            self.next_parameters_step = step + self.watch_log_freq
        super().log_metrics(metrics, step)


def log_final_metrics(loggers_: list[Logger], config: dict[str, Any], metrics: dict[str, float], step: int) -> None:
    """Give TensorBoard the run's hyperparameters with its final metrics, as `final/<metric>`, so that its HParams
    tab compares the runs of a sweep by parameter (with hyperparameters alone, as logged at the start, the tab
    stays empty). Under their own names, as Lightning's docs do it (`hp/...`): logged again under the curves'
    names, they would add a point to every curve."""
    params = {key: config[key] for key in HPARAM_SECTIONS if key in config}
    final = {f"final/{name}": value for name, value in metrics.items()}
    for logger in loggers_:
        if isinstance(logger, TensorBoardLogger) and final:
            logger.log_hyperparams(params, metrics=final, step=step)


def finish_loggers(loggers_: list[Logger]) -> None:
    """Close W&B runs (so the next run of a sweep starts a new one), then say how to see what each logger wrote:
    `tensorboard --logdir` its folder, `wandb sync` an offline run's folder (the command W&B prints itself,
    which its `quiet` setting silences), each quoted for the shell (run names hold `[`, `,` and `=`)."""
    for logger in loggers_:
        if isinstance(logger, TensorBoardLogger) and rank_zero_only.rank == 0:
            log.info(f"TensorBoard: tensorboard --logdir {shlex.quote(str(Path(logger.log_dir).resolve()))}")
        elif isinstance(logger, loggers.WandbLogger):
            run = logger.experiment
            offline = run.settings.mode == "offline"
            run.finish()
            if offline:
                folder = shlex.quote(str(Path(run.settings.sync_dir).resolve()))
                log.info(f"W&B ran offline; to upload this run: wandb sync {folder}")
