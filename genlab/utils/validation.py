"""Checks of a composed config, run before anything it names is built."""

from __future__ import annotations

import inspect
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from pydantic import TypeAdapter, ValidationError

from genlab.errors import ConfigError
from genlab.utils.config import CONF_DIR


def check_config(cfg: DictConfig, key: str = "") -> None:
    """Check a config before anything it names is built; raise ConfigError naming the key at fault.

    On the whole config (no `key`), first that the data has what the model reads from it, and that
    task_name is a folder name. Then every `_target_` node against the signature of what it
    instantiates: an unknown key, a value of the wrong type (`data.batch_size=abc`, named with the type
    that the constructor's annotation expects), or a NaN or infinite number anywhere in its arguments.
    """
    if not key and "model" in cfg and "data" in cfg:
        check_pairing(cfg.model, cfg.data)
    if not key and "task_name" in cfg:
        check_task_name(cfg.task_name)
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


def check_pairing(model: DictConfig, data: DictConfig) -> None:
    """The data config has every key that the model config reads from it (`${data.<key>}`).

    If not, the message names the keys and the pairs that work, read from conf/model/ and conf/data/.
    """
    missing = [(path, value, name) for path, value, name in _data_references(model) if name not in data]
    if not missing:
        return
    models, datasets = _options("model"), _options("data")
    model_option, data_option = _option_name(model, models), _option_name(data, datasets)
    data_for_model = [option for option, cfg in datasets.items() if _needs(model) <= set(cfg)]
    models_for_data = [option for option, cfg in models.items() if _needs(cfg) <= set(data)]
    raise ConfigError(
        f"{', '.join(f'model.{path}={value}' for path, value, _ in missing)} cannot be resolved: "
        f"data={data_option} has no {', '.join(sorted({name for *_, name in missing}))}. "
        f"model={model_option} needs data with {', '.join(sorted(_needs(model)))}: it works with "
        f"data={', '.join(data_for_model) or '(none)'}; data={data_option} works with "
        f"model={', '.join(models_for_data) or '(none)'}"
    )


_DATA_REFERENCE = re.compile(r"\$\{data\.(\w+)\}")


def _data_references(cfg: DictConfig) -> list[tuple[str, str, str]]:
    """(key, value, data key) of each value in `cfg` that interpolates `${data.<data key>}`."""
    references = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                visit(value, f"{path}.{name}" if path else str(name))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{path}[{i}]")
        elif isinstance(node, str):
            references.extend((path, node, name) for name in _DATA_REFERENCE.findall(node))

    visit(OmegaConf.to_container(cfg, resolve=False), "")
    return references


def read_from_data(model_target: str) -> dict[str, str]:
    """{model key: data key} for each value that the option of conf/model/ with this `_target_` reads from the data
    (`image_shape: ${data.image_shape}`): what a model takes from the data it trains on."""
    options = [cfg for cfg in _options("model").values() if cfg.get("_target_") == model_target]
    return {path: name for cfg in options for path, _, name in _data_references(cfg)}


def _needs(model: DictConfig) -> set[str]:
    return {name for *_, name in _data_references(model)}


def _options(group: str) -> dict[str, DictConfig]:
    return {path.stem: OmegaConf.load(path) for path in sorted((CONF_DIR / group).glob("*.yaml"))}


def _option_name(cfg: DictConfig, options: dict[str, DictConfig]) -> str:
    """The option of the config group whose `_target_` this config has, else that `_target_`."""
    target = cfg.get("_target_")
    return next((name for name, option in options.items() if option.get("_target_") == target), str(target))


def _check_target(node: DictConfig, key: str) -> None:
    try:
        target = get_object(node._target_)
    except Exception as err:
        raise ConfigError(f"{key}._target_={node._target_!r} cannot be imported: {err}") from None
    parameters, hints, takes_any_keyword = signature(target)
    for name, value in node.items_ex(resolve=False):
        name = str(name)
        if name.startswith("_"):
            continue
        if name not in parameters and not takes_any_keyword:
            raise ConfigError(
                f"{key}.{name}: {target.__name__} has no parameter '{name}'; it takes {', '.join(parameters)}"
            )
        if isinstance(value, DictConfig) and "_target_" in value:
            continue  # checked as a node of its own
        plain_value = _resolved(node, name, key)
        check_finite(plain_value, f"{key}.{name}")
        if name in hints:
            check_type(plain_value, hints[name], f"{key}.{name}", target.__name__)


def check_arguments(target: Any, values: Mapping[str, Any], prefix: str) -> None:
    """Each of `values` against the type and range that `target`'s signature declares for it, named `prefix.name`.

    What a family's constructor calls on its own arguments, so that a model built in Python is held to the
    declarations that check_config holds a config to.
    """
    _, hints, _ = signature(target)
    for name, value in values.items():
        if name in hints:
            check_type(value, hints[name], f"{prefix}.{name}", target.__name__)


def check_options(declaration: type, node: Mapping[str, Any], command: str, prefix: str = "") -> None:
    """The entries of a config node that `declaration`'s fields name (an entry point's options: src.sample's
    SampleOptions), each against its declared type and range, named `prefix.name` (`name` at the top)."""
    names, hints, _ = signature(declaration)
    for name in names:
        key = f"{prefix}.{name}" if prefix else name
        check_finite(node[name], key)
        check_type(node[name], hints[name], key, command)


def check_type(value: Any, hint: Any, key: str, target_name: str) -> None:
    """`value` against a type hint and the range it declares (`Annotated[int, Field(ge=1)]`); ConfigError naming
    `key`, the type expected and the bound broken."""
    try:
        adapter = TypeAdapter(hint)
    except Exception:  # a type pydantic cannot check (an nn.Module, a Strategy): leave it to the constructor
        return
    try:
        adapter.validate_python(value)
    except ValidationError as err:
        # of a union's errors (one per member), those of a member of the value's type: which bound it breaks
        errors = [error for error in err.errors() if not error["type"].endswith(_OTHER_TYPE)] or err.errors()
        # one error says which bound, and of which item; several say no more than the type's name
        where = "".join(f"[{index}]" for index in errors[0]["loc"] if isinstance(index, int))
        why = f" ({f'{where}: ' if where else ''}{errors[0]['msg']})" if len(errors) == 1 else ""
        raise ConfigError(f"{key}={value!r} is not valid for {target_name}: expected {type_name(hint)}{why}") from None


# pydantic's error types for a value of another type than a union's member (`int_type`, `none_required`, ...)
_OTHER_TYPE = ("_type", "_parsing", "none_required", "literal_error", "is_instance_of")


def type_name(hint: Any) -> str:
    """A type hint as a config's reader knows it: its ranges left out (the message says the one broken), None as
    null (`float | None` -> `float or null`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in args)
    if hint is type(None):
        return "null"
    if origin is typing.Literal:
        return str(hint).replace("typing.", "")
    if origin is not None and args:  # tuple[int, ...], list[str]
        return f"{origin.__name__}[{', '.join('...' if arg is Ellipsis else type_name(arg) for arg in args)}]"
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def check_finite(value: Any, key: str) -> None:
    """NaN and infinity pass the type checks (they are floats), then surface far from the key that caused
    them: a NaN loss steps later, a clipping that does nothing. No setting here means them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value}: must be a finite number")
    if isinstance(value, dict):
        for name, item in value.items():
            check_finite(item, f"{key}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_finite(item, f"{key}[{i}]")


_FOLDER_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_task_name(name: Any) -> None:
    """task_name names the run's folder under paths.log_dir (hydra.run.dir): a path would put the run elsewhere."""
    if type(name) not in (str, int) or not _FOLDER_NAME.fullmatch(str(name)):
        raise ConfigError(
            f"task_name={name!r}: must be a plain folder name (letters, digits and ._-, not starting with '.')"
        )


def signature(target: Any) -> tuple[list[str], dict[str, Any], bool]:
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
            hints = typing.get_type_hints(function, include_extras=True) | hints  # Annotated[..., Field()] kept
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
    except InterpolationResolutionError as err:
        raw = OmegaConf.to_container(node)[name]
        raise ConfigError(f"{key}.{name}={raw} cannot be resolved: {str(err).splitlines()[0]}") from None
