"""GAN with Lightning manual optimization: per batch, a discriminator update, then a generator update.

Losses: non-saturating BCE (Goodfellow et al., 2014), hinge (Lim & Ye, 2017; Miyato et al., 2018)
and WGAN-GP (Gulrajani et al., 2017). Options: one-sided label smoothing (Salimans et al., 2016),
an exponential moving average of the generator's weights for sampling (Karras et al., 2018), and
class-conditional generation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from pydantic import Field
from torch import Tensor

from genlab.capabilities import ImageShape
from genlab.errors import ConfigError
from genlab.models.compiling import Compile, compile_networks
from genlab.models.ema import averaged_copy
from genlab.models.fused import AdamBetas, clip_gradients, fused_optimizer_available
from genlab.models.hooks import SharedHooks
from genlab.models.nets.dcgan import Discriminator, Generator
from genlab.models.previews.latent_grids import SampleGrid
from genlab.utils.validation import check_arguments

Loss = Literal["bce", "hinge", "wgan-gp"]


def discriminator_loss(loss: Loss, real_logits: Tensor, fake_logits: Tensor, real_target: float = 1.0) -> Tensor:
    """D's loss on real and generated logits (B,), without the gradient penalty."""
    if loss == "bce":  # real_target < 1: one-sided label smoothing
        real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
        return real + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    if loss == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return fake_logits.mean() - real_logits.mean()  # wgan-gp: the critic's estimate of -W(real, fake)


def generator_loss(loss: Loss, fake_logits: Tensor) -> Tensor:
    """G's loss on D's logits for generated images: the non-saturating -log D(G(z)), or -D(G(z))."""
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    return -fake_logits.mean()


def gradient_penalty(discriminator: torch.nn.Module, real: Tensor, fake: Tensor, labels: Tensor | None) -> Tensor:
    """E[(||grad D(x_hat)||_2 - 1)^2] at random points x_hat between real and fake images (WGAN-GP)."""
    alpha = torch.rand(len(real), 1, 1, 1, device=real.device)
    between = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (gradients,) = torch.autograd.grad(discriminator(between, labels).sum(), between, create_graph=True)
    return (gradients.flatten(1).norm(2, dim=1) - 1).pow(2).mean()  # create_graph: backward runs through it


def _check_together(hp: Mapping[str, Any]) -> None:
    """The GAN's settings that constrain each other, which no one annotation can say."""
    if hp["label_smoothing"] and hp["loss"] != "bce":
        raise ConfigError(f"model.label_smoothing applies to loss=bce only, not loss={hp['loss']}")


class GAN(SharedHooks, L.LightningModule):
    """DCGAN generator and discriminator trained adversarially; `sample(n)` draws from the (EMA) generator."""

    # each range is declared once, here: a config (genlab/utils/validation.py), a checkpoint and this constructor are
    # checked against it, and the message names the key; _check_together holds what spans several settings
    def __init__(
        self,
        image_shape: ImageShape,
        num_classes: int,
        latent_dim: Annotated[int, Field(ge=1)] = 64,
        generator_channels: Annotated[int, Field(ge=1)] = 64,
        discriminator_channels: Annotated[int, Field(ge=1)] = 64,
        loss: Loss = "bce",
        n_critic: Annotated[int, Field(ge=1)] = 1,
        gp_weight: Annotated[float, Field(ge=0)] = 10.0,
        label_smoothing: Annotated[float, Field(ge=0, lt=0.5)] = 0.0,
        ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = 0.999,
        conditional: bool = False,
        lr_generator: Annotated[float, Field(gt=0)] = 2e-4,
        lr_discriminator: Annotated[float, Field(gt=0)] = 2e-4,
        betas: AdamBetas = (0.5, 0.999),
        gradient_clip_val: float | None = None,
        compile: Compile = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        check_arguments(GAN, self.hparams, "model")
        _check_together(self.hparams)
        self.automatic_optimization = False  # two optimizers, stepped in training_step
        classes = num_classes if conditional else 0
        self.generator = Generator(latent_dim, image_shape, generator_channels, classes)
        self.discriminator = Discriminator(image_shape, discriminator_channels, classes)
        # An exponential moving average of G's weights (and batch-norm statistics) samples better than G itself.
        self.ema_generator = averaged_copy(self.generator, ema_decay) if ema_decay is not None else None
        # not D under wgan-gp: its gradient penalty differentiates through D twice, which torch.compile cannot
        compile_networks(compile, self.generator, *([self.discriminator] if loss != "wgan-gp" else []))

    # --- sampling --------------------------------------------------------------------------------
    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images (B, C, H, W) in [0, 1] for noise z (B, latent_dim), from the EMA generator when there is one.

        A conditional model with no labels given generates classes 0, 1, 2, ... in turn.
        """
        if self.hparams.conditional and labels is None:
            labels = torch.arange(len(z), device=z.device) % self.hparams.num_classes
        generator = self.ema_generator if self.ema_generator is not None else self.generator
        return (generator(z, labels if self.hparams.conditional else None) + 1) / 2

    @property
    def latent_dim(self) -> int:
        return self.hparams.latent_dim

    @property
    def latent_shape(self) -> tuple[int]:
        return (self.latent_dim,)

    def sample(self, num_samples: int, labels: Tensor | None = None) -> Tensor:
        """Images from noise z ~ N(0, I); a conditional model's cycle through the classes unless labels are given."""
        return self.generate(torch.randn(num_samples, self.latent_dim, device=self.device), labels)

    # --- training ----------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        real = images * 2 - 1  # [0, 1] -> [-1, 1], the range of the generator's tanh
        labels = labels if self.hparams.conditional else None
        z = torch.randn(len(real), self.hparams.latent_dim, device=self.device)
        fake = self.generator(z, labels)
        d_loss, real_logits, fake_logits = self.discriminator_step(real, fake.detach(), labels)
        g_loss = self.generator_step(fake, labels) if (batch_idx + 1) % self.hparams.n_critic == 0 else None

        def logged() -> dict[str, Tensor]:  # D's accuracies cost work: computed on the batches that log only
            metrics = {**self._discriminator_metrics(real_logits, fake_logits), "d_loss": d_loss, "g_loss": g_loss}
            return {f"train/{name}": value for name, value in metrics.items() if value is not None}

        # the epoch means are over the batches whose logs are written
        self.log_training_values(logged, prog_bar=("train/g_loss",), on_epoch=True)
        # detached: for the callbacks that watch the losses (a NaN stops the run)
        return d_loss if g_loss is None else d_loss + g_loss

    def discriminator_step(self, real: Tensor, fake: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """One update of D on real images and (detached) generated ones; returns its loss and logits (detached)."""
        _, optimizer = self.optimizers()
        with self.toggled_optimizer(optimizer):  # only D's parameters require gradients here
            real_logits = self.discriminator(real, labels)
            fake_logits = self.discriminator(fake, labels)
            loss = discriminator_loss(self.hparams.loss, real_logits, fake_logits, 1.0 - self.hparams.label_smoothing)
            if self.hparams.loss == "wgan-gp":
                loss = loss + self.hparams.gp_weight * gradient_penalty(self.discriminator, real, fake, labels)
            self._update(optimizer, loss)
        return loss.detach(), real_logits.detach(), fake_logits.detach()

    def generator_step(self, fake: Tensor, labels: Tensor | None) -> Tensor:
        """One update of G, through D's judgement of its images; returns its loss (detached)."""
        optimizer, _ = self.optimizers()
        with self.toggled_optimizer(optimizer):  # D's parameters get no gradients
            loss = generator_loss(self.hparams.loss, self.discriminator(fake, labels))
            self._update(optimizer, loss)
        if self.ema_generator is not None:
            self.ema_generator.update_parameters(self.generator)
        return loss.detach()

    def _update(self, optimizer, loss: Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.hparams.gradient_clip_val is not None:
            clip_gradients(self, optimizer, self.hparams.gradient_clip_val)
        optimizer.step()

    def _discriminator_metrics(self, real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
        """D(x), D(G(z)) and D's accuracy (logit > 0 means 'real') on each kind of image."""
        accuracy_real = (real_logits > 0).float().mean()
        accuracy_fake = (fake_logits < 0).float().mean()
        return {
            "d_real": torch.sigmoid(real_logits).mean(),
            "d_fake": torch.sigmoid(fake_logits).mean(),
            "d_acc_real": accuracy_real,
            "d_acc_fake": accuracy_fake,
            "d_acc": (accuracy_real + accuracy_fake) / 2,
        }

    # --- validation: how well does D still tell held-out real images from new samples? -------------
    def _evaluate(self, batch: tuple[Tensor, Tensor], batch_idx: int, split: str) -> None:
        images, labels = batch
        labels = labels if self.hparams.conditional else None
        z = torch.randn(len(images), self.hparams.latent_dim, device=self.device)
        real_logits = self.discriminator(images * 2 - 1, labels)
        fake_logits = self.discriminator(self.generator(z, labels), labels)
        metrics = self._discriminator_metrics(real_logits, fake_logits)
        # means over the epoch, across devices
        self.log_dict({f"{split}/{name}": value for name, value in metrics.items()}, on_epoch=True, sync_dist=True)

    def configure_optimizers(self):
        options = {"betas": tuple(self.hparams.betas), "fused": fused_optimizer_available(self)}
        return (
            torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr_generator, **options),
            torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr_discriminator, **options),
        )

    def previews(self) -> list[Callback]:
        # a conditional grid has one column per class: generate() cycles through the classes
        per_row = self.hparams.num_classes if self.hparams.conditional else 8
        return [SampleGrid(num_images=per_row * 8, images_per_row=per_row)]
