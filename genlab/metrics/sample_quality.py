"""FID, KID and an Inception-Score analogue for images, in the feature space of a domain classifier.

Inception-v3 weights cannot be downloaded everywhere, and on 28x28 grayscale data a classifier
trained on the domain is the better judge anyway (as MNIST papers use). The classifier is trained
by this project (`experiment=classifier_<dataset>`) and frozen here; torchmetrics computes the
statistics. With `feature="inception"` the metrics use torchmetrics' Inception-v3 instead (needs
torch-fidelity and its weights).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from genlab.checkpoints import CheckpointError, load_model
from genlab.errors import ConfigError
from genlab.models.classifier import Classifier
from genlab.models.nets.classifier import ConvClassifier


class _Precomputed(nn.Identity):
    """torchmetrics runs its `feature` module on what update() receives: here, features computed once for all three."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features


class SampleQuality(nn.Module):
    """Accumulates real and generated images; `compute()` returns FID, KID (mean, std) and IS (mean, std).

    Images are float tensors (B, C, H, W) in [0, 1]. KID needs at least `kid_subset_size` images of each kind.
    """

    def __init__(
        self,
        classifier: ConvClassifier | None,
        feature: str = "classifier",
        kid_subset_size: int = 1000,
        is_splits: int = 10,
    ) -> None:
        super().__init__()
        self.feature = feature
        with warnings.catch_warnings():  # IS warns that it keeps its features: 64 floats an image here
            warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer")
            if feature == "classifier":
                if classifier is None:
                    raise ValueError("feature='classifier' needs a classifier")
                self.classifier = classifier.eval().requires_grad_(False)
                num_features = classifier.feature_dim
                self.fid = FrechetInceptionDistance(feature=_Precomputed(num_features), reset_real_features=False)
                self.kid = KernelInceptionDistance(
                    feature=_Precomputed(num_features), subset_size=kid_subset_size, reset_real_features=False
                )
                self.inception_score = InceptionScore(feature=classifier.head, splits=is_splits)
                # how many generated images the classifier puts in each class: their spread is sample diversity
                self.register_buffer("label_counts", torch.zeros(classifier.num_classes), persistent=False)
            elif feature == "inception":
                try:
                    self.fid = FrechetInceptionDistance(feature=2048, normalize=True, reset_real_features=False)
                    self.kid = KernelInceptionDistance(
                        feature=2048, normalize=True, subset_size=kid_subset_size, reset_real_features=False
                    )
                    self.inception_score = InceptionScore(normalize=True, splits=is_splits)
                except (ModuleNotFoundError, OSError, RuntimeError) as err:
                    raise ConfigError(
                        f"metrics.feature=inception needs torch-fidelity (pip install torch-fidelity) and its "
                        f"Inception-v3 weights, downloaded on first use: {err}"
                    ) from None
            else:
                raise ConfigError(f"metrics.feature={feature!r}: expected 'classifier' or 'inception'")

    @torch.no_grad()
    def update(self, images: Tensor, real: bool) -> None:
        if self.feature == "classifier":
            inputs = self.classifier.features(images)  # (B, feature_dim), shared by the three metrics
            self.fid.update(inputs, real=real)
            self.kid.update(inputs, real=real)
            if not real:
                self.inception_score.update(inputs)  # the classifier's head turns them into logits
                labels = self.classifier.head(inputs).argmax(dim=1)
                self.label_counts += torch.bincount(labels, minlength=len(self.label_counts))
        else:
            inputs = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images  # Inception wants RGB
            self.fid.update(inputs, real=real)
            self.kid.update(inputs, real=real)
            if not real:
                self.inception_score.update(inputs)

    def compute(self) -> dict[str, float]:
        """The scores; with the classifier also `label_entropy`: the entropy (nats) of the classes the
        classifier assigns to the generated images, ln(num_classes) when all classes are equally
        common, 0 when every sample looks like one class (mode collapse)."""
        kid_mean, kid_std = self.kid.compute()
        is_mean, is_std = self.inception_score.compute()
        scores = {
            "fid": float(self.fid.compute()),
            "kid": float(kid_mean),
            "kid_std": float(kid_std),
            "is": float(is_mean),
            "is_std": float(is_std),
        }
        if self.feature == "classifier":
            scores["label_entropy"] = float(torch.special.entr(self.label_counts / self.label_counts.sum()).sum())
        return scores

    def reset_generated(self) -> None:
        """Forget the generated images, keep the real ones (to score a new set of samples)."""
        for metric in (self.fid, self.kid, self.inception_score):
            metric.reset()  # reset_real_features=False keeps the real statistics of FID and KID
        if self.feature == "classifier":
            self.label_counts.zero_()


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
