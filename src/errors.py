"""Errors caused by the user's input or environment.

The entry points print these as one clear message and exit non-zero, without a traceback:
the message itself says which key, file or folder is wrong and what was expected.
"""

import functools
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

T = TypeVar("T")


class GenlabError(CompactHydraException):
    """Base class of every error that is the user's to fix, not a bug.

    A CompactHydraException: where one ends a Hydra sweep, Hydra prints its message, not a traceback.
    """


class ConfigError(GenlabError, ValueError):
    """A config value has the wrong type, an unknown key, or an impossible value."""


class DatasetNotFoundError(GenlabError, FileNotFoundError):
    """A dataset's files are missing and could not be downloaded."""


class CorruptDatasetError(GenlabError, ValueError):
    """A dataset file exists but is truncated or is not the file expected."""


class RunInterrupted(GenlabError):
    """Training stopped by a signal (Ctrl-C, preemption) after saving its last checkpoint."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(err: BaseException, limit: int = 300) -> str:
    """An underlying error's message folded onto one line, to quote inside one of ours."""
    return " ".join(str(err).split())[:limit] or type(err).__name__


# what an entry point writes before its work starts: a run folder holding only these has no results in it
SETUP_FILES = {".hydra", ".run.lock", "config.yaml", "config_tree.log", "csv", "tensorboard", "wandb"}


def exit_on_user_error(entry_point: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point `main(cfg)` so that a GenlabError ends it as `error: <message>` and exit code 1, with
    no traceback, and removes its run folder when nothing came of the run.

    An interrupted run exits 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), as a shell would.
    In a sweep (`--multirun`) the error is printed and raised on: Hydra records the job as failed and the
    sweep goes on with the next one (the Optuna sweeper marks its trial FAIL, with the message).
    """

    @functools.wraps(entry_point)
    def wrapper(cfg: DictConfig, *args, **kwargs) -> T:
        try:
            return entry_point(cfg, *args, **kwargs)
        except RunInterrupted as err:
            print(f"interrupted: {err}", file=sys.stderr)
            raise SystemExit(err.exit_code) from None
        except GenlabError as err:
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                print(f"error: {err}", file=sys.stderr)
                record_failure(cfg, err)  # the job's folder stays, saying why: src.sweep_summary lists it
                raise
            discard_run_folder(cfg)
            raise SystemExit(f"error: {err}") from None

    return wrapper


def record_failure(cfg: DictConfig, err: GenlabError) -> None:
    """Write the reason a sweep's job failed to `<job folder>/error.txt`."""
    output_dir = OmegaConf.select(cfg, "paths.output_dir")
    if output_dir is not None and rank_zero_only.rank == 0 and Path(output_dir).is_dir():
        (Path(output_dir) / "error.txt").write_text(f"{err}\n")


def discard_run_folder(cfg: DictConfig) -> None:
    """Remove the run folder of a refused run, if it holds nothing but what every run writes before it starts."""
    output_dir = OmegaConf.select(cfg, "paths.output_dir")  # src.report and src.sweep_summary write into the user's
    if output_dir is None:
        return
    output_dir = Path(output_dir)
    if rank_zero_only.rank == 0 and output_dir.is_dir():
        if {path.name for path in output_dir.iterdir()} <= SETUP_FILES | {f"{cfg.task_name}.log"}:
            shutil.rmtree(output_dir)
