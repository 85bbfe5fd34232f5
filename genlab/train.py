"""Train a model: `python -m src.train model=ae data=fashion_mnist [overrides]`.

One linear pipeline, every object instantiated from the Hydra config:
check config -> seed -> datamodule -> model -> callbacks -> loggers -> trainer -> fit
-> test on the best checkpoint -> metrics.json -> return the monitored metric (for sweeps).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import IO

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hydra.types import RunMode
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins import CheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from genlab.callbacks.checkpoint import RequireMonitoredMetric, RunCheckpointIO, SaveRunConfig
from genlab.callbacks.finite_loss import StopOnNonFiniteLoss
from genlab.callbacks.interrupt import CheckpointOnInterrupt
from genlab.callbacks.resume import ExactResume, ResumedStatesFit
from genlab.callbacks.size_limits import LazyNetworkLimits
from genlab.callbacks.validate_at_end import ValidateAtEnd
from genlab.checkpoints.rebuild import build_model
from genlab.checkpoints.resume import check_resumable, resume_path
from genlab.errors import ConfigError, GenlabError
from genlab.utils import run_folder
from genlab.utils.before_run import searches_given_as_their_key
from genlab.utils.checkpoint_reader import check_state_dict_fits
from genlab.utils.config import CONF_DIR, check_print_config, command_line, print_config, register_resolvers, to_plain
from genlab.utils.devices import check_devices, check_sharding
from genlab.utils.failed_runs import exit_on_user_error
from genlab.utils.instantiate import instantiate, instantiate_all, lightning_config_errors
from genlab.utils.locks import try_lock
from genlab.utils.loggers import finish_loggers, log_final_metrics
from genlab.utils.model_size import ModelTooLarge, SizeLimits, built_within
from genlab.utils.signals import interruptible, signals_end_the_command
from genlab.utils.validation import check_config

log = logging.getLogger(__name__)
register_resolvers()  # before Hydra resolves the config


def train(cfg: DictConfig) -> tuple[float | None, dict[str, float]]:
    """Run fit (and test) as the config says; return the monitored metric and all final metrics."""
    check_config(cfg)
    check_print_config(cfg.extras.print_config)
    check_devices(cfg.trainer)
    limits = SizeLimits.of(cfg.limits)
    check_model_size(cfg.model, limits)  # before the data is downloaded or read
    ckpt_path = resume_path(cfg.ckpt_path, Path(cfg.paths.log_dir) / cfg.task_name)
    resumed = None
    if ckpt_path is not None:  # a foreign, broken or remote file: refused before anything is built
        resumed = check_resumable(ckpt_path, cfg.model._target_)
        continue_in_run_folder(cfg, ckpt_path)
    output_dir = open_run_folder(cfg, resumed["global_step"] if resumed else 0)
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True)

    log.info(f"Instantiating datamodule <{cfg.data._target_}>")
    datamodule: L.LightningDataModule = instantiate(cfg.data, "data")
    if rank_zero_only.rank == 0:  # under DDP, every process runs this script; one downloads and prints
        datamodule.prepare_data()  # missing data is said before the config tree, not after it (Lightning: a no-op)
        if cfg.extras.print_config and sweep_job() in (None, 0):  # in a sweep, for its first job only
            print_config(cfg, tree_file=output_dir / run_folder.CONFIG_TREE)
    log.info(f"Instantiating model <{cfg.model._target_}>")
    # with the trained models it builds on, read from their files (within limits.* too)
    model: L.LightningModule = build_model(cfg.model, limits=limits)
    start_step = 0
    if resumed is not None:  # the weights that exist already (a lazily built network checks its own when built)
        check_state_dict_fits(model, resumed.pop("state_dict"))
        start_step = resumed["global_step"]
        del resumed
    interrupt = CheckpointOnInterrupt()
    callbacks = [*instantiate_all(cfg.get("callbacks"), "callback"), *always_on_callbacks(cfg, interrupt)]
    loggers = instantiate_all(cfg.get("logger"), "logger")
    log.info(f"Instantiating trainer <{cfg.trainer['_target_']}>")  # a Hydra key, read by name
    trainer: L.Trainer = instantiate(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers, plugins=always_on_plugins(cfg)
    )
    check_sharding(trainer, model, cfg.trainer)

    # the checks before training are behind us; SaveRunConfig writes config.yaml once the checkpoint to resume is
    # restored and the sanity check has passed (a refused resume leaves the run it was asked to resume as it was)
    run_lock = lock_run_folder(output_dir)  # held until train() returns (or its frame goes, or the process ends)
    for logger in trainer.loggers:
        logger.log_hyperparams(to_plain(cfg))

    metrics: dict[str, float] = {}
    trained = False
    try:
        if cfg.train:
            log.info("Starting training")
            with (
                interrupt.reported(trainer, f"Resume with: {resume_command()}"),
                lightning_config_errors("the trainer's settings"),
            ):
                trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            if ckpt_path is not None and trainer.global_step == start_step:
                log.warning(
                    f"{ckpt_path} had finished its training at step {start_step}: nothing more to train. To go on, "
                    f"give a longer trainer.max_steps or trainer.max_epochs (ckpt_path=last still finds the run)"
                )
            metrics |= {name: float(value) for name, value in trainer.callback_metrics.items()}
            trained = trainer.global_step > start_step
        if cfg.test and not is_overridden("test_dataloader", datamodule):
            log.info(f"{type(datamodule).__name__} has no test split: skipping the test")
        elif cfg.test:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if not best:
                log.warning("No best checkpoint (nothing monitored, or fast_dev_run): testing the current weights")
            log.info(f"Starting testing on {best or 'the current weights'}")
            go_on = f"Training had finished; test it with: python -m src.eval ckpt_path={best or '<a checkpoint>'}"
            with interrupt.reported(trainer, go_on):
                trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            metrics |= {name: float(value) for name, value in trainer.callback_metrics.items()}
        log_final_metrics(trainer.loggers, to_plain(cfg), metrics, trainer.global_step)
    finally:
        finish_loggers(trainer.loggers)

    if trainer.is_global_zero and (metrics or not os.path.lexists(output_dir / run_folder.METRICS)):
        # (a finished run resumed with nothing to train measures nothing: its metrics.json stays as it was)
        log.info(f"Metrics: {run_folder.write_metrics(output_dir, metrics)}")
    if run_lock is not None:
        run_lock.close()
    return monitored_value(cfg, metrics, trained), metrics


def check_model_size(model_config: DictConfig, limits: SizeLimits) -> None:
    """The model that `model_config` describes, counted as it is built on the meta device (no memory): refused in one
    line past `limits`, before it exists. A network built later, in configure_model: LazyNetworkLimits."""
    try:
        # the trained models it builds on (latent diffusion's first stage) read as build_model reads them
        built_within(limits, lambda: build_model(model_config, "model", limits))
    except ModelTooLarge as err:
        model_name = model_config["_target_"].rsplit(".", 1)[-1]  # a Hydra key, read by name
        raise ConfigError(f"model: the {model_name} of these settings {err}") from None


def always_on_callbacks(cfg: DictConfig, interrupt: CheckpointOnInterrupt) -> list[Callback]:
    """The callbacks of every run, whatever `callbacks=` says, since other guarantees of a run depend on each: what
    resuming needs to continue exactly (and a refusal of optimizer states that are not this run's), a last checkpoint
    on Ctrl-C or SIGTERM, a stop at the first NaN or infinite loss or weight, a monitor.metric that is really logged,
    a validation at the end, the size limits on a network built once the data is known. The one list, with
    always_on_plugins: conf/callbacks/default.yaml's comment (why each) and docs/architecture.md are tested against
    it (tests/test_layers.py)."""
    return [
        SaveRunConfig(to_plain(cfg), Path(cfg.paths.output_dir), config_tree=cfg.extras.print_config),
        ExactResume(),
        ResumedStatesFit(),
        interrupt,
        StopOnNonFiniteLoss(),
        RequireMonitoredMetric(cfg.monitor.metric),
        ValidateAtEnd(),
        LazyNetworkLimits(SizeLimits.of(cfg.limits)),
    ]


def always_on_plugins(cfg: DictConfig) -> list[CheckpointIO]:
    """The Trainer plugins of every run: checkpoints written atomically, each with the resolved config (src.eval and
    src.sample need nothing else); listed with the callbacks above."""
    return [RunCheckpointIO(to_plain(cfg))]


def open_run_folder(cfg: DictConfig, start_step: int) -> Path:
    """The run folder, as an absolute path without links (set as `paths.output_dir`), claimed (genlab/utils/
    run_folder.py: what it holds already is never removed) and checked before anything is built: a folder that exists
    already (a resumed run's, one the user named) holds no link or FIFO where a writer of genlab's or Lightning's goes.
    Each training session's CSV log gets a folder of its own, since Lightning's CSVLogger appends to, and rewrites, a
    metrics.csv it finds: csv/ for a new run's first, csv/from_step_<N>/ for one that goes on from step N."""
    output_dir = run_folder.claim(Path(cfg.paths.output_dir).resolve())
    cfg.paths.output_dir = str(output_dir)
    if rank_zero_only.rank == 0 and output_dir.is_dir():
        run_folder.check_nothing_planted(output_dir)
    for node in (cfg.get("logger") or {}).values():
        if isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith(".CSVLogger"):
            segments = Path(node.save_dir) / node.name
            if os.path.lexists(segments / str(node.version or "")):  # "": no version folder
                version, again = f"from_step_{start_step}", 1
                while os.path.lexists(segments / version):  # resumed from this step before: each keeps its log
                    again += 1
                    version = f"from_step_{start_step}_{again}"
                node.version = version
    return output_dir


def lock_run_folder(output_dir: Path) -> IO[bytes] | None:
    """One process trains in a run folder at a time: a second `ckpt_path=last` (or one while the run itself still
    trains) would interleave two trainings' checkpoints and logs. Rank 0's lock: a DDP run's ranks share it."""
    if rank_zero_only.rank != 0:
        return None
    output_dir.mkdir(parents=True, exist_ok=True)
    lock, holder = try_lock(output_dir / run_folder.LOCK)
    if lock is None:
        who = f"process {holder}" if holder else "another process"
        raise ConfigError(
            f"{output_dir}: {who} is training this run; wait for it to end (then ckpt_path=last goes on "
            f"from its last checkpoint), or start a new run"
        )
    return lock


def continue_in_run_folder(cfg: DictConfig, ckpt_path: str) -> None:
    """Resuming a run's last checkpoint: point `paths.output_dir` at that run's folder, so that its checkpoints,
    logs and metrics go on there (Hydra's new folder keeps this session's log and overrides)."""
    run_dir = run_folder.run_of_last_checkpoint(ckpt_path)
    if run_dir is None:
        return
    if not os.access(run_dir, os.W_OK):  # someone else's run, a read-only copy: this run branches off from it
        log.info(f"{run_dir} is not writable: continuing its training in this run's own folder")
        return
    log.info(f"Continuing the run in {run_dir}: its checkpoints and logs go on there")
    cfg.paths.output_dir = str(run_dir)
    # expected here, and said above: Lightning's warning is for a new run that writes into an old one's folder
    warnings.filterwarnings("ignore", message=f"Checkpoint directory {re.escape(str(run_dir))}.* is not empty")


def resume_command() -> str:
    """The command that resumes this run: its own overrides (Hydra's, as typed, quoted for the shell) with
    `ckpt_path=last` for any ckpt_path; `<same overrides>` where there are none to read (train() called in Python)."""
    if not HydraConfig.initialized():
        return "python -m src.train <same overrides> ckpt_path=last"
    overrides = [o for o in HydraConfig.get().overrides.task if o.lstrip("+~").partition("=")[0] != "ckpt_path"]
    return command_line([*overrides, "ckpt_path=last"])


def monitored_value(cfg: DictConfig, metrics: dict[str, float], trained: bool) -> float | None:
    """The value of `monitor.metric`, which sweeps optimise; None when nothing was trained."""
    name = cfg.monitor.metric
    if not name or not cfg.train or cfg.trainer.get("fast_dev_run"):
        return None
    if name in metrics:
        return metrics[name]
    if not trained:
        return None
    raise ConfigError(f"monitor.metric={name!r} was never logged; the run logged: {', '.join(sorted(metrics))}")


@signals_end_the_command
@searches_given_as_their_key
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    with interruptible("setting up the run, or writing metrics.json", "Run the same command again"):
        value, _ = train(cfg)
    if sweep_job() is not None:  # one line per finished job, where a sweep's output is read
        value_text = "None" if value is None else f"{value:.5g}"
        print(f"sweep job {sweep_job()}: {cfg.monitor.metric}={value_text} | {' '.join(chosen_by_the_sweep())}")
    return value


def chosen_by_the_sweep() -> list[str]:
    """This job's overrides that the sweeper chose: not those the sweep's command line fixed for every job (read
    from the multirun.yaml that sweepers save; compared by key, since Hydra rewrites values, `true` as `True`),
    nor the Optuna sweeper's bookkeeping. All of the job's overrides where that file cannot be read."""
    job = list(HydraConfig.get().overrides.task)
    try:  # not sys.argv: a job launched elsewhere (submitit, SLURM) has another command line
        command_line = run_folder.read_multirun(Path(HydraConfig.get().sweep.dir)).hydra.overrides.task
        parser = OverridesParser.create()
        fixed = {o.key_or_group for o in parser.parse_overrides(list(command_line)) if not o.is_sweep_override()}
        keys = [o.key_or_group for o in parser.parse_overrides(job)]
    except (OSError, GenlabError, OmegaConfBaseException, OverrideParseException):
        fixed, keys = set(), [override.partition("=")[0] for override in job]
    return [text for text, key in zip(job, keys, strict=True) if key not in fixed and not key.startswith("optuna.")]


def sweep_job() -> int | None:
    """This job's number in a sweep (--multirun), None outside one."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return HydraConfig.get().job.num


if __name__ == "__main__":
    main()
