"""Scaling without code changes: every family under DDP (2 CPU processes, replicas compared bit for bit), the GPT under
FSDP (2 CPU processes, resumed bit-exact), SLURM and submitit configs."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from hydra import initialize_config_dir
from lightning.pytorch.callbacks import Callback
from torchmetrics.utilities import dim_zero_cat

from genlab.checkpoints import read_checkpoint
from genlab.metrics.sample_fid import SampleFID
from genlab.utils.config import CONF_DIR
from tests.helpers import QUICK, run_module, run_train

DDP = [
    "trainer=ddp_sim",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "extras.print_config=false",
]
IMAGES = ["data=mnist", "data.val_size=100", "data.batch_size=25"]


class SaveReplica(Callback):
    """At the end of training, each process saves its own copy of the model (parameters and buffers, BatchNorm's
    running statistics included) to `<folder>/rank<r>.pt`: the test gathers them from there and compares them."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(pl_module.state_dict(), self.folder / f"rank{trainer.global_rank}.pt")


class SaveSeenSamples(Callback):
    """Each process writes a fingerprint (SHA-1 of its bytes) of every training image it trained on to
    `<folder>/rank<r>.json`: the test compares what the processes saw."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.seen: list[str] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        images = batch[0].cpu()  # (B, C, H, W)
        self.seen += [hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in images]

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


def assert_replicas_equal(folder: Path, num_processes: int = 2) -> dict[str, torch.Tensor]:
    """Every process's parameters and buffers, bit for bit the same as rank zero's; returns rank zero's."""
    replicas = [torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in range(num_processes)]
    assert len(replicas) == num_processes
    for rank, replica in enumerate(replicas[1:], start=1):
        assert replica.keys() == replicas[0].keys()
        differ = [name for name, tensor in replicas[0].items() if not torch.equal(tensor, replica[name])]
        assert not differ, f"rank {rank} differs from rank 0 in {differ}"
    return replicas[0]


class SaveSampleShares(Callback):
    """After sample_fid's scoring, each process saves how many reference images it scored against, how many generated
    images it fed the metric, and the sum of its generated images' features, to `<folder>/rank<r>.json`."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        (sample_fid,) = [callback for callback in trainer.callbacks if isinstance(callback, SampleFID)]
        quality = sample_fid.quality
        # after compute(), torchmetrics holds this process's own states again
        generated = dim_zero_cat(quality.fake_features.value)  # (M, D)
        share = {
            "reference": len(quality.reference.features),
            "generated": len(generated),
            "generated_features_sum": generated.double().sum().item(),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(share))


def ddp_run(tmp_path: Path, *overrides: str) -> tuple[Path, dict[str, float]]:
    """`python -m src.train trainer=ddp_sim ...` as a user runs it: Lightning starts the second process. Each process
    saves its replica of the model at the end of training to tmp_path/replicas (see assert_replicas_equal)."""
    save_replicas = [
        f"+callbacks.replica._target_={__name__}.SaveReplica",
        f"+callbacks.replica.folder={tmp_path / 'replicas'}",
    ]
    result = run_train(*DDP, f"paths.log_dir={tmp_path}", *overrides, *save_replicas)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = tmp_path.glob("*/runs/*")
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_autoencoder_under_ddp_writes_each_file_once_and_ends_with_equal_replicas(
    tmp_path: Path, mnist_dir: Path
) -> None:
    seen = [f"+callbacks.seen._target_={__name__}.SaveSeenSamples", f"+callbacks.seen.folder={tmp_path / 'seen'}"]
    run_dir, metrics = ddp_run(tmp_path, "model=ae", *IMAGES, f"paths.data_dir={mnist_dir}", *seen)
    assert_replicas_equal(tmp_path / "replicas")
    # the two processes trained on different halves of the data (Lightning's DistributedSampler): 4 batches of 25
    # distinct images each, none of them seen by both
    first, second = (json.loads((tmp_path / "seen" / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert len(set(first)) == len(first) == 100 and len(set(second)) == len(second) == 100
    shared = set(first) & set(second)
    assert not shared, f"{len(shared)} of the 100 images each process trained on were trained on by both"
    assert {"val/loss", "test/loss", "test/mse"} <= metrics.keys()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    assert [p.name for p in (run_dir / "images").iterdir()] == ["reconstructions_epoch000.png"]
    assert sorted(p.name for p in (run_dir / "csv").iterdir()) == ["hparams.yaml", "metrics.csv"]
    # and both counted once in the step
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4


@pytest.mark.slow
def test_vae_under_ddp_ends_with_equal_replicas_and_a_consistent_elbo(tmp_path: Path, mnist_dir: Path) -> None:
    _, metrics = ddp_run(tmp_path, "model=vae", *IMAGES, f"paths.data_dir={mnist_dir}")
    assert_replicas_equal(tmp_path / "replicas")
    assert metrics["test/nelbo"] == pytest.approx(metrics["test/recon"] + metrics["test/kl"], rel=1e-4)


@pytest.mark.slow
def test_gan_under_ddp_ends_with_bit_identical_replicas(tmp_path: Path, mnist_dir: Path) -> None:
    # manual optimization, two optimizers, BatchNorm in both networks (plain BatchNorm: torch's SyncBatchNorm runs
    # on GPUs only, so trainer=ddp's sync_batchnorm is checked by the GPU suite)
    run_dir, metrics = ddp_run(tmp_path, "model=gan", *IMAGES, f"paths.data_dir={mnist_dir}")
    # (training values are logged on Lightning's logging steps only, every 50th: none in a run this short)
    assert {"val/d_acc", "test/d_acc"} <= metrics.keys()
    replica = assert_replicas_equal(tmp_path / "replicas")
    assert any(name.endswith("running_var") for name in replica)  # the BatchNorm statistics were compared too
    # both optimizers stepped once per batch on each rank: the replicas moved, together
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2 * 4
    assert all(torch.equal(tensor, replica[name]) for name, tensor in checkpoint["state_dict"].items())


@pytest.mark.slow
def test_sample_fid_under_ddp_scores_an_equal_share_of_distinct_samples_from_each_rank(
    tmp_path: Path, fashion_mnist_dir: Path
) -> None:
    _, metrics = ddp_run(
        tmp_path,
        "model=gan",
        "data=fashion_mnist",
        f"paths.data_dir={fashion_mnist_dir}",
        "callbacks=[default,sample_fid]",
        "callbacks.sample_fid.num_samples=100",
        "callbacks.sample_fid.batch_size=30",
        f"+callbacks.shares._target_={__name__}.SaveSampleShares",
        f"+callbacks.shares.folder={tmp_path / 'shares'}",
    )
    assert metrics["val/fid"] > 0 and 1 <= metrics["val/is"] <= 10
    shares = [json.loads((tmp_path / "shares" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    # one reference of 100 validation images on every rank (computed once, by rank 0), half the samples on each
    assert [(share["reference"], share["generated"]) for share in shares] == [(100, 50), (100, 50)]
    # each rank drew its own samples: the same seed on both would have scored one set twice
    assert shares[0]["generated_features_sum"] != shares[1]["generated_features_sum"]


@pytest.mark.slow
def test_gpt_under_ddp_ends_with_equal_replicas_and_writes_one_sample(tmp_path: Path, shakespeare_dir: Path) -> None:
    run_dir, metrics = ddp_run(
        tmp_path,
        "experiment=gpt_shakespeare_cpu",
        f"paths.data_dir={shakespeare_dir}",
        "trainer.max_steps=4",
        "trainer.val_check_interval=4",
        "data.num_val_windows=48",
        "model.sample_length=20",
    )
    assert_replicas_equal(tmp_path / "replicas")
    assert metrics["val/loss"] < 4.5
    assert [p.name for p in (run_dir / "samples").iterdir()] == ["step_000004.txt"]


# trainer=fsdp as users run it (bf16-mixed included), on two CPU processes over gloo, with a GPT of two blocks;
# deterministic, with dropout: a resumed run must draw what the unbroken one drew
FSDP_GPT = [
    "experiment=gpt_shakespeare",
    "trainer=fsdp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.deterministic=true",
    "trainer.val_check_interval=3",
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=32",
    "model.dropout=0.1",
    "model.warmup_steps=2",
    "model.lr_decay_steps=6",
    "model.sample_length=20",
    "data.block_size=32",
    "data.batch_size=8",
    "data.num_val_windows=16",
    "extras.print_config=false",
    "~callbacks.rich_progress_bar",
    "+trainer.enable_progress_bar=false",
]


def val_losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, val/loss) of each validation in a run's CSV log."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("val/loss")]
    return [(int(row["step"]), float(row["val/loss"])) for row in rows]


@pytest.mark.slow
def test_gpt_under_fsdp_on_two_cpu_processes_resumes_bit_exact_and_its_checkpoint_evaluates(
    tmp_path: Path, shakespeare_dir: Path
) -> None:
    command = [*FSDP_GPT, f"paths.data_dir={shakespeare_dir}"]
    unbroken = run_train(*command, "trainer.max_steps=6", f"paths.log_dir={tmp_path / 'unbroken'}")
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    assert "distributed_backend=gloo" in unbroken.stdout + unbroken.stderr
    assert "Starting with 2 processes" in unbroken.stdout + unbroken.stderr
    (run_dir,) = (tmp_path / "unbroken").glob("*/runs/*")
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_000003.txt", "step_000006.txt"]

    # it learns: the validation loss falls from chance (ln 65, a uniform guess at 65 characters), and it is DDP's
    # (the same two processes, batches, seeds and bf16-mixed, replicas in place of shards) up to bf16's rounding
    ddp_command = [option for option in command if option != "trainer=fsdp"]
    ddp = run_train(
        *ddp_command,
        "trainer=ddp_sim",
        "trainer.precision=bf16-mixed",
        "trainer.max_steps=6",
        f"paths.log_dir={tmp_path / 'ddp'}",
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    (ddp_dir,) = (tmp_path / "ddp").glob("*/runs/*")
    fsdp_losses, ddp_losses = val_losses(run_dir), val_losses(ddp_dir)
    assert len(fsdp_losses) == 2 and [step for step, _ in fsdp_losses] == [step for step, _ in ddp_losses]
    assert math.log(65) > fsdp_losses[0][1] > fsdp_losses[1][1]
    assert [loss for _, loss in fsdp_losses] == pytest.approx([loss for _, loss in ddp_losses], rel=1e-3)

    # stopped after its first validation, then resumed for the rest
    first = run_train(*command, "trainer.max_steps=3", f"paths.log_dir={tmp_path / 'resumed'}")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run_train(*command, "trainer.max_steps=6", "ckpt_path=last", f"paths.log_dir={tmp_path / 'resumed'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # last.ckpt is one file of whole (gathered, unsharded) tensors, as without FSDP
    expected = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    (got_path,) = (tmp_path / "resumed").glob("*/runs/*/checkpoints/last.ckpt")
    got = read_checkpoint(got_path)
    assert expected["state_dict"]["net.wte.weight"].shape == (65, 32)
    assert got["global_step"] == expected["global_step"] == 6
    assert expected["state_dict"].keys() == got["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, got["state_dict"][name]), f"{name} differs after resuming"
    for expected_optimizer, got_optimizer in zip(expected["optimizer_states"], got["optimizer_states"], strict=True):
        assert expected_optimizer["state"].keys() == got_optimizer["state"].keys()
        for index, state in expected_optimizer["state"].items():
            assert all(torch.equal(value, got_optimizer["state"][index][key]) for key, value in state.items())

    # src.eval reads it on one process, without FSDP, and scores what training validated last
    evaluated = run_module(
        "src.eval",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        f"paths.data_dir={shakespeare_dir}",
        f"paths.log_dir={tmp_path / 'eval'}",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (eval_metrics,) = (tmp_path / "eval").glob("*/runs/*/metrics.json")
    trained_loss = json.loads((run_dir / "metrics.json").read_text())["val/loss"]
    assert json.loads(eval_metrics.read_text())["val/loss"] == pytest.approx(trained_loss, abs=1e-3)


def test_image_models_under_fsdp_are_refused_in_one_line(tmp_path: Path, mnist_dir: Path) -> None:
    # their networks (at most a million parameters) are copied whole under DDP; they do not shard themselves
    result = run_train(
        "model=ae",
        *IMAGES,
        "trainer=fsdp",
        "trainer.accelerator=cpu",
        f"paths.data_dir={mnist_dir}",
        f"paths.log_dir={tmp_path}",
        "extras.print_config=false",
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: trainer=fsdp shards a model that builds and shards its network in configure_model (model=gpt); "
        "Autoencoder does not. Its network is small enough to copy whole: use trainer=ddp"
    )
    assert "Traceback" not in result.stderr


def test_slurm_launcher_takes_nodes_and_tasks_from_the_trainer() -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = hydra.compose(
            config_name="train",
            return_hydra_config=True,
            overrides=[
                "hydra/launcher=slurm",
                "trainer=ddp",
                "trainer.devices=4",
                "trainer.num_nodes=2",
                "hydra.launcher.partition=gpu",
            ],
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu" and launcher.signal_delay_s > 0


@pytest.mark.integration
def test_submitit_local_runs_a_two_job_sweep(tmp_path: Path, mnist_dir: Path) -> None:
    result = run_train(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "model.latent_dim=2,4",
        *QUICK,
        "test=false",
        *IMAGES,
        f"paths.data_dir={mnist_dir}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job, latent_dim in (("0", 2), ("1", 4)):
        job_dir = tmp_path / "sweep" / job
        assert json.loads((job_dir / "metrics.json").read_text())["val/loss"] > 0
        checkpoint = torch.load(job_dir / "checkpoints" / "last.ckpt", weights_only=True)
        assert checkpoint["hyper_parameters"]["latent_dim"] == latent_dim
    assert list((tmp_path / "sweep" / ".submitit").iterdir())  # each job went through submitit
