"""Images/s of a folder of images at 64x64 RGB: `data=image_folder` against torchvision's ImageFolder + DataLoader
with the same transforms and workers, on the first epoch (decoding) and the later ones; and `data.streaming=true`
(litdata chunks).

    python -m benchmarks.image_folder_throughput [--images 20000] [--source-size 96 128] [--workers N] [--epochs 3]
        [--rounds 2]

The folder (JPEGs of smooth random pictures in two class subfolders, written first and not timed) is read by:
- torchvision: ImageFolder with Resize(64, Lanczos) + CenterCrop(64) + ToTensor, a shuffling DataLoader of
  `--workers` persistent processes; every epoch decodes again;
- genlab in memory: the first epoch decodes in `--workers` processes into the cache (data.decode_workers), later
  epochs, and a second run, read the uint8 tensor (data.num_workers=0, its best);
- genlab streaming: the first epoch decodes and writes litdata chunks, later epochs read them (`--workers` loader
  processes).
Each first epoch is timed from an empty cache to its last batch; later epochs from their first batch to their last.
All deliver shuffled batches of 128 float images in [0, 1] with labels; genlab validates on one image (val_size=1).
Every module either side uses is imported before any timer. The three pipelines run `--rounds` times, each round in
another order (the first side of one round is the last of the next); reported are the medians of the rounds.
Targets (issue 31): first epoch at least torchvision's speed; later epochs at least 20x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import genlab.data.image_folder  # noqa: F401 (imported here, not inside a timer: torchvision's are above)
from benchmarks.machine import describe_machine
from genlab.utils.config import compose
from genlab.utils.instantiate import instantiate

SIZE = 64
BATCH_SIZE = 128


def write_folder(root: Path, count: int, source_size: tuple[int, int], seed: int = 0) -> None:
    """`count` JPEGs (height x width `source_size`) of smooth random pictures, half in cat/, half in dog/."""
    rng = np.random.default_rng(seed)
    height, width = source_size
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8))
        folder = root / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        coarse.resize((width, height), Image.Resampling.BICUBIC).save(folder / f"{i:06d}.jpg", quality=90)


def epochs_per_second(loader: Iterable, epochs: int) -> tuple[float, int]:
    """(seconds, images) of `epochs` passes over `loader`."""
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _labels in loader:
            count += len(images)
    return time.perf_counter() - start, count


def torchvision_rates(folder: Path, workers: int, epochs: int) -> tuple[float, float]:
    """(first epoch, later epochs) images/s of ImageFolder + DataLoader with genlab's resize policy."""
    transform = transforms.Compose(
        [
            transforms.Resize(SIZE, interpolation=transforms.InterpolationMode.LANCZOS),
            transforms.CenterCrop(SIZE),
            transforms.ToTensor(),
        ]
    )
    start = time.perf_counter()  # from listing the folder, as genlab's first epoch
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    loader = DataLoader(
        dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    _, count = epochs_per_second(loader, 1)  # worker start-up included, as in genlab's first epoch
    first = count / (time.perf_counter() - start)
    later_seconds, later_count = epochs_per_second(loader, epochs)
    return first, later_count / later_seconds


def genlab_rates(folder: Path, cache: Path, workers: int, epochs: int, streaming: bool) -> dict[str, float]:
    """images/s of data=image_folder: first epoch (from an empty cache), later epochs, and a second run's first."""
    overrides = [
        "data=image_folder",
        f"data.path={folder}",
        f"data.image_size={SIZE}",
        f"data.batch_size={BATCH_SIZE}",
        "data.val_size=1",
        f"data.decode_workers={workers}",
        f"data.num_workers={workers if streaming else 0}",
        f"data.streaming={str(streaming).lower()}",
        f"paths.cache_dir={cache}",
        f"paths.output_dir={cache.parent}",
    ]
    shutil.rmtree(cache, ignore_errors=True)
    config = compose(overrides).data
    rates = {}

    def first_epoch() -> tuple[float, Iterable]:
        start = time.perf_counter()  # from listing the folder (prepare_data), as torchvision's ImageFolder does
        datamodule = instantiate(config, "data")
        datamodule.prepare_data()
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        _, count = epochs_per_second(loader, 1)
        return count / (time.perf_counter() - start), loader

    rates["first epoch"], loader = first_epoch()
    seconds, count = epochs_per_second(loader, epochs)
    rates["later epochs"] = count / seconds
    rates["second run, first epoch"], _ = first_epoch()  # the cache is there: no decoding
    return rates


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--source-size", type=int, nargs=2, default=(96, 128), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--epochs", type=int, default=3, help="later epochs timed, after the first")
    parser.add_argument("--rounds", type=int, default=2, help="of the three pipelines, each round in another order")
    parser.add_argument("--work", type=Path, default=None, help="where the folder and caches go (default: a temp)")
    parser.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    work = Path(tempfile.mkdtemp(prefix="image_folder_bench_")) if args.work is None else args.work
    folder = work / "images"
    if not folder.is_dir():
        write_folder(folder, args.images, tuple(args.source_size))
    pipelines = {
        "torchvision": lambda: dict(
            zip(("first epoch", "later epochs"), torchvision_rates(folder, args.workers, args.epochs), strict=True)
        ),
        "genlab": lambda: genlab_rates(folder, work / "cache", args.workers, args.epochs, streaming=False),
        "litdata": lambda: genlab_rates(folder, work / "cache", args.workers, args.epochs, streaming=True),
    }
    rounds: dict[str, list[float]] = {}
    try:
        for round_index in range(args.rounds):
            names = list(pipelines)
            names = names[round_index % len(names) :] + names[: round_index % len(names)]  # each round in turn first
            for name in names:
                for measured, rate in pipelines[name]().items():
                    rounds.setdefault(f"{name} {measured}", []).append(rate)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    results = {key: statistics.median(rates) for key, rates in rounds.items()}  # in the first round's order
    print(describe_machine())
    source = "x".join(map(str, args.source_size))
    print(f"{args.images:,} JPEGs of {source} to {SIZE}x{SIZE} RGB, {args.workers} workers, batch {BATCH_SIZE}")
    for name, rate in results.items():
        print(f"{name:34s} {rate:12,.0f} images/s")
    first_ratio = results["genlab first epoch"] / results["torchvision first epoch"]
    later_ratio = results["genlab later epochs"] / results["torchvision later epochs"]
    print(f"first epoch: genlab / torchvision {first_ratio:.2f}x (target >= 1), median of {args.rounds} rounds")
    print(f"later epochs: genlab / torchvision {later_ratio:.1f}x (target >= 20)")
    if args.out is not None:
        settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        summary = {"machine": describe_machine(), "settings": settings, "images_per_second": results, "rounds": rounds}
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
