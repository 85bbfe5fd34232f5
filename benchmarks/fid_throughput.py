"""Images/second through the feature classifier and the FID/KID/IS updates, on 10,000 Fashion-MNIST images.

    DATA_DIR=../shared/data python -m benchmarks.fid_throughput [--num-images 10000] [--batch-size 500]

Times `SampleQuality.update` for the test split as "real" and as "generated" images (the
classifier's forward pass, its features kept), then `compute()`. Uses the committed
genlab/metrics/classifiers/fashion_mnist.ckpt.
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks.machine import describe_machine
from genlab.data.images import FashionMNISTDataModule
from genlab.metrics import ClassifierFeatures, SampleQuality, load_feature_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "data"))
    parser.add_argument("--num-images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()

    datamodule = FashionMNISTDataModule(args.data_dir, image_shape=(1, 28, 28), num_classes=10)
    datamodule.prepare_data()
    datamodule.setup("test")
    images = datamodule.data_test.images[: args.num_images].float() / 255  # (N, 1, 28, 28)
    quality = SampleQuality(ClassifierFeatures(load_feature_classifier(None, "fashion_mnist", (1, 28, 28))))

    start = time.perf_counter()
    for real in (True, False):
        for batch in images.split(args.batch_size):
            quality.update(batch, real=real)
    updated = time.perf_counter()
    scores = quality.compute()
    computed = time.perf_counter()

    print(describe_machine())
    print(f"{2 * len(images)} image updates (features + FID/KID/IS statistics), batch {args.batch_size}:")
    print(f"  {2 * len(images) / (updated - start):10,.0f} images/s  ({updated - start:.2f} s)")
    print(f"  compute(): {computed - updated:.2f} s  (KID: 100 subsets of 1000)")
    print(f"  scores of the test split against itself: {scores}")


if __name__ == "__main__":
    main()
