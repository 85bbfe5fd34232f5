"""What a model family can do, written down once.

Entry points (src.sample, src.eval) and callbacks (image grids, sample metrics, text samples) check a
model against these protocols with isinstance, never with hasattr. A new family implements the ones
that fit it and gets those tools for free. Images are float tensors (B, C, H, W) in [0, 1].
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from src.errors import ConfigError


@runtime_checkable
class ImageSampler(Protocol):
    """Draws new images from the model's distribution (src.sample grids, FID/KID/IS of samples)."""

    def sample(self, num_samples: int) -> Tensor:
        """`num_samples` images (num_samples, C, H, W) in [0, 1]."""
        ...


@runtime_checkable
class LatentDecoder(Protocol):
    """Decodes latent vectors to images (sample grids from fixed noise, interpolations, the 2-D manifold)."""

    latent_dim: int

    def generate(self, z: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] for latents z (B, latent_dim)."""
        ...


@runtime_checkable
class ImageEncoder(Protocol):
    """Encodes images to the Gaussian posterior over latents (interpolations between two images)."""

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance (B, latent_dim) each."""
        ...


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
class TextGenerator(Protocol):
    """Continues a text prompt (src.sample for text, text samples during training)."""

    def generate_text(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        num_samples: int = 1,
        seed: int | None = None,
    ) -> list[str]:
        """`num_samples` continuations of `prompt`, each `max_new_tokens` characters longer."""
        ...


def require(model: Any, capability: type, user: str) -> None:
    """Refuse, naming both, a model that lacks what a tool (a callback, an entry point) needs of it."""
    if not isinstance(model, capability):
        raise ConfigError(
            f"{user} needs a model that is a {capability.__name__} ({(capability.__doc__ or '').strip()}); "
            f"{type(model).__name__} is not"
        )
