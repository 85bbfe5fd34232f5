"""DCGAN generator and discriminator (Radford et al., 2016), as deep as the image size asks, optionally
class-conditional."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genlab.models.nets.resolution import depth, doubling_widths


class Generator(nn.Module):
    """Noise z (B, latent_dim) [+ class labels (B,)] -> images (B, C, H, W) in [-1, 1].

    A linear projection to the lowest resolution (`resolution.depth` halvings down: 7x7 for 28x28, 8x8 for 32x32 and
    above), then one stride-2 transposed convolution per halving with batch norm and ReLU, the width halving each time
    down to `channels` at the full size (DCGAN's 8c -> 4c -> 2c -> c at 64x64), a 3x3 conv to the image and tanh. A
    conditional generator concatenates a learned class embedding to z.
    """

    def __init__(
        self, latent_dim: int, image_shape: tuple[int, int, int], channels: int = 64, num_classes: int = 0
    ) -> None:
        super().__init__()
        image_channels, height, width = image_shape
        num_stages = depth(image_shape, "the DCGAN generator")
        widths = doubling_widths(channels, num_stages + 1)  # widths[i] at 1/2^i of the image size
        lowest = (widths[-1], height >> num_stages, width >> num_stages)
        self.label_embedding = nn.Embedding(num_classes, latent_dim) if num_classes else None
        in_dim = 2 * latent_dim if num_classes else latent_dim
        self.project = nn.Sequential(
            nn.Linear(in_dim, lowest[0] * lowest[1] * lowest[2], bias=False),
            nn.Unflatten(1, lowest),
            nn.BatchNorm2d(lowest[0]),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for in_channels, out_channels in zip(widths[:0:-1], widths[-2::-1], strict=True):  # e.g. 4c -> 2c -> c
            layers += [
                nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
            ]
        self.upsample = nn.Sequential(*layers, nn.Conv2d(channels, image_channels, 3, padding=1), nn.Tanh())

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)  # (B, 2 * latent_dim)
        return self.upsample(self.project(z))  # (B, widths[-1], H/2^n, W/2^n) -> (B, C, H, W)


class Discriminator(nn.Module):
    """Images (B, C, H, W) in [-1, 1] [+ class labels (B,)] -> real-vs-fake logits (B,).

    One stride-2 convolution per halving of the image (`resolution.depth`), the width doubling from `channels`, with
    LeakyReLU and no batch norm, so that the WGAN-GP gradient penalty, which is per-sample, stays valid; then a linear
    layer on the flattened lowest resolution. A conditional discriminator adds the projection term <embed(y), features>
    (Miyato & Koyama, 2018).
    """

    def __init__(self, image_shape: tuple[int, int, int], channels: int = 64, num_classes: int = 0) -> None:
        super().__init__()
        image_channels, height, width = image_shape
        num_stages = depth(image_shape, "the DCGAN discriminator")
        widths = doubling_widths(channels, num_stages)  # e.g. c -> 2c at 28x28 and 32x32
        layers: list[nn.Module] = []
        for in_channels, out_channels in zip((image_channels, *widths), widths, strict=False):
            layers += [nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        feature_dim = widths[-1] * (height >> num_stages) * (width >> num_stages)
        self.head = nn.Linear(feature_dim, 1)
        self.label_embedding = nn.Embedding(num_classes, feature_dim) if num_classes else None

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        features = self.features(images)  # (B, feature_dim)
        logits = self.head(features).squeeze(1)  # (B,)
        if self.label_embedding is not None:
            logits = logits + (self.label_embedding(labels) * features).sum(dim=1)
        return logits
