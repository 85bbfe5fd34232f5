"""Every run ends on a validation, whatever its length (genlab/models/logged_steps.py: `is_last_validation` tells
that one from the others)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback


class ValidateAtEnd(Callback):
    """Stops a step-based run on its last step, so that Lightning validates it (and the validation's samples and
    checkpoint follow), as it does when EarlyStopping or max_time stop a run.

    Lightning validates every `val_check_interval` steps and at the end of epochs only: a max_steps between two
    validations ended the run unmeasured (experiment=gpt_shakespeare_cpu trainer.max_steps=200 never
    validated, its interval being 250), and its best checkpoint was older than its last weights.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            # the run ends here in any case (max_steps wins over min_epochs): min_epochs=1, the default, must not
            # veto the stop that gets this last validation
            trainer.fit_loop.min_epochs = 0
            trainer.should_stop = True
