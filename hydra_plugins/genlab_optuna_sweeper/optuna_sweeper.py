"""A Hydra sweeper on current Optuna: each batch of trials is asked from the study, launched as Hydra jobs,
and told their results; the study lives in any Optuna storage, shared by as many sweep processes as you like.

Why not hydra-optuna-sweeper: its last release (1.3.0) pins optuna < 3, whose SQLite storage breaks with
SQLAlchemy 2 (hydra-ecosystem/hydra#2562), so its studies cannot be stored, resumed, or shared with pruning
callbacks; and it cannot prune, as its jobs never see their trial (#1954, open). PR #3211 (for #3210) moves
it to Optuna 4, still below the 5 we run, and was unreleased when this was written. This plugin can go
when a release runs on the Optuna we pin and lets a job report to its trial.

The search-space syntax is that plugin's (Hydra's override grammar): `choice(16, 32)`,
`range(2, 8, 2)`, `interval(0.0, 0.3)`, `tag(log, interval(1e-4, 1e-2))`. As in that plugin, the command
line has the last word: a key it fixes (`model.architecture=mlp`) leaves the search space, and a search it
gives for a key replaces the config's.

The study: `storage` (an Optuna database URL or a journal file, storage.py), by default
`<sweep folder>/optuna.db`. Any number of sweep processes, on this machine (`n_workers`) or on others
(the same command with the same `storage`), share it: each runs trials until the study has `n_trials`,
heartbeats tell a live trial from one whose process is gone, and the latter is failed and run again.
Resuming: run the same command with `hydra.sweep.dir=<the interrupted sweep's folder>`. Each job gets
`optuna.storage`, `optuna.study_name` and `optuna.trial` overrides, from which the `optuna_pruning`
callback reports to its trial.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Annotated, Any

import optuna
import sqlalchemy
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict
from pydantic import Field

from genlab.errors import ConfigError, FileRefusedError, RunInterrupted, one_line, without_passwords
from genlab.utils.files import write_text_atomically
from genlab.utils.locks import try_lock
from genlab.utils.run_folder import MULTIRUN
from genlab.utils.validation import check_arguments
from hydra_plugins.genlab_optuna_sweeper.storage import (
    RetryStaleTrial,
    fail_stale_trials,
    failure_reason,
    heartbeats,
    open_storage,
    resolve_storage,
    retried_as,
    retry,
    shown,
)
from hydra_plugins.genlab_optuna_sweeper.workers import (
    WORKER_ENV,
    describe_exit,
    run_workers,
    visible_gpus,
    worker_command,
    worker_environment,
)

log = logging.getLogger(__name__)
TrialState = optuna.trial.TrialState


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        direction: str = "minimize",
        n_trials: Annotated[int, Field(ge=1)] = 20,
        n_jobs: Annotated[int, Field(ge=1)] = 1,
        n_workers: Annotated[int, Field(ge=1)] = 1,
        study_name: str = "study",
        storage: str | None = None,
        heartbeat_interval: Annotated[int, Field(ge=1)] = 20,  # seconds
        grace_period: Annotated[int, Field(ge=1)] = 120,  # seconds
        max_retry: Annotated[int, Field(ge=0)] | None = 1,
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
        params: DictConfig | None = None,
    ) -> None:
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.n_workers = n_workers
        self.study_name = study_name
        self.storage = storage
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_retry = max_retry
        self.sampler = sampler  # Hydra has built both from their _target_ already
        self.pruner = pruner
        self.params = OmegaConf.to_container(params) if params else {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        # Hydra's launchers log each job's overrides, the study's storage among them: its password is left out
        logging.getLogger(type(self.launcher).__module__).addFilter(hide_passwords)

    def sweep(self, arguments: list[str]) -> list[Sequence[Any]]:
        check_settings(self)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        search_space, fixed = search_space_and_fixed(
            parser.parse_overrides([f"{key}={value}" for key, value in self.params.items()]),
            parser.parse_overrides(arguments),
        )

        sweep_dir = Path(self.config.hydra.sweep.dir).resolve()
        storage_spec = resolve_storage(self.storage, sweep_dir)
        worker = os.environ.get(WORKER_ENV)  # set for the workers of `n_workers`: their parent holds the folder
        if worker is None:
            new_folder = not sweep_dir.exists()
            sweep_dir.mkdir(parents=True, exist_ok=True)
            self._lock = lock_sweep_folder(sweep_dir)  # held until this process ends
        try:
            storage, study = self._open_study(storage_spec)
        except SystemExit:
            if worker is None and new_folder:  # a refused sweep leaves no folder behind
                shutil.rmtree(sweep_dir, ignore_errors=True)
            raise
        if worker is None:
            with open_dict(self.config):  # the study's storage, resolved, for src.sweep_summary
                self.config.hydra.sweeper.storage = storage_spec
            write_record(sweep_dir / MULTIRUN, self.config)
        if self.sampler is not None and (self.storage is not None or study.get_trials(deepcopy=False)):
            # a sampler seeded as the one that began the study (a resume), or as those of other processes sharing
            # it, would ask the same first parameters again: it takes a seed of its own (as Optuna's optimize(n_jobs
            # > 1) reseeds its threads'). Only a new study in its own folder is reproducible from `seed`.
            self.sampler.reseed_rng()
        log.info(
            f"Study {self.study_name!r}: {self.direction} over {', '.join(search_space)}; storage {shown(storage_spec)}"
        )
        if finished := sum(t.state.is_finished() for t in study.get_trials(deepcopy=False)):
            log.info(f"The study has {finished} finished trial(s) already; it runs until {self.n_trials} are done")

        if self.n_workers > 1 and worker is None:
            return self._run_workers(study, sweep_dir, storage_spec)
        if worker is not None:
            import torch  # imported by the task already; here for the log line only

            gpu = f", GPU {os.environ['CUDA_VISIBLE_DEVICES']}" if "CUDA_VISIBLE_DEVICES" in os.environ else ""
            log.info(f"Sweep worker {worker} (process {os.getpid()}): {torch.get_num_threads()} torch thread(s){gpu}")

        try:
            with sigterm_ends_the_sweep():
                returns = self._run_trials(study, storage, storage_spec, search_space, fixed)
        except (KeyboardInterrupt, RunInterrupted) as stop:  # between trials, or waiting for other processes' trials
            raise SystemExit(exit_code(stop)) from None

        if worker is None:
            self._write_best(study, sweep_dir)
        return returns

    def _run_trials(
        self,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        storage_spec: str,
        search_space: dict,
        fixed: list[str],
    ) -> list[Sequence[Any]]:
        """Ask, launch and tell trials until the study has n_trials (anywhere) and none is running."""
        returns, adopted = [], set()
        while (batch_size := self._trials_to_ask(study, storage, adopted)) > 0:
            with warnings.catch_warnings():  # Optuna beats only in optimize(); the sweeper beats itself
                warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
                trials = [study.ask(search_space) for _ in range(batch_size)]
            batch = [
                [
                    *fixed,
                    *(f"{key}={value}" for key, value in trial.params.items()),
                    f"optuna.storage={quoted(storage_spec)}",
                    f"optuna.study_name={quoted(self.study_name)}",
                    f"optuna.trial={trial.number}",
                ]
                for trial in trials
            ]
            self.validate_batch_is_legal(batch)
            with heartbeats(storage, [trial._trial_id for trial in trials]):
                try:
                    # job folders are numbered by trial: unique in the study, whichever process runs it
                    results = self.launcher.launch(batch, initial_job_idx=trials[0].number)
                except (KeyboardInterrupt, SystemExit, RunInterrupted) as stop:  # a job's own stop exits 130/143
                    for trial in trials:
                        interrupted(study, trial, stop)
                    raise
            for trial, result in zip(trials, results, strict=True):
                tell(study, trial, result)
            returns.append(results)
        return returns

    def _open_study(self, spec: str) -> tuple[optuna.storages.BaseStorage, optuna.Study]:
        """The storage (with heartbeats) and the study in it, created if need be; one line if either cannot be had."""
        on_stale = RetryStaleTrial(self.grace_period, self.max_retry)
        try:
            storage = open_storage(spec, self.heartbeat_interval, self.grace_period, on_stale)
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                load_if_exists=True,
                direction=self.direction,
                sampler=self.sampler,
                pruner=self.pruner,
            )
        except (sqlalchemy.exc.SQLAlchemyError, OSError, ImportError, ValueError) as err:
            raise SystemExit(f"error: hydra.sweeper.storage={shown(spec)}: cannot open it: {one_line(err)}") from None
        if study.direction.name.lower() != self.direction:
            raise SystemExit(
                f"error: hydra.sweeper.direction={self.direction}: study {self.study_name!r} in "
                f"{shown(spec)} was made to {study.direction.name.lower()}"
            )
        return storage, study

    def _trials_to_ask(self, study: optuna.Study, storage: optuna.storages.BaseStorage, adopted: set[int]) -> int:
        """How many trials to ask now (at most n_jobs): those the study still needs beyond the ones finished and
        running anywhere. 0 when it has them all and none is running; while only other processes' trials run,
        waits: any of them whose process is gone is failed and queued again, for this process to run."""
        waiting_for: list[int] = []
        while True:
            fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            retried = retried_as(trials)
            done = sum(t.state.is_finished() and t.number not in retried for t in trials)
            running = [t for t in trials if t.state == TrialState.RUNNING]
            if (needed := self.n_trials - done - len(running)) > 0:
                return min(self.n_jobs, needed)
            if not running:
                return 0
            for trial in running:
                # a trial whose process died before its first heartbeat (or one of a sweep without heartbeats) would
                # never be found stale: one beat from here starts its clock; its own process, if alive, beats on
                if trial.number not in adopted:
                    storage.record_heartbeat(trial._trial_id)
                    adopted.add(trial.number)
            if [t.number for t in running] != waiting_for:
                waiting_for = [t.number for t in running]
                log.info(
                    f"Waiting for trial(s) {', '.join(map(str, waiting_for))} of other processes (one whose "
                    f"process is gone is run again after {self.grace_period} s without a heartbeat)"
                )
            time.sleep(min(self.heartbeat_interval, 2))  # a trial that ends frees its place within 2 s

    def _run_workers(self, study: optuna.Study, sweep_dir: Path, storage_spec: str) -> list[Sequence[Any]]:
        """Run the sweep as n_workers processes on this machine, each with its share of threads; then the results."""
        import torch

        total_threads, gpus = torch.get_num_threads(), visible_gpus()
        environments = [worker_environment(i, self.n_workers, total_threads, gpus) for i in range(self.n_workers)]
        command = worker_command(
            sys.orig_argv,
            [
                f"hydra.sweep.dir={quoted(str(sweep_dir))}",
                f"hydra.sweeper.storage={quoted(storage_spec)}",
                "hydra.sweeper.n_workers=1",
            ],
        )
        log.info(
            f"Starting {self.n_workers} sweep workers on study {self.study_name!r}, each with "
            f"{environments[0]['OMP_NUM_THREADS']} of {total_threads} torch threads"
            + (f", on GPU(s) {', '.join(gpus)}" if gpus else "")
        )
        exit_codes, signals = run_workers(command, environments)
        for number, code in enumerate(exit_codes, start=1):
            if code != 0:
                log.warning(f"Sweep worker {number}/{self.n_workers} ended with {describe_exit(code)}")
        if signals:  # interrupted: each worker has queued its cut-off trial again, for a resume
            raise SystemExit(128 + signals[0])
        trials = study.get_trials(deepcopy=False)
        retried = retried_as(trials)
        done = sum(t.state.is_finished() and t.number not in retried for t in trials)
        if done < self.n_trials or any(t.state == TrialState.RUNNING for t in trials):
            raise SystemExit(
                f"error: sweep workers ended ({', '.join(map(describe_exit, exit_codes))}) with {done} "
                f"of {self.n_trials} trials done; run the same command with hydra.sweep.dir={sweep_dir} "
                f"to finish the study"
            )
        self._write_best(study, sweep_dir)
        return []

    def _write_best(self, study: optuna.Study, sweep_dir: Path) -> None:
        trials = study.get_trials(deepcopy=False)
        completed = [t for t in trials if t.state == TrialState.COMPLETE]
        failed = [t for t in trials if t.state == TrialState.FAIL and failure_reason(study, t)]
        if not completed and failed and all(t.state == TrialState.FAIL for t in trials):  # the sweep failed too
            first = f"trial {failed[0].number}: {failure_reason(study, failed[0])}"
            raise SystemExit(f"error: no trial of {sweep_dir} completed; {first}")  # one line, as the entry points
        if not completed:
            log.warning("No trial completed: no best parameters")
            return
        best = study.best_trial
        results = {"best_trial": best.number, "best_value": best.value, "best_params": best.params}
        write_record(sweep_dir / "optimization_results.yaml", OmegaConf.create(results))
        log.info(f"Best trial {best.number}: value {best.value:.5g} with {best.params}")


def write_record(path: Path, config: DictConfig) -> None:
    """Write a sweep's YAML record through genlab's one writer (never through a link); one line if it cannot be."""
    try:
        write_text_atomically(path, OmegaConf.to_yaml(config))
    except FileRefusedError as err:
        raise SystemExit(f"error: {err}") from None


def check_settings(sweeper: OptunaSweeper) -> None:
    """One line for a setting the sweep cannot run with: each against the range its parameter declares (the one
    check_arguments of every family and data module), then the two that must agree."""
    settings = ("n_trials", "n_jobs", "n_workers", "heartbeat_interval", "grace_period", "max_retry")
    try:
        check_arguments(OptunaSweeper, {key: getattr(sweeper, key) for key in settings}, "hydra.sweeper")
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    if sweeper.grace_period <= sweeper.heartbeat_interval:  # a live trial would be failed between two of its beats
        raise SystemExit(
            f"error: hydra.sweeper.grace_period={sweeper.grace_period}: expected more than "
            f"heartbeat_interval={sweeper.heartbeat_interval} (seconds)"
        )


def search_space_and_fixed(
    params: list[Override], arguments: list[Override]
) -> tuple[dict[str, optuna.distributions.BaseDistribution], list[str]]:
    """The search space (name: distribution) and the overrides every trial gets, from the config's
    `hydra.sweeper.params` and then the command line: the last word on a key wins, as in hydra-optuna-sweeper.

    A key the command line fixes is not searched (its value is applied to every trial, not the sampled one after
    it); a search it gives for a key replaces the config's.
    """
    searched: dict[str, Override] = {}
    fixed: dict[str, Override] = {}
    for on_command_line, overrides in ((False, params), (True, arguments)):
        for override in overrides:
            key = override.key_or_group if override.package is None else f"{override.key_or_group}@{override.package}"
            if on_command_line and key in searched and not override.is_sweep_override():
                log.info(f"{override.input_line}: fixed on the command line, so not searched")
            searched.pop(key, None)
            fixed.pop(key, None)
            (searched if override.is_sweep_override() else fixed)[key] = override
    space = {override.get_key_element(): to_distribution(override) for override in searched.values()}
    return space, [as_text(override) for override in fixed.values()]


def as_text(override: Override) -> str:
    """A fixed override as the launcher takes it (`~key` without a value deletes whatever the key holds)."""
    if override.is_delete() and override.value() is None:
        return override.get_key_element()
    return f"{override.get_key_element()}={override.get_value_element_as_str()}"


def hide_passwords(record: logging.LogRecord) -> bool:
    """A logging filter: the record's message with the password of any URL in it shown as ***."""
    record.msg, record.args = without_passwords(record.getMessage()), None
    return True


def quoted(value: str) -> str:
    """`value` as one quoted string in Hydra's override grammar (a URL's `?`, `&`, `=` stay in it)."""
    # in a quoted value, backslashes are escaped where they precede a quote or end the string
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value) + "'"


def tell(study: optuna.Study, trial: optuna.Trial, result: Any) -> None:
    """Tell the study how a job ended: its returned value, pruned, or failed (with the reason)."""
    try:
        value = result.return_value  # re-raises the job's exception
    except optuna.TrialPruned:
        finish(study, trial, TrialState.PRUNED)
        log.info(f"Trial {trial.number} pruned")
        return
    except Exception as err:  # a failed job (a bad value, a NaN) fails its trial, not the sweep
        finish(study, trial, TrialState.FAIL, error=one_line(err))  # a failed trial is not retried
        log.warning(f"Trial {trial.number} failed: {one_line(err)}")
        return
    if value is None or not math.isfinite(value):
        error = f"returned {value}: set monitor.metric to a metric the run logs, which the sweep optimises"
        finish(study, trial, TrialState.FAIL, error=error)
        log.warning(f"Trial {trial.number} {error}")
        return
    finish(study, trial, TrialState.COMPLETE, value=float(value))


def finish(
    study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None = None, error: str | None = None
) -> None:
    """Record a trial's end, unless another process has failed it meanwhile (its heartbeats stopped for longer
    than grace_period: a stalled machine); then its result is dropped, and its retry runs it again."""
    try:
        if error is not None:
            trial.set_user_attr("error", error)  # shown by src.sweep_summary
        frozen = study.tell(trial, value, state=None if state == TrialState.COMPLETE else state, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        frozen = None
    if frozen is None or frozen.state != state:
        log.warning(
            f"Trial {trial.number} had been failed by another process (no heartbeat from here for over the "
            f"grace period); its result is dropped and its retry runs it again"
        )


def interrupted(study: optuna.Study, trial: optuna.Trial, stop: BaseException) -> None:
    """A trial cut off by a signal (Ctrl-C, SIGTERM): failed, with the reason, and queued again for a resume."""
    code = exit_code(stop)
    is_signal = isinstance(code, int) and code - 128 in signal.valid_signals()  # 128 + n: ended by signal n
    how = signal.Signals(code - 128).name if is_signal else f"exit {code}"
    try:
        study.tell(trial, state=TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):  # already ended (failed by another process)
        return
    study.set_user_attr(
        f"error of trial {trial.number}", f"interrupted by {how}; queued again with the same parameters"
    )
    retry(study, study.get_trials(deepcopy=False)[trial.number])
    log.info(f"Trial {trial.number} was interrupted ({how}): queued again with {trial.params}")


def exit_code(stop: BaseException) -> int | str | None:
    """The exit code a stop ends the process with: a SystemExit's own, 128 + the signal's number of an interruption
    (genlab's handler raises RunInterrupted, Python's KeyboardInterrupt)."""
    if isinstance(stop, SystemExit):
        return stop.code
    return stop.exit_code if isinstance(stop, RunInterrupted) else 128 + signal.SIGINT


@contextlib.contextmanager
def sigterm_ends_the_sweep() -> Iterator[None]:
    """SIGTERM ends the sweep as Ctrl-C does: its running trial is failed, with the reason, and queued again.

    Python's default would end the process at once, leaving the trial RUNNING until its heartbeats go
    stale. During training Lightning's own SIGTERM handler calls this one after its own (it keeps the
    handler it found): there the run stops itself at the end of the batch, with a checkpoint, and this
    one leaves it to.
    """

    def stop(signum: int, frame: object) -> None:
        if signal.getsignal(signal.SIGTERM) is stop:  # not called through Lightning's handler: not in training
            raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def lock_sweep_folder(sweep_dir: Path) -> IO[bytes]:
    """One sweep command per folder: two would write its results over each other.

    An advisory lock on `<sweep>/.sweep.lock`, released by the kernel when its process ends, however it ends.
    Processes that share a study each have their own folder (the workers of n_workers share their
    parent's, which holds the lock).
    """
    try:
        lock, holder = try_lock(sweep_dir / ".sweep.lock")
    except FileRefusedError as err:
        raise SystemExit(f"error: {err}") from None
    if lock is None:
        holder = f" (process {holder})" if holder else ""
        raise SystemExit(  # one line, as the entry points' errors
            f"error: hydra.sweep.dir={sweep_dir}: another sweep{holder} is running in this folder; wait for "
            f"it to end, or give this one another hydra.sweep.dir"
        )
    return lock


def to_distribution(override: Override) -> optuna.distributions.BaseDistribution:
    """An Optuna distribution from a sweep override: choice(...), range(...), interval(...), tag(log, ...); one line
    for one that holds no value (a reversed range or interval) or a log scale that reaches 0."""
    value, where = override.value(), override.input_line
    if isinstance(value, ChoiceSweep):
        return checked(where, optuna.distributions.CategoricalDistribution, list(value.list))
    if isinstance(value, RangeSweep):
        # Hydra's range is Python's (start up to, not including, stop; a negative step counts down); Optuna's
        # distributions run from low to high, both included
        start, stop, step = (
            Decimal(str(x)) for x in (value.start, value.stop, 1 if value.step is None else value.step)
        )
        if step == 0:
            raise SystemExit(f"error: {where}: a step of 0 never reaches stop; give a step other than 0")
        count = math.ceil((stop - start) / step)
        if count <= 0:
            raise SystemExit(
                f"error: {where}: holds no value; range(start, stop, step) counts from start up to stop, not "
                f"included (give start < stop, or a negative step to count down)"
            )
        low, high = sorted((start, start + (count - 1) * step))
        if all(isinstance(x, int) for x in (value.start, value.stop, value.step or 1)):
            return checked(where, optuna.distributions.IntDistribution, int(low), int(high), step=int(abs(step)))
        return checked(where, optuna.distributions.FloatDistribution, float(low), float(high), step=float(abs(step)))
    if isinstance(value, IntervalSweep):
        if value.start > value.end:
            raise SystemExit(f"error: {where}: starts above its end; give interval(low, high) with low <= high")
        log_scale = "log" in value.tags
        if log_scale and value.start <= 0:
            raise SystemExit(f"error: {where}: a log scale takes only values > 0; give an interval that starts above 0")
        is_int = isinstance(value.start, int) and isinstance(value.end, int)
        distribution = optuna.distributions.IntDistribution if is_int else optuna.distributions.FloatDistribution
        return checked(where, distribution, value.start, value.end, log=log_scale)
    raise SystemExit(f"error: {where}: a search is choice(...), range(...), interval(...) or tag(log, interval(...))")


def checked(where: str, distribution: type, *args: Any, **kwargs: Any) -> optuna.distributions.BaseDistribution:
    """`distribution(*args, **kwargs)`, Optuna's word on values it cannot search as one line naming the override."""
    try:
        return distribution(*args, **kwargs)
    except (ValueError, TypeError) as err:
        raise SystemExit(f"error: {where}: {one_line(err)}") from None
