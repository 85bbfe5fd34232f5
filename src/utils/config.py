"""Composing, resolving and printing the config; its checks are in src/utils/validation.py."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

import rich.syntax
import rich.tree
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, ListConfig, OmegaConf

# beside src/ in a checkout, and installed beside it from a wheel (pyproject.toml: package data)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def register_resolvers() -> None:
    """Register this project's OmegaConf resolvers (idempotent)."""
    OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)


def compose(overrides: list[str], config_name: str = "train") -> DictConfig:
    """The config that `python -m src.<config_name> <overrides>` would run with, through Hydra's compose API.

    For code that runs outside the command line (tests, benchmarks): Hydra's run folder is not
    made, so `paths.output_dir` must be among the overrides.
    """
    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name=config_name, overrides=overrides)


def wandb_offline() -> bool:
    """W&B runs offline unless the user has configured it: WANDB_MODE, WANDB_API_KEY, or `wandb login`."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return False  # the user chose; wandb reads these variables itself
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def print_config_tree(cfg: DictConfig, save_to: Path | None = None, show: bool = True) -> None:
    """Print the resolved config as a rich tree, one branch per top-level group (if `show`), and save it."""
    tree = rich.tree.Tree("config", style="dim", guide_style="dim")
    for group, node in cfg.items():
        content = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else str(node)
        tree.add(str(group), style="bold").add(rich.syntax.Syntax(content, "yaml"))
    if show:
        rich.print(tree)
    if save_to is not None:
        with open(save_to, "w") as f:
            rich.print(tree, file=f)


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain, resolved Python containers (what loggers and checkpoints can hold)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
