"""Rebuild genlab's own classes from a checkpoint's values: the allow-lists, and the checks of the arguments.

Nothing a checkpoint names is imported, instantiated or called: a class is looked up in MODEL_CLASSES or
DATA_CLASSES (genlab's classes, imported by this module), and its constructor gets only the parameters it
declares, each a plain value (text, numbers, lists of them) of the declared type. A `_target_` anywhere below
is then not a parameter, or not a plain value, and is refused before anything is built.

A family that builds on another family's trained model (latent diffusion on its first stage) declares the argument
as a TrainedModel; a config and a checkpoint give that model's checkpoint path, which is read and rebuilt here the
same way (`trained_models`), one level deep, and handed over frozen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf

from genlab.capabilities import TrainedModel
from genlab.data.image_folder import ImageFolderDataModule
from genlab.data.images import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule
from genlab.data.text import ShakespeareDataModule, TextFileDataModule
from genlab.errors import ConfigError, GenlabError, one_line
from genlab.models.autoencoder import Autoencoder
from genlab.models.classifier import Classifier
from genlab.models.diffusion import Diffusion
from genlab.models.gan import GAN
from genlab.models.gpt import GPT
from genlab.models.latent_diffusion import LatentDiffusion
from genlab.models.normalizing_flow import NormalizingFlow
from genlab.models.vae import VAE
from genlab.utils.checkpoint_reader import CheckpointError, read_checkpoint, state_dict_mismatch
from genlab.utils.instantiate import instantiate
from genlab.utils.model_size import DEFAULT_LIMITS, ModelTooLarge, SizeLimits, built_within
from genlab.utils.validation import check_finite, check_type, signature


def _by_name(*classes: type) -> dict[str, type]:
    return {f"{cls.__module__}.{cls.__qualname__}": cls for cls in classes}


# the classes a checkpoint may name, by the `_target_` that src.train's configs give them; a new family adds its own
MODEL_CLASSES: dict[str, type[L.LightningModule]] = _by_name(
    Autoencoder, VAE, GAN, GPT, Diffusion, Classifier, NormalizingFlow, LatentDiffusion
)
DATA_CLASSES: dict[str, type[L.LightningDataModule]] = _by_name(
    MNISTDataModule,
    FashionMNISTDataModule,
    CIFAR10DataModule,
    ShakespeareDataModule,
    TextFileDataModule,
    ImageFolderDataModule,
)

# where the data comes from and how it is loaded is this machine's business, never a checkpoint's (a URL to
# download from, a folder to write to, a thousand loader processes)
FROM_THIS_MACHINE = frozenset(
    {"data_dir", "download", "url", "mirrors", "num_workers", "batch_size", "cache_dir", "decode_workers"}
)


def model_class(checkpoint: dict[str, Any], path: str | Path) -> type[L.LightningModule]:
    """The genlab model class the checkpoint was trained as; anything outside MODEL_CLASSES is refused unimported."""
    target = _target(checkpoint["config"].get("model"))
    if target not in MODEL_CLASSES:
        raise CheckpointError(
            f"{path}: names the model class {target!r}, which is not one of genlab's models "
            f"({', '.join(sorted(name.rsplit('.', 1)[1] for name in MODEL_CLASSES))}); refused without importing it"
        )
    return MODEL_CLASSES[target]


def load_model(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    limits: SizeLimits = DEFAULT_LIMITS,
    trained: Mapping[str, Any] | None = None,
) -> L.LightningModule:
    """The model of a genlab checkpoint file, in eval mode, on `map_location` (`trained`: as model_from's); one past
    `limits` is refused."""
    return model_from(read_checkpoint(path), path, limits, trained).to(map_location)


def model_from(
    checkpoint: dict[str, Any],
    path: str | Path,
    limits: SizeLimits = DEFAULT_LIMITS,
    trained: Mapping[str, Any] | None = None,
) -> L.LightningModule:
    """The model of a checkpoint read by `read_checkpoint`, in eval mode, built from its checked hyperparameters,
    holding its weights. The trained models it builds on are read from the paths its hyperparameters recorded, or
    from those `trained` gives ({argument: path}, the command line's `model.first_stage=...`; None values unset)."""
    cls = model_class(checkpoint, path)
    arguments = checked_arguments(cls, checkpoint["hyper_parameters"], "hyper_parameters", path)
    given = {name: value for name, value in (trained or {}).items() if value is not None}
    if given.keys() - set(builds_on(cls)):
        raise ConfigError(
            f"model.{', model.'.join(sorted(given.keys() - set(builds_on(cls))))}: {path} holds a {cls.__name__}, "
            f"which builds on {'model.' + ', model.'.join(builds_on(cls)) if builds_on(cls) else 'no trained model'}"
        )
    arguments |= trained_models(cls, arguments | given, f"{path}: its model", limits)
    # first without memory (on the meta device), counted as it is built: a model past the limits is refused before
    # it exists (a million GPT layers is a few numbers in a small file), and the network its hyperparameters
    # describe must be the one whose weights the file holds, so a checkpoint cannot make genlab allocate more
    # than the file's own size
    try:
        described = built_within(limits, lambda: _build(cls, arguments, path))
    except ModelTooLarge as err:
        raise CheckpointError(f"{path}: its hyperparameters describe a {cls.__name__} that {err}") from None
    mismatch = state_dict_mismatch(described, checkpoint["state_dict"])
    if mismatch:
        raise CheckpointError(
            f"{path}: its weights are not those of the {cls.__name__} its hyperparameters describe ({mismatch})"
        )
    model = _build(cls, arguments, path)
    model.on_load_checkpoint(checkpoint)
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:  # weights the model does not have
        raise CheckpointError(f"{path}: its weights do not fit its {cls.__name__} ({one_line(err)})") from None
    return model.eval()


def datamodule_from(checkpoint: dict[str, Any], path: str | Path, **this_machine: Any) -> L.LightningDataModule:
    """The datamodule a checkpoint read by `read_checkpoint` was trained on, from its checked data settings;
    `this_machine` gives the rest (data_dir, cache_dir, batch_size: see FROM_THIS_MACHINE), where the class takes it."""
    data_config = checkpoint["config"].get("data")
    target = _target(data_config)
    if target not in DATA_CLASSES:
        raise CheckpointError(
            f"{path}: names the data class {target!r}, which is not one of genlab's datamodules; refused without "
            f"importing it. Give the data on the command line, as src.train was given it: data=<its config> (with "
            f"hydra.searchpath=[file://<your config folder>] for your own; docs/data.md)"
        )
    cls = DATA_CLASSES[target]
    settings = {key: value for key, value in data_config.items() if key != "_target_" and key not in FROM_THIS_MACHINE}
    takes = signature(cls)[0]  # an image folder has no data_dir, a torchvision dataset no cache_dir
    this_machine = {key: value for key, value in this_machine.items() if key in takes}
    return _build(cls, checked_arguments(cls, settings, "config.data", path) | this_machine, path)


def checked_arguments(cls: type, values: Any, where: str, path: str | Path) -> dict[str, Any]:
    """`values` as keyword arguments of `cls`: each one a parameter it declares, holding plain values (no
    mapping: no genlab constructor takes one) of the declared type, finite."""
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: its {where} is not a mapping of {cls.__name__}'s arguments")
    parameters, hints, _ = signature(cls)
    for name, value in values.items():
        if name not in parameters:
            raise CheckpointError(
                f"{path}: its {where} has {name!r}, which {cls.__name__} does not take; refused without using it"
            )
        if not _is_plain_value(value):
            raise CheckpointError(
                f"{path}: its {where}.{name} holds a {type(value).__name__} where {cls.__name__} takes text, "
                f"numbers or lists of them; refused without using it"
            )
        try:
            check_finite(value, f"{where}.{name}")
            if name in hints:
                check_type(value, hints[name], f"{where}.{name}", cls.__name__)
        except ConfigError as err:
            raise CheckpointError(f"{path}: {err}") from None
    return dict(values)


def _is_plain_value(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain_value(item) for item in value)
    return isinstance(value, (str, int, float, bool, type(None)))


def _target(node: Any) -> str | None:
    """The class path a config node names; None where it names none, or something other than text."""
    target = node.get("_target_") if isinstance(node, dict) else None
    if not isinstance(target, str):
        return None
    # checkpoints written by genlab 0.1, before it was a package, name its classes src.<module>.<class>
    return "genlab." + target.removeprefix("src.") if target.startswith("src.") else target


def _build(cls: type, arguments: dict[str, Any], path: str | Path) -> Any:
    """`cls(**arguments)`, its network built too (GPT builds it in configure_model), errors as one line."""
    try:
        built = cls(**arguments)
        if isinstance(built, L.LightningModule) and is_overridden("configure_model", built):
            built.configure_model()
    except ModelTooLarge:  # the limits' refusal, which says more itself (and a signal's is no GenlabError)
        raise
    except (GenlabError, TypeError, ValueError, RuntimeError, NotImplementedError) as err:
        raise CheckpointError(f"{path}: cannot rebuild its {cls.__name__} ({one_line(err)})") from None
    return built


# --- the trained models a family builds on ------------------------------------------------------------------------
def builds_on(cls: type) -> list[str]:
    """The arguments of `cls` that are other families' trained models (declared as TrainedModel)."""
    _, hints, _ = signature(cls)
    return [name for name, hint in hints.items() if hint is TrainedModel]


def trained_models(
    cls: type, paths: Mapping[str, Any], where: str, limits: SizeLimits = DEFAULT_LIMITS
) -> dict[str, TrainedModel]:
    """The trained models that `cls` builds on, each read from the checkpoint path that `paths` gives for its
    argument and rebuilt by model_from (within `limits`), frozen in eval mode; errors name the argument as
    `<where>.<argument>`."""
    built = {}
    for name in builds_on(cls):
        path = paths.get(name)
        if not isinstance(path, str | Path):
            raise ConfigError(f"{where}.{name}={path!r}: expected the path of a genlab checkpoint to build on")
        try:
            checkpoint = read_checkpoint(path)
            if builds_on(model_class(checkpoint, path)):  # one level: no chain (nor cycle) of files to follow
                raise CheckpointError(f"{path}: builds on a trained model itself, which a model built on may not")
            model = model_from(checkpoint, path, limits).requires_grad_(False)
        except CheckpointError as err:
            raise CheckpointError(f"{where}.{name}: {err} (model.{name}=PATH names another)") from None
        built[name] = TrainedModel(model, str(Path(path).resolve()), content_hash(checkpoint["state_dict"]))
    return built


def content_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a state dict's weights: each tensor's name, type, shape and bytes, in the names' order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def build_model(node: DictConfig, key: str = "model", limits: SizeLimits = DEFAULT_LIMITS) -> L.LightningModule:
    """The model a config node describes, built as src.train builds it: the trained models it builds on read from
    their checkpoints (`trained_models`, within `limits`), everything else instantiated from the config."""
    cls = MODEL_CLASSES.get(_target(OmegaConf.to_container(node, resolve=False)))  # a model of your own: none
    missing = [name for name in builds_on(cls) if OmegaConf.is_missing(node, name)] if cls else []
    if missing:
        raise ConfigError(f"{key}.{missing[0]}: missing, the path of the checkpoint that {cls.__name__} builds on")
    given = trained_models(cls, node, key, limits) if cls else {}
    return instantiate(node, key, **given)
