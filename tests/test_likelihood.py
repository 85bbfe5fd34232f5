"""Likelihoods on one scale: the VAE's importance-weighted bound (between its ELBO and log p, converging as k grows),
the flow's and the VAE's bits/dim from one formula on the same dequantized images, DDPM's variational bound against a
direct computation over a few steps, and flow matching's absence said."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import ContinuousBernoulli, Normal, kl_divergence

from genlab.capabilities import LikelihoodModel
from genlab.errors import ConfigError
from genlab.models.diffusion import Diffusion, noise_schedule, variational_bound_terms
from genlab.models.likelihood import dequantize
from genlab.models.normalizing_flow import NormalizingFlow
from genlab.models.vae import VAE


def eight_bit_images(count: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, *shape), generator=generator) / 255


@pytest.fixture(scope="module")
def vae() -> VAE:
    """A VAE of one latent dimension, whose log p(x) a quadrature over z computes, with a poor posterior q(z|x)
    (N(1, 1) whatever x): the bounds then lie far enough apart to be told apart."""
    torch.manual_seed(0)
    model = VAE(image_shape=(1, 2, 2), latent_dim=1, hidden_dims=(8,)).eval()
    last = model.encoder.net[-1] if hasattr(model.encoder, "net") else list(model.encoder.modules())[-1]
    torch.nn.init.zeros_(last.weight)
    last.bias.data = torch.tensor([1.0, 0.0])  # mu, log-variance
    return model


def exact_log_density(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log of the integral of p(x|z) N(z; 0, 1) dz, by a Riemann sum on [-10, 10]."""
    z = torch.linspace(-10, 10, 40_001, dtype=torch.float64)
    with torch.no_grad():
        logits = vae.decoder(z[:, None].float()).double()  # (Z, 1, 2, 2)
    log_px_z = ContinuousBernoulli(logits=logits[:, None]).log_prob(x.double()[None]).flatten(2).sum(2)  # (Z, B)
    log_joint = log_px_z + Normal(0.0, 1.0).log_prob(z)[:, None]
    return torch.logsumexp(log_joint, 0) + math.log(z[1] - z[0])  # (B,)


def test_vae_importance_weighted_bound_lies_between_the_elbo_and_log_p_and_converges(vae: VAE) -> None:
    x = dequantize(eight_bit_images(3, (1, 2, 2)), torch.Generator().manual_seed(1))
    log_p = exact_log_density(vae, x)
    torch.manual_seed(2)
    elbo = vae.log_weights(x, 100_000).mean(0).double()  # E_q[log w]: the ELBO, to Monte Carlo precision

    def expected_bound(k: int, repeats: int) -> torch.Tensor:  # E[IWAE_k] over repeats (B,), in one call
        return vae.log_density(x.repeat(repeats, 1, 1, 1), k).view(repeats, len(x)).mean(0).double()

    bounds = {1: expected_bound(1, 20_000), 10: expected_bound(10, 2000), 100: expected_bound(100, 200)}
    bounds[5000] = vae.log_density(x, 5000).double()
    assert torch.allclose(bounds[1], elbo, atol=0.05)  # k = 1 is the ELBO
    # in nats: log p >= IWAE_100 >= IWAE_10 >= ELBO, E[IWAE_k] rising with k (Burda et al. 2016, theorem 1)
    assert (elbo < bounds[10]).all() and (bounds[10] < bounds[100]).all() and (bounds[100] <= log_p).all()
    gaps = [float((log_p - bounds[k]).abs().max()) for k in (1, 10, 100, 5000)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 0.02, gaps  # converges to log p as k grows


def test_flow_and_vae_bits_per_dim_are_one_formula_on_the_same_dequantized_images() -> None:
    torch.manual_seed(0)
    flow = NormalizingFlow(image_shape=(1, 4, 4), num_scales=1, coupling_layers=2, hidden_channels=8).eval()
    vae = VAE(image_shape=(1, 4, 4), latent_dim=2, hidden_dims=(8,)).eval()
    images, dims = eight_bit_images(5, (1, 4, 4)), 16

    def bits(log_density: torch.Tensor) -> torch.Tensor:  # -log2 P(v) / D <= (-log p(x) + D log 256) / (D log 2)
        return (-log_density + dims * math.log(256)) / (dims * math.log(2))

    for model, log_density in ((flow, flow.log_density), (vae, lambda x: vae.log_density(x, 7))):
        assert isinstance(model, LikelihoodModel) and model.likelihood_bound
        torch.manual_seed(3)
        reported = model.nll_bits_per_dim(images, 7)
        torch.manual_seed(3)
        x = dequantize(images)  # the same draw: both families see these dequantized images
        with torch.no_grad():
            assert torch.allclose(reported, bits(log_density(x)), rtol=0, atol=1e-5)
        levels = torch.round(images * 255)
        assert ((levels / 256 <= x) & (x <= (levels + 1) / 256)).all()


def direct_bound_terms(predict_noise, x0: torch.Tensor, betas: torch.Tensor, generator: torch.Generator) -> list:
    """Ho et al.'s terms written with torch.distributions: the posterior and the model's Gaussian (its mean from the
    predicted noise, eq. 11) and their KL, the decoder's mass by the normal CDF, the prior's KL."""
    x0, betas = x0.double(), betas.double()
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    abar_previous = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    posterior_variance = betas * (1 - abar_previous) / (1 - abar)
    terms = []
    for t in range(len(betas)):
        noise = torch.randn(x0.shape, generator=generator).double()
        x_t = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * noise
        eps = predict_noise(x_t.float(), t).double()
        model_mean = (x_t - betas[t] / (1 - abar[t]).sqrt() * eps) / alphas[t].sqrt()  # Ho et al. eq. 11
        if t == 0:  # the decoder: discretized Gaussian with the next step's variance
            decoder = Normal(model_mean, posterior_variance[1].sqrt())
            upper = torch.where(x0 >= 1, torch.ones_like(x0), decoder.cdf(x0 + 1 / 255))
            lower = torch.where(x0 <= -1, torch.zeros_like(x0), decoder.cdf(x0 - 1 / 255))
            terms.append(-(upper - lower).log().flatten(1).sum(1))
            continue
        posterior_mean = (
            abar_previous[t].sqrt() * betas[t] / (1 - abar[t]) * x0
            + alphas[t].sqrt() * (1 - abar_previous[t]) / (1 - abar[t]) * x_t
        )
        scale = posterior_variance[t].sqrt()
        terms.append(kl_divergence(Normal(posterior_mean, scale), Normal(model_mean, scale)).flatten(1).sum(1))
    prior = Normal(abar[-1].sqrt() * x0, (1 - abar[-1]).sqrt())
    terms.append(kl_divergence(prior, Normal(0.0, 1.0)).flatten(1).sum(1))
    return terms


def test_diffusion_bound_equals_a_direct_computation_on_a_few_steps() -> None:
    torch.manual_seed(0)
    model = Diffusion(
        image_shape=(1, 4, 4),
        num_classes=10,
        num_timesteps=4,
        schedule="cosine",
        base_channels=4,
        channel_multipliers=(1,),
        attention_heads=1,
        sample_steps=4,
        ema_decay=None,
    ).eval()
    torch.nn.init.normal_(model.unet.out_conv.weight, std=0.1)  # predictions that are not 0, as at initialisation
    images = eight_bit_images(3, (1, 4, 4))
    x0 = images * 2 - 1

    def predict_noise(x: torch.Tensor, t: int) -> torch.Tensor:
        with torch.no_grad():
            return model.unet(x, torch.full((len(x),), t / 4), None)

    ours = variational_bound_terms(predict_noise, x0, model.alphas_cumprod, torch.Generator().manual_seed(5))
    direct = direct_bound_terms(predict_noise, x0, noise_schedule("cosine", 4), torch.Generator().manual_seed(5))
    assert ours.shape == (5, 3) and torch.allclose(ours, torch.stack(direct), rtol=1e-5, atol=1e-6)
    assert (ours >= 0).all()  # KLs and a negative log-probability
    # the model's bits/dim are that sum, per dimension
    torch.manual_seed(7)
    reported = model.nll_bits_per_dim(images, 1)
    torch.manual_seed(7)
    with torch.no_grad():
        terms = variational_bound_terms(predict_noise, x0, model.alphas_cumprod)
    assert torch.allclose(reported.double(), terms.sum(0) / (16 * math.log(2)), rtol=1e-6)


def test_flow_matching_says_it_offers_no_likelihood() -> None:
    model = Diffusion(
        image_shape=(1, 4, 4),
        num_classes=10,
        objective="flow",
        base_channels=4,
        channel_multipliers=(1,),
        attention_heads=1,
    )
    assert model.likelihood_bound is None
    with pytest.raises(ConfigError, match="flow matching has no variational bound"):
        model.nll_bits_per_dim(eight_bit_images(1, (1, 4, 4)), 1)
