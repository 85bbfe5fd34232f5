"""Report each validation's metric to this job's Optuna trial and stop the run when the pruner says so."""

from __future__ import annotations

import lightning as L
import optuna
from lightning.pytorch.callbacks import Callback


class OptunaPruning(Callback):
    """Optuna pruning for a job of `hydra/sweeper=optuna`, which passes the study's storage, name and trial number
    (and its pruner).

    optuna-integration's PyTorchLightningPruningCallback needs the Trial object, which lives in the
    sweeper's process, and reports by epoch, which a GPT validating within its only epoch never
    advances; this one finds its trial in the study's storage and reports by global step.
    """

    def __init__(
        self, storage: str, study_name: str, trial: int, monitor: str, pruner: optuna.pruners.BasePruner | None = None
    ) -> None:
        self.storage = storage
        self.study_name = study_name
        self.trial_number = trial
        self.monitor = monitor
        self.pruner = pruner  # a study loaded from storage forgets its pruner: the sweeper's is passed again
        self._trial: optuna.Trial | None = None

    def trial(self) -> optuna.Trial:
        if self._trial is None:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=self.pruner)
            (frozen,) = [t for t in study.get_trials(deepcopy=False) if t.number == self.trial_number]
            self._trial = optuna.Trial(study, frozen._trial_id)
        return self._trial

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = trainer.callback_metrics[self.monitor].item()
        should_prune = False
        if trainer.is_global_zero:  # one process talks to the storage; the others follow its decision
            trial = self.trial()
            trial.report(value, step=trainer.global_step)
            should_prune = trial.should_prune()
        if trainer.strategy.broadcast(should_prune):
            raise optuna.TrialPruned(
                f"trial {self.trial_number} pruned at step {trainer.global_step}: {self.monitor}={value:.5g}"
            )
