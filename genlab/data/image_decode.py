"""Images decoded once, in parallel, into uint8 (C, H, W) tensors of one size: the work of an image folder's first
epoch, done by PIL in a DataLoader's worker processes (PIL's C decoders, one process per core).

The resize policy (`resize`): `center_crop` takes the largest centred square and resizes it to image_size
(the shorter side then a centre crop, as EDM's dataset_tool and torchvision's Resize + CenterCrop do);
`stretch` resizes the whole image to a square. Resampling is Lanczos (EDM's); a JPEG is decoded at the
smallest DCT scale that still covers image_size (PIL's `draft`, which Image.thumbnail uses too), so a large
photo is not decoded whole to be shrunk. EXIF orientation is applied; transparent pixels are composited over
white; 16-bit grayscale keeps its top 8 bits.
"""

from __future__ import annotations

import functools
import math
import mmap
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from genlab.data.batching import ignore_sigint
from genlab.errors import one_line
from genlab.utils.image_files import IMAGE_FORMATS, ImageListing

WHITE = (255, 255, 255, 255)
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass(frozen=True)
class DecodeSettings:
    """What every decoded image becomes: (channels, image_size, image_size) uint8, resized by `resize`."""

    image_size: int
    channels: int
    resize: str  # center_crop or stretch


def decode_image(file: IO[bytes], settings: DecodeSettings) -> tuple[np.ndarray, bool]:
    """One image file as a (C, S, S) uint8 array, and whether it was smaller than S (so upscaled).

    PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) is kept and made strict: an image over it is refused
    (PIL itself only warns up to twice the limit)."""
    size = settings.image_size
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(file, formats=IMAGE_FORMATS) as image:
            upscaled = min(image.size) < size
            image.draft("RGB" if settings.channels == 3 else "L", (size, size))  # JPEG only; others decode whole
            if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
                image = ImageOps.exif_transpose(image)
            image = _in_mode(image, "RGB" if settings.channels == 3 else "L")
            if image.size != (size, size):
                image = _resized(image, size, settings.resize)
            array = np.asarray(image)  # (S, S, 3) or (S, S)
    return (array.transpose(2, 0, 1) if array.ndim == 3 else array[None]), upscaled


def _in_mode(image: Image.Image, mode: str) -> Image.Image:
    if image.mode in _SIXTEEN_BIT:  # PIL's convert would clip 16-bit values to 255, not scale them
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, WHITE), image.convert("RGBA"))
    return image if image.mode == mode else image.convert(mode)


def _resized(image: Image.Image, size: int, resize: str) -> Image.Image:
    if resize == "stretch":
        return image.resize((size, size), Image.Resampling.LANCZOS)
    width, height = image.size
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)  # the centred square
    return image.resize((size, size), Image.Resampling.LANCZOS, box=box)


# --- the whole listing, in parallel ----------------------------------------------------------------------------------


@dataclass
class DecodeSummary:
    """What a pass over a listing kept and what it could not read."""

    kept: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    upscaled: int = 0  # images smaller than image_size
    first_upscaled: str = ""


@dataclass
class _Batch:
    """What one worker decoded of a batch of the listing: the positions of the images it could read, with the images
    (one tensor, so that one block of shared memory carries them) unless it wrote them in place, and the others'
    reasons."""

    indices: list[int]  # positions in the listing (plain: a tensor would travel through a file descriptor of its own)
    images: Tensor | None  # (B', C, S, S) uint8; None: written into the tensor decode_into_memory gave
    unreadable: list[tuple[int, str]]
    upscaled: list[int]


class _DecodedFiles(Dataset):
    """Item i: the i-th image of the listing, decoded (or written into `into[i]`), or why it cannot be."""

    def __init__(self, listing: ImageListing, settings: DecodeSettings, into: Tensor | None) -> None:
        self.listing = listing
        self.settings = settings
        self.into = into  # (N, C, S, S) uint8 in shared memory, or None: the images travel with their batch
        self._archive: zipfile.ZipFile | None = None  # opened in each worker process

    def __len__(self) -> int:
        return len(self.listing.names)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str, bool]:
        if self.listing.sizes[index] == 0:
            return index, None, "an empty file (0 bytes)", False
        try:
            with self._open(self.listing.names[index]) as file:
                image, upscaled = decode_image(file, self.settings)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            return index, None, f"over PIL's decompression-bomb limit: {one_line(err)}", False
        except Exception as err:  # noqa: BLE001 (whatever a malformed file makes PIL, zlib or struct raise names it)
            return index, None, one_line(err), False
        if self.into is not None:
            self.into[index].numpy()[...] = image
        return index, image, "", upscaled

    def _open(self, name: str) -> IO[bytes]:
        if not self.listing.is_zip:
            return open(self.listing.root / name, "rb")  # noqa: SIM115 (closed by the caller's with)
        if self._archive is None:
            self._archive = zipfile.ZipFile(self.listing.root)
        return self._archive.open(name)


def _batch(items: list[tuple[int, np.ndarray | None, str, bool]], in_place: bool) -> _Batch:
    read = [(index, image) for index, image, _, _ in items if image is not None]
    images = None
    if not in_place:
        images = torch.from_numpy(np.stack([image for _, image in read])) if read else torch.empty(0, dtype=torch.uint8)
    return _Batch(
        indices=[index for index, _ in read],
        images=images,
        unreadable=[(index, why) for index, image, why, _ in items if image is None],
        upscaled=[index for index, _, _, upscaled in items if upscaled],
    )


def decode_listing(
    listing: ImageListing,
    settings: DecodeSettings,
    num_workers: int,
    on_unreadable: Callable[[str, str], None],
    keep: Callable[[Tensor, Tensor, Tensor], None],
) -> DecodeSummary:
    """Decode every image of `listing` in order, in `num_workers` processes (0: in this one), handing each batch
    of readable images to `keep(positions in the listing (B,), images (B, C, S, S) uint8, labels (B,) int64)`: for
    images that do not fit in memory (litdata's chunks). A file that cannot be read goes to
    `on_unreadable(name, why)`, which raises to stop or returns to skip it."""
    labels = torch.tensor(listing.labels, dtype=torch.int64)
    return _decode(listing, settings, num_workers, on_unreadable, None, lambda at, images: keep(at, images, labels[at]))


def decode_into_memory(
    listing: ImageListing, settings: DecodeSettings, num_workers: int, on_unreadable: Callable[[str, str], None]
) -> tuple[Tensor, Tensor, DecodeSummary]:
    """Every readable image of `listing`, in order, as one (N, C, S, S) uint8 tensor, with their labels (N,) int64;
    decoded in `num_workers` processes that write each image straight into it (one block of shared memory made
    first: no batch is copied from process to process). `on_unreadable` as decode_listing's."""
    count, side = len(listing.names), settings.image_size
    shape = (count, settings.channels, side, side)
    readable = torch.zeros(count, dtype=torch.bool)
    if num_workers and torch.multiprocessing.get_start_method() != "fork":  # workers that do not share the memory
        images = torch.empty(shape, dtype=torch.uint8)

        def keep(positions: Tensor, batch: Tensor) -> None:
            images[positions], readable[positions] = batch, True

        summary = _decode(listing, settings, num_workers, on_unreadable, None, keep)
    else:
        images = _shared(shape) if num_workers else torch.empty(shape, dtype=torch.uint8)

        def keep(positions: Tensor, _: None) -> None:
            readable[positions] = True

        summary = _decode(listing, settings, num_workers, on_unreadable, images, keep)
    labels = torch.tensor(listing.labels, dtype=torch.int64)
    if summary.kept < count:  # images were left out: a copy, or the cache file would hold the whole storage
        return images[readable], labels[readable], summary
    return images, labels, summary


def _shared(shape: tuple[int, ...]) -> Tensor:
    """A uint8 tensor in anonymous shared memory: the DataLoader's worker processes, forked after it is made, write
    into this process's memory. Anonymous (mmap of no file), not torch's share_memory_: /dev/shm, which a container
    often limits to 64 MB, would fail a large folder with a bus error."""
    buffer = mmap.mmap(-1, max(1, math.prod(shape)))  # MAP_SHARED | MAP_ANONYMOUS; the tensor keeps it alive
    return torch.frombuffer(buffer, dtype=torch.uint8, count=math.prod(shape)).view(shape)


def _decode(
    listing: ImageListing,
    settings: DecodeSettings,
    num_workers: int,
    on_unreadable: Callable[[str, str], None],
    into: Tensor | None,
    keep: Callable[[Tensor, Tensor | None], object],
) -> DecodeSummary:
    loader = DataLoader(
        _DecodedFiles(listing, settings, into),
        batch_size=64,
        num_workers=num_workers,
        collate_fn=functools.partial(_batch, in_place=into is not None),
        worker_init_fn=ignore_sigint,
    )
    summary = DecodeSummary()
    for batch in loader:
        for index, why in batch.unreadable:
            on_unreadable(listing.names[index], why)
            summary.unreadable.append((listing.names[index], why))
        if batch.upscaled and not summary.upscaled:
            summary.first_upscaled = listing.names[batch.upscaled[0]]
        summary.upscaled += len(batch.upscaled)
        if batch.indices:
            keep(torch.tensor(batch.indices, dtype=torch.int64), batch.images)
            summary.kept += len(batch.indices)
    return summary
