"""Scaling without code changes: every family under DDP (2 CPU processes), SLURM and submitit configs, FSDP."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest
import torch
from hydra import initialize_config_dir

from src.utils.config import CONF_DIR
from tests.test_cli import QUICK, run_train

DDP = ["trainer=ddp_sim", "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
       "trainer.limit_test_batches=2", "extras.print_config=false"]  # fmt: skip
IMAGES = ["data=mnist", "data.val_size=100", "data.batch_size=25"]


def ddp_run(tmp_path: Path, *overrides: str) -> tuple[Path, dict[str, float]]:
    """`python -m src.train trainer=ddp_sim ...` as a user runs it: Lightning starts the second process."""
    result = run_train(*DDP, f"paths.log_dir={tmp_path}", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = tmp_path.glob("*/runs/*")
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_autoencoder_under_ddp_writes_each_file_once(tmp_path: Path, mnist_dir: Path) -> None:
    run_dir, metrics = ddp_run(tmp_path, "model=ae", *IMAGES, f"paths.data_dir={mnist_dir}")
    assert {"val/loss", "test/loss", "test/mse"} <= metrics.keys()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    assert [p.name for p in (run_dir / "images").iterdir()] == ["reconstructions_epoch000.png"]
    assert sorted(p.name for p in (run_dir / "csv").iterdir()) == ["hparams.yaml", "metrics.csv"]
    # the two processes saw different halves of the data: 4 batches each, and both counted once in the step
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4


@pytest.mark.slow
def test_vae_under_ddp(tmp_path: Path, mnist_dir: Path) -> None:
    _, metrics = ddp_run(tmp_path, "model=vae", *IMAGES, f"paths.data_dir={mnist_dir}")
    assert metrics["test/nelbo"] == pytest.approx(metrics["test/recon"] + metrics["test/kl"], rel=1e-4)


@pytest.mark.slow
def test_gan_manual_optimization_under_ddp_keeps_replicas_equal(tmp_path: Path, mnist_dir: Path) -> None:
    run_dir, metrics = ddp_run(tmp_path, "model=gan", *IMAGES, f"paths.data_dir={mnist_dir}")
    assert {"train/d_loss", "val/d_acc", "test/d_acc"} <= metrics.keys()
    # both optimizers stepped once per batch on each rank, with gradients averaged across the two
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2 * 4


@pytest.mark.slow
def test_sample_fid_under_ddp_scores_samples_from_every_rank(tmp_path: Path, fashion_mnist_dir: Path) -> None:
    _, metrics = ddp_run(
        tmp_path, "model=gan", "data=fashion_mnist", f"paths.data_dir={fashion_mnist_dir}",
        "callbacks=[default,sample_fid]", "callbacks.sample_fid.num_samples=100", "callbacks.sample_fid.batch_size=50",
    )  # fmt: skip
    assert metrics["val/fid"] > 0 and 1 <= metrics["val/is"] <= 10


@pytest.mark.slow
def test_gpt_under_ddp(tmp_path: Path, shakespeare_dir: Path) -> None:
    run_dir, metrics = ddp_run(
        tmp_path, "experiment=gpt_shakespeare_cpu", f"paths.data_dir={shakespeare_dir}", "trainer.max_steps=4",
        "trainer.val_check_interval=4", "data.num_val_windows=48", "model.sample_length=20",
    )  # fmt: skip
    assert metrics["val/loss"] < 4.5
    assert [p.name for p in (run_dir / "samples").iterdir()] == ["step_000004.txt"]


def test_slurm_launcher_takes_nodes_and_tasks_from_the_trainer() -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = hydra.compose(
            config_name="train", return_hydra_config=True,
            overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                       "hydra.launcher.partition=gpu"],
        )  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu" and launcher.signal_delay_s > 0


def test_submitit_local_runs_a_two_job_sweep(tmp_path: Path, mnist_dir: Path) -> None:
    result = run_train(
        "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "model.latent_dim=2,4", *QUICK,
        "test=false", *IMAGES, f"paths.data_dir={mnist_dir}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for job, latent_dim in (("0", 2), ("1", 4)):
        job_dir = tmp_path / "sweep" / job
        assert json.loads((job_dir / "metrics.json").read_text())["val/loss"] > 0
        checkpoint = torch.load(job_dir / "checkpoints" / "last.ckpt", weights_only=True)
        assert checkpoint["hyper_parameters"]["latent_dim"] == latent_dim
    assert list((tmp_path / "sweep" / ".submitit").iterdir())  # each job went through submitit
