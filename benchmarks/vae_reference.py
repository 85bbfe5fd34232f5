"""The VAE in a plain PyTorch loop, as the reference for `experiment=vae_fashion_mnist`.

    DATA_DIR=../shared/data python -m benchmarks.vae_reference [--epochs 10] [--architectures mlp conv] [--rounds 3]

(a) reference: the classic 784-400-20 VAE of PyTorch's examples/vae, written out here, trained with
    Adam (the fused kernel, as ours) on the same 55,000 training images as ours, fed by torchvision's
    per-item DataLoader (FashionMNIST(transform=ToTensor())), batch 128;
(b) ours: `experiment=vae_fashion_mnist` (and vae_conv_fashion_mnist) through genlab.train.train(cfg), what
    `python -m src.train` runs (every always-on callback, the atomic checkpoints, the progress bar).
Both report the test split's negative ELBO in nats per image (one z sample per image) of their last weights
(ours: last.ckpt), and training images/second from the start of training to its end: the reference's
loop, and ours without the validation passes (the reference has none; what ours does besides: a checkpoint
written after each epoch's validation), and with them (and their reconstruction and sample grids).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from statistics import median

import hydra
import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import ToTensor

from benchmarks.machine import describe_machine
from benchmarks.timed_fit import run_stats_overrides, timed_train
from genlab.checkpoints import load_model
from genlab.models.fused import fused_optimizer_available
from genlab.utils.config import compose


class ReferenceVAE(nn.Module):
    def __init__(self, latent_dim: int = 20) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, latent_dim), nn.Linear(400, latent_dim)
        self.fc3, self.fc4 = nn.Linear(latent_dim, 400), nn.Linear(400, 784)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.fc4(F.relu(self.fc3(z))), mu, logvar


def negative_elbo_sum(model: ReferenceVAE, x: torch.Tensor) -> torch.Tensor:
    logits, mu, logvar = model(x)
    recon = F.binary_cross_entropy_with_logits(logits, x.view(-1, 784), reduction="sum")
    return recon - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def reference(data_dir: str, epochs: int, seed: int = 42) -> tuple[float, float]:
    """Train the reference; return (test negative ELBO per image, training images/second)."""
    torch.manual_seed(seed)
    full_train = torchvision.datasets.FashionMNIST(data_dir, train=True, transform=ToTensor())
    # the same 55,000 images our DataModule trains on: it holds out a seeded 5,000 for validation
    order = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(seed))
    train_set = Subset(full_train, order[5000:].tolist())
    test_set = torchvision.datasets.FashionMNIST(data_dir, train=False, transform=ToTensor())
    model = ReferenceVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused_optimizer_available(model))  # as genlab's
    loader = DataLoader(train_set, batch_size=128, shuffle=True)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, _ in loader:
            optimizer.zero_grad()
            loss = negative_elbo_sum(model, x) / len(x)
            loss.backward()
            optimizer.step()
    images_per_second = epochs * len(train_set) / (time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        total = sum(negative_elbo_sum(model, x).item() for x, _ in DataLoader(test_set, batch_size=500))
    return total / len(test_set), images_per_second


RECIPES = {"mlp": "vae_fashion_mnist", "conv": "vae_conv_fashion_mnist"}


def ours(data_dir: str, epochs: int, architecture: str) -> tuple[float, float, float]:
    """Train the architecture's recipe as `python -m src.train` does; return the test negative ELBO of its last weights
    and the images/second of training alone (as the reference measures) and of the whole fit, with its validation
    after each epoch."""
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"experiment={RECIPES[architecture]}",
            f"trainer.max_epochs={epochs}",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={tmp}",
            f"paths.log_dir={tmp}",
            "extras.print_config=false",
            "trainer.accelerator=cpu",  # where the reference trains
            "test=false",  # it would test the best checkpoint: the last, as the reference's, is tested below
            *run_stats_overrides(),
        ]
        cfg = compose(overrides)
        stats = timed_train(cfg)
        model = load_model(Path(tmp) / "checkpoints" / "last.ckpt")
        datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
        tester = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        (metrics,) = tester.test(model, datamodule=datamodule, verbose=False)
    datamodule.setup("fit")
    images = epochs * len(datamodule.data_train)
    return metrics["test/nelbo"], images / stats["training_seconds"], images / stats["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "data"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--architectures", nargs="*", default=["mlp", "conv"])
    parser.add_argument("--rounds", type=int, default=1, help="alternate reference and ours this many times")
    args = parser.parse_args()
    print(describe_machine())
    print(
        f"Fashion-MNIST, {args.epochs} epochs, latent 20, fused Adam 1e-3, batch 128; test negative ELBO of the last "
        f"weights, in nats/image"
    )
    # this machine's speed drifts by tens of percent over minutes: with rounds, each architecture's
    # speed is compared with the reference run next to it, and the medians of those ratios are reported
    results: dict[str, list[tuple]] = {"reference": [], **{architecture: [] for architecture in args.architectures}}
    for round_ in range(args.rounds):
        order = list(results) if round_ % 2 == 0 else list(results)[::-1]
        for name in order:
            results[name].append(
                reference(args.data_dir, args.epochs) if name == "reference" else ours(args.data_dir, args.epochs, name)
            )
    ref_nelbo, ref_speeds = results["reference"][0][0], [speed for _, speed in results["reference"]]
    print(
        f"reference (plain loop, per-item DataLoader): nelbo {ref_nelbo:8.2f}   {median(ref_speeds):8,.0f} images/s"
        f"   (rounds: {', '.join(f'{x:,.0f}' for x in ref_speeds)})"
    )
    for architecture in args.architectures:
        nelbo = results[architecture][0][0]
        speeds, fit_speeds = [r[1] for r in results[architecture]], [r[2] for r in results[architecture]]
        ratios = [speed / ref for speed, ref in zip(speeds, ref_speeds, strict=True)]
        fit_ratios = [speed / ref for speed, ref in zip(fit_speeds, ref_speeds, strict=True)]
        print(
            f"ours, {architecture:4s} (Lightning, tensor-resident):     nelbo {nelbo:8.2f}   {median(speeds):8,.0f} "
            f"images/s   ({(nelbo - ref_nelbo) / ref_nelbo:+.2%} nelbo; speed {median(ratios):.2f}x the reference, "
            f"rounds {', '.join(f'{r:.2f}' for r in ratios)}; with the validations {median(fit_speeds):,.0f} "
            f"images/s, {median(fit_ratios):.2f}x)"
        )


if __name__ == "__main__":
    main()
