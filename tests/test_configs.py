"""Every option of every config group composes, and what it names instantiates."""

from __future__ import annotations

import collections
import os
import re
import typing
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import pytest
import torch
from annotated_types import BaseMetadata
from hydra.utils import get_object
from omegaconf import OmegaConf
from pydantic.types import Strict

from genlab.capabilities import ImageSampler, Reconstructor
from genlab.checkpoints import CheckpointError, build_model
from genlab.checkpoints.rebuild import checked_arguments
from genlab.errors import ConfigError
from genlab.utils.config import CONF_DIR
from genlab.utils.instantiate import instantiate_all
from genlab.utils.validation import check_config, check_pairing
from tests.helpers import (
    DATA_IMAGE_SHAPES,
    IMAGE_MODELS,
    Breach,
    annotated_parameters,
    built_on,
    compose_config,
    declared_breaches,
    family_config,
    model_class,
    options,
)


def test_default_config_is_the_autoencoder_on_fashion_mnist(tmp_path: Path) -> None:
    cfg = compose_config([], tmp_path)
    assert cfg.model._target_ == "genlab.models.autoencoder.Autoencoder"
    assert cfg.data._target_ == "genlab.data.images.FashionMNISTDataModule"
    assert list(cfg.logger) == ["csv"]
    assert set(cfg.callbacks) == {"model_checkpoint", "rich_progress_bar", "lr_monitor"}
    check_config(cfg)


# the data options that hold text
TEXT_DATA = {"shakespeare", "text_file"}


@pytest.mark.parametrize("data", options("data"))
def test_data_options(tmp_path: Path, data: str) -> None:
    # the options with nothing to default to: the user's own text file, the user's own folder of images
    required = {"text_file": ["data.path=corpus.txt"], "image_folder": [f"data.path={tmp_path}"]}
    cfg = compose_config([f"data={data}", *required.get(data, [])], tmp_path)
    check_config(cfg.data, "data")
    assert isinstance(hydra.utils.instantiate(cfg.data, _convert_="all"), L.LightningDataModule)


@pytest.mark.parametrize("data", ["mnist", "fashion_mnist", "cifar10"])
@pytest.mark.parametrize("model", sorted(set(options("model")) - {"gpt"}))
def test_model_options_on_every_image_dataset(tmp_path: Path, model: str, data: str) -> None:
    first_stages = built_on(model_class(model), DATA_IMAGE_SHAPES[data])  # latent diffusion's, untrained
    cfg = compose_config([f"model={model}", f"data={data}", *first_stages], tmp_path)
    check_config(cfg)
    module = build_model(cfg.model)
    images = torch.rand(2, *cfg.data.image_shape)
    if model == "classifier":  # images in, logits out
        assert module(images).shape == (2, cfg.data.num_classes)
        return
    # every other family makes images of the data's shape, by what it can do
    assert isinstance(module, (ImageSampler, Reconstructor))
    if isinstance(module, ImageSampler):
        assert module.sample(2).shape == images.shape
    if isinstance(module, Reconstructor):
        assert module.reconstruct(images).shape == images.shape


def test_gpt_on_text_builds_its_network_from_the_vocabulary(tmp_path: Path) -> None:
    cfg = compose_config(["model=gpt", "data=shakespeare", "model.vocab=abcdefgh"], tmp_path)
    check_config(cfg)
    module = hydra.utils.instantiate(cfg.model, _convert_="all")
    module.configure_model()
    tokens = torch.randint(8, (2, cfg.data.block_size))
    assert module(tokens).shape == (2, cfg.data.block_size, 8)


def test_gpt_on_images_is_refused_at_config_time(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.block_size=\$\{data.block_size\} cannot be resolved"):
        check_config(compose_config(["model=gpt", "data=fashion_mnist"], tmp_path))


@pytest.mark.parametrize("data", options("data"))
@pytest.mark.parametrize("model", options("model"))
def test_every_model_and_data_pair_is_checked_before_anything_is_built(tmp_path: Path, model: str, data: str) -> None:
    cfg = compose_config([f"model={model}", f"data={data}"], tmp_path)
    if (model == "gpt") == (data in TEXT_DATA):  # text model on text, image model on images
        check_pairing(cfg.model, cfg.data)
    else:
        with pytest.raises(ConfigError, match=rf"cannot be resolved: data={data} has no .*\. model={model} needs"):
            check_config(cfg)


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (
            "gpt",
            "mnist",
            "model.block_size=${data.block_size} cannot be resolved: data=mnist has no block_size. "
            "model=gpt needs data with block_size: it works with data=shakespeare, text_file; "
            f"data=mnist works with model={', '.join(IMAGE_MODELS)}",
        ),
        (
            "gan",
            "shakespeare",
            "model.image_shape=${data.image_shape}, model.num_classes=${data.num_classes} cannot "
            "be resolved: data=shakespeare has no image_shape, num_classes. model=gan needs data "
            "with image_shape, num_classes: it works with data=cifar10, fashion_mnist, image_folder, mnist; "
            "data=shakespeare works with model=gpt",
        ),
        (
            "ae",
            "shakespeare",
            "model.image_shape=${data.image_shape} cannot be resolved: data=shakespeare has no "
            "image_shape. model=ae needs data with image_shape: it works with "
            "data=cifar10, fashion_mnist, image_folder, mnist; data=shakespeare works with model=gpt",
        ),
    ],
)
def test_refused_pair_names_the_missing_keys_and_the_pairs_that_work(
    tmp_path: Path, model: str, data: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_config(compose_config([f"model={model}", f"data={data}"], tmp_path))
    assert str(caught.value) == message


def test_pairing_is_read_from_the_run_config_not_only_the_option_files(tmp_path: Path) -> None:
    cfg = compose_config(["model=ae", "+model.block_size=${data.block_size}"], tmp_path)  # a key only text data has
    needs = r"model=ae needs data with block_size, image_shape: it works with data=\(none\);"
    with pytest.raises(ConfigError, match=needs):
        check_pairing(cfg.model, cfg.data)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_options(tmp_path: Path, trainer: str) -> None:
    cfg = compose_config([f"trainer={trainer}"], tmp_path)
    check_config(cfg)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip(f"trainer={trainer} needs a GPU (composed and checked only)")
    assert isinstance(hydra.utils.instantiate(cfg.trainer, _convert_="all"), L.Trainer)


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_options(tmp_path: Path, logger: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no `wandb login` either
    cfg = compose_config([f"logger={logger}"], tmp_path)
    check_config(cfg)
    loggers = instantiate_all(cfg.logger, "logger")
    assert len(loggers) == {"many": 3, "none": 0}.get(logger, 1)
    if logger in ("wandb", "many"):
        assert cfg.logger.wandb.offline is True  # no account configured: W&B must not try the network


@pytest.mark.parametrize("callbacks", [*options("callbacks"), "[default,early_stopping]"])
def test_callback_options(tmp_path: Path, callbacks: str) -> None:
    cfg = compose_config([f"callbacks={callbacks}"], tmp_path)
    check_config(cfg)
    built = instantiate_all(cfg.callbacks, "callback")
    assert all(isinstance(callback, L.Callback) for callback in built)
    assert (not built) if callbacks == "none" else built


@pytest.mark.parametrize("debug", options("debug"))
def test_debug_options(tmp_path: Path, debug: str) -> None:
    cfg = compose_config([f"debug={debug}"], tmp_path)
    check_config(cfg)
    assert isinstance(hydra.utils.instantiate(cfg.trainer, _convert_="all"), L.Trainer)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_options(tmp_path: Path, experiment: str) -> None:
    overrides = [f"experiment={experiment}"]
    if OmegaConf.is_missing(compose_config(overrides, tmp_path).data, "path"):  # the user's own images: a folder
        overrides.append(f"data.path={tmp_path}")  # (an empty one will do)
    cfg = compose_config(overrides, tmp_path)
    if "image_shape" in cfg.data:  # a recipe over a first stage: an untrained one of the data's images
        first_stages = built_on(get_object(cfg.model._target_), cfg.data.image_shape)
        cfg = compose_config([*overrides, *first_stages], tmp_path)
    check_config(cfg)
    assert cfg.task_name == experiment
    build_model(cfg.model)
    hydra.utils.instantiate(cfg.data, _convert_="all")


def test_hydra_paths_and_extras_compose() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="train", return_hydra_config=True)
    # down to microseconds, so that two runs started in the same second get folders of their own
    assert re.fullmatch(r"\./outputs/train/runs/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}", cfg.hydra.run.dir)
    assert cfg.paths.data_dir in (os.environ.get("DATA_DIR"), "./data")
    assert cfg.hydra.job.chdir is False
    assert cfg.extras.print_config == "short"


def test_hyperparameters_in_checkpoints_are_plain_containers(tmp_path: Path) -> None:
    cfg = compose_config(["model=ae", "data=cifar10", "model.channels=[32,64]"], tmp_path)
    module = hydra.utils.instantiate(cfg.model, _convert_="all")
    assert type(module.hparams.image_shape) is list and type(module.hparams.channels) is list
    path = tmp_path / "hparams.pt"
    torch.save({"hparams": dict(module.hparams)}, path)
    assert torch.load(path, weights_only=True)["hparams"]["image_shape"] == [3, 32, 32]


def test_check_config_rejects_wrong_types_and_unknown_keys(tmp_path: Path) -> None:
    cfg = compose_config(["data.batch_size=abc"], tmp_path)
    with pytest.raises(
        ConfigError, match=r"data.batch_size='abc' is not valid for FashionMNISTDataModule: expected int"
    ):
        check_config(cfg)
    cfg = compose_config(["model.loss=l1"], tmp_path)
    with pytest.raises(
        ConfigError, match=r"model.loss='l1' is not valid for Autoencoder: expected Literal\['bce', 'mse'\]"
    ):
        check_config(cfg)
    cfg = compose_config(["+model.latent_size=3"], tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"model.latent_size: Autoencoder has no parameter 'latent_size'; it takes image_shape, latent_dim",
    ):
        check_config(cfg)
    OmegaConf.set_struct(cfg, False)


# every bound and choice that a family's constructor declares, a value just outside it each, read from the declarations
BREACHES = [breach for model in options("model") for breach in declared_breaches(model)]


def declarations(hint: Any) -> int:
    """How many bounds and choices a type hint declares anywhere in it: each constraint of an `Annotated` (pydantic's
    Field(ge=1) holds annotated_types.Ge(1); Strict says how a value is read, not where it may lie), each Literal.
    Counted over the whole tree, whatever the kind of node, unlike declared_breaches, which must know each kind."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        constraints = [bound for declared in args[1:] for bound in getattr(declared, "metadata", [declared])]
        declared = [bound for bound in constraints if isinstance(bound, BaseMetadata) and not isinstance(bound, Strict)]
        return declarations(args[0]) + len(declared)
    if origin is typing.Literal:
        return 1
    return sum(declarations(arg) for arg in args if arg is not Ellipsis)


@pytest.mark.parametrize("model", sorted(options("model")))
def test_every_range_a_family_declares_is_stepped_past(model: str) -> None:
    """One Breach per declaration of the family's constructor: a bound or choice that declared_breaches does not
    read (a kind of node it does not walk, a tuple without a default) would be checked by no test."""
    cls = model_class(model)
    declared = {name: declarations(hint) for name, hint, _ in annotated_parameters(cls)}
    stepped_past = collections.Counter(breach.name for breach in BREACHES if breach.model == model)
    assert sum(declared.values()) > 0, f"{cls.__name__} declares no range"
    assert stepped_past == +collections.Counter(declared), (
        f"{cls.__name__}: breaches per parameter against its declarations"
    )


@pytest.mark.parametrize("breach", BREACHES, ids=str)
def test_a_value_past_a_declared_bound_is_refused_alike_by_config_constructor_and_checkpoint(
    breach: Breach, tmp_path: Path
) -> None:
    cfg = family_config(breach.model, tmp_path / "run")
    cfg.model[breach.name] = breach.value
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)  # what src.train runs first
    message = str(caught.value)
    cls = model_class(breach.model)
    assert message.startswith(f"model.{breach.name}={breach.value!r} is not valid for {cls.__name__}: expected ")
    # the model built in Python: the same check, from the same declaration
    arguments = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "_target_"}
    with pytest.raises(ConfigError) as built:
        cls(**arguments)
    assert str(built.value) == message
    # a checkpoint's hyperparameters, as genlab/checkpoints/rebuild.py reads them before it builds anything
    with pytest.raises(CheckpointError) as loaded:
        checked_arguments(cls, arguments, "hyper_parameters", "a.ckpt")
    assert str(loaded.value) == "a.ckpt: hyper_parameters." + message.removeprefix("model.")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.lr=inf"], "model.lr=inf"),
        (["model.lr=-inf"], "model.lr=-inf"),
        (["model=vae", "model.beta=nan"], "model.beta=nan"),
        (["model=gan", "model.betas=[nan,0.9]"], "model.betas[0]=nan"),
        (["model=diffusion", "model.guidance_scale=nan"], "model.guidance_scale=nan"),
        (["model=gpt", "data=shakespeare", "model.betas=[0.9,inf]"], "model.betas[1]=inf"),
        (["trainer.gradient_clip_val=inf"], "trainer.gradient_clip_val=inf"),
        (["data.batch_size=nan"], "data.batch_size=nan"),
        (["model=gpt", "data=shakespeare", "data.train_fraction=inf"], "data.train_fraction=inf"),
        (
            ["callbacks=[default,early_stopping]", "callbacks.early_stopping.min_delta=-inf"],
            "callbacks.early_stopping.min_delta=-inf",
        ),
        (
            ["callbacks=[default,sample_fid]", "callbacks.sample_fid.min_label_entropy=nan"],
            "callbacks.sample_fid.min_label_entropy=nan",
        ),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_key(tmp_path: Path, overrides: list[str], message: str) -> None:
    cfg = compose_config(overrides, tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    assert str(caught.value) == f"{message}: must be a finite number"


@pytest.mark.parametrize(
    ("task_name", "is_folder_name"),
    [
        ("train", True),
        ("gan_fashion_mnist", True),
        ("run-1.2", True),
        (2024, True),
        ("../elsewhere", False),
        ("a/b", False),
        ("/tmp/run", False),
        (".hidden", False),
        ("..", False),
        ("with space", False),
        ("", False),
        (None, False),
    ],
)
def test_task_name_must_be_a_plain_folder_name(
    tmp_path: Path, task_name: str | int | None, is_folder_name: bool
) -> None:
    cfg = compose_config([], tmp_path)
    cfg.task_name = task_name
    if is_folder_name:
        check_config(cfg)
    else:
        with pytest.raises(ConfigError, match=r"^task_name=.*: must be a plain folder name"):
            check_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "metric", "strategy"),
    [
        (["model=ae"], "val/loss", "ddp"),
        (["model=gan"], None, "ddp_find_unused_parameters_true"),
        (["experiment=gan_fashion_mnist"], None, "ddp_find_unused_parameters_true"),  # a recipe's `override /model`
        (["model=gan", "monitor.metric=val/fid"], "val/fid", "ddp_find_unused_parameters_true"),
        (["model=gan", "ddp_strategy=ddp"], None, "ddp"),
        (["experiment=diffusion_fashion_mnist"], "val/loss", "ddp"),  # a diffusion model has a validation loss
        (["hparams_search=gan_optuna"], "val/fid", "ddp_find_unused_parameters_true"),
    ],
)
def test_model_settings_follow_the_chosen_model(
    tmp_path: Path, overrides: list[str], metric: str | None, strategy: str
) -> None:
    cfg = compose_config(overrides, tmp_path)
    assert (cfg.monitor.metric, cfg.ddp_strategy) == (metric, strategy)


def test_model_settings_are_named_after_model_options() -> None:
    assert set(options("model_settings")) <= set(options("model"))
