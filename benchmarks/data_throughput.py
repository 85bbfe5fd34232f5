"""Images/second from the Fashion-MNIST train DataLoader: ours (tensor-resident) vs torchvision's per-item path.

    DATA_DIR=../shared/data python -m benchmarks.data_throughput [--batch-size 128] [--num-workers 0] [--epochs 2]

Both loaders shuffle and deliver float images in [0, 1] with their labels; each is timed over whole
epochs after one warm-up batch. Dataset loading (reading the IDX files) is not timed for either.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision.transforms import ToTensor

from benchmarks.machine import describe_machine
from genlab.data.images import FashionMNISTDataModule


def images_per_second(loader: DataLoader, epochs: int) -> float:
    next(iter(loader))  # warm-up: worker start-up and first allocations
    count = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for images, _labels in loader:
            count += len(images)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "data"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)

    datamodule = FashionMNISTDataModule(
        args.data_dir, image_shape=(1, 28, 28), num_classes=10, batch_size=args.batch_size, num_workers=args.num_workers
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    ours = images_per_second(datamodule.train_dataloader(), args.epochs)

    per_item = torchvision.datasets.FashionMNIST(args.data_dir, train=True, transform=ToTensor())
    theirs = images_per_second(
        DataLoader(per_item, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers), args.epochs
    )

    print(describe_machine())
    print(f"batch size {args.batch_size}, {args.num_workers} workers, {args.epochs} epochs")
    print(f"ours (tensor-resident, {len(datamodule.data_train)} images): {ours:12,.0f} images/s")
    print(f"torchvision per-item ({len(per_item)} images):     {theirs:12,.0f} images/s")
    print(f"speed-up: {ours / theirs:.1f}x")


if __name__ == "__main__":
    main()
