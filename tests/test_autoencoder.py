"""The autoencoder end to end through train(cfg): fast_dev_run, learning, resume, the grid."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from genlab.models.autoencoder import Autoencoder
from genlab.train import train
from tests.helpers import TEST_OVERRIDES, compose_config


def _ae_config(tmp_path: Path, data_dir: Path, *overrides: str):
    """Autoencoder on the 600 MNIST-format images of `mnist_dir` unless overrides say otherwise."""
    base = [*TEST_OVERRIDES, "model=ae", "data=mnist", "data.val_size=100", "data.batch_size=32"]
    return compose_config([*base, f"paths.data_dir={data_dir}", *overrides], tmp_path / "run")


def _csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "options",
    [["model.loss=bce"], ["model.loss=mse"], ["model.noise=gaussian"], ["model.noise=masking", "model.latent_dim=2"]],
)
def test_fast_dev_run(tmp_path: Path, mnist_dir: Path, options: list[str]) -> None:
    value, metrics = train(_ae_config(tmp_path, mnist_dir, "debug=fdr", *options))
    assert value is None  # fast_dev_run trains one batch: nothing to report to a sweep
    assert {"train/loss", "val/loss", "test/loss"} <= metrics.keys()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_shapes_and_denoising_inputs() -> None:
    model = Autoencoder(image_shape=(3, 32, 32), latent_dim=8, noise="masking", noise_level=0.5)
    images = torch.rand(4, 3, 32, 32)
    assert model.encoder(images).shape == (4, 8)
    reconstructions = model.reconstruct(images)
    assert reconstructions.shape == images.shape and 0 <= reconstructions.min() and reconstructions.max() <= 1
    masked = model.corrupt(images)
    assert 0.4 < (masked == 0).float().mean() < 0.6  # about half the pixels dropped


def test_training_lowers_validation_error(tmp_path: Path, fashion_mnist_dir: Path) -> None:
    cfg = _ae_config(
        tmp_path,
        fashion_mnist_dir,
        "data=fashion_mnist",
        "data.batch_size=128",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=40",
        "trainer.limit_val_batches=8",
        "test=false",
    )
    _, metrics = train(cfg)
    val_mse = [float(row["val/mse"]) for row in _csv_rows(tmp_path / "run") if row["val/mse"]]
    assert len(val_mse) == 3
    # an untrained decoder outputs about 0.5 everywhere: MSE about 0.17 on Fashion-MNIST
    untrained = Autoencoder(image_shape=(1, 28, 28))
    images = next(iter(_val_loader(fashion_mnist_dir)))[0]
    first = torch.nn.functional.mse_loss(untrained.reconstruct(images), images).item()
    assert val_mse[-1] < 0.35 * first, (first, val_mse)
    assert val_mse[-1] <= val_mse[0]


def _val_loader(data_dir: Path):
    from genlab.data.images import FashionMNISTDataModule

    datamodule = FashionMNISTDataModule(str(data_dir), image_shape=(1, 28, 28), num_classes=10)
    datamodule.setup("fit")
    return datamodule.val_dataloader()


def test_resume_from_last_checkpoint_continues(tmp_path: Path, mnist_dir: Path) -> None:
    first = _ae_config(tmp_path / "a", mnist_dir, "trainer.limit_train_batches=5", "test=false")
    train(first)
    last = tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 5)

    resumed = _ae_config(
        tmp_path / "b",
        mnist_dir,
        "trainer.limit_train_batches=5",
        "trainer.max_epochs=2",
        "test=false",
        "trainer.log_every_n_steps=1",  # which steps the resumed run logs is what this test reads
        f"ckpt_path={last}",
    )
    train(resumed)
    after = torch.load(tmp_path / "b" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (after["epoch"], after["global_step"]) == (1, 10)  # one more epoch, not two
    logged_steps = [int(row["step"]) for row in _csv_rows(tmp_path / "b" / "run") if row.get("train/loss")]
    assert min(logged_steps) >= 5  # the resumed run logged from the saved step on
    # the optimizer's state came along: Adam's step count continues
    assert after["optimizer_states"][0]["state"][0]["step"].item() == 10


def test_reconstruction_grid_is_a_png(tmp_path: Path, mnist_dir: Path) -> None:
    train(_ae_config(tmp_path, mnist_dir, "model.noise=gaussian", "model.num_grid_images=16", "test=false"))
    grid = tmp_path / "run" / "images" / "reconstructions_epoch000.png"
    with Image.open(grid) as image:
        image.verify()
        assert image.format == "PNG"
        # 16 images, 8 per row: 2 bands of 3 rows (clean, noisy, reconstructed) of 28 px tiles drawn at 56 px, 2 px
        # padding, and a 4 px line between the bands
        assert image.size == (8 * 58 + 2, 2 * (3 * 58 + 2) + 4)
        assert "middle: their corrupted inputs" in image.info["Description"]  # the caption, in the file


def test_grids_and_config_reach_tensorboard_and_wandb(tmp_path: Path, mnist_dir: Path, monkeypatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no `wandb login`: W&B runs offline
    train(_ae_config(tmp_path, mnist_dir, "logger=many", "test=false"))
    run_dir = tmp_path / "run"

    (tensorboard_run,) = (run_dir / "tensorboard").iterdir()  # a folder named by the run
    events = EventAccumulator(str(tensorboard_run))
    events.Reload()
    assert "reconstructions" in events.Tags()["images"]
    assert "val/loss" in events.Tags()["scalars"]

    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline_run.glob("files/media/images/reconstructions_*.png"))
    # the resolved config went into the run's record (protobuf keeps strings as they are)
    record = next(offline_run.glob("run-*.wandb")).read_bytes()
    assert b"latent_dim" in record and b"genlab.data.images.MNISTDataModule" in record
