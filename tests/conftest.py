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

from tests.helpers import LocalCIFAR10, ServedMNIST, shared_data_dir, write_mnist_raw

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one pytest worker per core (pyproject.toml): one thread each, in this process and in the commands the
    # tests start, or the workers' thread pools fight over the cores (a GAN test ran 7x slower)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


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


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    write_mnist_raw(tmp_path / "MNIST" / "raw")
    return tmp_path


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
