"""Variational autoencoder (Kingma & Welling, 2014): Bernoulli decoder, N(0, I) prior, optional beta and KL warm-up.

Its latent is a vector (architecture mlp or conv), or a map of `latent_dim` channels at 1/2^S of the image size
(spatial): with a small beta, the first stage of latent diffusion (Rombach et al. 2022, their KL-regularised
autoencoder), whose latents a U-Net denoises (genlab/models/latent_diffusion.py).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from pydantic import Field
from torch import Tensor

from genlab.capabilities import ImageShape, Stages
from genlab.models.compiling import Compile, compile_networks
from genlab.models.fused import fused_optimizer_available
from genlab.models.hooks import SharedHooks
from genlab.models.likelihood import bits_per_dim, dequantize, dequantized_nll
from genlab.models.nets.conv import ConvDecoder, ConvEncoder, SpatialDecoder, SpatialEncoder, stages
from genlab.models.nets.mlp import MLPDecoder, MLPEncoder
from genlab.models.previews.image_grid import MAX_GRID_IMAGES, ReconstructionGrid
from genlab.models.previews.latent_grids import LatentInterpolation, LatentManifold, SampleGrid
from genlab.utils.validation import check_arguments

# hidden layers of the MLP encoder and decoder: each is a matrix of its width by the next's
MAX_HIDDEN_LAYERS = 64


class VAE(SharedHooks, L.LightningModule):
    """Encoder -> (mu, log-variance) of q(z|x); reparameterised z; decoder -> Bernoulli logits of p(x|z).

    Logged per image, in nats: `nelbo` (the negative ELBO, an upper bound on -log p(x)), its two
    terms `recon` and `kl`, and `bpd`, the negative ELBO in bits per dimension. Validation and test also log the
    reconstructions' mean squared error `mse` (of [0, 1] intensities, decoded from the posterior draws) and the
    draws' `latent_mean` and `latent_std`: how far a first stage's latents are from unit scale.
    """

    # each range is declared once, here: a config (genlab/utils/validation.py), a checkpoint and this constructor are
    # checked against it, and the message names the key
    def __init__(
        self,
        image_shape: ImageShape,
        # the latent vector's length; spatial: the latent map's channels
        latent_dim: Annotated[int, Field(ge=1)] = 20,
        architecture: Literal["mlp", "conv", "spatial"] = "mlp",
        hidden_dims: Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(max_length=MAX_HIDDEN_LAYERS)] = (400,),
        # None: by the image size (genlab/models/nets/conv.py's `stages`)
        channels: Stages | None = None,
        beta: Annotated[float, Field(ge=0)] = 1.0,
        kl_warmup_steps: Annotated[int, Field(ge=0)] = 0,
        lr: Annotated[float, Field(gt=0)] = 1e-3,
        weight_decay: Annotated[float, Field(ge=0)] = 0.0,
        num_grid_images: Annotated[int, Field(ge=1, le=MAX_GRID_IMAGES)] = 32,
        compile: Compile = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        check_arguments(VAE, self.hparams, "model")
        if architecture == "mlp":
            self.encoder = MLPEncoder(image_shape, 2 * latent_dim, hidden_dims)
            self.decoder = MLPDecoder(image_shape, latent_dim, hidden_dims)
        elif architecture == "conv":  # conv stages, then one hidden layer of the first hidden_dims width
            self.encoder = ConvEncoder(image_shape, 2 * latent_dim, channels, hidden_dims[0] if hidden_dims else None)
            self.decoder = ConvDecoder(image_shape, latent_dim, channels, hidden_dims[0] if hidden_dims else None)
        else:  # conv stages down to a map of latent_dim channels; hidden_dims unused
            self.encoder = SpatialEncoder(image_shape, 2 * latent_dim, channels)
            self.decoder = SpatialDecoder(image_shape, latent_dim, channels)
        compile_networks(compile, self.encoder, self.decoder)

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance (B, *latent_shape) each, of the Gaussian q(z|x)."""
        mu, logvar = self.encoder(images).chunk(2, dim=1)
        return mu, logvar

    def generate(self, z: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1]: the Bernoulli means of p(x|z) for latents z (B, *latent_shape)."""
        return torch.sigmoid(self.decoder(z))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.hparams.image_shape)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(latent_dim,) for a vector latent; (latent_dim, H/2^S, W/2^S) for the spatial one's map."""
        hp = self.hparams
        if hp.architecture != "spatial":
            return (hp.latent_dim,)
        _, height, width = hp.image_shape
        halvings = len(stages(tuple(hp.image_shape), None if hp.channels is None else tuple(hp.channels)))
        return (hp.latent_dim, height >> halvings, width >> halvings)

    def sample(self, num_samples: int) -> Tensor:
        """Images decoded from z ~ N(0, I), the prior."""
        return self.generate(torch.randn(num_samples, *self.latent_shape, device=self.device))

    def reconstruct(self, images: Tensor) -> Tensor:
        """Reconstructions: the decoded posterior means."""
        return self.generate(self.encode(images)[0])

    def elbo_terms(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Reconstruction and KL terms of the negative ELBO, each summed over dimensions, averaged over the batch."""
        recon, kl, _, _ = self._elbo(images)
        return recon, kl

    def _elbo(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The ELBO's terms, and the posterior draws z (B, *latent_shape) and their decoded logits (B, C, H, W)."""
        mu, logvar = self.encode(images)  # (B, *latent_shape) each
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterisation: gradients reach mu and sigma
        logits = self.decoder(z)  # (B, C, H, W)
        # -log p(x|z) for a Bernoulli decoder on [0, 1] intensities, and KL(q(z|x) || N(0, I)) in closed form
        # (Kingma & Welling 2014, Appendix B): -1/2 * sum(1 + log sigma^2 - mu^2 - sigma^2)
        recon = F.binary_cross_entropy_with_logits(logits, images, reduction="sum") / len(images)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(images)
        return recon, kl, z, logits

    # --- LikelihoodModel: src.eval's likelihood/bpd ------------------------------------------------------
    # The Bernoulli likelihood trained on [0, 1] intensities is not a density of continuous data: its values need not
    # integrate to 1. The bits/dim are taken under the continuous Bernoulli of the same decoder output (Loaiza-Ganem
    # & Cunningham 2019), the Bernoulli normalized on [0, 1]: a proper density of dequantized images, whose bound on
    # -log P(v) is on the scale of the flow's. Its log-density is the training reconstruction term plus log C(lambda).
    likelihood_bound = "importance-weighted bound (Burda et al. 2016), continuous Bernoulli decoder"

    def log_weights(self, x: Tensor, num_samples: int) -> Tensor:
        """log p(x|z) + log p(z) - log q(z|x) (num_samples, B) for z ~ q(z|x) of images x (B, C, H, W) in [0, 1]."""
        mu, logvar = self.encode(x)  # (B, *latent_shape) each
        posterior = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
        z = posterior.sample((num_samples,))  # (S, B, *latent_shape)
        logits = self.decoder(z.flatten(0, 1)).view(num_samples, *x.shape)  # (S, B, C, H, W)
        decoded = torch.distributions.ContinuousBernoulli(logits=logits, validate_args=False)
        log_px_z = decoded.log_prob(x.expand_as(logits)).flatten(2).sum(2)  # (S, B)
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(2).sum(2)
        return log_px_z + log_pz - posterior.log_prob(z).flatten(2).sum(2)

    @torch.no_grad()
    def log_density(self, x: Tensor, importance_samples: int) -> Tensor:
        """The importance-weighted lower bound on log p(x) (B,) with k = importance_samples (Burda et al. 2016,
        eq. 8): log (1/k) sum_i p(x, z_i) / q(z_i|x). k = 1 is an ELBO's estimate; it rises to log p(x) as k grows."""
        # the k samples in chunks of about 4M decoded values, their log-sum-exp accumulated
        chunk = max(1, 2**22 // x.numel())
        total = torch.full((len(x),), -math.inf, device=x.device)
        for start in range(0, importance_samples, chunk):
            weights = self.log_weights(x, min(chunk, importance_samples - start))
            total = torch.logaddexp(total, torch.logsumexp(weights, dim=0))
        return total - math.log(importance_samples)

    def nll_bits_per_dim(self, images: Tensor, importance_samples: int) -> Tensor:
        """The importance-weighted bound on -log2 P(v) / D of the 8-bit images, on one draw of dequantization."""
        dims = images[0].numel()
        x = dequantize(images)
        return bits_per_dim(dequantized_nll(self.log_density(x, importance_samples), dims), dims)

    def kl_weight(self) -> float:
        """beta, ramped up linearly from 0 over the first `kl_warmup_steps` training steps."""
        warmup = self.hparams.kl_warmup_steps
        ramp = min(1.0, self.global_step / warmup) if warmup and self.training else 1.0
        return self.hparams.beta * ramp

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, _ = batch
        recon, kl = self.elbo_terms(images)
        loss = recon + self.kl_weight() * kl
        self.log_training_values(lambda: self._terms("train", images, loss, recon, kl), prog_bar=("train/nelbo",))
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], batch_idx: int, split: str) -> None:
        images, _ = batch
        recon, kl, z, logits = self._elbo(images)
        # means over the epoch, across devices; the KL weight is beta, its value after any warm-up
        terms = self._terms(split, images, recon + self.kl_weight() * kl, recon, kl)
        for name, value in terms.items():
            self.log(name, value, prog_bar=name == f"{split}/nelbo", on_step=False, on_epoch=True, sync_dist=True)
        quality = {"mse": F.mse_loss(torch.sigmoid(logits), images), "latent_mean": z.mean(), "latent_std": z.std()}
        self.log_dict({f"{split}/{name}": value for name, value in quality.items()}, sync_dist=True)

    def _terms(self, split: str, images: Tensor, loss: Tensor, recon: Tensor, kl: Tensor) -> dict[str, Tensor]:
        """The logged terms of the ELBO: {"<split>/loss", ...}; the negative ELBO (beta 1) in nats and bits/dim."""
        nelbo = recon.float() + kl.float()  # summed in float32 whatever the step's precision
        bpd = nelbo / (images[0].numel() * math.log(2))  # nats per image -> bits per dimension
        terms = {"loss": loss, "recon": recon, "kl": kl, "bpd": bpd, "nelbo": nelbo}
        return {f"{split}/{name}": value for name, value in terms.items()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.Adam(
            self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused_optimizer_available(self)
        )

    def previews(self) -> list[Callback]:
        n = self.hparams.num_grid_images
        callbacks = [ReconstructionGrid(num_images=n), SampleGrid(num_images=64), LatentInterpolation()]
        if self.latent_shape == (2,):
            callbacks.append(LatentManifold())
        return callbacks
