"""Latent diffusion (Rombach et al., 2022): the diffusion process of genlab/models/diffusion.py, run on the latents
of a first stage instead of on pixels.

The first stage is another family's trained model: a VAE whose latent is a map (model=vae
model.architecture=spatial; the recipe vae_first_stage_fashion_mnist), read from its checkpoint by
genlab/checkpoints/rebuild.py and handed over frozen, in eval mode. Training encodes each batch to a draw of the
first stage's posterior, as LDM does; sampling denoises latents and decodes them, so src.sample, src.eval, the
grids and the leaderboard get images as from any other family. The latents are scaled to unit variance by
`latent_scale`, measured on the first training images when a run starts and kept in its checkpoints (Stable
Diffusion's scale_factor): the noise schedule assumes data of about unit scale, and a lightly regularised first
stage's latents are not.

The first stage's weights are not in this model's checkpoints: `first_stage` records the checkpoint it was read
from and `first_stage_hash` the sha256 of its weights, and a first stage with other weights is refused.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from torch import Tensor

from genlab.capabilities import FirstStage, TrainedModel
from genlab.errors import ConfigError
from genlab.models.diffusion import Diffusion, _random
from genlab.models.nets.resolution import LOWEST_SIDE, halvings
from genlab.utils.checkpoint_reader import CheckpointError
from genlab.utils.validation import check_arguments

log = logging.getLogger(__name__)

# the first training images whose latents measure latent_scale (Stable Diffusion measures on its first batch)
SCALE_IMAGES = 1024
# Lightning warns of modules in eval mode when fitting starts: the frozen first stage is, on purpose
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


class LatentDiffusion(Diffusion):
    """Diffusion's U-Net over a first stage's latents (B, *noise_shape); `sample(n)` decodes its samples to images.

    Logged as Diffusion's, the losses the latents'. No likelihood: DDPM's bound would be of the latents, not of
    the images' 8-bit values.
    """

    clip_x0 = None  # latents have no fixed range: LDM samples them unclipped

    def __init__(self, first_stage: TrainedModel, first_stage_hash: str | None = None, **diffusion: Any) -> None:
        # the declared ranges first: a config's mistake is said before the first stage is looked at
        check_arguments(LatentDiffusion, {"first_stage_hash": first_stage_hash, **diffusion}, "model")
        # Diffusion builds its U-Net at noise_shape, the latents': known before nn.Module's own state is (a plain
        # attribute may be set first, a module may not)
        self._latent_shape = _latent_shape(first_stage, diffusion.get("image_shape"), first_stage_hash)
        super().__init__(**diffusion)
        self.hparams.update(first_stage=first_stage.path, first_stage_hash=first_stage.content_hash)
        self.first_stage = first_stage.model.requires_grad_(False).eval()
        # its weights are the first stage's checkpoint's, not this model's: state dicts leave them out
        self.register_state_dict_post_hook(_without_first_stage)
        self.register_load_state_dict_post_hook(_first_stage_not_missing)
        # 0 until measured on the first training images (on_fit_start); then kept in every checkpoint
        self.register_buffer("latent_scale", torch.zeros(()))

    # --- what is diffused: the first stage's latents, at unit variance ------------------------------------
    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the first stage's latents: x0, and the noise that sampling starts from."""
        return self._latent_shape

    @property
    def scale(self) -> Tensor:
        """latent_scale once measured; 1 before (a model not yet trained samples its latents unscaled)."""
        return torch.where(self.latent_scale > 0, self.latent_scale, torch.ones_like(self.latent_scale))

    def x0_from_images(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A draw of the first stage's posterior q(z|x) for each image (B, C, H, W) in [0, 1], scaled to unit
        variance: (B, *noise_shape). `generator`: the draws' (None: torch's global one)."""
        with torch.no_grad():
            mu, logvar = self.first_stage.encode(images)  # (B, *noise_shape) each
            noise = _random(torch.randn, mu.shape, generator=generator, device=mu.device)
            return (mu + (0.5 * logvar).exp() * noise) * self.scale

    def images_from_x0(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1]: the first stage's decoding of the latents x (B, *noise_shape)."""
        with torch.no_grad():
            return self.first_stage.generate(x / self.scale).float()

    def on_fit_start(self) -> None:
        """Measure latent_scale on the first training images, once: a resumed run has it from its checkpoint."""
        if self.latent_scale.item() > 0:
            return
        datamodule = self.trainer.datamodule
        if datamodule is None:
            raise ConfigError(
                "latent diffusion measures its latents' scale on the training data: fit it with a datamodule"
            )
        # rank 0's measure on every rank (each would otherwise see its own images): one scale, as one checkpoint
        std = self.trainer.strategy.broadcast(self._latent_std(datamodule.train_dataloader()), src=0)
        self.latent_scale.fill_(1 / std)
        log.info(f"latent_scale={self.latent_scale.item():.4g}: the first stage's latents scaled to unit variance")

    def _latent_std(self, loader: Any) -> float:
        """The standard deviation of the posterior draws of the loader's first SCALE_IMAGES images (seeded draws:
        torch's global generator, which training draws from, is left as it is)."""
        generator = torch.Generator().manual_seed(0)
        draws, seen = [], 0
        for images, _ in loader:
            images = images[: SCALE_IMAGES - seen]
            draws.append(self.x0_from_images(images.to(self.device), generator).double().flatten())
            seen += len(images)
            if seen == SCALE_IMAGES:
                break
        if not draws:
            raise ConfigError("latent diffusion measures its latents' scale on the training data, which has no images")
        return torch.cat(draws).std().item()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint of this family (resumed, or tested by Lightning) continues over the first stage it trained
        over, and no other."""
        recorded = checkpoint["hyper_parameters"].get("first_stage_hash")
        if recorded != self.hparams.first_stage_hash:
            raise CheckpointError(
                f"the checkpoint was trained over a first stage whose weights have sha256 {str(recorded)[:16]}..., and "
                f"model.first_stage={self.hparams.first_stage} holds {self.hparams.first_stage_hash[:16]}...: give "
                f"the first stage it was trained over"
            )

    def train(self, mode: bool = True) -> LatentDiffusion:
        """Train mode for the U-Net; the first stage stays frozen in eval mode whatever the Trainer asks."""
        super().train(mode)
        self.first_stage.eval()
        return self

    @property
    def likelihood_bound(self) -> str | None:
        return None  # DDPM's bound would be the latents', not the images' pixels'


def _latent_shape(first_stage: Any, image_shape: Any, first_stage_hash: str | None) -> tuple[int, int, int]:
    """The shape (C, h, w) of the first stage's latents, once it is checked to be a first stage a U-Net can work in,
    of images of `image_shape` (the data's), holding the weights of `first_stage_hash` where that is given."""
    if not isinstance(first_stage, TrainedModel):
        raise ConfigError(
            f"model.first_stage={first_stage!r}: expected a trained first stage (a TrainedModel); a config gives its "
            f"checkpoint's path, which genlab.checkpoints.build_model reads"
        )
    model, where = first_stage.model, f"model.first_stage={first_stage.path}"
    if not isinstance(model, FirstStage) or len(model.latent_shape) != 3:
        shape = f" whose latents are {tuple(model.latent_shape)}" if isinstance(model, FirstStage) else ""
        raise ConfigError(
            f"{where}: a {type(model).__name__}{shape}; latent diffusion works in latent maps (C, h, w): give the "
            f"checkpoint of a VAE with model.architecture=spatial (the recipe vae_first_stage_fashion_mnist)"
        )
    if image_shape is not None and tuple(model.image_shape) != tuple(image_shape):
        raise ConfigError(
            f"{where}: its first stage encodes images of {list(model.image_shape)}, and the data's are "
            f"{list(image_shape)}: train the first stage on this data"
        )
    if first_stage_hash is not None and first_stage.content_hash != first_stage_hash:
        raise ConfigError(
            f"{where}: holds other weights (sha256 {first_stage.content_hash[:16]}...) than the first stage this "
            f"model was trained over ({first_stage_hash[:16]}...): give that one"
        )
    channels, height, width = model.latent_shape
    if not halvings(height, width):
        raise ConfigError(
            f"{where}: its latents are {height}x{width}, which the U-Net cannot halve (sides even and above "
            f"{LOWEST_SIDE}): train the first stage with one stage fewer (model.channels), e.g. 14x14 latents of "
            f"28x28 images"
        )
    return channels, height, width


def _without_first_stage(module: LatentDiffusion, state_dict: dict[str, Tensor], prefix: str, *_: Any) -> None:
    for name in [name for name in state_dict if name.startswith(f"{prefix}first_stage.")]:
        del state_dict[name]


def _first_stage_not_missing(module: LatentDiffusion, incompatible_keys: Any) -> None:
    missing = incompatible_keys.missing_keys
    missing[:] = [name for name in missing if not name.startswith("first_stage.")]
