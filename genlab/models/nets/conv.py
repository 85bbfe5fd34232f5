"""Convolutional encoders and decoders: between images and flat vectors, and between images and latent maps."""

from __future__ import annotations

from torch import Tensor, nn

from genlab.models.nets.resolution import check_stages, stage_widths
from genlab.models.nets.unet import group_norm

FIRST_WIDTH = 32  # the first stage's width where the stages follow the image size: 32, 64, 128, ...


def stages(image_shape: tuple[int, int, int], channels: tuple[int, ...] | None) -> tuple[int, ...]:
    """The stride-2 stages' widths: `channels` as given (the image must halve evenly that many times), or with None one
    per halving of the image down to 8 pixels or fewer (`resolution.depth`), doubling from 32."""
    if channels is None:
        return stage_widths(image_shape, FIRST_WIDTH, "the convolutional encoder and decoder")
    check_stages(image_shape, len(channels), f"channels={list(channels)}")
    return tuple(channels)


def _feature_shape(image_shape: tuple[int, int, int], channels: tuple[int, ...]) -> tuple[int, int, int]:
    """Shape (C, H, W) of the feature map after one stride-2 stage per entry of `channels`."""
    _, height, width = image_shape
    return channels[-1], height >> len(channels), width >> len(channels)


class ConvEncoder(nn.Module):
    """Images (B, C, H, W) -> vectors (B, out_dim): stride-2 conv stages, then linear layers.

    `channels` are the stages' widths (None: by the image size, see `stages`); with `hidden_dim`, a hidden fully
    connected layer of that width comes before the output.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        out_dim: int,
        channels: tuple[int, ...] | None = None,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        channels = stages(image_shape, channels)
        layers: list[nn.Module] = []
        in_channels = image_shape[0]
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            in_channels = out_channels
        self.features = nn.Sequential(*layers, nn.Flatten())
        c, h, w = _feature_shape(image_shape, channels)
        hidden = [nn.Linear(c * h * w, hidden_dim), nn.ReLU()] if hidden_dim else []
        self.head = nn.Sequential(*hidden, nn.Linear(hidden_dim or c * h * w, out_dim))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))  # (B, C, H, W) -> (B, c*h*w) -> (B, out_dim)


class ConvDecoder(nn.Module):
    """Vectors (B, in_dim) -> image logits (B, C, H, W): a linear layer, then stride-2 transposed convs.

    `channels` and `hidden_dim` are given as for the encoder it mirrors (first stage first), so
    the same values configure both.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        in_dim: int,
        channels: tuple[int, ...] | None = None,
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        channels = stages(image_shape, channels)
        c, h, w = _feature_shape(image_shape, channels)
        hidden = [nn.Linear(in_dim, hidden_dim), nn.ReLU()] if hidden_dim else []
        self.head = nn.Sequential(
            *hidden, nn.Linear(hidden_dim or in_dim, c * h * w), nn.ReLU(), nn.Unflatten(1, (c, h, w))
        )
        layers: list[nn.Module] = []
        widths = list(reversed(channels))  # e.g. (32, 64) -> 64 -> 32 -> image channels
        for in_channels, out_channels in zip(widths, widths[1:] + [image_shape[0]], strict=True):
            layers += [nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1), nn.ReLU()]
        self.upsample = nn.Sequential(*layers[:-1])  # the last stage outputs logits: no ReLU

    def forward(self, z: Tensor) -> Tensor:
        return self.upsample(self.head(z))  # (B, in_dim) -> (B, c, h, w) -> (B, C, H, W)


class ResidualBlock(nn.Module):
    """(B, C, H, W) -> same: x + conv(SiLU(norm(conv(SiLU(norm(x)))))), 3x3 convs with group norm (the blocks of
    the latent-diffusion paper's autoencoder, Rombach et al. 2022, without their attention)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            group_norm(channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            group_norm(channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class SpatialEncoder(nn.Module):
    """Images (B, C, H, W) -> maps (B, out_channels, H/2^S, W/2^S), S = len(channels): a 3x3 stem, then for each
    stage a stride-2 conv to its width and a residual block, then a 3x3 conv. No flattening: the latent keeps its
    spatial layout, as a latent-diffusion first stage's (Rombach et al. 2022) does for the U-Net that works in it."""

    def __init__(self, image_shape: tuple[int, int, int], out_channels: int, channels: tuple[int, ...] | None) -> None:
        super().__init__()
        channels = stages(image_shape, channels)
        layers: list[nn.Module] = [nn.Conv2d(image_shape[0], channels[0], 3, padding=1)]
        width = channels[0]
        for stage_width in channels:
            layers += [nn.SiLU(), nn.Conv2d(width, stage_width, 4, stride=2, padding=1), ResidualBlock(stage_width)]
            width = stage_width
        layers += [group_norm(width), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)  # (B, C, H, W) -> (B, out_channels, H/2^S, W/2^S)


class SpatialDecoder(nn.Module):
    """Maps (B, in_channels, H/2^S, W/2^S) -> image logits (B, C, H, W): the encoder's mirror, each stage a residual
    block and then a nearest-neighbour upsampling and a 3x3 conv (no checkerboard of transposed convs), so that, as
    in the encoder, the residual blocks work at the lower resolutions."""

    def __init__(self, image_shape: tuple[int, int, int], in_channels: int, channels: tuple[int, ...] | None) -> None:
        super().__init__()
        widths = list(reversed(stages(image_shape, channels)))  # e.g. (32, 64) -> 64, 32
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        for width, next_width in zip(widths, [*widths[1:], widths[-1]], strict=True):
            layers += [
                ResidualBlock(width),
                nn.SiLU(),
                nn.Upsample(scale_factor=2.0, mode="nearest"),
                nn.Conv2d(width, next_width, 3, padding=1),
            ]
        layers += [group_norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], image_shape[0], 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z)  # (B, in_channels, h, w) -> (B, C, h * 2^S, w * 2^S)
