"""The VAE: its ELBO, its pictures, a short run whose ELBO improves, and sampling from its checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from genlab.models.vae import VAE
from genlab.train import train
from tests.helpers import TEST_OVERRIDES, compose_config, run_module


def _vae_config(tmp_path: Path, data_dir: Path, *overrides: str):
    base = [*TEST_OVERRIDES, "model=vae", "data=mnist", "data.val_size=100", "data.batch_size=32"]
    return compose_config([*base, f"paths.data_dir={data_dir}", *overrides], tmp_path / "run")


def test_elbo_is_reconstruction_plus_kl() -> None:
    torch.manual_seed(0)
    model = VAE(image_shape=(1, 28, 28), latent_dim=4)
    images = torch.rand(8, 1, 28, 28)
    torch.manual_seed(1)
    recon, kl = model.elbo_terms(images)
    # the same two terms, written out from the encoder and decoder with the same noise
    torch.manual_seed(1)
    mu, logvar = model.encoder(images).chunk(2, dim=1)
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    expected_recon = F.binary_cross_entropy(torch.sigmoid(model.decoder(z)), images, reduction="none").sum((1, 2, 3))
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    expected_kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(recon, expected_recon.mean(), rtol=1e-4)
    assert torch.allclose(kl, expected_kl.mean(), rtol=1e-4)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_shapes(architecture: str) -> None:
    model = VAE(image_shape=(3, 32, 32), latent_dim=6, architecture=architecture)
    images = torch.rand(5, 3, 32, 32)
    mu, logvar = model.encode(images)
    assert mu.shape == logvar.shape == (5, 6)
    assert model.reconstruct(images).shape == images.shape
    samples = model.sample(7)
    assert samples.shape == (7, 3, 32, 32) and 0 <= samples.min() and samples.max() <= 1


def test_kl_warmup_ramps_the_weight() -> None:
    model = VAE(image_shape=(1, 28, 28), beta=2.0, kl_warmup_steps=100)
    model.train()
    assert model.kl_weight() == 0.0  # global_step is 0 outside a Trainer
    model.eval()
    assert model.kl_weight() == 2.0  # validation and test always use the full beta


@pytest.mark.parametrize(
    "options", [["model.architecture=mlp"], ["model.architecture=conv", "model.beta=4", "model.kl_warmup_steps=10"]]
)
def test_fast_dev_run(tmp_path: Path, mnist_dir: Path, options: list[str]) -> None:
    _, metrics = train(_vae_config(tmp_path, mnist_dir, "debug=fdr", *options))
    assert {"train/loss", "val/nelbo", "test/nelbo", "test/kl", "test/bpd"} <= metrics.keys()
    assert math.isclose(metrics["test/bpd"], metrics["test/nelbo"] / (784 * math.log(2)), rel_tol=1e-5)


def test_pictures_including_the_2d_manifold(tmp_path: Path, mnist_dir: Path) -> None:
    train(_vae_config(tmp_path, mnist_dir, "model.latent_dim=2", "test=false"))
    images = tmp_path / "run" / "images"
    sizes = {}
    for name in ("reconstructions", "samples", "interpolations", "manifold"):
        with Image.open(images / f"{name}_epoch000.png") as image:
            sizes[name] = image.size
    # 28 px images drawn at 56 px, so that a digit reads on a screen
    assert sizes["manifold"] == (20 * 56, 20 * 56)  # a 20x20 grid, no padding
    assert sizes["interpolations"] == (10 * 58 + 2, 8 * 58 + 2)  # 8 pairs, 10 steps each, 2 px padding


def test_elbo_improves_on_fashion_mnist(tmp_path: Path, fashion_mnist_dir: Path) -> None:
    cfg = _vae_config(
        tmp_path,
        fashion_mnist_dir,
        "data=fashion_mnist",
        "data.batch_size=128",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=40",
        "trainer.limit_val_batches=10",
        "test=false",
    )
    train(cfg)
    import csv

    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        val = [float(row["val/nelbo"]) for row in csv.DictReader(f) if row["val/nelbo"]]
    # an untrained VAE scores about 784 * ln 2 = 543 nats: Bernoulli(0.5) for every pixel
    assert val[0] < 400 and val[-1] < val[0] - 10, val


@pytest.mark.integration
def test_sample_cli_writes_a_grid_without_the_dataset(tmp_path: Path, mnist_dir: Path) -> None:
    train(_vae_config(tmp_path, mnist_dir, "test=false", "trainer.limit_train_batches=2"))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    for raw_file in (mnist_dir / "MNIST" / "raw").iterdir():
        raw_file.unlink()  # sampling must not need the data
    result = run_module(
        "src.sample", f"ckpt_path={checkpoint}", "num_samples=12", "nrow=4", f"paths.log_dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (grid,) = (tmp_path / "sample" / "runs").glob("*/samples.png")
    with Image.open(grid) as image:
        assert image.size == (4 * 58 + 2, 3 * 58 + 2)  # 28-pixel images drawn at 56, 2 pixels apart
