"""DCGAN generator and discriminator (Radford et al., 2016) for 28x28 and 32x32 images, optionally class-conditional."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Generator(nn.Module):
    """Noise z (B, latent_dim) [+ class labels (B,)] -> images (B, C, H, W) in [-1, 1].

    A linear projection to a (4c, H/4, W/4) map, then two stride-2 transposed convolutions with
    batch norm and ReLU, and tanh. A conditional generator concatenates a learned class
    embedding to z.
    """

    def __init__(
        self, latent_dim: int, image_shape: tuple[int, int, int], channels: int = 64, num_classes: int = 0
    ) -> None:
        super().__init__()
        image_channels, height, width = image_shape
        if height % 4 or width % 4:
            raise ValueError(f"the DCGAN generator needs a height and width divisible by 4, got {height}x{width}")
        self.label_embedding = nn.Embedding(num_classes, latent_dim) if num_classes else None
        in_dim = 2 * latent_dim if num_classes else latent_dim
        self.project = nn.Sequential(
            nn.Linear(in_dim, 4 * channels * (height // 4) * (width // 4), bias=False),
            nn.Unflatten(1, (4 * channels, height // 4, width // 4)),
            nn.BatchNorm2d(4 * channels),
            nn.ReLU(),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(4 * channels, 2 * channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, image_channels, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)  # (B, 2 * latent_dim)
        return self.upsample(self.project(z))  # (B, 4c, H/4, W/4) -> (B, C, H, W)


class Discriminator(nn.Module):
    """Images (B, C, H, W) in [-1, 1] [+ class labels (B,)] -> real-vs-fake logits (B,).

    Stride-2 convolutions with LeakyReLU and no batch norm, so that the WGAN-GP gradient penalty,
    which is per-sample, stays valid. A conditional discriminator adds the projection term
    <embed(y), features> (Miyato & Koyama, 2018).
    """

    def __init__(self, image_shape: tuple[int, int, int], channels: int = 64, num_classes: int = 0) -> None:
        super().__init__()
        image_channels, height, width = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(image_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        feature_dim = 2 * channels * (height // 4) * (width // 4)
        self.head = nn.Linear(feature_dim, 1)
        self.label_embedding = nn.Embedding(num_classes, feature_dim) if num_classes else None

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        features = self.features(images)  # (B, feature_dim)
        logits = self.head(features).squeeze(1)  # (B,)
        if self.label_embedding is not None:
            logits = logits + (self.label_embedding(labels) * features).sum(dim=1)
        return logits
