"""A small convolutional image classifier whose penultimate layer doubles as a feature space for FID/KID."""

from __future__ import annotations

from torch import Tensor, nn

from genlab.models.nets.resolution import stage_widths

FIRST_WIDTH = 32  # the first stage's width where the stages follow the image size: 32, 64, 128, ...


class ConvClassifier(nn.Module):
    """Images (B, C, H, W) -> class logits (B, num_classes).

    `features` maps images to the `feature_dim`-dimensional penultimate layer, `head` maps those to
    logits: the sample-quality metrics use the first as their feature space and the second for the
    Inception-Score analogue. `channels` are the stages' widths; None: one stage per halving of the image down to 8
    pixels or fewer (`resolution.depth`), doubling from 32.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        channels: tuple[int, ...] | None = None,
        feature_dim: int = 64,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        if channels is None:
            channels = stage_widths(image_shape, FIRST_WIDTH, "the classifier")
        layers: list[nn.Module] = []
        in_channels, height, width = image_shape
        for out_channels in channels:  # each stage: two 3x3 convs, then halve the resolution
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            in_channels, height, width = out_channels, height // 2, width // 2
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.features = nn.Sequential(
            *layers,
            nn.Flatten(),
            nn.Linear(in_channels * height * width, feature_dim),
            nn.ReLU(),
            # Standardised with the training set's statistics (fixed at eval): features of unit scale,
            # which KID's polynomial kernel (x.y / d + 1)^3 assumes; raw activations gave KIDs in the 1000s.
            nn.BatchNorm1d(feature_dim, affine=False),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))  # (B, C, H, W) -> (B, feature_dim) -> (B, num_classes)
