"""The feature spaces that FID, KID, IS, precision and recall are measured in: a domain classifier, or Inception-v3.

Each maps images (B, C, H, W) in [0, 1] to features (B, D) (FID, KID, precision, recall) and logits (B, K) (the
Inception Score), frozen and in eval mode, and names itself by a digest of its weights, so that reference
statistics computed in one feature space are never read as another's.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn

from genlab.checkpoints import CheckpointError, load_model
from genlab.errors import ConfigError
from genlab.metrics.inception import inception_features, load_inception, weights_path
from genlab.models.classifier import Classifier
from genlab.models.nets.classifier import ConvClassifier


class FeatureSpace(nn.Module):
    """Images -> (features (B, D), logits (B, K)), with `name` (classifier, inception), `num_features` (D) and
    `identity`: the name and a digest of the weights, which keys reference statistics files."""

    name: str
    num_features: int

    @functools.cached_property
    def identity(self) -> str:
        digest = hashlib.sha256()
        for key, tensor in sorted(self.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
        return f"{self.name}-{digest.hexdigest()[:16]}"


class ClassifierFeatures(FeatureSpace):
    """A genlab classifier of the domain: its penultimate features, and its class logits."""

    name = "classifier"

    def __init__(self, classifier: ConvClassifier) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_features = classifier.feature_dim
        self.num_classes = classifier.head[-1].out_features

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.classifier.features(images)  # (B, feature_dim)
        return features, self.classifier.head(features)  # (B, num_classes)


class InceptionFeatures(FeatureSpace):
    """torch-fidelity's Inception-v3: 2048 pool features, 1008 unbiased logits (genlab/metrics/inception.py)."""

    name = "inception"
    num_features = 2048

    def __init__(self, weights: Path) -> None:
        super().__init__()
        self.inception = load_inception(weights)

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # always eval: BatchNorm uses its running statistics, never the batch's

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return inception_features(self.inception, images)


def feature_space(
    feature: str,
    dataset: str,
    image_shape: tuple[int, int, int],
    classifier_ckpt: str | None,
    inception_weights: str | None,
) -> FeatureSpace:
    """metrics.feature's space for images of `image_shape` (C, H, W): `classifier` (the dataset's, or
    metrics.classifier_ckpt) or `inception` (any shape: it resizes to 299x299)."""
    if feature == "classifier":
        return ClassifierFeatures(load_feature_classifier(classifier_ckpt, dataset, image_shape))
    if feature == "inception":
        return InceptionFeatures(weights_path(inception_weights))
    raise ConfigError(f"metrics.feature={feature!r}: expected 'classifier' or 'inception'")


# the feature classifiers genlab ships: package data, in a clone and in an install alike
SHIPPED_CLASSIFIERS = Path(__file__).resolve().parent / "classifiers"
# where the classifier recipes (conf/experiment/classifier_*.yaml) export one, in the folder genlab runs from
EXPORTED_CLASSIFIERS = Path("checkpoints") / "eval"


def default_classifier_path(dataset: str) -> Path:
    """The classifier of `dataset` that a recipe exported here, else the one genlab ships."""
    exported = EXPORTED_CLASSIFIERS / f"{dataset}.ckpt"
    return exported if exported.is_file() else SHIPPED_CLASSIFIERS / f"{dataset}.ckpt"


def load_feature_classifier(path: str | Path | None, dataset: str, image_shape: tuple[int, int, int]) -> ConvClassifier:
    """The frozen classifier network of `path` (default: `default_classifier_path(dataset)`), which must take images
    of `image_shape` (C, H, W): the data's, whose images it scores."""
    path = Path(path) if path else default_classifier_path(dataset)
    if not path.is_file():
        export = path if path.parent != SHIPPED_CLASSIFIERS else EXPORTED_CLASSIFIERS / path.name
        raise CheckpointError(
            f"No feature classifier for {dataset} at {path}: FID/KID need one. Train and export it with: "
            f"python -m src.train experiment=classifier_{dataset}  (or model=classifier data={dataset} "
            f"callbacks=[default,export_best] callbacks.export_best.path={export})"
        )
    model = load_model(path)
    if not isinstance(model, Classifier):
        raise CheckpointError(f"{path}: holds a {type(model).__name__}, not a Classifier")
    if tuple(model.hparams.image_shape) != tuple(image_shape):
        raise CheckpointError(
            f"{path}: its classifier takes images of shape {tuple(model.hparams.image_shape)}, and {dataset}'s are "
            f"{tuple(image_shape)}: give metrics.classifier_ckpt a classifier trained on {dataset}"
        )
    return model.net
