"""How an entry point ends when the user must fix something: one `error:` line and exit code 1, and its run folder
removed when nothing came of the run (in a sweep, kept with the reason in error.txt)."""

import functools
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from genlab.errors import GenlabError, RunInterrupted

T = TypeVar("T")

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
    if output_dir is not None and _rank_zero() and Path(output_dir).is_dir():
        (Path(output_dir) / "error.txt").write_text(f"{err}\n")


def discard_run_folder(cfg: DictConfig) -> None:
    """Remove the run folder of a refused run, if it holds nothing but what every run writes before it starts."""
    output_dir = OmegaConf.select(cfg, "paths.output_dir")  # src.report and src.sweep_summary write into the user's
    if output_dir is None:
        return
    output_dir = Path(output_dir)
    if _rank_zero() and output_dir.is_dir():
        if {path.name for path in output_dir.iterdir()} <= SETUP_FILES | {f"{cfg.task_name}.log"}:
            shutil.rmtree(output_dir)


def _rank_zero() -> bool:
    # Lightning imported here, only where a run folder is at stake: at the top it made src.report and
    # src.sweep_summary, which use no torch, import Lightning and torch (5 of their 6 s) before reading a file
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0
