"""Runs that survive: a signal (Ctrl-C, preemption) saves a last checkpoint; a NaN loss stops before saving;
mode collapse is warned of."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from genlab.callbacks.finite_loss import NonFiniteLossError
from genlab.checkpoints import read_checkpoint
from genlab.data.images import FashionMNISTDataModule
from genlab.errors import GenlabError
from genlab.metrics.sample_fid import SampleFID
from genlab.train import train
from tests.helpers import TEST_OVERRIDES, compose_config, start_train

# subprocesses and whole runs: the integration tier (make test-integration)
pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_last_checkpoint_and_exits_with_its_code(
    tmp_path: Path, shakespeare_dir: Path, signum: signal.Signals, exit_code: int
) -> None:
    # validation (and so checkpointing) far away: only the interruption can write a checkpoint
    process = start_train(
        "experiment=gpt_shakespeare_cpu",
        "trainer.max_steps=100000",
        "trainer.val_check_interval=50000",
        "~callbacks.rich_progress_bar",
        "+trainer.enable_progress_bar=false",
        "extras.print_config=false",
        f"paths.data_dir={shakespeare_dir}",
        f"paths.log_dir={tmp_path}",
    )
    deadline = time.monotonic() + 120
    while not any("Starting training" in p.read_text() for p in tmp_path.glob("*/runs/*/*.log")):
        assert process.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.5)
    time.sleep(4)  # some steps
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == exit_code, stderr[-3000:]
    assert f"interrupted: {signum.name} during training at step" in stderr and "Traceback" not in stderr
    (last,) = tmp_path.glob("*/runs/*/checkpoints/last.ckpt")
    checkpoint = read_checkpoint(last)
    assert checkpoint["global_step"] > 0
    assert f"at step {checkpoint['global_step']};" in stderr  # the checkpoint holds the step the message names
    assert not list(last.parent.glob("*.tmp*"))


class PoisonWeights(Callback):
    """Fault injection: set the model's first parameter to NaN before optimizer step `at_step`."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step == self.at_step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path, mnist_dir: Path) -> None:
    overrides = [
        *TEST_OVERRIDES,
        "model=vae",
        "data=mnist",
        "data.val_size=100",
        f"paths.data_dir={mnist_dir}",
        "trainer.max_epochs=3",
        "+callbacks.poison._target_=tests.test_reliability.PoisonWeights",
        "+callbacks.poison.at_step=6",
    ]
    with pytest.raises(NonFiniteLossError, match="became NaN or infinite at step 6") as error:
        train(compose_config(overrides, tmp_path / "run"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert str(last) in str(error.value)  # the message names the last good checkpoint
    checkpoint = read_checkpoint(last)
    assert checkpoint["global_step"] == 4  # the end of the first epoch (4 batches): nothing after the NaN
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint["state_dict"].values())
    assert sorted(p.name for p in last.parent.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]  # no new "best"


def test_nan_loss_between_periodic_checkpoints_is_caught_before_the_next_save(tmp_path: Path, mnist_dir: Path) -> None:
    # a checkpoint after every step, the flag read only every 50: the save itself must check it
    overrides = [
        *TEST_OVERRIDES,
        "model=vae",
        "data=mnist",
        "data.val_size=100",
        f"paths.data_dir={mnist_dir}",
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=50",
        "callbacks=[default,periodic_checkpoint]",
        "callbacks.periodic_checkpoint.every_n_train_steps=1",
        "+callbacks.poison.at_step=6",
        "+callbacks.poison._target_=tests.test_reliability.PoisonWeights",
    ]
    with pytest.raises(NonFiniteLossError, match="became NaN or infinite at step 6"):
        train(compose_config(overrides, tmp_path / "run"))
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 6  # saved before the poisoned step, and not replaced after it
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint["state_dict"].values())


@pytest.mark.parametrize("model", ["ae", "gan"])
def test_same_seed_and_config_give_identical_metrics_on_cpu(tmp_path: Path, mnist_dir: Path, model: str) -> None:
    overrides = [
        *TEST_OVERRIDES,
        f"model={model}",
        "data=mnist",
        "data.val_size=100",
        f"paths.data_dir={mnist_dir}",
        "trainer.deterministic=true",
        "seed=7",
    ]
    _, first = train(compose_config(overrides, tmp_path / "a"))
    _, second = train(compose_config(overrides, tmp_path / "b"))
    assert first == second and len(first) > 3


class FixedSamples(L.LightningModule):
    """A stand-in generator whose samples are given images: distinct ones, or one image repeated (collapse)."""

    def __init__(self, images: torch.Tensor, collapsed: bool) -> None:
        super().__init__()
        self.images, self.collapsed = images, collapsed

    def sample(self, n: int) -> torch.Tensor:
        return self.images[:1].expand(n, -1, -1, -1) if self.collapsed else self.images[:n]

    def validation_step(self, batch, batch_idx: int) -> None:
        pass


@pytest.mark.parametrize("collapsed", [True, False])
def test_mode_collapse_is_warned_from_the_classifier_label_entropy(
    fashion_mnist_dir: Path, caplog: pytest.LogCaptureFixture, collapsed: bool
) -> None:
    datamodule = FashionMNISTDataModule(str(fashion_mnist_dir), [1, 28, 28], 10, batch_size=250, val_size=500)
    datamodule.setup("fit")
    images = torch.cat([images for images, _ in datamodule.train_dataloader()][:2])  # not the validation images
    trainer = L.Trainer(
        callbacks=[SampleFID(num_samples=500)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
    )
    with caplog.at_level(logging.WARNING, logger="genlab.metrics.sample_fid"):
        trainer.validate(FixedSamples(images, collapsed), datamodule=datamodule)

    entropy = float(trainer.callback_metrics["val/label_entropy"])
    warnings = [record.message for record in caplog.records if "mode collapse" in record.message]
    if collapsed:
        assert entropy == 0.0
        assert len(warnings) == 1 and "entropy 0.00 nats (below min_label_entropy=1.0" in warnings[0]
    else:
        assert entropy > 2.0  # real garments: all ten classes, near ln 10 = 2.30
        assert not warnings


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model=ae", "data=mnist", "model.lr=-0.1"],
            "model.lr=-0.1 is not valid for Autoencoder: expected float (Input should be greater than 0)",
        ),
        (["model=vae", "data=mnist", "model.latent_dim=0"], "model.latent_dim=0 is not valid for VAE: expected int"),
        (["model=gan", "data=mnist", "model.n_critic=0"], "model.n_critic=0 is not valid for GAN: expected int"),
        (
            ["model=ae", "data=mnist", "data.batch_size=1000"],
            "data.batch_size=1000 is larger than the training split: 500 images (600 less data.val_size=100)",
        ),
        (
            ["model=gpt", "data=shakespeare", "model.n_head=3", "model.n_embd=32"],
            "model.n_embd=32 must be divisible by model.n_head=3",
        ),
        (
            ["model=gpt", "data=shakespeare", "data.block_size=200000"],
            "data.block_size=200000 is not smaller than the validation split (111,540 characters",
        ),
    ],
)
def test_out_of_range_values_are_refused_naming_the_key(
    tmp_path: Path, request: pytest.FixtureRequest, overrides: list[str], message: str
) -> None:
    data_dir = request.getfixturevalue("shakespeare_dir" if "data=shakespeare" in overrides else "mnist_dir")
    overrides = [
        *TEST_OVERRIDES,
        *overrides,
        "data.val_size=100" if "data=mnist" in overrides else "test=false",
        f"paths.data_dir={data_dir}",
    ]
    with pytest.raises(GenlabError) as error:
        train(compose_config(overrides, tmp_path / "run"))
    assert message in str(error.value)
    assert not (tmp_path / "run" / "checkpoints").exists()
