"""What a model family can do, written down once.

Entry points (src.sample, src.eval) and callbacks (image grids, sample metrics, text samples) check a
model against these protocols with isinstance, never with hasattr. A new family implements the ones
that fit it and gets those tools for free. Images are float tensors (B, C, H, W) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Protocol, runtime_checkable

import torch
from pydantic import Field
from torch import Tensor, nn

from genlab.errors import ConfigError

# (C, H, W) of the images a family makes or reads, declared in its signature as every range is: bounded, so that a
# checkpoint's three numbers cannot describe terabytes of pixels for a network whose weights do not grow with them
MAX_CHANNELS, MAX_SIDE = 64, 8192
Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]
ImageShape = tuple[Annotated[int, Field(ge=1, le=MAX_CHANNELS)], Side, Side]
# the most stages a family's network may have that each halve the image (its `channels`): 2**16 is past MAX_SIDE;
# Stages: one width (or multiplier) per stage, at least one
MAX_STAGES = 16
Stages = Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(min_length=1, max_length=MAX_STAGES)]
# how a text is drawn, declared once: src.sample's options are of these types, and a TextGenerator holds its
# arguments to them (temperature 0: the most likely token; top_k / top_p: the k likeliest tokens, the nucleus)
Temperature = Annotated[float, Field(ge=0)]  # and finite: check_options and generate_text say so
TopK = Annotated[int, Field(ge=1)]
TopP = Annotated[float, Field(gt=0, le=1)]


@runtime_checkable
class ImageSampler(Protocol):
    """Draws new images from the model's distribution (src.sample grids, FID/KID/IS of samples)."""

    def sample(self, num_samples: int) -> Tensor:
        """`num_samples` images (num_samples, C, H, W) in [0, 1]."""
        ...


@runtime_checkable
class StepwiseSampler(ImageSampler, Protocol):
    """An ImageSampler that turns noise into images in steps (diffusion, flow matching): the number of steps, the
    sampler and the classifier-free guidance are chosen when sampling (src.sample, src.eval: steps=, sampler=,
    guidance_scale=), and the path from noise to image can be shown (the denoising-trajectory strip)."""

    noise_shape: tuple[int, int, int]  # (C, H, W) of the noise sampling starts from: its images' own, or its latents'

    def set_sampling(
        self, steps: int | None = None, sampler: str | None = None, guidance_scale: float | None = None
    ) -> None:
        """Sample with these from now on (None: keep the current choice); ConfigError for what the model cannot use."""
        ...

    def denoising_trajectory(self, noise: Tensor, num_states: int, generator: torch.Generator | None = None) -> Tensor:
        """States (num_states, B, C, H, W) in [0, 1] from the noise (B, C, H, W) (first) to the samples (last);
        `generator`: the noise a stochastic sampler adds along the way (None: torch's global generator)."""
        ...


@runtime_checkable
class LatentDecoder(Protocol):
    """Decodes latents to images (sample grids from fixed noise, interpolations, the 2-D manifold)."""

    latent_shape: tuple[int, ...]  # of one latent: (latent_dim,) for a vector, (C, h, w) for a map

    def generate(self, z: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] for latents z (B, *latent_shape)."""
        ...


@runtime_checkable
class ImageEncoder(Protocol):
    """Encodes images to the Gaussian posterior over latents (interpolations between two images)."""

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance (B, *latent_shape) each."""
        ...


@runtime_checkable
class FirstStage(ImageEncoder, LatentDecoder, Protocol):
    """Maps images to latents and back: what a latent model works in (latent diffusion's first stage, Rombach et
    al. 2022)."""

    image_shape: tuple[int, int, int]  # (C, H, W) of the images it encodes


class TrainedModel:
    """Another family's trained model, which a family builds on (latent diffusion's first stage). A constructor
    argument of this type is given, in a config and in a checkpoint's hyperparameters, as the path of that model's
    checkpoint: genlab/checkpoints/rebuild.py reads and rebuilds it and hands it over as this, frozen, in eval mode.
    (A plain class: Hydra's instantiate would turn a dataclass passed to it into a config.)"""

    def __init__(self, model: nn.Module, path: str, content_hash: str) -> None:
        self.model = model
        self.path = path  # the checkpoint it was read from, resolved
        self.content_hash = content_hash  # sha256 of its weights (names, types, shapes, values): which model it is


@runtime_checkable
class Reconstructor(Protocol):
    """Reconstructs the images it is given (reconstruction grids, FID/KID of reconstructions)."""

    def reconstruct(self, images: Tensor) -> Tensor:
        """Reconstructions (B, C, H, W) in [0, 1] of the images as given."""
        ...


@runtime_checkable
class Denoiser(Reconstructor, Protocol):
    """A reconstructor trained on corrupted inputs: callers corrupt the images, then reconstruct them."""

    def corrupt(self, images: Tensor) -> Tensor:
        """The images with the noise the model was trained to remove."""
        ...


@runtime_checkable
class LikelihoodModel(Protocol):
    """Bounds the negative log-likelihood of 8-bit images, in bits per dimension on one scale for every family
    (src.eval's likelihood/bpd; genlab/models/likelihood.py says how)."""

    likelihood_bound: str | None  # what the number is (exact, or which bound); None where the model has none

    def nll_bits_per_dim(self, images: Tensor, importance_samples: int) -> Tensor:
        """An upper bound (B,) on -log2 P(v) / D of each 8-bit image v (images (B, C, H, W) in [0, 1]);
        `importance_samples`: k of an importance-weighted bound (the VAE's), ignored by the others."""
        ...


@runtime_checkable
class TextGenerator(Protocol):
    """Continues a text prompt (src.sample for text, text samples during training)."""

    def generate_text(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: Temperature = 1.0,
        top_k: TopK | None = None,
        top_p: TopP | None = None,
        num_samples: int = 1,
        seed: int | None = None,
    ) -> list[str]:
        """`num_samples` continuations of `prompt`, each `max_new_tokens` characters longer."""
        ...


@runtime_checkable
class DeclaresFlops(Protocol):
    """Says what one training batch costs in floating-point operations, forward and backward (the progress bar's
    model FLOPs utilization on a GPU)."""

    def flops_per_batch(self, batch: Any) -> float:
        """The FLOPs of one training step on `batch` (forward and backward)."""
        ...


def require(model: Any, capability: type, user: str) -> None:
    """Refuse, naming both, a model that lacks what a tool (a callback, an entry point) needs of it."""
    if not isinstance(model, capability):
        raise ConfigError(
            f"{user} needs a model that is a {capability.__name__} ({(capability.__doc__ or '').strip()}); "
            f"{type(model).__name__} is not"
        )


SAMPLING_OPTIONS = ("steps", "sampler", "guidance_scale")


def use_sampling_options(model: Any, options: Mapping[str, Any]) -> None:
    """Pass the entry points' steps=, sampler=, guidance_scale= (None: the model's own) to a StepwiseSampler;
    refuse them, naming the model, for any other: it samples in one pass and has nothing to set."""
    given = {key: options[key] for key in SAMPLING_OPTIONS if options.get(key) is not None}
    if not given:
        return
    if not isinstance(model, StepwiseSampler):
        raise ConfigError(
            f"{' '.join(f'{key}={value}' for key, value in given.items())}: {type(model).__name__} does not sample in "
            f"steps (it is not a StepwiseSampler); these options are for diffusion and flow models, leave them unset"
        )
    model.set_sampling(**given)
