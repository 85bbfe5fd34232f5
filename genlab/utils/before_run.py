"""Checks of a command line that Hydra runs after composing the config and before it makes the run folder.

Every entry point lists this callback in its config (hydra.callbacks.check_before_run): a missing `???` value,
a task_name that is a path, or a run folder that cannot be made (a file in its place, or above it) is refused with
one line, `error: ...`, exit code 1, and nothing written: Hydra would otherwise make the folder first and then
fail with a traceback (or, for `task_name=a/../../x`, write outside paths.log_dir).
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from genlab.errors import ConfigError, GenlabError
from genlab.utils import run_folder
from genlab.utils.files import kind_of
from genlab.utils.validation import check_task_name

# what Hydra writes in <run>/.hydra at the start of every run
HYDRA_RECORDS = ("config.yaml", "hydra.yaml", "overrides.yaml")
# what a missing value looks like, shown in the message (the comment at the top of each conf/<entry>.yaml)
EXAMPLES = {
    "ckpt_path": "outputs/<task>/runs/<run>/checkpoints/last.ckpt",
    "run_dir": "outputs/<task>/runs/<run>",
    "sweep_dir": "outputs/<task>/multiruns/<sweep>",
}
READS_DATA = ("train", "eval")  # the entry points that read paths.data_dir (src.eval: the checkpoint's dataset)
MAX_SEED = 2**32 - 1  # numpy's, which Lightning's seed_everything seeds along with torch's and Python's


T = TypeVar("T")


def searches_given_as_their_key(main: Callable[..., T]) -> Callable[..., T]:
    """Refuse, before Hydra composes anything, a search given for one key of `hydra.sweeper.params` on the command
    line (`hydra.sweeper.params.model.latent_dim=choice(8,16)`): Hydra cannot sweep its own config, nor name a key
    that has dots in it, and says neither in terms of the sweep. The line says what works instead."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> T:
        if not args and not kwargs:  # from the command line (a config passed in is Hydra's own call)
            for argument in sys.argv[1:]:
                key, _, value = argument.lstrip("+~").partition("=")
                if key.startswith("hydra.sweeper.params."):
                    searched = key.removeprefix("hydra.sweeper.params.")
                    raise SystemExit(
                        f"error: {argument}: give the search as {searched}={value or 'choice(...)'} (it replaces "
                        f"the config's search over {searched}), or in a config file under hydra.sweeper.params (as "
                        f"conf/hparams_search/vae_optuna.yaml does); Hydra takes no search inside its own keys"
                    )
        return main(*args, **kwargs)

    return wrapper


class CheckBeforeRun(Callback):
    """Refuse, before Hydra writes anything, a command line whose run could not start."""

    def on_run_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        _refuse_on_error(config, config_name, "hydra.run.dir")
        if config.hydra.output_subdir is not None:  # Hydra makes the folder next: what was in it is never removed
            run_folder.claim(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        _refuse_on_error(config, config_name, "hydra.sweep.dir")


def _refuse_on_error(config: DictConfig, config_name: str | None, folder_key: str) -> None:
    try:
        check_before_run(config, config_name or "train", folder_key)
    except GenlabError as err:
        # SystemExit, not the error: Hydra turns an Exception raised by a callback into a warning and runs on
        raise SystemExit(f"error: {err}") from None


def check_before_run(config: DictConfig, config_name: str, folder_key: str) -> None:
    """Raise ConfigError for a missing value, a task_name that is not a folder name, a seed numpy cannot take, a
    run folder (the value of `folder_key`, and paths.log_dir and paths.output_dir where they are set) that cannot be
    made, or a data folder that is a link leading nowhere (a loop, a missing target)."""
    # in a sweep, a key may be missing from the base config and given per job (ckpt_path=a.ckpt,b.ckpt)
    given = {override.lstrip("+~").partition("=")[0] for override in config.hydra.overrides.task}
    for key in missing_keys(config):
        if key not in given:
            example = EXAMPLES.get(key, "<value>")
            raise ConfigError(
                f"{key} is missing: give it on the command line: python -m src.{config_name} {key}={example}"
            )
    if "task_name" in config:
        check_task_name(config.task_name)
    seed = OmegaConf.select(config, "seed", throw_on_resolution_failure=False)
    if seed is not None and (type(seed) is not int or not 0 <= seed <= MAX_SEED):
        raise ConfigError(f"seed={seed!r}: expected a whole number from 0 to {MAX_SEED}, or null (a random seed)")
    data_dir = OmegaConf.select(config, "paths.data_dir", throw_on_resolution_failure=False)
    if config_name in READS_DATA and isinstance(data_dir, str) and data_dir:
        check_no_broken_link(Path(data_dir), "DATA_DIR" if os.environ.get("DATA_DIR") == data_dir else "paths.data_dir")
    writes = config.hydra.output_subdir is not None  # Hydra's .hydra/ folder (src.report and src.sweep_summary: none)
    for key in ("paths.log_dir", folder_key, "paths.output_dir"):
        # None where it cannot be resolved yet (${hydra:runtime.output_dir}, set when the job starts)
        folder = OmegaConf.select(config, key, throw_on_resolution_failure=False)
        if isinstance(folder, str) and folder:
            check_folder_can_be_made(Path(folder), key, writes)
    if writes and folder_key == "hydra.run.dir":
        check_hydra_writes(Path(config.hydra.run.dir), config.hydra.output_subdir, config.get("task_name"))


def missing_keys(config: DictConfig) -> list[str]:
    """The keys whose value is `???`, outside Hydra's own node (read unresolved: OmegaConf.missing_keys resolves
    interpolations, and Hydra's `hydra.sweep.subdir` cannot be resolved before a job starts)."""
    missing = []

    def visit(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                visit(value, f"{key}.{name}" if key else str(name))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{key}[{i}]")
        elif node == "???":
            missing.append(key)

    visit({k: v for k, v in OmegaConf.to_container(config, resolve=False).items() if k != "hydra"}, "")
    return missing


def check_hydra_writes(run_dir: Path, output_subdir: str, task_name: str | None) -> None:
    """In a run folder that exists already (hydra.run.dir given): nothing in place of the files Hydra writes there
    (its .hydra/*.yaml, the log file) but regular files. Hydra opens them as they are, and would write through a link
    planted in a copied run folder."""
    record = run_dir / output_subdir
    for path in (record, *(record / name for name in HYDRA_RECORDS), run_dir / f"{task_name}.log"):
        kind = kind_of(path)
        if kind is None and path.exists() and path.is_dir() != (path == record):
            kind = "a file" if path == record else "a folder"
        if kind is not None:
            raise ConfigError(
                f"hydra.run.dir={run_dir}: {path} is {kind}; Hydra writes a file there (never through a link)"
            )


def check_folder_can_be_made(folder: Path, key: str, writes: bool = True) -> None:
    """The folder exists, or can be made: its nearest existing ancestor is a folder this process can write in."""
    existing = check_no_broken_link(folder, key)
    if not existing.is_dir():
        if existing == folder:
            raise ConfigError(f"{key}={folder}: a file of that name exists; expected a folder, or nothing there")
        raise ConfigError(f"{key}={folder}: {existing} is a file, so no folder can be made below it")
    if (writes or existing != folder) and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={folder}: {existing} is not writable by this user")


def check_no_broken_link(path: Path, key: str) -> Path:
    """The nearest of `path` and its parents that is there; ConfigError if that is a symbolic link leading nowhere
    (to itself, in a loop, or to nothing), where opening or making the folder would fail deep inside a library."""
    existing = path
    while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
        existing = existing.parent
    if existing.is_symlink() and not existing.exists():
        try:
            existing.stat()
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise ConfigError(f"{key}={path}: {existing} is a loop of symbolic links; expected a folder") from None
        raise ConfigError(
            f"{key}={path}: {existing} is a symbolic link to {os.readlink(existing)}, which does not exist; expected "
            f"a folder"
        )
    return existing
