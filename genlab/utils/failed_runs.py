"""How an entry point ends when the user must fix something: one `error:` line and exit code 1, and what it made of
its run folder removed when nothing came of the run (in a sweep, kept with the reason in error.txt)."""

import errno
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from genlab.errors import FileRefusedError, GenlabError, RunInterrupted
from genlab.utils import run_folder

T = TypeVar("T")

# what a full or failing disk raises from writers genlab does not own (Lightning's CSV and TensorBoard loggers)
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


def exit_on_user_error(entry_point: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point `main(cfg)` so that a GenlabError (or a full disk) ends it as `error: <message>` and exit
    code 1, with no traceback, and removes what it made of its run folder when nothing came of the run.

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
        except (GenlabError, OSError) as err:
            if not isinstance(err, GenlabError):
                if err.errno not in DISK_ERRORS:
                    raise
                err = FileRefusedError(f"could not write {err.filename or 'a file'}: {err.strerror}")
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                print(f"error: {err}", file=sys.stderr)
                record_failure(cfg, err)  # the job's folder stays, saying why: src.sweep_summary lists it
                raise err from None
            discard_run_folder(cfg)
            raise SystemExit(f"error: {err}") from None
        finally:
            run_folder.forget_claims()

    return wrapper


def record_failure(cfg: DictConfig, err: GenlabError) -> None:
    """Write the reason a sweep's job failed to `<job folder>/error.txt` (not at all if that fails too: the
    reason is printed already)."""
    output_dir = OmegaConf.select(cfg, "paths.output_dir")
    if output_dir is not None and _rank_zero() and Path(output_dir).is_dir():
        try:
            run_folder.write_error(Path(output_dir), str(err))
        except FileRefusedError:
            pass


def discard_run_folder(cfg: DictConfig) -> None:
    """Remove what this process made of its run folders (Hydra's, and paths.output_dir), if nothing came of it."""
    if run_folder.claimed() and _rank_zero():
        run_folder.discard_unfinished(also_setup={f"{OmegaConf.select(cfg, 'task_name')}.log"})


def _rank_zero() -> bool:
    # Lightning imported here, only where a run folder is at stake: at the top it made src.report and
    # src.sweep_summary, which use no torch, import Lightning and torch (5 of their 6 s) before reading a file
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0
