"""What the tests share: paths, tiny-run overrides, composed configs, small datasets in the real file formats,
and the ways to start genlab's commands. Fixtures live in conftest.py; test modules import from here only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import torchvision
from omegaconf import DictConfig

from benchmarks.commands import ROOT as ROOT  # the repository root, for the test modules
from benchmarks.commands import run, start
from src.data.images import CIFAR10DataModule, MNISTDataModule
from src.utils.config import CONF_DIR, compose

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


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


# every family of conf/model/ but the text one: what the refusals of an image dataset name as working with it
IMAGE_MODELS = [model for model in options("model") if model != "gpt"]
