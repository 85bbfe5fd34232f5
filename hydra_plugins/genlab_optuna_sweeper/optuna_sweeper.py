"""A Hydra sweeper on current Optuna: each batch of trials is asked from the study, launched as Hydra jobs,
and told their results; the study lives in an SQLite file in the sweep folder.

Why not hydra-optuna-sweeper: its last release (1.3.0) pins optuna < 3, whose SQLite storage breaks with
SQLAlchemy 2 (hydra-ecosystem/hydra#2562), so its studies cannot be stored, resumed, or shared with pruning
callbacks; and it cannot prune, as its jobs never see their trial (#1954, open). PR #3211 (for #3210) moves
it to Optuna 4, still below the 5 we run, and was unreleased when this was written. This plugin can go
when a release runs on the Optuna we pin and lets a job report to its trial.

The search-space syntax is that plugin's (Hydra's override grammar): `choice(16, 32)`,
`range(2, 8, 2)`, `interval(0.0, 0.3)`, `tag(log, interval(1e-4, 1e-2))`.

Resuming: run the same command with `hydra.sweep.dir=<the interrupted sweep's folder>`. Finished
trials are kept, trials that were cut off are asked again with the same parameters, and only the
trials still missing from `n_trials` are run. Each job gets `optuna.storage`, `optuna.study_name`
and `optuna.trial` overrides, from which the `optuna_pruning` callback reports to its trial.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from src.errors import one_line
from src.utils.locks import try_lock

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        direction: str = "minimize",
        n_trials: int = 20,
        n_jobs: int = 1,
        study_name: str = "study",
        storage_file: str = "optuna.db",
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        params: DictConfig | None = None,
    ) -> None:
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.study_name = study_name
        self.storage_file = storage_file
        self.sampler = sampler  # Hydra has built both from their _target_ already
        self.pruner = pruner
        self.params = OmegaConf.to_container(params) if params else {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[Sequence[Any]]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{key}={value}" for key, value in self.params.items()] + arguments)
        search_space = {o.get_key_element(): to_distribution(o) for o in overrides if o.is_sweep_override()}
        fixed = [f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in overrides
                 if not o.is_sweep_override()]  # fmt: skip

        sweep_dir = Path(self.config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self._lock = lock_sweep_folder(sweep_dir)  # held until this process ends
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        storage = f"sqlite:///{sweep_dir / self.storage_file}"
        study = optuna.create_study(
            study_name=self.study_name, storage=storage, load_if_exists=True, direction=self.direction,
            sampler=self.sampler, pruner=self.pruner,
        )  # fmt: skip
        interrupted = requeue_interrupted_trials(study)

        def num_done() -> int:
            return len([t for t in study.trials if t.state.is_finished() and t.number not in interrupted])

        if num_done():
            log.info(f"Resuming study {self.study_name!r}: {num_done()} of {self.n_trials} trials done")
        log.info(f"Study {self.study_name!r}: {self.direction} over {', '.join(search_space)}; storage {storage}")

        returns = []
        while (remaining := self.n_trials - num_done()) > 0:
            trials = [study.ask(search_space) for _ in range(min(self.n_jobs, remaining))]
            batch = [
                [*fixed, *(f"{key}={value}" for key, value in trial.params.items()),
                 f"optuna.storage={storage}", f"optuna.study_name={self.study_name}", f"optuna.trial={trial.number}"]
                for trial in trials
            ]  # fmt: skip
            self.validate_batch_is_legal(batch)
            # job folders are numbered by trial, so that a resumed sweep never writes over an earlier job
            results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, result in zip(trials, results, strict=True):
                tell(study, trial, result)
            returns.append(results)

        self._write_best(study, sweep_dir)
        return returns

    def _write_best(self, study: optuna.Study, sweep_dir: Path) -> None:
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL and "error" in t.user_attrs]
        if not completed and failed and len(failed) == len(study.trials):  # every trial failed: the sweep did too
            first = f"trial {failed[0].number}: {failed[0].user_attrs['error']}"
            raise SystemExit(f"error: no trial of {sweep_dir} completed; {first}")  # one line, as the entry points
        if not completed:
            log.warning("No trial completed: no best parameters")
            return
        best = study.best_trial
        OmegaConf.save({"best_trial": best.number, "best_value": best.value, "best_params": best.params},
                       sweep_dir / "optimization_results.yaml")  # fmt: skip
        log.info(f"Best trial {best.number}: value {best.value:.5g} with {best.params}")


def tell(study: optuna.Study, trial: optuna.Trial, result: Any) -> None:
    """Tell the study how a job ended: its returned value, pruned, or failed."""
    try:
        value = result.return_value  # re-raises the job's exception
    except optuna.TrialPruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        log.info(f"Trial {trial.number} pruned")
        return
    except Exception as err:  # a failed job (a bad value, a NaN) fails its trial, not the sweep
        trial.set_user_attr("error", one_line(err))  # shown by src.sweep_summary; a failed trial is not retried
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.warning(f"Trial {trial.number} failed: {one_line(err)}")
        return
    if value is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.warning(f"Trial {trial.number} returned no value: set monitor.metric to what the sweep optimises")
        return
    study.tell(trial, float(value))


def lock_sweep_folder(sweep_dir: Path) -> IO[str]:
    """One sweep per folder: a second one would take the first's live trials for interrupted ones and requeue them.

    An advisory lock on `<sweep>/.sweep.lock`, released by the kernel when its process ends, however it ends.
    To share one study between machines, point several sweeps at one database server instead (Optuna's
    distributed optimisation); an SQLite file in a sweep folder is for one sweep at a time.
    """
    lock, holder = try_lock(sweep_dir / ".sweep.lock")
    if lock is None:
        raise SystemExit(  # one line, as the entry points' errors
            f"error: hydra.sweep.dir={sweep_dir}: another sweep (process {holder}) is running in this folder; wait for "
            f"it to end, or give this one another hydra.sweep.dir"
        )
    return lock


def requeue_interrupted_trials(study: optuna.Study) -> set[int]:
    """Trials left RUNNING by an interrupted sweep are marked failed and asked again with the same parameters.

    Returns the numbers of all trials ever requeued (each retry names its trial), which do not count as done.
    """
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # by number: its Trial died with its process
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        log.info(f"Trial {trial.number} was interrupted: queued again with {trial.params}")
    return {t.user_attrs["retry_of"] for t in study.get_trials(deepcopy=False) if "retry_of" in t.user_attrs}


def to_distribution(override: Override) -> optuna.distributions.BaseDistribution:
    """An Optuna distribution from a sweep override: choice(...), range(...), interval(...), tag(log, ...)."""
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return optuna.distributions.CategoricalDistribution(list(value.list))
    if isinstance(value, RangeSweep):
        step = value.step if value.step is not None else 1
        if all(isinstance(x, int) for x in (value.start, value.stop, step)):
            # Hydra's range excludes the stop, Optuna's includes its high end
            return optuna.distributions.IntDistribution(value.start, value.stop - step, step=step)
        return optuna.distributions.FloatDistribution(value.start, value.stop, step=step)
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return optuna.distributions.IntDistribution(value.start, value.end, log=log_scale)
        return optuna.distributions.FloatDistribution(value.start, value.end, log=log_scale)
    raise ValueError(f"{override.input_line}: a search parameter is choice(...), range(...) or interval(...)")
