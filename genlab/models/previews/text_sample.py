"""Text generated at each validation, saved in the run folder and shown by the loggers that show text."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from genlab.capabilities import TextGenerator, require
from genlab.models.previews.image_grid import logger_step
from genlab.utils.files import write_text_atomically

log = logging.getLogger(__name__)

# the longest text sample a family may write at each validation (the GPT's sample_length), in characters: generated
# one at a time, and read by eye
MAX_SAMPLE_LENGTH = 10_000


class TextSample(Callback):
    """After each validation, a continuation of `prompt` from the same seed, so that progress reads by eye.

    Works with any TextGenerator.
    Written to <run>/samples/step_NNNNNN.txt, to TensorBoard's text tab and to a W&B table that grows by a row
    at each validation (W&B's incremental table: one table for the run rather than a one-row table per step).
    """

    def __init__(
        self, prompt: str = "\n", max_new_tokens: int = 200, temperature: float = 0.8, top_k: int = 50, seed: int = 0
    ) -> None:
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.seed = seed
        self.wandb_table = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require(pl_module, TextGenerator, type(self).__name__)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.max_new_tokens < 1:
            return
        # every process generates (the same text, from the same seed): under trainer=fsdp each holds a shard of
        # the network, and gathering it for a forward is a collective that all must join; rank zero writes
        (text,) = pl_module.generate_text(
            self.prompt, self.max_new_tokens, self.temperature, self.top_k, seed=self.seed
        )
        self._write(trainer, text)

    @rank_zero_only
    def _write(self, trainer: L.Trainer, text: str) -> None:
        step = trainer.global_step
        path = Path(trainer.default_root_dir) / "samples" / f"step_{step:06d}.txt"
        write_text_atomically(path, text, "the text sample")
        log.info(f"Sample at step {step}:\n{text}")
        for logger in trainer.loggers:  # beside the validation scalars: at the loggers' step (image_grid.py)
            if isinstance(logger, TensorBoardLogger):  # markdown: a code block keeps the line breaks
                logger.experiment.add_text("samples", f"```\n{text}\n```", global_step=logger_step(trainer))
            elif isinstance(logger, WandbLogger):
                if self.wandb_table is None:
                    import wandb  # here, where W&B logs: importing it costs every other run a second

                    self.wandb_table = wandb.Table(columns=["step", "text"], log_mode="INCREMENTAL")
                self.wandb_table.add_data(step, text)
                logger.log_metrics({"samples": self.wandb_table}, step=logger_step(trainer))
