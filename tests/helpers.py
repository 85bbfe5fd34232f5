"""What the tests share: paths, tiny-run overrides, composed configs, small datasets in the real file formats,
and the ways to start genlab's commands. Fixtures live in conftest.py; test modules import from here only."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import io
import logging
import math
import os
import subprocess
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import annotated_types
import lightning
import numpy as np
import PIL.Image
import pydantic
import torch
import torchvision
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from benchmarks.commands import ROOT as ROOT  # the repository root, for the test modules
from benchmarks.commands import run, start
from genlab.checkpoints.rebuild import builds_on
from genlab.data.images import CIFAR10DataModule, MNISTDataModule
from genlab.models.gpt import GPT
from genlab.models.vae import VAE
from genlab.train import train
from genlab.utils.config import CONF_DIR, compose
from genlab.utils.validation import signature

# Overrides that make any training config small and quiet enough for a test.
TEST_OVERRIDES = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "~callbacks.rich_progress_bar",
    "extras.print_config=false",
]


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The training config as `python -m src.train <overrides>` composes it, writing into output_dir."""
    return compose([f"paths.output_dir={output_dir}", f"paths.log_dir={output_dir.parent}", *overrides])


def shared_data_dir() -> Path | None:
    """The folder DATA_DIR names, if set and present (CI sets it to ../shared/data)."""
    data_dir = os.environ.get("DATA_DIR")
    return Path(data_dir) if data_dir and Path(data_dir).is_dir() else None


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format of MNIST (magic 0x0000080N, big-endian dims, data)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_raw(raw_dir: Path, num_train: int = 600, num_test: int = 100, seed: int = 0) -> None:
    """Random 28x28 digits-shaped data with labels, in MNIST's four raw IDX files."""
    rng = np.random.default_rng(seed)
    raw_dir.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", num_train), ("t10k", num_test)):
        write_idx(raw_dir / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(raw_dir / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))


class LocalCIFAR10(torchvision.datasets.CIFAR10):
    """CIFAR-10 with the checksums of the small batches that `cifar10_dir` writes."""


class LocalCIFAR10DataModule(CIFAR10DataModule):
    dataset_cls = LocalCIFAR10


class ServedMNIST(torchvision.datasets.MNIST):
    """MNIST whose resources are the gzipped files that `mnist_server` serves (their own checksums)."""


class ServedMNISTDataModule(MNISTDataModule):
    dataset_cls = ServedMNIST


QUICK = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "extras.print_config=false",
]


def write_class_folders(root: Path, per_class: int, size: int) -> Path:
    """A folder of the user's images for data=image_folder: random RGB PNGs of size x size in two class subfolders."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def start_train(
    *overrides: str, env: dict[str, str] | None = None, log: Path | None = None, new_session: bool = False
) -> subprocess.Popen:
    """`python -m src.train <overrides>` started (benchmarks.commands.start): output to text pipes, or to `log`."""
    return start("src.train", overrides, env=env, log=log, new_session=new_session)


def run_train(*overrides: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_module("src.train", *overrides, env=env)


def run_module(
    module: str, *arguments: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python -m <module> <arguments>` run to its end (benchmarks.commands.run), stdout and stderr captured as text."""
    return run(module, arguments, env=env, timeout=timeout)


def run_main(main: Callable[[], Any], *arguments: str) -> subprocess.CompletedProcess:
    """An entry point's `main` run in this process on the command line `arguments`, as `python -m` runs it: Hydra's
    parsing, its callbacks and run folder, exit_on_user_error; the exit status Python makes of a SystemExit, and
    what was printed. Seconds, where run_module spends most of its start-up importing torch."""
    stdout, stderr = io.StringIO(), io.StringIO()
    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.Logger.manager.loggerDict))]
    before = [(logger, logger.handlers[:], logger.level, logger.propagate, logger.disabled) for logger in loggers]
    argv = [main.__module__, *arguments]
    hydra_config = HydraConfig.instance().cfg  # Hydra leaves the run's config set, as for a process that ends
    returncode = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            saved_argv, sys.argv = sys.argv, argv
            try:
                main()
            except SystemExit as exit_info:  # as Python ends on one: None is 0, a number itself, else printed and 1
                code = exit_info.code
                returncode = code if isinstance(code, int) else 0 if code is None else 1
                if not isinstance(code, int | None):
                    print(code, file=sys.stderr)
            finally:
                sys.argv = saved_argv
    finally:
        HydraConfig.instance().cfg = hydra_config
        # Hydra configured logging for the run (handlers on the redirected streams and the run's log file): undone
        for logger, handlers, level, propagate, disabled in before:
            for handler in set(logger.handlers) - set(handlers):
                handler.close()
            logger.handlers[:], logger.level, logger.propagate, logger.disabled = handlers, level, propagate, disabled
    return subprocess.CompletedProcess(argv, returncode, stdout.getvalue(), stderr.getvalue())


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def families() -> dict[str, str]:
    """The registry of model families (conf/model/, one YAML per family): each `model=` option and the class it
    builds. Every list of families in tests and benchmarks is held to it, by the test beside the list."""
    return {name: OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")._target_ for name in options("model")}


# every family of conf/model/ but the text one: what the refusals of an image dataset name as working with it
IMAGE_MODELS = [model for model in options("model") if model != "gpt"]


# --- a value just outside each range and choice that a family's constructor declares ---------------------------


class Breach(NamedTuple):
    """A setting of a model family set just outside one bound or choice that its constructor declares."""

    model: str  # the option of conf/model/
    name: str  # the constructor's parameter, model.<name> in a config
    value: Any  # plain: what a config or a checkpoint holds
    bound: str  # the declaration it breaks, for the test's id

    def __str__(self) -> str:
        return f"{self.model}:{self.name}={self.value!r}({self.bound})"


def model_class(model: str) -> type:
    """The class that conf/model/<model>.yaml instantiates."""
    return get_object(OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml")._target_)


def declared_breaches(model: str, declaration: type | None = None) -> list[Breach]:
    """A Breach for each bound and choice declared in the signature of `model`'s constructor (or of `declaration`,
    an entry point's options, `model` then naming it): read from the annotations, so that a constraint declared
    tomorrow is tested with no test written for it."""
    return [
        Breach(model, name, value, bound)
        for name, hint, default in annotated_parameters(declaration or model_class(model))
        for value, bound in _outside(hint, None if default is inspect.Parameter.empty else default)
    ]


def annotated_parameters(cls: type) -> Iterator[tuple[str, Any, Any]]:
    """(name, type hint, default or inspect.Parameter.empty) of each parameter of `cls` that has a type hint; a
    subclass that passes **kwargs on (latent diffusion) declares its parent's parameters too, as check_config reads."""
    _, hints, _ = signature(cls)
    parameters = {}
    for klass in reversed(inspect.getmro(cls)):
        if "__init__" in vars(klass):
            parameters |= inspect.signature(klass.__init__).parameters
    for name, hint in hints.items():
        if name in parameters:
            yield name, hint, parameters[name].default


def _outside(hint: Any, default: Any) -> Iterator[tuple[Any, str]]:
    """(value, the declaration it breaks) for each bound and choice in a type hint: just past each end of a range,
    one item of a tuple past its items' range, a tuple one item short of its least length, a word that is no
    choice. A kind of bound it cannot step past fails, so that this learns every kind the families use."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        for declaration in args[1:]:
            for bound in getattr(declaration, "metadata", []):  # pydantic's Field(ge=1) holds annotated_types.Ge(1)
                if not isinstance(bound, pydantic.types.Strict):  # how a value is read, not where it may lie
                    yield _past(bound, args[0], default)
        yield from _outside(args[0], default)
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _outside(arg, default)
    elif origin is typing.Literal:
        yield "no_such_choice", "one of " + "/".join(map(str, args))
    elif origin is tuple and args[-1] is Ellipsis:  # tuple[int, ...]: its items are alike, the first stands for all
        rest = list(default or [])[1:]  # a default of None (chosen by the data): a tuple of the one item
        for value, bound in _outside(args[0], default[0] if default else None):
            yield [value, *rest], f"[0] {bound}"
    elif origin is tuple:  # a fixed tuple (an image shape, given by the data: no default): from ones, each in turn
        base = list(default) if default else [1] * len(args)
        for i in range(len(args)):
            for value, bound in _outside(args[i], base[i]):
                yield [*base[:i], value, *base[i + 1 :]], f"[{i}] {bound}"


def _past(bound: Any, base: Any, default: Any) -> tuple[Any, str]:
    whole = base is int
    if isinstance(bound, annotated_types.Gt):
        return (bound.gt if whole else float(bound.gt)), f"> {bound.gt}"
    if isinstance(bound, annotated_types.Lt):
        return (bound.lt if whole else float(bound.lt)), f"< {bound.lt}"
    if isinstance(bound, annotated_types.Ge):
        return (bound.ge - 1 if whole else math.nextafter(bound.ge, -math.inf)), f">= {bound.ge}"
    if isinstance(bound, annotated_types.Le):
        return (bound.le + 1 if whole else math.nextafter(bound.le, math.inf)), f"<= {bound.le}"
    if isinstance(bound, annotated_types.MinLen):
        return list(default or [])[: bound.min_length - 1], f"at least {bound.min_length} item(s)"
    if isinstance(bound, annotated_types.MaxLen):
        return (list(default or []) or [1])[:1] * (bound.max_length + 1), f"at most {bound.max_length} items"
    raise AssertionError(f"declared_breaches cannot step past {bound!r}: teach tests/helpers.py._past this kind")


# --- every number a signature declares, at an absurd size ---------------------------------------------------------

ABSURD_INT, ABSURD_FLOAT, ABSURD_LENGTH = 2**40, 1e300, 1_000


def absurd_sizes(model: str, given: dict[str, Any], declaration: type | None = None) -> list[Breach]:
    """A Breach for each number in the signature of `model`'s constructor (or of `declaration`) set to an absurd size:
    a whole number to 2**40, any other to 1e300, each item of a tuple in turn, and a tuple of any length to 1,000
    items. Tuples start from their default, or from `given` (the config's values) where there is none."""
    return [
        Breach(model, name, value, what)
        for name, hint, default in annotated_parameters(declaration or model_class(model))
        for value, what in _absurd(hint, given.get(name) if default in (inspect.Parameter.empty, None) else default)
    ]


def _absurd(hint: Any, base: Any) -> Iterator[tuple[Any, str]]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        yield from _absurd(args[0], base)
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _absurd(arg, base)
    elif hint is int:
        yield ABSURD_INT, "absurd"
    elif hint is float:
        yield ABSURD_FLOAT, "absurd"
    elif origin is tuple and (base or args[-1] is Ellipsis):
        base = list(base) if base else [1]  # a tuple null by default (stages by the image size): from one item
        items = [args[0]] * len(base) if args[-1] is Ellipsis else args
        for i, item in enumerate(items):
            for value, what in _absurd(item, base[i]):
                yield [*base[:i], value, *base[i + 1 :]], f"[{i}] {what}"
        if args[-1] is Ellipsis:
            yield base[:1] * ABSURD_LENGTH, "absurd length"


# what each family needs of its data beyond the default dataset
PAIRED_DATA = {"gpt": ["data=shakespeare"]}


def family_config(model: str, output_dir: Path) -> DictConfig:
    """`model=<model>`'s training config (with the data it pairs with, and the trained models it builds on),
    writing into output_dir: composed once per process, a copy each call, for matrices that change one value per
    case."""
    cfg = copy.deepcopy(_composed(model))
    cfg.paths.output_dir, cfg.paths.log_dir = str(output_dir), str(output_dir.parent)
    return cfg


@functools.cache
def _composed(model: str) -> DictConfig:
    overrides = [f"model={model}", *PAIRED_DATA.get(model, []), *built_on(model_class(model))]
    return compose_config(overrides, Path("never-made/run"))


# --- the trained models a family builds on (latent diffusion's first stage) ---------------------------------------
DATA_IMAGE_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
_FIRST_STAGES = tempfile.TemporaryDirectory(prefix="genlab-test-first-stages-")  # removed as the process ends


def built_on(cls: type, image_shape: tuple[int, int, int] = (1, 28, 28)) -> list[str]:
    """The overrides that give a model of class `cls` the trained models it builds on (none for most families): an
    untrained first stage of images of `image_shape` for each."""
    return [f"model.{name}={first_stage(tuple(image_shape))}" for name in builds_on(cls)]


@functools.cache
def first_stage(image_shape: tuple[int, int, int] = (1, 28, 28), seed: int = 0) -> Path:
    """The checkpoint of an untrained first stage of images of `image_shape` (a VAE whose latent is a 2-channel map
    at half the image's size), written once per process in the form src.train gives its checkpoints: for the tests
    in which the first stage's training does not matter. Another seed: other weights."""
    torch.manual_seed(seed)
    vae = VAE(image_shape, latent_dim=2, architecture="spatial", channels=(8,))
    hyper_parameters = dict(vae.hparams)
    path = Path(_FIRST_STAGES.name) / f"first_stage-{'x'.join(map(str, image_shape))}-{seed}.ckpt"
    config = {"model": {"_target_": "genlab.models.vae.VAE", **hyper_parameters}}
    torch.save({"state_dict": vae.state_dict(), "hyper_parameters": hyper_parameters, "config": config}, path)
    return path


# --- small checkpoints of real runs and models, for the tests of what reads them ---------------------------------


def short_autoencoder_run(root: Path) -> Path:
    """A short autoencoder run on MNIST-format files written to root/data (src.train's defaults, TEST_OVERRIDES, its
    channels given as a list: by default null, by the image size, and a list in the hyperparameters to plant into);
    its last checkpoint."""
    write_mnist_raw(root / "data" / "MNIST" / "raw")
    overrides = [
        *TEST_OVERRIDES,
        "data=mnist",
        "data.val_size=100",
        f"paths.data_dir={root / 'data'}",
        "test=false",
        "model.channels=[32,64]",
    ]
    train(compose_config(overrides, root / "run"))
    return root / "run" / "checkpoints" / "last.ckpt"


def save_gpt(path: Path, vocab: str, **hyper_parameters: Any) -> None:
    """A one-layer GPT's checkpoint as src.train writes one, with `hyper_parameters` written over its own."""
    model = GPT(block_size=8, vocab=vocab, n_layer=1, n_head=2, n_embd=16)
    model.configure_model()
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": {**dict(model.hparams), **hyper_parameters},
            "config": {
                "model": {"_target_": "genlab.models.gpt.GPT"},
                "data": {"_target_": "genlab.data.text.ShakespeareDataModule", "block_size": 8},
            },
            "global_step": 0,
            "epoch": 0,
            "pytorch-lightning_version": lightning.__version__,
            "optimizer_states": [],  # a full checkpoint's keys (a weights-only one has none): resumable
            "lr_schedulers": [],
        },
        path,
    )
