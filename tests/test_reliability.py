"""Runs that survive: a signal (Ctrl-C, preemption) saves a last checkpoint; a NaN loss stops before saving."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from src.callbacks.finite_loss import NonFiniteLossError
from src.train import train
from src.utils.checkpoint import load_checkpoint
from tests.conftest import TEST_OVERRIDES, compose_config
from tests.test_cli import start_train


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_last_checkpoint_and_exits_with_its_code(
    tmp_path: Path, shakespeare_dir: Path, signum: signal.Signals, exit_code: int
) -> None:
    # validation (and so checkpointing) far away: only the interruption can write a checkpoint
    process = start_train(
        "experiment=gpt_shakespeare_cpu", "trainer.max_steps=100000", "trainer.val_check_interval=50000",
        "~callbacks.rich_progress_bar", "+trainer.enable_progress_bar=false", "extras.print_config=false",
        f"paths.data_dir={shakespeare_dir}", f"paths.log_dir={tmp_path}",
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not any("Starting training" in p.read_text() for p in tmp_path.glob("*/runs/*/*.log")):
        assert process.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.5)
    time.sleep(4)  # some steps
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == exit_code, stderr[-3000:]
    assert f"interrupted: {signum.name} at step" in stderr and "Traceback" not in stderr
    (last,) = tmp_path.glob("*/runs/*/checkpoints/last.ckpt")
    checkpoint = load_checkpoint(last)
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
    overrides = [*TEST_OVERRIDES, "model=vae", "data=mnist", "data.val_size=100", f"paths.data_dir={mnist_dir}",
                 "trainer.max_epochs=3", "+callbacks.poison._target_=tests.test_reliability.PoisonWeights",
                 "+callbacks.poison.at_step=6"]  # fmt: skip
    with pytest.raises(NonFiniteLossError, match="became NaN or infinite at step 6") as error:
        train(compose_config(overrides, tmp_path / "run"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert str(last) in str(error.value)  # the message names the last good checkpoint
    checkpoint = load_checkpoint(last)
    assert checkpoint["global_step"] == 4  # the end of the first epoch (4 batches): nothing after the NaN
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint["state_dict"].values())
    assert sorted(p.name for p in last.parent.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]  # no new "best"


@pytest.mark.parametrize("model", ["ae", "gan"])
def test_same_seed_and_config_give_identical_metrics_on_cpu(tmp_path: Path, mnist_dir: Path, model: str) -> None:
    overrides = [*TEST_OVERRIDES, f"model={model}", "data=mnist", "data.val_size=100", f"paths.data_dir={mnist_dir}",
                 "trainer.deterministic=true", "seed=7"]  # fmt: skip
    _, first = train(compose_config(overrides, tmp_path / "a"))
    _, second = train(compose_config(overrides, tmp_path / "b"))
    assert first == second and len(first) > 3
