"""An image folder larger than memory (`data.streaming=true`): its decoded images written once into litdata's
chunks, then read from disk by litdata's StreamingDataset and StreamingDataLoader.

The chunks are written through litdata's `Cache` (the writer under `litdata.optimize`, which would run a function of
ours in processes of its own) by the decoding pass that fills the in-memory tensor (genlab/data/image_decode.py):
both modes decode, skip and count alike, and the reasons and counts come back to this process. Each DDP
rank reads its own shard of them (StreamingDataset splits by rank and worker), and the loader's position is saved
in every checkpoint (Lightning saves a loader's state_dict), so a resumed run goes on from the batch it stopped at.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming import Cache
from torch import Tensor

from genlab.data.image_decode import DecodeSummary

# litdata logs at INFO how it reads each dataset (in place, the size of a cache that local chunks never fill): every
# run would print it twice, and it says nothing to act on; its warnings still show
logging.getLogger("litdata").setLevel(logging.WARNING)
# litdata reads a chunk's tensors with torch.frombuffer over a read-only memory map, and torch warns once per run
# that the tensor could be written through; litdata's batches are copied before anything writes to them
warnings.filterwarnings("ignore", message="The given buffer is not writable", module="litdata.streaming.serializers")

CHUNK_BYTES = "64MB"  # litdata's own default for optimize(); a chunk is the unit read from disk and shuffled
DONE_FILE = "genlab.json"  # written last: chunks without it are a write that did not finish


def chunks_match(folder: Path, fingerprint: str) -> bool:
    """Whether `folder` holds finished chunks of the files as they are now."""
    try:
        return json.loads((folder / DONE_FILE).read_text())["fingerprint"] == fingerprint
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_chunks(
    folder: Path,
    fingerprint: str,
    decode: Callable[[Callable[[Tensor, Tensor, Tensor], None]], DecodeSummary],
    part_of: Callable[[int], str],
) -> None:
    """Write the images that `decode(keep)` hands to `keep(positions, images, labels)` as litdata chunks, one
    dataset per part (`part_of(position)`: train, val or test), under `folder`/<part>. Written beside it and renamed
    into place when whole, so that an interrupted write leaves no chunks that look finished."""
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    writers: dict[str, Cache] = {}
    counts: dict[str, int] = {}

    def keep(positions: Tensor, images: Tensor, labels: Tensor) -> None:
        for position, image, label in zip(positions.tolist(), images, labels.tolist(), strict=True):
            part = part_of(position)
            if part not in writers:
                writers[part] = Cache(str(partial / part), chunk_bytes=CHUNK_BYTES)
                counts[part] = 0
            writers[part][counts[part]] = (image, label)  # (C, S, S) uint8, serialized at once; int
            counts[part] += 1

    try:
        summary = decode(keep)
        for writer in writers.values():
            writer.done()
            writer.merge()
        done = {"fingerprint": fingerprint, "counts": counts, "found": dataclasses.asdict(summary)}
        (partial / DONE_FILE).write_text(json.dumps(done))
        shutil.rmtree(folder, ignore_errors=True)  # chunks of the files as they were
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def found(folder: Path) -> dict[str, Any]:
    """What writing the chunks found (a DecodeSummary as a dict): the images it could not read, those it upscaled."""
    return json.loads((folder / DONE_FILE).read_text())["found"]


def dataset(part: Path, cache_dir: Path, shuffle: bool, seed: int = 0) -> StreamingDataset:
    """One part of the chunks, read from disk; shuffled (by chunk, then within a window) with `seed`, each epoch
    anew. Under DDP, each rank reads its own shard of them."""
    return StreamingDataset(str(part), cache_dir=str(cache_dir), shuffle=shuffle, seed=seed)


def dataloader(dataset: StreamingDataset, batch_size: int, num_workers: int) -> StreamingDataLoader:
    """Batches of float images in [0, 1] and int64 labels, like the in-memory loader's; its state_dict (saved by
    Lightning in every checkpoint) holds its position."""
    return StreamingDataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=float_batch)


def float_batch(items: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    """(C, S, S) uint8 images and their labels as a batch: (B, C, S, S) floats in [0, 1] and (B,) int64."""
    images = torch.stack([image for image, _ in items]).float().div_(255)
    return images, torch.tensor([label for _, label in items], dtype=torch.int64)
