"""Checks of a command line that Hydra runs after composing the config and before it makes the run folder.

Every entry point lists this callback in its config (hydra.callbacks.check_before_run): a missing `???` value,
a task_name that is a path, or a run folder that cannot be made (a file in its place, or above it) is refused with
one line, `error: ...`, exit code 1, and nothing written: Hydra would otherwise make the folder first and then
fail with a traceback (or, for `task_name=a/../../x`, write outside paths.log_dir).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
    """Raise ConfigError for a missing value, a task_name that is not a folder name, or a run folder (the value of
    `folder_key`, and paths.log_dir and paths.output_dir where they are set) that cannot be made."""
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
    existing = folder
    while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == folder:
            raise ConfigError(f"{key}={folder}: a file of that name exists; expected a folder, or nothing there")
        raise ConfigError(f"{key}={folder}: {existing} is a file, so no folder can be made below it")
    if (writes or existing != folder) and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={folder}: {existing} is not writable by this user")
