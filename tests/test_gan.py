"""The GAN: its losses and options run, each update touches only its own network, and the generator learns."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import pytest
import torch

from genlab.callbacks.discriminator_balance import DiscriminatorBalanceStopping
from genlab.checkpoints import load_model
from genlab.data.images import FashionMNISTDataModule
from genlab.metrics import ClassifierFeatures, SampleQuality, load_feature_classifier
from genlab.models.gan import GAN, gradient_penalty
from genlab.train import train
from tests.helpers import TEST_OVERRIDES, compose_config


def _gan_config(tmp_path: Path, data_dir: Path, *overrides: str):
    base = [*TEST_OVERRIDES, "model=gan", "data=mnist", "data.val_size=100", "data.batch_size=32"]
    return compose_config(
        [
            *base,
            "model.generator_channels=16",
            "model.discriminator_channels=16",
            f"paths.data_dir={data_dir}",
            *overrides,
        ],
        tmp_path / "run",
    )


@pytest.mark.parametrize(
    "options",
    [
        ["model.loss=bce"],
        ["model.loss=bce", "model.label_smoothing=0.1", "model.ema_decay=null", "model.gradient_clip_val=1.0"],
        ["model.loss=hinge", "model.conditional=true"],
        ["model.loss=wgan-gp", "model.n_critic=2"],
    ],
)
def test_fast_dev_run(tmp_path: Path, mnist_dir: Path, options: list[str]) -> None:
    _, metrics = train(_gan_config(tmp_path, mnist_dir, "debug=fdr", *options))
    assert {"train/d_loss", "train/d_acc", "val/d_acc", "test/d_real", "test/d_fake"} <= metrics.keys()
    if "model.n_critic=2" not in options:  # with n_critic=2 the single batch of fast_dev_run updates only D
        assert "train/g_loss" in metrics


def test_checkpoints_keep_the_latest_by_default(tmp_path: Path, mnist_dir: Path) -> None:
    value, _ = train(_gan_config(tmp_path, mnist_dir, "trainer.max_epochs=2", "test=false"))
    assert value is None  # no monitored metric: nothing for a sweep to optimise
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["epoch_001.ckpt", "last.ckpt"]


def test_each_update_changes_only_its_own_network(tmp_path: Path, mnist_dir: Path) -> None:
    model = GAN(image_shape=(1, 28, 28), num_classes=10, generator_channels=8, discriminator_channels=8, ema_decay=0.9)
    trainer = L.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    batch = (torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,)))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*batch), batch_size=16)
    trainer.fit(model, train_dataloaders=loader)  # attaches the optimizers; one step
    model.train()

    def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in module.parameters()]

    def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
        return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))

    real = batch[0] * 2 - 1
    fake = model.generator(torch.randn(16, model.hparams.latent_dim))
    g, d, ema = snapshot(model.generator), snapshot(model.discriminator), snapshot(model.ema_generator)
    model.discriminator_step(real, fake.detach(), None)
    assert changed(d, model.discriminator) and not changed(g, model.generator) and not changed(ema, model.ema_generator)

    g, d = snapshot(model.generator), snapshot(model.discriminator)
    model.generator_step(fake, None)
    assert changed(g, model.generator) and not changed(d, model.discriminator) and changed(ema, model.ema_generator)


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic() -> None:
    # D(x) = sum(x * w) / ||w||: its gradient has norm 1 everywhere, so the penalty vanishes
    w = torch.randn(1, 1, 4, 4)

    def critic(x: torch.Tensor, labels=None) -> torch.Tensor:
        return (x * w).sum((1, 2, 3)) / w.norm()

    real, fake = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    assert gradient_penalty(critic, real, fake, None).item() < 1e-10
    double = lambda x, labels=None: 2 * critic(x)  # noqa: E731  gradient norm 2: penalty (2 - 1)^2 = 1
    assert torch.isclose(gradient_penalty(double, real, fake, None), torch.tensor(1.0))


def test_discriminator_balance_stops_after_patience() -> None:
    callback = DiscriminatorBalanceStopping(band=0.05, patience=2)

    class Trainer:
        sanity_checking, should_stop, callback_metrics = False, False, {}

    trainer = Trainer()
    for accuracy, stops in ((0.9, False), (0.52, False), (0.7, False), (0.47, False), (0.51, True)):
        trainer.callback_metrics = {"val/d_acc": torch.tensor(accuracy)}
        callback.on_validation_end(trainer, None)
        assert trainer.should_stop is stops


def _sample_fid(model: GAN, real: torch.Tensor, classifier) -> float:
    quality = SampleQuality(ClassifierFeatures(classifier), kid_subset_size=100)
    quality.update(real, real=True)
    with torch.no_grad():
        quality.update(model.eval().sample(len(real)), real=False)
    return quality.compute()["fid"]


@pytest.mark.integration
def test_conditional_generator_learns_garments_of_the_asked_classes(tmp_path: Path, fashion_mnist_dir: Path) -> None:
    """After a short run (one training, for both claims) the samples are much closer to real garments, D no longer
    wins every time, and a sample asked for class k is mostly classified as k."""
    cfg = _gan_config(
        tmp_path,
        fashion_mnist_dir,
        "data=fashion_mnist",
        "data.batch_size=64",
        "model.conditional=true",
        "model.generator_channels=32",
        "model.discriminator_channels=32",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=400",
        "trainer.limit_val_batches=20",
        "test=false",
        "seed=1",
    )
    untrained = hydra.utils.instantiate(cfg.model, _convert_="all")
    _, metrics = train(cfg)
    trained = load_model(tmp_path / "run" / "checkpoints" / "last.ckpt")

    classifier = load_feature_classifier(None, "fashion_mnist", (1, 28, 28))
    datamodule = FashionMNISTDataModule(str(fashion_mnist_dir), image_shape=(1, 28, 28), num_classes=10)
    datamodule.setup("test")
    real = datamodule.data_test.images[:500].float() / 255
    fid_trained, fid_untrained = _sample_fid(trained, real, classifier), _sample_fid(untrained, real, classifier)
    assert fid_trained < 0.5 * fid_untrained, (fid_trained, fid_untrained)
    assert metrics["val/d_acc"] < 0.95 and metrics["train/d_acc_epoch"] < 0.95, metrics

    labels = torch.arange(10).repeat(50)
    with torch.no_grad():
        predicted = classifier(trained.sample(len(labels), labels)).argmax(1)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy > 0.3, accuracy  # chance is 0.1
