"""Composing, resolving and printing the config; its checks are in genlab/utils/validation.py."""

from __future__ import annotations

import hashlib
import logging
import netrc
import os
import shlex
from pathlib import Path
from typing import Any

import rich.syntax
import rich.tree
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from genlab.errors import ConfigError, without_passwords
from genlab.utils.files import replaced_atomically
from genlab.utils.image_files import count_classes
from genlab.utils.run_folder import run_identity

log = logging.getLogger(__name__)

# Hydra's configs: inside the package when installed from a wheel (pyproject.toml maps conf/ to genlab.conf), else
# conf/ beside genlab/ in a clone (and in an editable install of one)
_PACKAGE = Path(__file__).resolve().parents[1]
CONF_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"


def register_resolvers() -> None:
    """Register this project's OmegaConf resolvers (idempotent)."""
    OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
    OmegaConf.register_new_resolver("run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("run_group", run_group, replace=True)
    # conf/data/image_folder.yaml's num_classes, which model configs read before the data is built
    OmegaConf.register_new_resolver("image_folder_classes", count_classes, replace=True, use_cache=True)


def compose(overrides: list[str], config_name: str = "train", return_hydra_config: bool = False) -> DictConfig:
    """The config that `python -m src.<config_name> <overrides>` would run with, through Hydra's compose API
    (with Hydra's own node, `hydra`, if `return_hydra_config`).

    For code that runs outside the command line (tests, benchmarks): Hydra's run folder is not
    made, so `paths.output_dir` must be among the overrides.
    """
    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=return_hydra_config)


def wandb_offline() -> bool:
    """W&B runs offline unless the user has configured it: WANDB_MODE, WANDB_API_KEY, or `wandb login`."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return False  # the user chose; wandb reads these variables itself
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def run_name(task_name: str) -> str:
    """`task_name` and the overrides that make this run what it is (`vae,model.latent_dim=8,seed=1`): the name
    of its TensorBoard folder and W&B run, where a timestamp would say nothing. For `${run_name:${task_name}}`."""
    if not HydraConfig.initialized():
        return task_name
    # where a run writes, a sweep's bookkeeping (the study's storage) and the task again say nothing of it
    said = ("optuna.storage=", "optuna.study_name=", "paths.", "hydra.", "task_name=", f"experiment={task_name}")
    parts = [task_name] + [o for o in run_identity(HydraConfig.get().overrides.task) if not o.startswith(said)]
    name = ",".join(parts).replace("/", "_")  # a path among the values must not nest folders
    if len(name) > 200:  # a folder name's limit is 255 bytes; the hash keeps long names apart
        name = f"{name[:180]}...{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def run_group(task_name: str) -> str:
    """The group of a run on dashboards (W&B's group): its sweep (`vae,<sweep folder>`), or else its task."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"{task_name},{Path(HydraConfig.get().sweep.dir).name}"
    return task_name


PRINT_CONFIG = ("short", "full", False)


def check_print_config(value: Any) -> None:
    """extras.print_config is one of PRINT_CONFIG (checked before the run starts, not when it prints)."""
    if value not in PRINT_CONFIG:
        raise ConfigError(f"extras.print_config must be short, full or false, got {value!r}")


def print_config(cfg: DictConfig, tree_file: Path | None = None) -> None:
    """As extras.print_config says: `short`, the command line's overrides and the few resolved values that say what
    runs, in the log (naming `tree_file`, where the whole tree is saved); `full`, the resolved config as a rich tree."""
    if cfg.extras.print_config == "full":
        rich.print(config_tree(cfg))
    else:
        log.info(short_config(cfg, tree_file))


def save_config_tree(cfg: DictConfig, path: Path) -> None:
    """The resolved config as a rich tree in `path` (config_tree.log), through the one writer."""
    with replaced_atomically(path, "w", "the config tree") as file:
        rich.print(config_tree(cfg), file=file)


def config_tree(cfg: DictConfig) -> rich.tree.Tree:
    """The resolved config as a rich tree, one branch per top-level group."""
    tree = rich.tree.Tree("config", style="dim", guide_style="dim")
    for group, node in cfg.items():
        content = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else str(node)
        content = without_passwords(content)  # a sweep's job holds its study's storage, a database URL
        tree.add(str(group), style="bold").add(rich.syntax.Syntax(content, "yaml"))
    return tree


def short_config(cfg: DictConfig, tree_file: Path | None = None) -> str:
    """The command's overrides (where Hydra ran it) and what they resolved to that says what runs: the model, the
    data and its batch, the trainer's device, precision and length, the monitored metric, the seed, the callbacks
    and loggers, the run folder."""
    t = cfg.trainer
    where = f"; the whole config: {tree_file} (extras.print_config=full prints it)" if tree_file else ""
    lines = [f"Config{where}"]
    if HydraConfig.initialized():
        # a sweep's job is given its study's storage, a database URL
        lines.append(f"  command: {without_passwords(command_line(list(HydraConfig.get().overrides.task)))}")
    lines += [
        f"  model: {cfg.model._target_}",
        f"  data: {cfg.data._target_}, batch_size {cfg.data.get('batch_size')}",
        f"  trainer: accelerator {t.accelerator}, devices {t.devices}, precision {t.precision}, max_epochs "
        f"{t.max_epochs}, max_steps {t.max_steps}",
        f"  monitor: {cfg.monitor.metric} ({cfg.monitor.mode}), seed {cfg.seed}",
        f"  callbacks: {', '.join(_named(cfg.get('callbacks'))) or 'none'}; loggers: "
        f"{', '.join(_named(cfg.get('logger'))) or 'none'}",
        f"  run folder: {cfg.paths.output_dir}",
    ]
    return "\n".join(lines)


def _named(group: DictConfig | None) -> list[str]:
    """The entries of a callbacks or logger group that are on (a node with a _target_)."""
    return [str(name) for name, node in (group or {}).items() if isinstance(node, DictConfig) and "_target_" in node]


def command_line(overrides: list[str], module: str = "src.train") -> str:
    """`python -m <module> <overrides>`, each override quoted where a POSIX shell needs it."""
    return shlex.join(["python", "-m", module, *overrides])


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain, resolved Python containers (what loggers and checkpoints can hold)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
