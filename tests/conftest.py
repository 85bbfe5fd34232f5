"""Shared fixtures: composed configs, small datasets written in the real file formats, a local HTTP server."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from omegaconf import DictConfig

from src.data.images import CIFAR10DataModule, MNISTDataModule
from src.utils.config import compose

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one pytest worker per core (pyproject.toml): one thread each, in this process and in the commands the
    # tests start, or the workers' thread pools fight over the cores (a GAN test ran 7x slower)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

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


# CI with the datasets (the public workflow, .ci/run beside ../shared/data) sets GENLAB_REQUIRE_DATA=1: there a test
# that skips for want of data (its reason names $DATA_DIR) fails instead, so a lost dataset cannot shrink the suite
REQUIRE_DATA = os.environ.get("GENLAB_REQUIRE_DATA") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = (yield).get_result()
    reason = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else ""
    if REQUIRE_DATA and "DATA_DIR" in reason:
        report.outcome = "failed"
        report.longrepr = f"GENLAB_REQUIRE_DATA=1, and the test would skip for want of data: {reason}"


@pytest.fixture
def fashion_mnist_dir() -> Path:
    data_dir = shared_data_dir()
    if data_dir is None or not (data_dir / "FashionMNIST" / "raw").is_dir():
        pytest.skip("Fashion-MNIST is not under $DATA_DIR (set DATA_DIR=../shared/data)")
    return data_dir


@pytest.fixture(scope="session")
def shakespeare_dir() -> Path:
    data_dir = shared_data_dir()
    if data_dir is None or not (data_dir / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip("Tiny Shakespeare is not under $DATA_DIR (set DATA_DIR=../shared/data)")
    return data_dir


# --- small datasets in the real on-disk formats -------------------------------------------------


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


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    write_mnist_raw(tmp_path / "MNIST" / "raw")
    return tmp_path


class LocalCIFAR10(torchvision.datasets.CIFAR10):
    """CIFAR-10 with the checksums of the small batches that `cifar10_dir` writes."""


class LocalCIFAR10DataModule(CIFAR10DataModule):
    dataset_cls = LocalCIFAR10


@pytest.fixture
def cifar10_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Six pickled batches of 20 random images each and batches.meta, in CIFAR-10's python layout."""
    folder = tmp_path / LocalCIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5 = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, 20).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    meta_md5 = hashlib.md5((folder / "batches.meta").read_bytes()).hexdigest()
    monkeypatch.setattr(LocalCIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(LocalCIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(LocalCIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": meta_md5})
    return tmp_path


class ServedMNIST(torchvision.datasets.MNIST):
    """MNIST whose resources are the gzipped files that `mnist_server` serves (their own checksums)."""


class ServedMNISTDataModule(MNISTDataModule):
    dataset_cls = ServedMNIST


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a folder; yields (base URL, folder)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    server.shutdown()
    server.server_close()


@pytest.fixture
def mnist_server(http_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> str:
    """Serve gzipped MNIST-format files as torchvision downloads them; returns the mirror URL."""
    url, folder = http_server
    raw = folder / "raw"
    write_mnist_raw(raw, num_train=300, num_test=50, seed=1)
    resources = []
    for path in sorted(raw.iterdir()):
        archive = folder / f"{path.name}.gz"
        archive.write_bytes(gzip.compress(path.read_bytes()))
        resources.append((archive.name, hashlib.md5(archive.read_bytes()).hexdigest()))
    monkeypatch.setattr(ServedMNIST, "resources", resources)
    return url


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # keep the test output clean
        pass
