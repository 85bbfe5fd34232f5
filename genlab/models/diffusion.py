"""Diffusion and flow matching: a U-Net learns to undo noise; sampling integrates from pure noise to images.

Objectives (`objective`):
- `ddpm`: noise prediction (Ho et al., 2020). x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps over T
  steps, with a linear (Ho et al.) or cosine (Nichol & Dhariwal, 2021) schedule; the U-Net predicts eps.
  Samplers: ancestral `ddpm` (Ho et al., Algorithm 2) and deterministic `ddim` (Song et al., 2021), both
  on an evenly spaced sub-sequence of the T steps, so that the step count is a sampling choice.
- `flow`: flow matching on straight paths (Lipman et al., 2023; rectified flow, Liu et al., 2023).
  x_t = (1 - t) noise + t x_0 for t in [0, 1] (t = 0 is noise, t = 1 data); the U-Net predicts the
  velocity x_0 - noise. Samplers: `euler` and `heun` integrate dx/dt = v(x, t) from t = 0 to 1.

Options: an exponential moving average of the weights to sample from, and class-conditional training
with labels dropped at random, which makes the same net the unconditional model that classifier-free
guidance (Ho & Salimans, 2022) mixes in at sampling time.

The process is shape-agnostic: it diffuses x0, whatever tensor (B, *noise_shape) that is. `Diffusion` makes x0 of
the pixels (images in [0, 1] scaled to [-1, 1], predicted x0 clipped there, as Ho et al.); `LatentDiffusion`
(genlab/models/latent_diffusion.py) of a first stage's latents, unclipped, and decodes what it samples.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from pydantic import Field
from torch import Tensor

from genlab.capabilities import ImageShape, Stages
from genlab.errors import ConfigError
from genlab.models.compiling import Compile, compile_networks
from genlab.models.ema import averaged_copy
from genlab.models.fused import fused_optimizer_available
from genlab.models.hooks import SharedHooks
from genlab.models.likelihood import bits_per_dim
from genlab.models.nets.resolution import check_stages
from genlab.models.nets.unet import UNet, ddpm_multipliers
from genlab.models.previews.denoising import FixedNoiseSamples
from genlab.models.previews.image_grid import MAX_GRID_IMAGES
from genlab.utils.validation import check_arguments, check_type, signature

Objective = Literal["ddpm", "flow"]
Schedule = Literal["linear", "cosine"]
Sampler = Literal["ddpm", "ddim", "euler", "heun"]
# the samplers of each objective; the first is the default. Ancestral before DDIM: on the small Fashion-MNIST U-Net
# after 1,500 steps, 50 ancestral steps drew clean garments, classified as their class 92% of the time (guidance 2),
# and DDIM's deterministic paths speckled ones, 75%: fresh noise at each step washes out the noise predictor's
# errors, which a deterministic sampler carries along (Karras et al. 2022, section 4)
SAMPLERS: dict[str, tuple[str, ...]] = {"ddpm": ("ddpm", "ddim"), "flow": ("euler", "heun")}
# DDPM trains on 1,000 timesteps and samples in 50 to 1,000 (Ho et al.; Nichol & Dhariwal 4,000): a hundred times
# more is never needed, and every sample costs a network pass per step (a checkpoint's sample_steps=1e9: for ever)
MAX_TIMESTEPS, MAX_SAMPLE_STEPS = 100_000, 10_000


# --- the forward process of DDPM ---------------------------------------------------------------------
def noise_schedule(schedule: Schedule, num_timesteps: int) -> Tensor:
    """The variances beta_1..beta_T (T,) of the per-step Markov chain q(x_t | x_{t-1}), in float64."""
    if schedule == "linear":
        # Ho et al.'s 1e-4 .. 0.02 for T = 1000, stretched for other T so that the chain ends as noisy
        # (as improved-diffusion does)
        scale = 1000 / num_timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)
    # cosine (Nichol & Dhariwal 2021, eq. 17): abar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2),
    # s = 0.008; each beta clipped at 0.999 so that the last steps do not divide by abar = 0
    s = 0.008
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps  # (T+1,) t/T from 0 to 1
    alphas_cumprod = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=0.999)


def spaced_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """`steps` of the T training timesteps, descending: i * T // steps for i = steps-1 .. 0, the sub-sequence of
    DDIM's own code (Song et al. 2021); all T of them for steps = T. It starts below T-1, where the cosine
    schedule is degenerate (abar = 2e-9: x0 recovered from predicted noise is its error magnified 20,000 times)."""
    return [i * num_timesteps // steps for i in reversed(range(steps))]


# --- samplers: generators of the states from noise (first) to samples (last), steps + 1 in all --------------
NoisePredictor = Callable[[Tensor, int], Tensor]  # (x_t (B, ...), timestep index t) -> predicted eps
VelocityPredictor = Callable[[Tensor, float], Tensor]  # (x_t (B, ...), time t in [0, 1]) -> velocity
PIXEL_RANGE = 1.0  # images in [-1, 1]: predicted x0 clipped there (Ho et al.); None for data of no fixed range


def _predicted_x0(x: Tensor, noise: Tensor, alpha_cumprod: Tensor, clip_x0: float | None) -> Tensor:
    """x_0 from x_t and the predicted noise, inverting q(x_t | x_0); clipped to [-clip_x0, clip_x0], the data's range
    (pixels: [-1, 1], as Ho et al.), unless clip_x0 is None (latents: latent diffusion samples unclipped)."""
    x0 = (x - (1 - alpha_cumprod).sqrt() * noise) / alpha_cumprod.sqrt()
    return x0 if clip_x0 is None else x0.clamp(-clip_x0, clip_x0)


def ddim_trajectory(
    predict_noise: NoisePredictor,
    x: Tensor,
    alphas_cumprod: Tensor,
    timesteps: list[int],
    clip_x0: float | None = PIXEL_RANGE,
) -> Iterator[Tensor]:
    """Deterministic DDIM (eta = 0, Song et al. 2021, eq. 12): x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) eps_hat."""
    yield x
    for t, s in zip(timesteps, [*timesteps[1:], -1], strict=True):
        alpha_cumprod = alphas_cumprod[t]
        alpha_cumprod_next = alphas_cumprod[s] if s >= 0 else torch.ones_like(alpha_cumprod)  # abar = 1: data
        x0 = _predicted_x0(x, predict_noise(x, t), alpha_cumprod, clip_x0)
        noise = (x - alpha_cumprod.sqrt() * x0) / (1 - alpha_cumprod).sqrt()  # the noise that fits the clipped x0
        x = alpha_cumprod_next.sqrt() * x0 + (1 - alpha_cumprod_next).sqrt() * noise
        yield x


def ddpm_trajectory(
    predict_noise: NoisePredictor,
    x: Tensor,
    alphas_cumprod: Tensor,
    timesteps: list[int],
    generator: torch.Generator | None = None,
    clip_x0: float | None = PIXEL_RANGE,
) -> Iterator[Tensor]:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2): x_s drawn from the posterior q(x_s | x_t, x0_hat)
    (their eqs. 6-7), with beta = 1 - abar_t / abar_s between the two timesteps of the sub-sequence."""
    yield x
    for t, s in zip(timesteps, [*timesteps[1:], -1], strict=True):
        alpha_cumprod = alphas_cumprod[t]
        alpha_cumprod_next = alphas_cumprod[s] if s >= 0 else torch.ones_like(alpha_cumprod)
        beta = 1 - alpha_cumprod / alpha_cumprod_next
        x0 = _predicted_x0(x, predict_noise(x, t), alpha_cumprod, clip_x0)
        mean = (alpha_cumprod_next.sqrt() * beta / (1 - alpha_cumprod)) * x0 + (
            (1 - beta).sqrt() * (1 - alpha_cumprod_next) / (1 - alpha_cumprod)
        ) * x
        variance = beta * (1 - alpha_cumprod_next) / (1 - alpha_cumprod)  # 0 at the last step: x = x0_hat
        x = mean + variance.sqrt() * _random(torch.randn, x.shape, generator=generator, device=x.device)
        yield x


def euler_trajectory(predict_velocity: VelocityPredictor, x: Tensor, steps: int) -> Iterator[Tensor]:
    """Euler's method on dx/dt = v(x, t) from t = 0 (noise) to t = 1 (data) in `steps` equal steps."""
    times = torch.linspace(0, 1, steps + 1).tolist()
    yield x
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        x = x + (t_next - t) * predict_velocity(x, t)
        yield x


def heun_trajectory(predict_velocity: VelocityPredictor, x: Tensor, steps: int) -> Iterator[Tensor]:
    """Heun's second-order method (Karras et al. 2022, Algorithm 1): an Euler step, then a step with the mean of
    the velocities at its two ends. Two evaluations of the net per step."""
    times = torch.linspace(0, 1, steps + 1).tolist()
    yield x
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        velocity = predict_velocity(x, t)
        x_euler = x + (t_next - t) * velocity
        x = x + (t_next - t) * (velocity + predict_velocity(x_euler, t_next)) / 2
        yield x


# --- the variational bound of DDPM: -log P(x_0) of 8-bit images in nats -------------------------------------
def variational_bound_terms(
    predict_noise: NoisePredictor, x0: Tensor, alphas_cumprod: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """The terms (T + 1, B) in nats of Ho et al.'s bound on -log P(x_0) (2020, eq. 5) of images x_0 (B, ...) whose
    values are 8-bit levels scaled to [-1, 1]: [L_0, L_1, ..., L_{T-1}, L_T], their sum the bound. Index t here is
    the paper's t + 1 (timestep 0 is the first noisy step), one draw of x_t ~ q(x_t | x_0) for each term.

    - L_T = KL(q(x_T | x_0) || N(0, I)), the prior term;
    - L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)): two Gaussians of the same variance, the posterior's
      beta_tilde (Ho et al. eqs. 6-7); the model's mean is the posterior mean at x0_hat from the predicted noise;
    - L_0 = -log p(x_0 | x_1), the discretized Gaussian decoder (Ho et al. eq. 13): the mass of each 8-bit bin,
      [x - 1/255, x + 1/255], the outermost extended to infinity, with the variance of the next step (improved-
      diffusion's clipped log-variance, Nichol & Dhariwal 2021, as beta_tilde_1 = 0).
    """
    x0 = x0.double()
    alphas_cumprod = alphas_cumprod.double()
    previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])  # abar_{t-1}, with abar_{-1} = 1: data
    betas = 1 - alphas_cumprod / previous
    variances = betas * (1 - previous) / (1 - alphas_cumprod)  # beta_tilde_t (T,); 0 at t = 0
    variances[0] = variances[1] if len(variances) > 1 else betas[0]

    def posterior_mean(x0: Tensor, x: Tensor, t: int) -> Tensor:  # mean of q(x_{t-1} | x_t, x_0), eq. 7
        return (previous[t].sqrt() * betas[t] * x0 + (1 - betas[t]).sqrt() * (1 - previous[t]) * x) / (
            1 - alphas_cumprod[t]
        )

    terms = []
    for t in range(len(alphas_cumprod)):
        noise = _random(torch.randn, x0.shape, generator=generator, device=x0.device).double()
        x = alphas_cumprod[t].sqrt() * x0 + (1 - alphas_cumprod[t]).sqrt() * noise  # x_t ~ q(x_t | x_0), eq. 4
        x0_hat = (x - (1 - alphas_cumprod[t]).sqrt() * predict_noise(x.float(), t).double()) / alphas_cumprod[t].sqrt()
        model_mean = posterior_mean(x0_hat, x, t)  # (B, ...)
        if t == 0:
            terms.append(-_discretized_gaussian_log_likelihood(x0, model_mean, variances[0]).flatten(1).sum(1))
        else:  # KL of two Gaussians of one variance: the squared distance of the means over twice the variance
            terms.append((posterior_mean(x0, x, t) - model_mean).pow(2).flatten(1).sum(1) / (2 * variances[t]))
    # the prior term: KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1 - log s^2) / 2 per dimension
    mean, variance = alphas_cumprod[-1].sqrt() * x0, 1 - alphas_cumprod[-1]
    terms.append(0.5 * (variance + mean.pow(2) - 1 - variance.log()).flatten(1).sum(1))
    return torch.stack(terms)  # (T + 1, B)


def _discretized_gaussian_log_likelihood(x0: Tensor, mean: Tensor, variance: Tensor) -> Tensor:
    """log of the mass N(mean, variance) gives the 8-bit bin of each value of x0 in [-1, 1] (the edges: infinity)."""
    normal = torch.distributions.Normal(mean, variance.sqrt())
    upper = torch.where(x0 > 0.999, 1.0, normal.cdf(x0 + 1 / 255))
    lower = torch.where(x0 < -0.999, 0.0, normal.cdf(x0 - 1 / 255))
    return (upper - lower).clamp(min=1e-12).log()


def _random(draw: Callable[..., Tensor], *args: Any, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """`draw(*args)` (torch.randn, rand or randint) from `generator`, on the generator's device, moved to `device`;
    or from torch's global generator where there is none. A CPU generator makes the draws the same on any device."""
    if generator is None:
        return draw(*args, device=device)
    return draw(*args, generator=generator, device=generator.device).to(device)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How sample() integrates: with which sampler, in how many steps, with how much classifier-free guidance."""

    sampler: str
    steps: int
    guidance_scale: float


def _check_together(hp: Mapping[str, Any], shape: tuple[int, int, int]) -> None:
    """The U-Net's settings that constrain each other and the size of what it denoises (`shape`: the images', or the
    latents'), which no one annotation can say (the sampling settings: Diffusion._check_sampling, which set_sampling
    shares)."""
    _, height, width = shape
    if hp["channel_multipliers"] is None:
        multipliers = list(ddpm_multipliers(shape))
    else:
        multipliers = list(hp["channel_multipliers"])
        check_stages(shape, len(multipliers), f"model.channel_multipliers={multipliers}")
    # the middle attends, and so do the levels at attention_resolutions
    attending = {hp["base_channels"] * multipliers[-1]} | {
        hp["base_channels"] * multiplier
        for level, multiplier in enumerate(multipliers)
        if (height >> level) in hp["attention_resolutions"]
    }
    if any(channels % hp["attention_heads"] for channels in attending):
        raise ConfigError(
            f"model.attention_heads={hp['attention_heads']} must divide the channels of every resolution that "
            f"attends (base_channels * channel_multipliers: {', '.join(map(str, sorted(attending)))})"
        )


class Diffusion(SharedHooks, L.LightningModule):
    """A U-Net trained to predict the noise (ddpm) or the velocity (flow); `sample(n)` integrates from noise.

    Logged: train/loss, and val/loss and test/loss: the same mean squared error at times and noise drawn
    from a generator seeded by the batch index, so that they are comparable across epochs and runs (the
    metric that picks the best checkpoint). They are measured with the EMA weights, which are the ones sampled.

    What it diffuses, x0, is the pixels: `x0_from_images` and `images_from_x0` map between them and the images, and
    `clip_x0` is their range; a subclass that diffuses something else (LatentDiffusion) says so there.
    """

    clip_x0: float | None = PIXEL_RANGE

    def __init__(
        self,
        image_shape: ImageShape,
        num_classes: int,
        objective: Objective = "ddpm",
        schedule: Schedule = "cosine",
        num_timesteps: Annotated[int, Field(ge=1, le=MAX_TIMESTEPS)] = 1000,
        base_channels: Annotated[int, Field(ge=1)] = 32,
        # None: DDPM's for the image size (genlab/models/nets/unet.py's ddpm_multipliers)
        channel_multipliers: Stages | None = None,
        num_res_blocks: Annotated[int, Field(ge=1)] = 2,
        attention_heads: Annotated[int, Field(ge=1)] = 4,
        # (): attention in the middle only, the U-Net of checkpoints written before this setting; conf/model/ gives
        # DDPM's (16,)
        attention_resolutions: tuple[Annotated[int, Field(ge=1)], ...] = (),
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1,
        conditional: bool = False,
        label_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1,
        sampler: Sampler | None = None,
        # strict: set_sampling is held to these too, and a step count of 2.5 or true is no count
        sample_steps: Annotated[int, Field(ge=1, le=MAX_SAMPLE_STEPS, strict=True)] = 50,
        guidance_scale: Annotated[float, Field(ge=0, strict=True)] = 1.0,  # 1: no guidance
        ema_decay: Annotated[float, Field(gt=0, lt=1)] | None = 0.999,  # null: sample from the trained weights
        lr: Annotated[float, Field(gt=0)] = 2e-4,
        warmup_steps: Annotated[int, Field(ge=0)] = 500,
        weight_decay: Annotated[float, Field(ge=0)] = 0.0,
        num_grid_images: Annotated[int, Field(ge=0, le=MAX_GRID_IMAGES)] = 40,  # 0: no grid
        compile: Compile = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        check_arguments(Diffusion, self.hparams, "model")
        _check_together(self.hparams, self.noise_shape)
        self.sampling = Sampling(sampler or SAMPLERS[objective][0], sample_steps, guidance_scale)
        self._check_sampling(
            self.sampling,
            {"sampler": "model.sampler", "steps": "model.sample_steps", "guidance_scale": "model.guidance_scale"},
        )

        self.unet = UNet(
            self.noise_shape,
            base_channels,
            tuple(channel_multipliers) if channel_multipliers is not None else None,
            num_res_blocks,
            attention_heads,
            dropout,
            num_classes if conditional else 0,
            tuple(attention_resolutions),
        )
        # the averaged weights sample better than the last ones (Ho et al. sample from an EMA of decay 0.9999)
        self.ema_unet = averaged_copy(self.unet, ema_decay) if ema_decay is not None else None
        compile_networks(compile, self.unet)  # the U-Net that trains; the EMA copy (validation, sampling) stays eager
        # the schedule follows from the hyperparameters: buffers, but not saved in checkpoints
        alphas_cumprod = torch.cumprod(1 - noise_schedule(schedule, num_timesteps), 0) if objective == "ddpm" else None
        self.register_buffer(
            "alphas_cumprod", None if alphas_cumprod is None else alphas_cumprod.float(), persistent=False
        )

    # --- what is diffused: the pixels -------------------------------------------------------------------
    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of x0, and of the noise that sampling starts from: the images'."""
        return tuple(self.hparams.image_shape)

    def x0_from_images(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x0 (B, *noise_shape) of images (B, C, H, W) in [0, 1]: [-1, 1], where the noise has unit scale."""
        return images * 2 - 1

    def images_from_x0(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] of x0 (B, *noise_shape), its values outside [-1, 1] clipped."""
        return (x.float().clamp(-1, 1) + 1) / 2

    # --- the forward process and the loss ------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t ~ q(x_t | x_0) in closed form (Ho et al. eq. 4): sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; t (B,)."""
        alpha_cumprod = self.alphas_cumprod[t][:, None, None, None]  # (B, 1, 1, 1)
        return alpha_cumprod.sqrt() * x0 + (1 - alpha_cumprod).sqrt() * noise

    def loss(
        self, network: torch.nn.Module, images: Tensor, labels: Tensor | None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Mean squared error of `network`'s noise (ddpm) or velocity (flow) prediction at random times."""
        data = self.x0_from_images(images, generator)  # (B, *noise_shape)
        noise = _random(torch.randn, data.shape, generator=generator, device=data.device)  # (B, *noise_shape)
        if self.hparams.objective == "ddpm":
            timestep = _random(
                torch.randint, self.hparams.num_timesteps, (len(data),), generator=generator, device=data.device
            )  # (B,)
            noisy = self.q_sample(data, timestep, noise)
            time, target = timestep / self.hparams.num_timesteps, noise  # (B,), (B, *noise_shape)
        else:
            time = _random(torch.rand, len(data), generator=generator, device=data.device)  # (B,) in [0, 1)
            t = time[:, None, None, None]
            noisy, target = (1 - t) * noise + t * data, data - noise  # the straight path and its velocity
        return F.mse_loss(network(noisy, time, labels).float(), target)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        labels = self._drop_labels(labels) if self.hparams.conditional else None
        loss = self.loss(self.unet, images, labels)
        self.log_training_values({"train/loss": loss})
        return loss

    def _drop_labels(self, labels: Tensor) -> Tensor:
        """Labels with each replaced by "no class" (num_classes) with probability label_dropout: one net learns
        the conditional and the unconditional model that classifier-free guidance needs (Ho & Salimans, 2022)."""
        dropped = torch.rand(len(labels), device=labels.device) < self.hparams.label_dropout
        return torch.where(dropped, self.hparams.num_classes, labels)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema_unet is not None:  # once per optimizer step (not per batch, with gradient accumulation)
            self.ema_unet.update_parameters(self.unet)

    def _evaluate(self, batch: tuple[Tensor, Tensor], batch_idx: int, split: str) -> None:
        images, labels = batch
        # the same times and noise for this batch in every evaluation: differences are the model's, not the draw's
        generator = torch.Generator().manual_seed(batch_idx)
        loss = self.loss(self.sampling_network, images, labels if self.hparams.conditional else None, generator)
        self.log(f"{split}/loss", loss, prog_bar=True, sync_dist=True)  # means over the epoch, across devices

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            self.unet.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused_optimizer_available(self)
        )
        # linear warm-up (DDPM warms up over 5,000 steps): early large updates of a zero-initialised U-Net diverge
        warmup = hp.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def previews(self) -> list[Callback]:
        if not self.hparams.num_grid_images:
            return []
        # a conditional grid has one column per class: sampling cycles through the classes
        per_row = self.hparams.num_classes if self.hparams.conditional else 8
        return [FixedNoiseSamples(num_images=self.hparams.num_grid_images, images_per_row=per_row)]

    # --- LikelihoodModel: src.eval's likelihood/bpd ------------------------------------------------------
    @property
    def likelihood_bound(self) -> str | None:
        """DDPM's variational bound; flow matching's likelihood needs the divergence of its ODE, not offered."""
        return "variational bound (Ho et al. 2020), discretized decoder" if self.hparams.objective == "ddpm" else None

    @torch.no_grad()
    def nll_bits_per_dim(self, images: Tensor, importance_samples: int) -> Tensor:
        """Ho et al.'s bound on -log2 P(v) / D of the 8-bit images (B,), with the weights that sample (the EMA's),
        unconditionally; it sums all T timesteps' terms (T passes of the U-Net), and draws no importance samples."""
        if self.likelihood_bound is None:
            raise ConfigError("model.objective=flow: flow matching has no variational bound here (not offered)")
        network, hp = self.sampling_network, self.hparams
        no_class = torch.full((len(images),), hp.num_classes, device=images.device) if hp.conditional else None

        def predict_noise(x: Tensor, t: int) -> Tensor:
            return network(x, torch.full((len(x),), t / hp.num_timesteps, device=x.device), no_class).float()

        x0 = torch.round(images * 255) / 127.5 - 1  # the 8-bit levels in [-1, 1], as training scales them
        terms = variational_bound_terms(predict_noise, x0, self.alphas_cumprod)  # (T + 1, B)
        return bits_per_dim(terms.sum(0), images[0].numel()).float()

    # --- sampling ------------------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.hparams.image_shape)

    @property
    def sampling_network(self) -> torch.nn.Module:
        """The EMA of the U-Net where there is one, else the U-Net."""
        return self.ema_unet if self.ema_unet is not None else self.unet

    def set_sampling(
        self, steps: int | None = None, sampler: str | None = None, guidance_scale: float | None = None
    ) -> None:
        """Sample with these from now on (None: keep the current choice); the model's own are its sampler,
        sample_steps and guidance_scale."""
        given = {"steps": steps, "sampler": sampler, "guidance_scale": guidance_scale}
        changes = {key: value for key, value in given.items() if value is not None}
        sampling = dataclasses.replace(self.sampling, **changes)
        self._check_sampling(sampling, {key: key for key in given})
        self.sampling = sampling

    def _check_sampling(self, sampling: Sampling, keys: dict[str, str]) -> None:
        """Refuse, naming the key (`keys`: how the caller spells each), what this model cannot sample with."""
        hp = self.hparams
        samplers = SAMPLERS[hp.objective]
        if sampling.sampler not in samplers:
            raise ConfigError(
                f"{keys['sampler']}={sampling.sampler} does not fit model.objective={hp.objective}: "
                f"its samplers are {', '.join(samplers)}"
            )
        # the ranges of sample_steps and guidance_scale, as the constructor declares them
        _, declared, _ = signature(Diffusion)
        check_type(sampling.steps, declared["sample_steps"], keys["steps"], "Diffusion")
        check_type(sampling.guidance_scale, declared["guidance_scale"], keys["guidance_scale"], "Diffusion")
        if hp.objective == "ddpm" and sampling.steps > hp.num_timesteps:  # a sub-sequence of the training steps
            raise ConfigError(
                f"{keys['steps']}={sampling.steps!r}: expected at most model.num_timesteps="
                f"{hp.num_timesteps}, the steps the model was trained on"
            )
        scale = sampling.guidance_scale
        if scale != 1 and not hp.conditional:
            raise ConfigError(
                f"{keys['guidance_scale']}={scale}: classifier-free guidance needs a class-conditional model "
                f"(model.conditional=true); this one is unconditional, sample it with guidance_scale 1"
            )

    def sample(
        self, num_samples: int, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Images (num_samples, C, H, W) in [0, 1] from noise; a conditional model's cycle through the classes
        unless labels (num_samples,) are given. `generator` (None: torch's global one) makes them reproducible."""
        noise = _random(torch.randn, (num_samples, *self.noise_shape), generator=generator, device=self.device)
        with torch.no_grad():  # the last state; a deque of one holds no other in memory
            x0 = collections.deque(self._trajectory(noise, labels, generator), maxlen=1).pop()
            return self.images_from_x0(x0)

    def denoising_trajectory(
        self,
        noise: Tensor,
        num_states: int = 10,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """States (num_states, B, C, H, W) as images in [0, 1], evenly spaced over the sampler's steps, from the noise
        (B, *noise_shape) (first; the pure-noise end, x_T) to the samples (last, x_0); at most steps + 1 of them."""
        picks = set(torch.linspace(0, self.sampling.steps, num_states).round().long().tolist())
        with torch.no_grad():
            states = [x for i, x in enumerate(self._trajectory(noise, labels, generator)) if i in picks]
            return torch.stack([self.images_from_x0(x) for x in states])

    def _trajectory(self, noise: Tensor, labels: Tensor | None, generator: torch.Generator | None) -> Iterator[Tensor]:
        """The chosen sampler's states x_t (B, *noise_shape), noise first, from the EMA weights."""
        hp, sampling = self.hparams, self.sampling
        if not hp.conditional:
            labels = None
        elif labels is None:
            labels = torch.arange(len(noise), device=noise.device) % hp.num_classes
        else:
            labels = labels.to(noise.device)
        network = self.sampling_network

        def predict(x: Tensor, time: float) -> Tensor:
            """The net's prediction (B, *noise_shape), guided: unconditional + s (conditional - unconditional)
            (Ho & Salimans 2022, eq. 6, with s = 1 + w): s = 1 is the conditional model, s = 0 the unconditional."""
            times = torch.full((len(x),), time, device=x.device)  # (B,)
            if labels is None or sampling.guidance_scale == 1:
                return network(x, times, labels).float()
            no_class = torch.full_like(labels, hp.num_classes)
            if sampling.guidance_scale == 0:
                return network(x, times, no_class).float()
            # one batch of 2B through the net rather than two of B
            both = network(torch.cat([x, x]), torch.cat([times, times]), torch.cat([labels, no_class])).float()
            conditional, unconditional = both.chunk(2)
            return unconditional + sampling.guidance_scale * (conditional - unconditional)

        if hp.objective == "flow":
            integrate = euler_trajectory if sampling.sampler == "euler" else heun_trajectory
            return integrate(predict, noise, sampling.steps)
        timesteps = spaced_timesteps(hp.num_timesteps, sampling.steps)

        def predict_noise(x: Tensor, t: int) -> Tensor:
            return predict(x, t / hp.num_timesteps)  # the net's time: t / T, as in training

        if sampling.sampler == "ddim":
            return ddim_trajectory(predict_noise, noise, self.alphas_cumprod, timesteps, self.clip_x0)
        return ddpm_trajectory(predict_noise, noise, self.alphas_cumprod, timesteps, generator, self.clip_x0)
