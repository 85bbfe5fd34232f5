"""Likelihoods of 8-bit images on one scale: bits per dimension, for every family that has a likelihood.

An 8-bit image v (levels 0..255) has a probability P(v); a model of continuous data has a density p(x) on
[0, 1]^D. Uniform dequantization x = (v + u) / 256, u ~ U(0, 1)^D (Theis et al. 2016, section 3.1; the flows'
and Burda et al.'s convention) bounds one by the other, by Jensen's inequality:

    -log P(v) <= E_u[-log p((v + u) / 256)] + D log 256

and bits per dimension is that bound divided by D log 2. The normalizing flow (exact density) and the VAE
(an importance-weighted lower bound on its density) both go through `dequantized_nll`; DDPM diffusion bounds
-log P(v) directly with its discretized decoder (Ho et al. 2020, eq. 13), no dequantization needed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def dequantize(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Images in [0, 1] as their 8-bit levels v spread uniformly over their bins: (v + u) / 256, u ~ U(0, 1)."""
    device = images.device if generator is None else generator.device  # a CPU generator: the same draws anywhere
    noise = torch.rand(images.shape, generator=generator, device=device).to(images.device, images.dtype)
    return (torch.round(images * 255) + noise) / 256


def dequantized_nll(log_density: Tensor, dims: int) -> Tensor:
    """The bound on -log P(v) in nats (B,) from the log-density (B,) of dequantized images on [0, 1]^dims: each
    8-bit level's bin is 1/256 wide, so P(v) >= p(x) / 256^D on average over the bin."""
    return -log_density + dims * math.log(256)


def bits_per_dim(nll: Tensor, dims: int) -> Tensor:
    """Nats per image (B,) -> bits per dimension (B,)."""
    return nll / (dims * math.log(2))
