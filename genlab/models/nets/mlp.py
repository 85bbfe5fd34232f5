"""Fully connected encoder and decoder between images and flat vectors (the classic MNIST VAE's)."""

from __future__ import annotations

import math

from torch import Tensor, nn


def _mlp(dims: list[int]) -> list[nn.Module]:
    """Linear layers through `dims`, with a ReLU after each but the last."""
    layers: list[nn.Module] = []
    for i, (in_dim, out_dim) in enumerate(zip(dims, dims[1:], strict=False)):
        layers.append(nn.Linear(in_dim, out_dim))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return layers


class MLPEncoder(nn.Module):
    """Images (B, C, H, W) -> vectors (B, out_dim), e.g. 784 -> 400 -> out_dim."""

    def __init__(self, image_shape: tuple[int, int, int], out_dim: int, hidden_dims: tuple[int, ...] = (400,)) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), *_mlp([math.prod(image_shape), *hidden_dims, out_dim]))

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)  # (B, C, H, W) -> (B, C*H*W) -> (B, out_dim)


class MLPDecoder(nn.Module):
    """Vectors (B, in_dim) -> image logits (B, C, H, W), e.g. in_dim -> 400 -> 784.

    `hidden_dims` are listed as for the encoder it mirrors, so the same tuple configures both.
    """

    def __init__(self, image_shape: tuple[int, int, int], in_dim: int, hidden_dims: tuple[int, ...] = (400,)) -> None:
        super().__init__()
        dims = [in_dim, *reversed(hidden_dims), math.prod(image_shape)]
        self.net = nn.Sequential(*_mlp(dims), nn.Unflatten(1, tuple(image_shape)))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)  # (B, in_dim) -> (B, C*H*W) -> (B, C, H, W)
