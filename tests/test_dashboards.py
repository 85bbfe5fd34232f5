"""What the dashboards get: W&B artifacts, histograms and the sync command offline; TensorBoard's pictures at the
step of their validation scalars, its histograms and its command; ms/step (and MFU) in the progress bar."""

from __future__ import annotations

import logging
import os
import re
import shlex
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from genlab.callbacks.progress import ProgressBar
from genlab.capabilities import DeclaresFlops
from genlab.models.gpt import GPT
from genlab.train import train
from tests.helpers import TEST_OVERRIDES, compose_config


def _mnist_config(tmp_path: Path, data_dir: Path, *overrides: str):
    """The autoencoder (unless `model=` says otherwise) for two epochs of 4 batches on `mnist_dir`'s images."""
    base = [*TEST_OVERRIDES, "model=ae", "data=mnist", "data.val_size=64", "data.batch_size=16", "test=false"]
    return compose_config([*base, "trainer.max_epochs=2", f"paths.data_dir={data_dir}", *overrides], tmp_path / "run")


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B offline without network or login; its staged artifacts go under the returned home."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def wandb_records(run_file: Path) -> list[Any]:
    """The protobuf records of an offline run's `run-<id>.wandb`: LevelDB's log format, as W&B writes it (a 7-byte
    file header, then 32 KiB blocks of chunks, each with a 7-byte header: CRC, length, full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2

    data, block_size = run_file.read_bytes(), 32 * 1024
    position, records, pending = 7, [], b""
    while position + 7 <= len(data):
        if block_size - position % block_size < 7:  # a block's tail too short for a header is padding
            position += block_size - position % block_size
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def finished_run_records(offline_run: Path, timeout: float = 30) -> list[Any]:
    """The records of an offline run, once W&B's service has written them all (its `exit` record): `run.finish()`
    can return before the service's writer has flushed the file."""
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(next(offline_run.glob("run-*.wandb")))
        if any(record.WhichOneof("record_type") == "exit" for record in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def logged_keys(records: list[Any]) -> set[str]:
    """Every key the run's history holds (a histogram's as `<name>/bins`, `<name>/values`, ...)."""
    history = [record.history for record in records if record.WhichOneof("record_type") == "history"]
    return {item.key or "/".join(item.nested_key) for entry in history for item in entry.item}


def logged_artifacts(records: list[Any]) -> list[tuple[str, str, list[str]]]:
    """(name, type, files) of each artifact the run logged."""
    artifacts = [record.artifact for record in records if record.WhichOneof("record_type") == "artifact"]
    return [(each.name, each.type, [entry.path for entry in each.manifest.contents]) for each in artifacts]


@pytest.mark.slow
def test_offline_wandb_run_keeps_checkpoints_as_artifacts_histograms_and_says_its_sync_command(
    tmp_path: Path, mnist_dir: Path, offline_wandb: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = [
        "logger=wandb",
        "logger.wandb.log_model=true",
        "logger.wandb.watch=all",
        "logger.wandb.watch_log_freq=1",
    ]
    with caplog.at_level(logging.INFO, logger="genlab.utils.loggers"):
        train(_mnist_config(tmp_path, mnist_dir, *overrides, "logger.wandb.watch_log_freq=1"))

    (offline_run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    (command,) = [r.getMessage().split(": ", 1)[1] for r in caplog.records if "wandb sync" in r.getMessage()]
    assert command == f"wandb sync {shlex.quote(str(offline_run.resolve()))}"
    dry_run = subprocess.run(
        [Path(sys.executable).parent / "wandb", *shlex.split(command)[1:], "--dry-run"], capture_output=True, text=True
    )
    assert "Would sync 1 run(s)" in dry_run.stderr + dry_run.stdout  # W&B's own sync finds the run there

    run_id = offline_run.name.rsplit("-", 1)[1]
    records = finished_run_records(offline_run)
    # Lightning's artifacts at the end of training: the best checkpoint, then the last, each as model.ckpt
    assert logged_artifacts(records) == [(f"model-{run_id}", "model", ["model.ckpt"])] * 2
    staged = list((offline_wandb / ".local" / "share" / "wandb" / "artifacts" / "staging").iterdir())
    checkpoint_size = (tmp_path / "run" / "checkpoints" / "last.ckpt").stat().st_size
    assert any(path.stat().st_size == checkpoint_size for path in staged)  # the file itself, kept for the sync
    keys = logged_keys(records)  # watch=all: both kinds of histogram
    assert {"gradients/encoder.features.0.weight/bins", "parameters/encoder.features.0.weight/bins"} <= keys


@pytest.mark.slow
def test_wandb_logs_no_artifact_nor_histograms_by_default(tmp_path: Path, mnist_dir: Path, offline_wandb: Path) -> None:
    train(_mnist_config(tmp_path, mnist_dir, "logger=wandb", "trainer.log_every_n_steps=1"))
    (offline_run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    records = finished_run_records(offline_run)
    assert logged_artifacts(records) == []
    keys = logged_keys(records)
    assert "val/loss" in keys and not [key for key in keys if key.startswith(("gradients/", "parameters/"))]


def _tensorboard_events(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_folder,) = (tmp_path / "run" / "tensorboard").iterdir()
    events = EventAccumulator(str(run_folder), size_guidance={"histograms": 0, "images": 0, "scalars": 0})
    events.Reload()
    return run_folder, events


# the GAN steps two optimizers per batch: its global_step runs at twice the loggers' step
@pytest.mark.parametrize(
    ("model", "picture", "val_scalar", "histograms"),
    [
        ("ae", "reconstructions", "val/loss", True),
        pytest.param("gan", "samples", "val/d_acc", False, marks=pytest.mark.slow),  # about 13 s on 2 cores
    ],
)
def test_tensorboard_pictures_and_histograms_sit_at_the_step_of_their_validation_scalars(
    tmp_path: Path,
    mnist_dir: Path,
    model: str,
    picture: str,
    val_scalar: str,
    histograms: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    callbacks = "callbacks=[default,weight_histograms]" if histograms else "callbacks=default"
    with caplog.at_level(logging.INFO, logger="genlab.utils.loggers"):
        train(_mnist_config(tmp_path, mnist_dir, f"model={model}", "logger=tensorboard", callbacks))
    run_folder, events = _tensorboard_events(tmp_path)

    val_steps = [event.step for event in events.Scalars(val_scalar)]
    assert len(val_steps) == 2  # one per epoch
    assert [event.step for event in events.Images(picture)] == val_steps
    histogram_tags = events.Tags()["histograms"]
    if histograms:
        assert "weights/encoder.features.0.weight" in histogram_tags
        assert [event.step for event in events.Histograms("weights/encoder.features.0.weight")] == val_steps
    else:
        assert histogram_tags == []
    assert f"tensorboard --logdir {shlex.quote(str(run_folder.resolve()))}" in caplog.text


def test_progress_bar_shows_ms_per_step_and_no_mfu_on_a_cpu(caplog: pytest.LogCaptureFixture) -> None:
    bar = ProgressBar()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=6,
        limit_val_batches=0,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    with caplog.at_level(logging.INFO, logger="genlab.callbacks.progress"):
        trainer.fit(BoringModel())
    metrics = bar.get_metrics(trainer, trainer.lightning_module)
    assert float(metrics["ms/step"]) > 0  # 5 intervals between 6 steps' ends, averaged
    assert "mfu" not in metrics  # a CPU, and a model that declares no FLOPs
    assert re.search(r"Speed at the end of training: \d+\.\d ms/step$", caplog.text.strip())


def test_gpt_declares_nanogpts_flops_per_token() -> None:
    model = GPT(block_size=16, n_layer=2, n_head=2, n_embd=8, vocab="abcd")
    model.configure_model()
    assert isinstance(model, DeclaresFlops)
    inputs = torch.zeros(3, 16, dtype=torch.long)  # (B, T)
    weights = sum(p.numel() for p in model.net.parameters()) - 16 * 8  # less the position embedding (T x C)
    per_token = 6 * weights + 12 * 2 * 2 * 4 * 16  # 6N + 12 L H Q T
    assert model.flops_per_batch((inputs, inputs)) == per_token * 3 * 16


@pytest.mark.slow
def test_the_optuna_dashboard_command_that_sweep_summary_prints_serves_the_study(tmp_path: Path) -> None:
    storage = f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"  # as src.sweep_summary prints it
    study = optuna.create_study(storage=storage, study_name="sweep")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1) ** 2, n_trials=2)
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dashboard = Path(sys.executable).parent / "optuna-dashboard"
    server = subprocess.Popen(
        [dashboard, storage, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    body = response.read().decode()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "optuna-dashboard did not answer in 30 s"
                time.sleep(0.5)
        assert '"study_name": "sweep"' in body
    finally:
        server.terminate()
        server.wait(timeout=10)


class _FlopsDeclaringModel(BoringModel):
    """A BoringModel that declares 1 GFLOP per batch and says it runs on a GPU (it stays on the CPU)."""

    def flops_per_batch(self, batch: Any) -> float:
        return 1e9

    @property
    def device(self) -> torch.device:
        return torch.device("cuda")


def test_progress_bar_shows_mfu_against_the_declared_peak_where_a_model_declares_its_flops() -> None:
    bar = ProgressBar(peak_flops=1e12)  # declared: nothing measured
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=6,
        limit_val_batches=0,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(_FlopsDeclaringModel())
    metrics = bar.get_metrics(trainer, trainer.lightning_module)
    assert metrics["mfu"].endswith("%") and bar.mfu > 0
    assert bar.mfu == pytest.approx(1e9 / (bar.ms_per_step / 1000) / 1e12)  # FLOPs / the step time shown / peak


def test_wandb_logger_runs_offline_with_log_model_which_lightnings_refuses(tmp_path: Path, monkeypatch) -> None:
    from genlab.utils.loggers import WandbLogger

    monkeypatch.delenv("WANDB_MODE", raising=False)
    logger = WandbLogger(save_dir=tmp_path, offline=True, log_model=True)  # Lightning's own: MisconfigurationException
    assert logger._wandb_init["mode"] == "offline" and "WANDB_MODE" not in os.environ  # no process-wide setting
