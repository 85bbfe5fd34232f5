"""Checks of a composed config, run before anything it names is built."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from pydantic import TypeAdapter, ValidationError

from src.errors import ConfigError
from src.utils.config import CONF_DIR


def check_config(cfg: DictConfig, key: str = "") -> None:
    """Check every `_target_` node against the signature of what it instantiates, before building anything.

    An unknown key or a value of the wrong type (`data.batch_size=abc`) raises ConfigError
    naming the key, the value and the type expected by the constructor's annotation.
    """
    if isinstance(cfg, ListConfig):
        for i, item in enumerate(cfg):
            if isinstance(item, (DictConfig, ListConfig)):
                check_config(item, f"{key}[{i}]")
        return
    if "_target_" in cfg:
        _check_target(cfg, key)
    for name, node in cfg.items_ex(resolve=False):
        if isinstance(node, (DictConfig, ListConfig)) and not str(name).startswith("_"):
            check_config(node, f"{key}.{name}" if key else str(name))


def _check_target(node: DictConfig, key: str) -> None:
    try:
        target = get_object(node._target_)
    except Exception as err:
        raise ConfigError(f"{key}._target_={node._target_!r} cannot be imported: {err}") from None
    parameters, hints, takes_any_keyword = _signature(target)
    for name, value in node.items_ex(resolve=False):
        name = str(name)
        if name.startswith("_"):
            continue
        if name not in parameters and not takes_any_keyword:
            raise ConfigError(
                f"{key}.{name}: {target.__name__} has no parameter '{name}'; it takes {', '.join(parameters)}"
            )
        if name not in hints or (isinstance(value, DictConfig) and "_target_" in value):
            continue
        plain_value = _resolved(node, name, key)
        try:
            adapter = TypeAdapter(hints[name])
        except Exception:  # a type pydantic cannot check (an nn.Module, a Strategy): leave it to the constructor
            continue
        try:
            adapter.validate_python(plain_value)
        except ValidationError as err:
            hint = hints[name]
            expected = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            raise ConfigError(
                f"{key}.{name}={plain_value!r} is not valid for {target.__name__}: expected {expected} "
                f"({err.errors()[0]['msg']})"
            ) from None


def _signature(target: Any) -> tuple[list[str], dict[str, Any], bool]:
    """Parameter names, their type hints, and whether any keyword goes, of a class or function.

    A subclass whose __init__ passes **kwargs on to its parent's takes the parent's parameters too.
    """
    functions = (
        [klass.__init__ for klass in inspect.getmro(target) if "__init__" in vars(klass)]
        if inspect.isclass(target)
        else [target]
    )
    names: list[str] = []
    hints: dict[str, Any] = {}
    for function in functions:
        try:
            hints = typing.get_type_hints(function) | hints
        except Exception:  # annotations that do not resolve: check names only
            pass
        parameters = list(inspect.signature(function).parameters.values())
        names += [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names, hints, False
    return names, hints, True


def _resolved(node: DictConfig, name: str, key: str) -> Any:
    try:
        value = node[name]
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
    except InterpolationResolutionError as err:  # e.g. ${data.image_shape} with text data
        raw = OmegaConf.to_container(node)[name]
        raise ConfigError(
            f"{key}.{name}={raw} cannot be resolved: {str(err).splitlines()[0]}. {_pairing_hint(node, raw)}"
        ) from None


def _pairing_hint(node: DictConfig, raw: Any) -> str:
    """Which data options a model works with, and which models the data works with, for a model
    value `${data.<key>}` that the chosen data lacks. Read from the config groups: a model works with
    the data whose config has every `data.<key>` that the model's config interpolates."""
    if not re.fullmatch(r"\$\{data\.\w+\}", str(raw)):
        return "Is this model meant for this data?"
    root = node._get_root()
    options = {group: {path.stem: _option(path, group) for path in sorted((CONF_DIR / group).glob("*.yaml"))}
               for group in ("model", "data")}  # fmt: skip

    def needs(model: DictConfig) -> set[str]:
        return set(re.findall(r"\$\{data\.(\w+)\}", OmegaConf.to_yaml(model)))

    def option(group: str) -> str:  # the option whose _target_ the run uses
        return next((name for name, cfg in options[group].items() if cfg.get("_target_") == root[group]._target_), "?")

    model, data = option("model"), option("data")
    model_needs = needs(options["model"][model]) if model in options["model"] else needs(root.model)
    data_for_model = [name for name, cfg in options["data"].items() if model_needs <= set(cfg)]
    models_for_data = [name for name, cfg in options["model"].items() if needs(cfg) <= set(root.data)]
    return (
        f"model={model} needs data with {', '.join(sorted(model_needs))}: it works with "
        f"data={', '.join(data_for_model) or '(none)'}; data={data} works with "
        f"model={', '.join(models_for_data) or '(none)'}"
    )


def _option(path: Path, group: str) -> DictConfig:
    """A config group option's own node, also from a `# @package _global_` file (that nests it under its group)."""
    cfg = OmegaConf.load(path)
    return cfg[group] if "_target_" not in cfg and group in cfg else cfg
