"""Your own images (`data=image_folder data.path=DIR`): a folder or a ZIP of them, held as the built-in datasets
are, in one uint8 tensor batched by indexing.

The first run decodes the images once, in parallel (genlab/data/image_decode.py), and caches the tensor under
`paths.cache_dir`; a later run, and every trial of a sweep, reads that file instead. The cache is keyed by the
settings that shape the tensor (size, channels, resize, labels) and checked against a fingerprint of the files'
names, sizes and modification times: a folder that changed is decoded again, never read stale. A folder too large
for memory is refused before decoding, naming `data.streaming=true`: litdata chunks read from disk
(genlab/data/streaming.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_only
from pydantic import Field
from torch import Tensor
from torch.utils.data import DataLoader

from genlab.data import streaming
from genlab.data.image_decode import DecodeSettings, DecodeSummary, decode_into_memory, decode_listing
from genlab.data.images import ImageDataModule, TensorImageDataset, ValSize
from genlab.errors import ConfigError, CorruptDatasetError
from genlab.utils.files import replaced_atomically
from genlab.utils.image_files import ImageListing, list_images

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # what a cache file holds; a new number makes old caches miss
MEMORY_SHARE = 0.75  # of the memory available, the most that the decoded images may take
IMAGES_PER_PROCESS = 256  # decoded per process at least: fewer decode in this process


class ImageFolderDataModule(ImageDataModule):
    """Images from a folder (nested; first-level subfolders as classes) or a ZIP (EDM's dataset_tool layout,
    dataset.json labels), at image_size x image_size; val a seeded slice of them, test a folder of its own or,
    without one, the validation split."""

    name = "image_folder"

    def __init__(
        self,
        path: str,
        image_shape: tuple[int, int, int],
        num_classes: Annotated[int, Field(ge=0)],
        image_size: Annotated[int, Field(ge=16, le=256)] = 64,
        channels: Literal[1, 3] = 3,
        labels: Literal["auto", "none"] = "auto",
        resize: Literal["center_crop", "stretch"] = "center_crop",
        random_flip: bool = False,
        test_path: str | None = None,
        streaming: bool = False,
        skip_unreadable: bool = False,
        cache_dir: str | None = None,
        batch_size: Annotated[int, Field(ge=1)] = 128,
        val_size: ValSize = 0.05,
        num_workers: Annotated[int, Field(ge=0)] = 0,
        decode_workers: Annotated[int, Field(ge=0)] | None = None,
        seed: int = 42,
        on_device: bool | Literal["auto"] = "auto",
    ) -> None:
        if tuple(image_shape) != (channels, image_size, image_size):
            raise ConfigError(
                f"data.image_shape={list(image_shape)} must be [data.channels, data.image_size, data.image_size] = "
                f"{[channels, image_size, image_size]}: leave it as conf/data/image_folder.yaml has it"
            )
        if streaming and on_device is True:
            raise ConfigError("data.on_device=true holds the images in memory; data.streaming=true reads from disk")
        # the chunks are written once, by the first process of the run, where every machine reads them
        self.prepare_data_per_node = not streaming
        # what a built-in dataset declares for its class, this folder's settings give
        self.image_shape, self.num_classes = (channels, image_size, image_size), num_classes
        self.dataset_name = f"the images of {path}"
        super().__init__(
            path, image_shape, num_classes, batch_size, val_size, num_workers, False, seed, on_device, random_flip
        )
        self.settings = DecodeSettings(image_size, channels, resize)
        self.decode_workers = len(os.sched_getaffinity(0)) if decode_workers is None else decode_workers
        self._listings: dict[str, ImageListing] = {}

    # --- the folders ---------------------------------------------------------------------------------------------
    def expected_files(self) -> list[Path]:
        return []  # none known ahead: the folders are listed (a missing or empty one named) when read

    def splits(self) -> list[str]:
        """The folders' splits: train (data.path, which also gives the validation split), and test if there is one."""
        return ["train", "test"] if self.hparams.test_path is not None else ["train"]

    def listing(self, split: str) -> ImageListing:
        """The images of a split's folder, labelled with the training folder's classes."""
        if split not in self._listings:
            key = "data.path" if split == "train" else "data.test_path"
            listing = list_images(self.hparams[key.removeprefix("data.")], self.hparams.labels, key)
            if split == "train" and listing.num_classes != self.num_classes:
                raise ConfigError(
                    f"data.num_classes={self.num_classes}, but data.path={listing.root} holds {listing.num_classes} "
                    f"classes ({', '.join(listing.classes[:5]) or 'none'}): leave data.num_classes as "
                    f"conf/data/image_folder.yaml has it, which counts them"
                )
            if split == "test":
                listing = _relabelled(listing, self.listing("train"))
            self._listings[split] = listing
        return self._listings[split]

    # --- LightningDataModule hooks -----------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """List the folders (a missing, empty or imageless one is said here, before the run's config is printed)
        and decode what is not cached yet: once, in the first process of each machine."""
        for split in self.splits():
            self.listing(split)
            if self.hparams.streaming:
                self._chunks(split)
            elif self.hparams.cache_dir is not None:
                self._decoded(split)

    def setup(self, stage: str | None = None) -> None:
        if self.hparams.streaming:
            self._setup_streaming(stage)
            return
        if stage in ("fit", "validate", None):
            super().setup("fit")
        if stage in ("test", None) and self.data_test is None:
            if self.hparams.test_path is not None:
                super().setup("test")
                return
            log.info("No data.test_path: the test split is the validation split (the seeded slice not trained on)")
            if self.data_val is None:  # testing alone (src.eval): the validation slice, without the training split
                images, labels = self._checked_split(train=True)
                val_index, _ = self.split_indices(len(images))
                self.data_val = TensorImageDataset(images[val_index], labels[val_index])
            self.data_test = self.data_val
            self._hold_on_device()

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        split = "train" if train else "test"
        decoded = self._decoded(split)
        _report(self.listing(split), decoded["found"], self.settings.image_size)
        return decoded["images"], decoded["labels"]

    # --- decoded once, cached ------------------------------------------------------------------------------------
    def _decoded(self, split: str) -> dict[str, Any]:
        """The split's images, labels and what could not be read: from the cache where it matches the files, else
        decoded (and cached, when there is a cache folder)."""
        listing = self.listing(split)
        self._check_memory(listing)
        path = self._cache_path(listing, "pt")
        if path is None:
            return self._decode(listing)
        with _locked(path):  # two runs or sweep trials starting at once: one decodes, the other reads its file
            cached = _read_cache(path, listing, self.image_shape)
            if cached is None:
                cached = self._decode(listing)
                with replaced_atomically(path, "wb") as file:
                    torch.save({"format": CACHE_FORMAT, "fingerprint": listing.fingerprint, **cached}, file)
                log.info(f"Cached the decoded images of {listing.root} in {path}")
        return cached

    def _decode(self, listing: ImageListing) -> dict[str, Any]:
        images, labels, summary = decode_into_memory(listing, self.settings, *self._decoding(listing))
        self._check_any_read(listing, summary)
        return {"images": images, "labels": labels, "found": dataclasses.asdict(summary)}  # plain: kept in the cache

    def _decoding(self, listing: ImageListing) -> tuple[int, Callable[[str, str], None]]:
        """The decode processes for this listing, and what an unreadable image does: stops the run (named) unless
        data.skip_unreadable; said in the log."""

        def on_unreadable(name: str, why: str) -> None:
            if not self.hparams.skip_unreadable:
                raise CorruptDatasetError(
                    f"{listing.root / name} cannot be read as an image ({why}): fix or remove it, or set "
                    f"data.skip_unreadable=true to leave out (and count) the images that cannot be read"
                )

        # a process costs about as much to start as decoding a few hundred small images: a small folder needs none
        workers = min(self.decode_workers, len(listing.names) // IMAGES_PER_PROCESS)
        log.info(
            f"Decoding {len(listing.names):,} images of {listing.root} to {'x'.join(map(str, self.image_shape))} "
            f"uint8 ({_in_bytes(len(listing.names) * math.prod(self.image_shape))}), in "
            f"{f'{workers} processes' if workers else 'this process'}"
        )
        return workers, on_unreadable

    @staticmethod
    def _check_any_read(listing: ImageListing, summary: DecodeSummary) -> DecodeSummary:
        if summary.kept == 0:
            raise CorruptDatasetError(f"{listing.root}: none of its {len(listing.names):,} images can be read")
        return summary

    def _check_memory(self, listing: ImageListing) -> None:
        needed = len(listing.names) * math.prod(self.image_shape)
        available = available_memory()
        if available is not None and needed > MEMORY_SHARE * available:
            raise ConfigError(
                f"{listing.root}: its {len(listing.names):,} images take {_in_bytes(needed)} in memory at "
                f"{'x'.join(map(str, self.image_shape))}, more than {MEMORY_SHARE:.0%} of the {_in_bytes(available)} "
                f"available: set data.streaming=true to read them from disk in chunks instead (litdata)"
            )

    def _cache_path(self, listing: ImageListing, suffix: str) -> Path | None:
        """The cache file of a folder at these settings, None without a cache folder. Its name holds the folder's
        path and the settings that shape the tensor; the files' state is checked inside (the fingerprint)."""
        if self.hparams.cache_dir is None:
            return None
        shaped_by = [CACHE_FORMAT, str(listing.root), *self.image_shape, self.hparams.resize, self.hparams.labels]
        shaped_by += [self.hparams.skip_unreadable]
        if suffix == "chunks":  # the chunks are split in train and validation parts already
            shaped_by += [self.hparams.seed, self.hparams.val_size]
        if listing.root != self.listing("train").root:  # a test folder takes the training folder's class numbers
            shaped_by += [self.listing("train").classes]
        digest = hashlib.sha256(json.dumps(shaped_by).encode()).hexdigest()[:16]
        return Path(self.hparams.cache_dir).expanduser() / "image_folder" / f"{listing.root.stem}-{digest}.{suffix}"

    # --- streaming: litdata chunks read from disk --------------------------------------------------------------
    def _chunks(self, split: str) -> Path:
        """The litdata chunks of a split's folder, written from its decoded images once (like the tensor cache)
        by the run's first process (prepare_data, or setup where there is no trainer)."""
        listing = self.listing(split)
        folder = self._cache_path(listing, "chunks")
        if folder is None:
            raise ConfigError("data.streaming=true writes its chunks under data.cache_dir, which is null")
        with _locked(folder):
            if streaming.chunks_match(folder, listing.fingerprint):
                return folder
            if self.trainer is not None and self.trainer.global_rank != 0:
                raise ConfigError(
                    f"{folder}: the chunks written by the first process are not there: on several machines, "
                    f"paths.cache_dir must be a folder that every machine sees"
                )
            log.info(f"Writing {listing.root} as litdata chunks in {folder}")
            # the seeded slice that the in-memory split takes (the same images, where none was left out)
            val = set(self.split_indices(len(listing.names))[0].tolist()) if split == "train" else set()
            streaming.write_chunks(
                folder,
                listing.fingerprint,
                lambda keep: self._check_any_read(
                    listing, decode_listing(listing, self.settings, *self._decoding(listing), keep)
                ),
                part_of=lambda position: "val" if position in val else split,
            )
        return folder

    def _setup_streaming(self, stage: str | None) -> None:
        chunks = {split: self._chunks(split) for split in self.splits()}
        for split, folder in chunks.items():
            _report(self.listing(split), streaming.found(folder), self.settings.image_size)
        cache = Path(self.hparams.cache_dir).expanduser() / "streaming"  # litdata's copies of remote chunks
        if stage in ("fit", "validate", None) and self.data_train is None:
            self.data_train = streaming.dataset(chunks["train"] / "train", cache, shuffle=True, seed=self.hparams.seed)
            self.data_val = streaming.dataset(chunks["train"] / "val", cache, shuffle=False)
        if stage in ("test", None) and self.data_test is None:
            test = chunks["test"] / "test" if "test" in chunks else chunks["train"] / "val"
            self.data_test = streaming.dataset(test, cache, shuffle=False)

    def _dataloader(self, dataset: Any, shuffle: bool) -> DataLoader:
        if not self.hparams.streaming:
            return super()._dataloader(dataset, shuffle)
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        return streaming.dataloader(dataset, self.batch_size, self.hparams.num_workers)


def _relabelled(test: ImageListing, train: ImageListing) -> ImageListing:
    """A test folder's labels as the training folder's class numbers, matched by class name."""
    if not test.classes:
        return test
    index = {name: i for i, name in enumerate(train.classes)}
    unknown = [name for name in test.classes if name not in index]
    if unknown:
        raise ConfigError(
            f"data.test_path={test.root} has classes that data.path has not: {', '.join(unknown[:5])} (data.path has "
            f"{', '.join(train.classes[:10]) or 'none'})"
        )
    labels = [index[test.classes[label]] for label in test.labels]
    return ImageListing(test.root, test.names, labels, train.classes, test.sizes, test.fingerprint)


def _read_cache(path: Path, listing: ImageListing, image_shape: tuple[int, int, int]) -> dict[str, Any] | None:
    """The cache file's content if it is whole and made from the files as they are now, else None (said why)."""
    if not path.is_file():
        return None
    try:  # memory-mapped: the pages are read as the split is cut, not all first
        cached = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        images, labels = cached["images"], cached["labels"]
        fingerprint, found = cached["fingerprint"], cached["found"]
        whole = (
            cached["format"] == CACHE_FORMAT
            and images.dtype == torch.uint8
            and tuple(images.shape[1:]) == image_shape
            and labels.dtype == torch.int64
            and labels.shape == images.shape[:1]
            and {"unreadable", "upscaled", "first_upscaled"} <= set(found)
        )
    except Exception as err:  # noqa: BLE001 (a cache that cannot be read is made again, whatever is wrong with it)
        log.warning(f"{path}: not a cache that can be read ({type(err).__name__}): decoding the images again")
        return None
    if not whole:
        log.warning(f"{path}: not this version's cache: decoding the images again")
        return None
    if fingerprint != listing.fingerprint:
        log.warning(f"{listing.root} changed since its cache was made (files added, removed, changed): decoding again")
        return None
    return cached


@rank_zero_only
def _report(listing: ImageListing, found: dict[str, Any], image_size: int) -> None:
    """One warning line each for the images left out and the images upscaled, on every run (from the cache too):
    what decoding `found` (a DecodeSummary as a dict)."""
    total, unreadable = len(listing.names), found["unreadable"]
    if unreadable:
        named = ", ".join(f"{name} ({why})" for name, why in unreadable[:3])
        log.warning(
            f"{listing.root}: left out {len(unreadable):,} of {total:,} images that cannot be read "
            f"(data.skip_unreadable=true): {named}{', ...' if len(unreadable) > 3 else ''}"
        )
    if found["upscaled"]:
        log.warning(
            f"{listing.root}: {found['upscaled']:,} of {total:,} images are smaller than {image_size} pixels on "
            f"their shorter side, upscaled (e.g. {found['first_upscaled']})"
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold `path`'s lock file (blocking): the cache is checked and made by one process at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process ends
        yield


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), None where unknown."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/meminfo") as meminfo:
            line = next(line for line in meminfo if line.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    return None


def _in_bytes(count: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
