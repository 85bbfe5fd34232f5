"""Image DataModules: batches, splits, downloads and bad files, on real files in the real formats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision

from genlab.data.images import FashionMNISTDataModule, MNISTDataModule
from genlab.errors import ConfigError, CorruptDatasetError, DatasetNotFoundError
from tests.helpers import LocalCIFAR10, LocalCIFAR10DataModule, ServedMNIST, ServedMNISTDataModule

MNIST_SHAPE = {"image_shape": (1, 28, 28), "num_classes": 10}


def _ready(datamodule, stage: str | None = None):
    datamodule.prepare_data()
    datamodule.setup(stage)
    return datamodule


def _check_batch(batch, batch_size: int, image_shape: tuple[int, int, int]) -> None:
    images, labels = batch
    assert images.shape == (batch_size, *image_shape)
    assert images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.shape == (batch_size,) and labels.dtype == torch.int64
    assert 0 <= labels.min() and labels.max() < 10


def test_fashion_mnist_batches_and_splits(fashion_mnist_dir: Path) -> None:
    datamodule = _ready(FashionMNISTDataModule(str(fashion_mnist_dir), **MNIST_SHAPE, batch_size=64))
    assert (len(datamodule.data_train), len(datamodule.data_val), len(datamodule.data_test)) == (55000, 5000, 10000)
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader(), datamodule.test_dataloader()):
        _check_batch(next(iter(loader)), 64, (1, 28, 28))
    # the images are real garments, not noise: the mean intensity of Fashion-MNIST is about 0.29
    assert 0.2 < datamodule.data_test.images.float().mean().item() / 255 < 0.4


def test_validation_split_is_seeded(mnist_dir: Path) -> None:
    first, again, other = (
        _ready(MNISTDataModule(str(mnist_dir), **MNIST_SHAPE, val_size=100, seed=seed), "fit") for seed in (1, 1, 2)
    )
    assert torch.equal(first.data_val.images, again.data_val.images)
    assert not torch.equal(first.data_val.images, other.data_val.images)
    # train and val partition the train split
    assert len(first.data_train) + len(first.data_val) == 600


def test_mnist_batches_from_idx_files(mnist_dir: Path) -> None:
    datamodule = _ready(MNISTDataModule(str(mnist_dir), **MNIST_SHAPE, batch_size=32, val_size=100))
    assert (len(datamodule.data_train), len(datamodule.data_val), len(datamodule.data_test)) == (500, 100, 100)
    _check_batch(next(iter(datamodule.train_dataloader())), 32, (1, 28, 28))
    _check_batch(next(iter(datamodule.test_dataloader())), 32, (1, 28, 28))


def test_mnist_downloads_from_the_first_mirror_that_serves_it(tmp_path: Path, mnist_server: str) -> None:
    data_dir = tmp_path / "data"
    mirrors = ["http://127.0.0.1:9/", mnist_server]  # the first refuses connections
    datamodule = ServedMNISTDataModule(str(data_dir), **MNIST_SHAPE, batch_size=16, val_size=50, mirrors=mirrors)
    _ready(datamodule)
    assert ServedMNIST.mirrors == torchvision.datasets.MNIST.mirrors  # torchvision's classes are left alone
    raw_files = sorted(path.name for path in (data_dir / "ServedMNIST" / "raw").iterdir() if path.suffix != ".gz")
    assert raw_files == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]
    assert (len(datamodule.data_train), len(datamodule.data_test)) == (250, 50)
    _check_batch(next(iter(datamodule.train_dataloader())), 16, (1, 28, 28))


def test_cifar10_batches(cifar10_dir: Path) -> None:
    datamodule = LocalCIFAR10DataModule(
        str(cifar10_dir), image_shape=(3, 32, 32), num_classes=10, batch_size=8, val_size=10
    )
    _ready(datamodule)
    assert (len(datamodule.data_train), len(datamodule.data_val), len(datamodule.data_test)) == (90, 10, 20)
    _check_batch(next(iter(datamodule.train_dataloader())), 8, (3, 32, 32))


def test_cifar10_corrupt_batch_is_named(cifar10_dir: Path) -> None:
    batch = cifar10_dir / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:-100])
    datamodule = LocalCIFAR10DataModule(str(cifar10_dir), image_shape=(3, 32, 32), num_classes=10, val_size=10)
    with pytest.raises(CorruptDatasetError, match=r"data_batch_3: its MD5 checksum is not CIFAR-10's"):
        _ready(datamodule)


@pytest.mark.parametrize("download", [True, False])
def test_missing_dataset_without_network_says_where_and_what(tmp_path: Path, download: bool) -> None:
    # 127.0.0.1:9 (discard) refuses connections: as good as no network, and fast
    datamodule = MNISTDataModule(str(tmp_path), **MNIST_SHAPE, download=download, mirrors=["http://127.0.0.1:9/"])
    with pytest.raises(DatasetNotFoundError) as caught:
        datamodule.prepare_data()
    message = str(caught.value)
    assert f"MNIST was not found in {tmp_path / 'MNIST' / 'raw'}" in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "DATA_DIR" in message
    assert ("the download failed" if download else "data.download=false") in message
    assert "Traceback" not in message
    assert list(tmp_path.iterdir()) == []  # the failed download left no empty MNIST/raw behind


def test_mnist_download_of_wrong_files_leaves_no_folder_behind(
    tmp_path: Path, mnist_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the local server answers, but with files whose checksums are not the expected ones
    monkeypatch.setattr(ServedMNIST, "resources", [(name, "0" * 32) for name, _ in ServedMNIST.resources])
    datamodule = ServedMNISTDataModule(str(tmp_path / "data"), **MNIST_SHAPE, mirrors=[mnist_server])
    with pytest.raises(DatasetNotFoundError, match="the download failed"):
        datamodule.prepare_data()
    assert not (tmp_path / "data").exists()  # neither data/ServedMNIST/raw nor the archive that failed its check


@pytest.mark.parametrize("dataset", ["fashion_mnist", "cifar10"])
def test_download_from_nowhere_leaves_no_folder_behind(
    tmp_path: Path, dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 127.0.0.1:9 refuses connections
    if dataset == "cifar10":
        monkeypatch.setattr(LocalCIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
        datamodule = LocalCIFAR10DataModule(str(tmp_path / "data"), image_shape=(3, 32, 32), num_classes=10)
    else:
        datamodule = FashionMNISTDataModule(str(tmp_path / "data"), **MNIST_SHAPE, mirrors=["http://127.0.0.1:9/"])
    with pytest.raises(DatasetNotFoundError, match=rf"{datamodule.dataset_name} was not found .*the download failed"):
        datamodule.prepare_data()
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_is_named_and_left_alone(mnist_dir: Path) -> None:
    images = mnist_dir / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    before = (images.read_bytes(), os.stat(images).st_mtime_ns)
    datamodule = MNISTDataModule(str(mnist_dir), **MNIST_SHAPE, mirrors=["http://127.0.0.1:9/"])
    with pytest.raises(CorruptDatasetError, match=rf"{images}: the header declares shape \[600, 28, 28\]"):
        _ready(datamodule)
    assert (images.read_bytes(), os.stat(images).st_mtime_ns) == before


def test_wrong_file_is_named(mnist_dir: Path) -> None:
    raw = mnist_dir / "MNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").write_bytes((raw / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(
        CorruptDatasetError, match=r"t10k-images-idx3-ubyte: holds an array of shape \[100\], expected 3"
    ):
        _ready(MNISTDataModule(str(mnist_dir), **MNIST_SHAPE), "test")
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(CorruptDatasetError, match=r"t10k-images-idx3-ubyte: not an IDX file"):
        _ready(MNISTDataModule(str(mnist_dir), **MNIST_SHAPE), "test")


def test_incomplete_folder_is_not_overwritten(mnist_dir: Path, mnist_server: str) -> None:
    (mnist_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    kept = (mnist_dir / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    with pytest.raises(DatasetNotFoundError, match=r"incomplete .*missing t10k-labels-idx1-ubyte"):
        MNISTDataModule(str(mnist_dir), **MNIST_SHAPE, mirrors=[mnist_server]).prepare_data()
    assert (mnist_dir / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes() == kept


def test_shape_in_config_must_match_the_dataset(mnist_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.image_shape=\[3, 32, 32\].*MNIST: its images are \[1, 28, 28\]"):
        MNISTDataModule(str(mnist_dir), image_shape=(3, 32, 32), num_classes=10)
