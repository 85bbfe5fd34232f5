"""Image DataModules (MNIST, Fashion-MNIST, CIFAR-10), held in memory as one uint8 tensor each.

torchvision's dataset classes read and download the files; after that, batches are cut from
the tensor by indexing. The per-item path (PIL image -> ToTensor -> collate) is what limits
training speed on a couple of CPU cores, and these datasets are small enough to keep whole.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import lightning as L
import torch
import torchvision
from pydantic import Field
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from genlab.data.batching import batch_loader, check_on_device, data_device
from genlab.data.folders import removed_if_failed
from genlab.errors import ConfigError, CorruptDatasetError, DatasetNotFoundError, one_line
from genlab.utils.validation import check_arguments

# a count of images, or a fraction of them
ValSize = Annotated[int, Field(ge=1)] | Annotated[float, Field(gt=0, lt=1)]


class TensorImageDataset(Dataset):
    """Images (N, C, H, W) uint8 and labels (N,) int64; items are float images in [0, 1]."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index].float().div_(255), self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        # The DataLoader hands over a whole batch of indices: one gather instead of B items, where the images are
        index = torch.as_tensor(indices)
        if self.images.is_cuda:  # pinned and asynchronous: a copy from pageable memory would wait for the GPU
            index = index.pin_memory().to(self.images.device, non_blocking=True)
        return self.images[index].float().div_(255), self.labels[index]  # (B, C, H, W), (B,)

    def to(self, device: torch.device) -> TensorImageDataset:
        """The same dataset held on `device`, whose batches are gathered and converted there."""
        return TensorImageDataset(self.images.to(device), self.labels.to(device))


class ImageDataModule(L.LightningDataModule):
    """Train/val/test splits of an image dataset held as uint8 tensors; val is a seeded slice of train.

    Subclasses know their files: which ones to expect, how to check one, and how to read a split into
    tensors. Here, those torchvision reads; genlab/data/image_folder.py, a folder of the user's images.
    """

    dataset_cls: type[torchvision.datasets.VisionDataset]
    name: str  # as in conf/data/<name>.yaml; names the dataset's feature classifier, <name>.ckpt
    dataset_name: str  # for people
    image_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int

    def __init__(
        self,
        data_dir: str,
        image_shape: tuple[int, int, int],
        num_classes: int,
        batch_size: Annotated[int, Field(ge=1)] = 128,
        val_size: ValSize = 5000,
        num_workers: Annotated[int, Field(ge=0)] = 0,
        download: bool = True,
        seed: int = 42,
        on_device: bool | Literal["auto"] = "auto",
        random_flip: bool = False,
    ) -> None:
        super().__init__()
        # the ranges declared above, as a config's are held to them (genlab/utils/validation.py)
        ranges = {"batch_size": batch_size, "val_size": val_size, "num_workers": num_workers, "on_device": on_device}
        check_arguments(ImageDataModule, ranges, "data")
        # image_shape and num_classes are in the data config so that model configs can
        # interpolate them (${data.image_shape}); here we only check they are this dataset's.
        if tuple(image_shape) != self.image_shape or num_classes != self.num_classes:
            raise ConfigError(
                f"data.image_shape={list(image_shape)}, data.num_classes={num_classes} do not match "
                f"{self.dataset_name}: its images are {list(self.image_shape)} in {self.num_classes} classes"
            )
        check_on_device(on_device, num_workers)
        self.save_hyperparameters(logger=False)
        self.root = Path(data_dir).expanduser().resolve()
        self.batch_size = batch_size
        self.data_train: TensorImageDataset | None = None
        self.data_val: TensorImageDataset | None = None
        self.data_test: TensorImageDataset | None = None
        # the training batches' horizontal flips (data.random_flip): drawn on the batch (the tensors stay as they
        # are) from a generator of their own, the same on every DDP rank, saved in each checkpoint (state_dict)
        self.flips = torch.Generator().manual_seed(seed)

    # --- what each dataset knows about its files -------------------------------------------
    def expected_files(self) -> list[Path]:
        """Every file the dataset needs on disk, once downloaded and extracted."""
        raise NotImplementedError

    def check_file(self, path: Path) -> None:
        """Raise CorruptDatasetError if `path` is truncated or not the expected file."""
        raise NotImplementedError

    def download_files(self) -> None:
        """Fetch the files through torchvision's own download path."""
        self.dataset_cls(self.root, train=True, download=True)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        """Read the official train or test split: images (N, C, H, W) uint8, labels (N,) int64."""
        raise NotImplementedError

    # --- LightningDataModule hooks -----------------------------------------------------------
    def prepare_data(self) -> None:
        """Download the files if none are there yet; never overwrite files that are there."""
        missing = [path for path in self.expected_files() if not path.is_file()]
        if not missing:
            return
        folder = missing[0].parent
        expected = ", ".join(path.name for path in self.expected_files())
        if len(missing) < len(self.expected_files()):
            raise DatasetNotFoundError(
                f"{self.dataset_name} is incomplete in {folder}: missing "
                f"{', '.join(path.name for path in missing)} (expected {expected}). "
                f"Nothing was downloaded, so that the files there are not overwritten: "
                f"add the missing files, or empty the folder to download all of them again."
            )
        if not self.hparams.download:
            reason = "downloading is off (data.download=false)"
        else:
            try:
                with removed_if_failed(folder):
                    self.download_files()
                return
            except (OSError, RuntimeError) as err:  # urllib's URLError is an OSError
                reason = f"the download failed ({one_line(err)})"
        raise DatasetNotFoundError(
            f"{self.dataset_name} was not found in {folder} (expected {expected}), and {reason}. "
            f"Set DATA_DIR (or paths.data_dir) to the folder that holds "
            f"{folder.relative_to(self.root)}/, or run once with network access so that "
            f"torchvision can download it into {self.root} (data.download=false: never try)."
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and self.data_train is None:
            self._check_files()
            images, labels = self._checked_split(train=True)
            val_index, train_index = self.split_indices(len(images))
            if self.batch_size > len(train_index):
                raise ConfigError(
                    f"data.batch_size={self.batch_size} is larger than the training split: {len(train_index)} "
                    f"images ({len(images)} less data.val_size={len(val_index)})"
                )
            self.data_train = TensorImageDataset(images[train_index], labels[train_index])
            self.data_val = TensorImageDataset(images[val_index], labels[val_index])
        if stage in ("test", None) and self.data_test is None:
            self._check_files()
            self.data_test = TensorImageDataset(*self._checked_split(train=False))
        self._hold_on_device()

    def split_indices(self, count: int) -> tuple[Tensor, Tensor]:
        """(validation, training) positions among the `count` images of the train split: data.val_size of them (a
        number, or a fraction when below 1) validate. Seeded, so that the validation set, and so its loss, is the
        same in every run."""
        val_size = self.hparams.val_size
        val_size = max(1, round(val_size * count)) if val_size < 1 else int(val_size)
        if val_size >= count:
            raise ConfigError(
                f"data.val_size={self.hparams.val_size} leaves no training images: the train split has {count}"
            )
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.hparams.seed))
        return order[:val_size], order[val_size:]

    # --- where the tensors are held --------------------------------------------------------------
    def _hold_on_device(self) -> None:
        """Move the splits to the training device when `data.on_device` says so: each batch is then gathered and
        converted to float there, and no image crosses from the host per step. The sampler, and so the order of
        the batches and a resumed loader's position, are the same as on the host."""
        device = self.data_device()
        if device is None:
            return
        for name in ("data_train", "data_val", "data_test"):
            dataset = getattr(self, name)
            if dataset is not None and dataset.images.device != device:
                setattr(self, name, dataset.to(device))

    def data_device(self) -> torch.device | None:
        """The device to hold the images on, None for the host (genlab.data.batching.data_device's rule)."""
        splits = [d for d in (self.data_train, self.data_val, self.data_test) if d is not None]
        size = sum(d.images.nbytes + d.labels.nbytes for d in splits)
        return data_device(self.hparams.on_device, self.trainer, size, self.hparams.num_workers)

    def _checked_split(self, train: bool) -> tuple[Tensor, Tensor]:
        """A split, refused when its files are whole but hold other images or labels than the config says."""
        images, labels = self.load_split(train)
        shape, classes = tuple(images.shape[1:]), (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)
        most = max(self.hparams.num_classes, 1)  # unlabelled images (an image folder without classes) are all 0
        if shape != tuple(self.hparams.image_shape) or classes[0] < 0 or classes[1] >= most:
            raise CorruptDatasetError(
                f"{self.root}: the {'train' if train else 'test'} split of {self.dataset_name} holds images of shape "
                f"{list(shape)} with labels {classes[0]}..{classes[1]}, but the config expects "
                f"{list(self.hparams.image_shape)} with labels 0..{most - 1}: other files in their "
                f"place?"
            )
        return images, labels

    def _check_files(self) -> None:
        for path in self.expected_files():
            if not path.is_file():
                self.prepare_data()  # raises the clear "not found" error, or downloads
            self.check_file(path)

    # --- augmentation, on the batch ----------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """With data.random_flip, each training image is flipped left-right with probability 1/2, on the device
        the batch went to; validation and test images never are."""
        if not self.hparams.random_flip or self.trainer is None or not self.trainer.training:
            return batch
        images, labels = batch  # (B, C, H, W), (B,)
        flipped = torch.rand(len(images), generator=self.flips) < 0.5  # (B,), drawn on the host: a few bytes
        flipped = flipped.to(images.device, non_blocking=True).view(-1, 1, 1, 1)
        return torch.where(flipped, images.flip(-1), images), labels

    def state_dict(self) -> dict[str, Tensor]:
        """The flips' generator: a resumed run flips the images that the unbroken run would have flipped."""
        return {"flips": self.flips.get_state()} if self.hparams.random_flip else {}

    def load_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        state = state_dict.get("flips")
        if state is None:
            return
        if not isinstance(state, Tensor) or state.dtype != torch.uint8 or state.shape != self.flips.get_state().shape:
            raise CorruptDatasetError(
                f"the checkpoint's state of {type(self).__name__} is not a random generator's (data.random_flip)"
            )
        self.flips.set_state(state)

    def train_dataloader(self) -> DataLoader:
        return self._dataloader(self.data_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._dataloader(self.data_val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._dataloader(self.data_test, shuffle=False)

    def _dataloader(self, dataset: TensorImageDataset | None, shuffle: bool) -> DataLoader:
        return batch_loader(dataset, self.batch_size, shuffle, self.hparams.num_workers)


class MNISTDataModule(ImageDataModule):
    """MNIST: 60,000 train and 10,000 test 28x28 grayscale digits."""

    dataset_cls = torchvision.datasets.MNIST
    name = "mnist"
    dataset_name = "MNIST"
    image_shape = (1, 28, 28)
    num_classes = 10

    def __init__(self, *args, mirrors: list[str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mirrors = list(mirrors) if mirrors else list(self.dataset_cls.mirrors)  # tried in order

    def expected_files(self) -> list[Path]:
        return [self._raw_dir() / Path(archive).stem for archive, _ in self.dataset_cls.resources]

    def download_files(self) -> None:
        """Fetch each of torchvision's archives from the first of `mirrors` that serves it, checked and unpacked."""
        # torchvision's own download() reads the mirrors from a class attribute: this is its loop, with ours
        for archive, md5 in self.dataset_cls.resources:
            errors = []
            for mirror in self.mirrors:
                try:
                    download_and_extract_archive(f"{mirror}{archive}", str(self._raw_dir()), filename=archive, md5=md5)
                    break
                except (OSError, RuntimeError) as err:  # urllib's URLError is an OSError, a wrong MD5 a RuntimeError
                    errors.append(f"{mirror}{archive}: {one_line(err)}")
            else:
                raise RuntimeError("; ".join(errors))

    def _raw_dir(self) -> Path:
        return self.root / self.dataset_cls.__name__ / "raw"  # where torchvision's class reads the files

    def check_file(self, path: Path) -> None:
        check_idx_file(path, ndim=3 if "images" in path.name else 1)  # (N, H, W) images, (N,) labels

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        dataset = self.dataset_cls(self.root, train=train, download=False)
        if len(dataset.data) != len(dataset.targets):
            split = "train" if train else "t10k"
            raise CorruptDatasetError(
                f"{self._raw_dir()}: the {split} files hold {len(dataset.data)} images "
                f"but {len(dataset.targets)} labels"
            )
        return dataset.data.unsqueeze(1), dataset.targets  # (N, 1, 28, 28), (N,)


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: MNIST's format and sizes, with 10 classes of clothing."""

    dataset_cls = torchvision.datasets.FashionMNIST
    name = "fashion_mnist"
    dataset_name = "Fashion-MNIST"


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10: 50,000 train and 10,000 test 32x32 colour images in 10 classes."""

    dataset_cls = torchvision.datasets.CIFAR10
    name = "cifar10"
    dataset_name = "CIFAR-10"
    image_shape = (3, 32, 32)
    num_classes = 10

    def _file_md5s(self) -> dict[Path, str]:
        folder = self.root / self.dataset_cls.base_folder
        listed = self.dataset_cls.train_list + self.dataset_cls.test_list
        listed = listed + [[self.dataset_cls.meta["filename"], self.dataset_cls.meta["md5"]]]
        return {folder / name: md5 for name, md5 in listed}

    def expected_files(self) -> list[Path]:
        return list(self._file_md5s())

    def check_file(self, path: Path) -> None:
        if not check_integrity(str(path), self._file_md5s()[path]):
            raise CorruptDatasetError(
                f"{path}: its MD5 checksum is not CIFAR-10's (truncated or a different file). "
                f"Replace it, or empty {path.parent} to download the dataset again."
            )

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        dataset = self.dataset_cls(self.root, train=train, download=False)
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
        return images, torch.as_tensor(dataset.targets, dtype=torch.int64)


# IDX type codes (http://yann.lecun.com/exdb/mnist/) and their item sizes in bytes.
_IDX_ITEM_SIZE = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def check_idx_file(path: Path, ndim: int) -> None:
    """Check that an IDX file holds an `ndim`-dimensional array and its size matches its header.

    torchvision reads IDX files without these checks: a truncated file fails with a reshape
    error that names no file.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_ITEM_SIZE or not 1 <= magic[3] <= 4:
            raise CorruptDatasetError(f"{path}: not an IDX file (its first bytes are {magic.hex() or 'missing'})")
        header = f.read(4 * magic[3])
    if len(header) < 4 * magic[3]:
        raise CorruptDatasetError(f"{path}: truncated inside its header")
    dims = [int.from_bytes(header[i : i + 4], "big") for i in range(0, len(header), 4)]
    if len(dims) != ndim:
        raise CorruptDatasetError(
            f"{path}: holds an array of shape {dims}, expected {ndim} dimensions (a different file?)"
        )
    expected_size = 4 + len(header) + math.prod(dims) * _IDX_ITEM_SIZE[magic[2]]
    if size != expected_size:
        raise CorruptDatasetError(
            f"{path}: the header declares shape {dims} ({expected_size} bytes) but the file has {size} bytes "
            f"(truncated or corrupted). Replace it, or empty {path.parent} to download the dataset again."
        )
