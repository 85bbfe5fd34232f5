"""FID, KID, the classifier-IS, precision and recall behave as they should, in the committed Fashion-MNIST classifier's
features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from genlab.checkpoints import CheckpointError
from genlab.data.images import FashionMNISTDataModule
from genlab.metrics import ClassifierFeatures, SampleQuality, load_feature_classifier
from genlab.models.nets.classifier import ConvClassifier

NUM_IMAGES = 2000


@pytest.fixture(scope="module")
def fashion_mnist_images() -> dict[str, torch.Tensor]:
    from tests.helpers import shared_data_dir

    data_dir = shared_data_dir()
    if data_dir is None or not (data_dir / "FashionMNIST" / "raw").is_dir():
        pytest.skip("Fashion-MNIST is not under $DATA_DIR (set DATA_DIR=../shared/data)")
    datamodule = FashionMNISTDataModule(str(data_dir), image_shape=(1, 28, 28), num_classes=10)
    datamodule.setup()
    test = datamodule.data_test.images[:NUM_IMAGES].float() / 255
    train = datamodule.data_train.images[:NUM_IMAGES].float() / 255
    return {"test": test, "train": train}


@pytest.fixture(scope="module")
def classifier() -> ConvClassifier:
    # the committed genlab/metrics/classifiers/fashion_mnist.ckpt
    return load_feature_classifier(None, "fashion_mnist", (1, 28, 28))


def scores(classifier: ConvClassifier, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    quality = SampleQuality(ClassifierFeatures(classifier), kid_subset_size=500)
    for batch in real.split(500):
        quality.update(batch, real=True)
    for batch in fake.split(500):
        quality.update(batch, real=False)
    return quality.compute()


def test_sanity_of_fid_and_kid(fashion_mnist_images, classifier) -> None:
    test, train = fashion_mnist_images["test"], fashion_mnist_images["train"]
    torch.manual_seed(0)
    itself = scores(classifier, test, test)
    other_split = scores(classifier, test, train)
    noisy = scores(classifier, test, (test + 0.3 * torch.randn_like(test)).clamp(0, 1))
    blurred = scores(classifier, test, TF.gaussian_blur(test, kernel_size=[7, 7], sigma=[2.0, 2.0]))

    # against itself: FID is 0; KID's unbiased estimator is slightly negative for identical sets
    assert abs(itself["fid"]) < 1e-3 and abs(itself["kid"]) < 0.02
    # two samples of the same distribution (measured: FID 0.25, KID 0.001)
    assert other_split["fid"] < 1.0 and abs(other_split["kid"]) < 0.01
    # noise and blur (measured: FID 47 and 34, KID 2.2 and 1.1)
    for corrupted in (noisy, blurred):
        assert corrupted["fid"] > 20 and corrupted["fid"] > 50 * other_split["fid"]
        assert corrupted["kid"] > 0.5
    # the IS analogue: real garments are classified confidently and spread over the 10 classes
    assert 7.0 < other_split["is"] <= 10.0
    assert noisy["is"] < other_split["is"]


def test_reset_generated_keeps_the_real_statistics(fashion_mnist_images, classifier) -> None:
    test = fashion_mnist_images["test"][:1000]
    quality = SampleQuality(ClassifierFeatures(classifier), kid_subset_size=200)
    quality.update(test, real=True)
    quality.update(test.flip(-1), real=False)  # mirrored garments: close, not equal
    first = quality.compute()["fid"]
    quality.reset_generated()
    quality.update(test, real=False)
    assert abs(quality.compute()["fid"]) < 1e-3 < first


def test_missing_classifier_says_which_command_makes_it(tmp_path: Path) -> None:
    with pytest.raises(
        CheckpointError,
        match=r"No feature classifier for cifar10 at .*python -m src.train experiment=classifier_cifar10",
    ):
        load_feature_classifier(tmp_path / "cifar10.ckpt", "cifar10", (3, 32, 32))
