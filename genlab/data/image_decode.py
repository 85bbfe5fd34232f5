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
    """What one worker decoded of a batch of the listing: the images it could read (one tensor, so that one
    block of shared memory carries them) and the others' reasons."""

    indices: Tensor  # (B',) positions in the listing
    images: Tensor  # (B', C, S, S) uint8
    unreadable: list[tuple[int, str]]
    upscaled: list[int]


class _DecodedFiles(Dataset):
    """Item i: the i-th image of the listing, decoded, or why it cannot be."""

    def __init__(self, listing: ImageListing, settings: DecodeSettings) -> None:
        self.listing = listing
        self.settings = settings
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
        return index, image, "", upscaled

    def _open(self, name: str) -> IO[bytes]:
        if not self.listing.is_zip:
            return open(self.listing.root / name, "rb")  # noqa: SIM115 (closed by the caller's with)
        if self._archive is None:
            self._archive = zipfile.ZipFile(self.listing.root)
        return self._archive.open(name)


def _batch(items: list[tuple[int, np.ndarray | None, str, bool]]) -> _Batch:
    read = [(index, image) for index, image, _, _ in items if image is not None]
    return _Batch(
        indices=torch.tensor([index for index, _ in read], dtype=torch.int64),
        images=torch.from_numpy(np.stack([image for _, image in read])) if read else torch.empty(0, dtype=torch.uint8),
        unreadable=[(index, why) for index, image, why, _ in items if image is None],
        upscaled=[index for index, _, _, upscaled in items if upscaled],
    )


def decode_listing(
    listing: ImageListing,
    settings: DecodeSettings,
    num_workers: int,
    keep: Callable[[Tensor, Tensor, Tensor], None],
    on_unreadable: Callable[[str, str], None],
) -> DecodeSummary:
    """Decode every image of `listing` in order, in `num_workers` processes (0: in this one), handing each batch
    of readable images to `keep(positions in the listing (B,), images (B, C, S, S) uint8, labels (B,) int64)`. A
    file that cannot be read goes to `on_unreadable(name, why)`, which raises to stop or returns to skip it."""
    labels = torch.tensor(listing.labels, dtype=torch.int64)
    loader = DataLoader(
        _DecodedFiles(listing, settings),
        batch_size=64,
        num_workers=num_workers,
        collate_fn=_batch,
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
        if len(batch.indices):
            keep(batch.indices, batch.images, labels[batch.indices])
            summary.kept += len(batch.indices)
    return summary
