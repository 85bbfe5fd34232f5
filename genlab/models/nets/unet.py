"""A small U-Net (Ronneberger et al., 2015) as DDPM uses it (Ho et al., 2020): the network of the diffusion family.

Sinusoidal time embedding, residual blocks with group norm that add the time (and class) embedding,
self-attention in the middle and at the levels of the resolutions asked for (DDPM's 16x16), and a stride-2
downsampling after every level, so that with channel multipliers (1, 2) a 28x28 image is processed at 28x28, 14x14
and, in the middle, 7x7. Without multipliers given, the image size picks them (`ddpm_multipliers`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.models.nets.resolution import check_stages, depth

# Groups of group norm: 8, not DDPM's 32, because these nets are narrow (16-64 channels) and 32 groups of
# one or two channels would normalise each channel on its own.
NORM_GROUPS = 8


# DDPM's channel multipliers per level (Ho et al. 2020, appendix B): CIFAR-10's (1, 2, 2, 2) at 32 pixels, the 256-pixel
# datasets' (1, 1, 2, 2, 4, 4). DDPM's lowest level is 4x4 at 32 pixels and 8x8 at 256; this U-Net has one level per
# halving of the image down to 8 pixels or fewer (resolution.depth) and its middle one halving further down, where
# DDPM's last level is: an image of L halvings takes the first L multipliers, CIFAR-10's up to 3 levels (64x64),
# the 256-pixel ones' from 4 (128x128) to 6 (512x512).
CIFAR10_MULTIPLIERS = (1, 2, 2, 2)
LARGE_IMAGE_MULTIPLIERS = (1, 1, 2, 2, 4, 4)


def ddpm_multipliers(image_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """The channel multipliers DDPM would give an image of this size: (1, 2) at 28x28 and 32x32, (1, 2, 2) at 64x64,
    (1, 1, 2, 2, 4) at 256x256."""
    levels = depth(image_shape, "the U-Net")
    if levels > len(LARGE_IMAGE_MULTIPLIERS):
        _, height, width = image_shape
        raise ConfigError(
            f"the U-Net picks its channel multipliers for images of up to {len(LARGE_IMAGE_MULTIPLIERS)} halvings "
            f"(512x512); {height}x{width} halves {levels} times: give model.channel_multipliers"
        )
    return (CIFAR10_MULTIPLIERS if levels <= 3 else LARGE_IMAGE_MULTIPLIERS)[:levels]


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(NORM_GROUPS, channels), channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero the module's parameters: a residual branch that ends in it starts as the identity (improved DDPM)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class SinusoidalTimeEmbedding(nn.Module):
    """Times t (B,) in [0, 1] -> (B, dim): sines and cosines of 1000 t at geometric frequencies (Vaswani et al.).

    Scaled by 1000 so that t = step / 1000 embeds as DDPM's integer steps do; flow matching's continuous
    t in [0, 1] gets the same range of frequencies.
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> None:
        super().__init__()
        half = dim // 2
        frequencies = torch.exp(-math.log(max_period) * torch.arange(half) / half)  # (dim/2,) from 1 to 1/max_period
        self.register_buffer("frequencies", frequencies, persistent=False)  # a function of dim: not a weight
        self.scale = scale

    def forward(self, t: Tensor) -> Tensor:
        angles = self.scale * t[:, None].float() * self.frequencies[None, :]  # (B, dim/2)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (B, dim)


class ResidualBlock(nn.Module):
    """(B, in_channels, H, W) + embedding (B, embedding_dim) -> (B, out_channels, H, W).

    GroupNorm -> SiLU -> conv, plus the projected time/class embedding as a per-channel bias, then
    GroupNorm -> SiLU -> dropout -> conv; a 1x1 conv on the skip path where the width changes.
    """

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding_proj = nn.Linear(embedding_dim, out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        h = h + self.embedding_proj(F.silu(embedding))[:, :, None, None]  # (B, out, 1, 1) broadcast over H, W
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))  # (B, out, H, W)
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, residual: (B, C, H, W) -> same."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)  # query, key and value projections in one conv
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).view(B, 3, self.num_heads, C // self.num_heads, H * W)  # (B, 3, nh, hs, HW)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # (B, nh, HW, hs) each
        y = F.scaled_dot_product_attention(q, k, v)  # (B, nh, HW, hs); fused kernels where torch has them
        y = y.transpose(-1, -2).reshape(B, C, H, W)  # heads side by side again
        return x + self.proj(y)


class Downsample(nn.Module):
    """(B, C, H, W) -> (B, C, H/2, W/2) by a stride-2 conv (learned, unlike pooling)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """(B, in_channels, H, W) -> (B, out_channels, 2H, 2W): nearest-neighbour, then a conv (no checkerboard of
    transposed convs) that narrows to the level's width at once: the larger level's blocks never see the wider maps."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Noisy images (B, C, H, W), times (B,) in [0, 1] [, class labels (B,)] -> (B, C, H, W).

    What the output means (the noise, or a velocity) is the training objective's business, not the net's.
    Level i works at H/2^i with base_channels * channel_multipliers[i] channels (None: `ddpm_multipliers`); the
    middle, at H/2^len(channel_multipliers), has self-attention, and so does each residual block of a level whose
    resolution (its height) is in `attention_resolutions`. A conditional net (num_classes > 0) adds a learned class
    embedding to the time embedding; label `num_classes` (or labels=None) is "no class", the unconditional model that
    classifier-free guidance needs.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        base_channels: int = 32,
        channel_multipliers: tuple[int, ...] | None = None,
        num_res_blocks: int = 2,
        attention_heads: int = 4,
        dropout: float = 0.0,
        num_classes: int = 0,
        attention_resolutions: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        image_channels, height, width = image_shape
        if channel_multipliers is None:
            channel_multipliers = ddpm_multipliers(image_shape)
        num_levels = len(channel_multipliers)
        check_stages(image_shape, num_levels, f"channel_multipliers={list(channel_multipliers)}")
        self.num_classes = num_classes
        embedding_dim = 4 * base_channels
        self.time_embedding = nn.Sequential(
            SinusoidalTimeEmbedding(base_channels),
            nn.Linear(base_channels, embedding_dim),
            nn.SiLU(),
            nn.Linear(embedding_dim, embedding_dim),
        )
        # one more row than classes: the "no class" label of classifier-free guidance
        self.label_embedding = nn.Embedding(num_classes + 1, embedding_dim) if num_classes else None
        self.stem = nn.Conv2d(image_channels, base_channels, 3, padding=1)

        channels = base_channels
        level_channels = [base_channels * multiplier for multiplier in channel_multipliers]
        attends = [(height >> level) in attention_resolutions for level in range(num_levels)]

        def attention(channels: int, level: int) -> nn.Module:  # an Identity holds no weights: no state-dict keys
            return SelfAttention(channels, attention_heads) if attends[level] else nn.Identity()

        self.down_levels = nn.ModuleList()
        self.down_attention = nn.ModuleList()  # after each block of the level, in step with down_levels
        self.downsamples = nn.ModuleList()
        for level, out_channels in enumerate(level_channels):
            blocks, attentions = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResidualBlock(channels, out_channels, embedding_dim, dropout))
                attentions.append(attention(out_channels, level))
                channels = out_channels
            self.down_levels.append(blocks)
            self.down_attention.append(attentions)
            self.downsamples.append(Downsample(channels))

        self.middle_block1 = ResidualBlock(channels, channels, embedding_dim, dropout)
        self.middle_attention = SelfAttention(channels, attention_heads)
        self.middle_block2 = ResidualBlock(channels, channels, embedding_dim, dropout)

        # the mirror image: each level upsamples, then each block takes the skip of its twin on the way down
        self.upsamples = nn.ModuleList()
        self.up_levels = nn.ModuleList()
        self.up_attention = nn.ModuleList()
        for level, out_channels in reversed(list(enumerate(level_channels))):
            self.upsamples.append(Upsample(channels, out_channels))
            channels = out_channels
            blocks, attentions = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResidualBlock(2 * channels, channels, embedding_dim, dropout))
                attentions.append(attention(channels, level))
            self.up_levels.append(blocks)
            self.up_attention.append(attentions)

        self.out_norm = group_norm(channels)
        self.out_conv = zero_init(nn.Conv2d(channels, image_channels, 3, padding=1))  # predicts 0 at the start

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        embedding = self.time_embedding(t)  # (B, 4 * base)
        if self.label_embedding is not None:
            if labels is None:  # all "no class"
                labels = torch.full((len(x),), self.num_classes, dtype=torch.long, device=x.device)
            embedding = embedding + self.label_embedding(labels)  # (B, 4 * base)

        h = self.stem(x)  # (B, base, H, W)
        skips = []
        for blocks, attentions, downsample in zip(self.down_levels, self.down_attention, self.downsamples, strict=True):
            for block, attention in zip(blocks, attentions, strict=True):
                h = attention(block(h, embedding))  # (B, base * mult[i], H/2^i, W/2^i)
                skips.append(h)
            h = downsample(h)  # (B, base * mult[i], H/2^(i+1), W/2^(i+1))

        h = self.middle_block1(h, embedding)  # (B, base * mult[-1], H/2^L, W/2^L)
        h = self.middle_attention(h)
        h = self.middle_block2(h, embedding)

        for upsample, blocks, attentions in zip(self.upsamples, self.up_levels, self.up_attention, strict=True):
            h = upsample(h)  # (B, base * mult[i], H/2^i, W/2^i)
            for block, attention in zip(blocks, attentions, strict=True):
                # with the skip of its twin on the way down: (B, 2 base mult[i], ...) -> (B, base mult[i], ...)
                h = attention(block(torch.cat([h, skips.pop()], dim=1), embedding))

        return self.out_conv(F.silu(self.out_norm(h)))  # (B, C, H, W)
