"""`python -m src.train` as a user runs it: exit codes, what it writes, and its error messages."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from tests.helpers import IMAGE_MODELS, QUICK, run_train, start_train


@pytest.mark.integration
def test_two_runs_started_together_each_write_their_own_folder(tmp_path: Path, mnist_dir: Path) -> None:
    overrides = [*QUICK, "data=mnist", "data.val_size=100", f"paths.data_dir={mnist_dir}", f"paths.log_dir={tmp_path}"]
    processes = [start_train(*overrides) for _ in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    run_dirs = sorted((tmp_path / "train" / "runs").iterdir())
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert {"val/loss", "test/loss"} <= metrics.keys()  # 3 training steps, none of them a logged one
        checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)  # data, never code
        assert checkpoint["hyper_parameters"]["image_shape"] == [1, 28, 28]
        assert next(run_dir.glob("csv/metrics.csv")).stat().st_size > 0
        assert list(run_dir.glob("images/reconstructions_epoch000.png"))


@pytest.mark.integration
def test_unknown_option_lists_the_choices() -> None:
    result = run_train("model=nope")
    assert result.returncode != 0
    assert "Could not find 'model/nope'" in result.stderr
    assert "Available options in 'model':\n\tae" in result.stderr


@pytest.mark.integration
def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    result = run_train("data.batch_size=abc", f"paths.log_dir={tmp_path}")
    assert result.returncode == 1
    assert "error: data.batch_size='abc' is not valid for FashionMNISTDataModule: expected int" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*/runs/*"))  # the refused run leaves no folder


def test_unknown_key_is_refused_by_hydra() -> None:
    result = run_train("data.batchsize=64")
    assert result.returncode != 0
    assert "Key 'batchsize' is not in struct" in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    ("model", "data", "pairs"),
    [
        (
            "gan",
            "shakespeare",
            "model=gan needs data with image_shape, num_classes: it works with "
            "data=cifar10, fashion_mnist, image_folder, mnist; data=shakespeare works with model=gpt",
        ),
        (
            "gpt",
            "mnist",
            "model=gpt needs data with block_size: it works with data=shakespeare, text_file; "
            f"data=mnist works with model={', '.join(IMAGE_MODELS)}",
        ),
    ],
)
def test_model_for_other_data_is_refused_naming_the_pairs_that_work(
    tmp_path: Path, model: str, data: str, pairs: str
) -> None:
    result = run_train(f"model={model}", f"data={data}", f"paths.log_dir={tmp_path}")
    assert result.returncode == 1
    assert "cannot be resolved" in result.stderr and pairs in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*/runs/*"))  # the refused run leaves no folder


@pytest.mark.integration
@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_missing_dataset_is_one_clear_paragraph(tmp_path: Path, dataset: str) -> None:
    mirror = ["data.mirrors=[http://127.0.0.1:9/]"] if dataset == "mnist" else ["data.download=false"]
    result = run_train(
        *QUICK, f"data={dataset}", *mirror, f"paths.log_dir={tmp_path / 'outputs'}", env={"DATA_DIR": str(tmp_path)}
    )
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    folder = tmp_path / ("MNIST" if dataset == "mnist" else "FashionMNIST") / "raw"
    assert error.startswith("error: ") and f"was not found in {folder}" in error and "DATA_DIR" in error
    assert "Traceback" not in result.stderr and "urlopen" not in result.stderr.replace(error, "")
    assert not list((tmp_path / "outputs").glob("*/runs/*"))  # the refused run leaves no folder


@pytest.mark.integration
def test_multirun_sweep_writes_one_folder_per_job(tmp_path: Path, mnist_dir: Path) -> None:
    result = run_train(
        "-m",
        "model.latent_dim=4,8",
        *QUICK,
        "extras.print_config=full",
        "test=false",
        "data=mnist",
        "data.val_size=100",
        f"paths.data_dir={mnist_dir}",
        f"paths.log_dir={tmp_path}",
        "logger=[csv,tensorboard]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    # dashboards name each run by its task and what sets it apart, not by a timestamp (paths.*: where, not what)
    for job, latent_dim in (("0", 4), ("1", 8)):
        (tensorboard_run,) = (sweep_dir / job / "tensorboard").iterdir()
        assert tensorboard_run.name.startswith(f"train,data.val_size=100,data=mnist,model.latent_dim={latent_dim},")
    for job, latent_dim in (("0", 4), ("1", 8)):
        checkpoint = torch.load(sweep_dir / job / "checkpoints" / "last.ckpt", weights_only=True)
        assert checkpoint["hyper_parameters"]["latent_dim"] == latent_dim
        metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
        # one line per finished job: its metric and what the sweep chose for it (the shared overrides left out)
        assert f"sweep job {job}: val/loss={metrics['val/loss']:.5g} | model.latent_dim={latent_dim}\n" in result.stdout
        assert (sweep_dir / job / "config_tree.log").is_file()
    assert result.stdout.count("\nconfig\n") <= 1 and result.stdout.count("├── model") == 1  # the tree, once


def test_the_progress_bar_shows_the_step_not_the_logger_version(tmp_path: Path) -> None:
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.loggers import CSVLogger

    from genlab.callbacks.progress import ProgressBar

    bar = ProgressBar()
    trainer = L.Trainer(
        max_steps=4,
        callbacks=[bar],
        logger=CSVLogger(tmp_path),
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    model = BoringModel()
    trainer.fit(model)
    metrics = bar.get_metrics(trainer, model)
    assert metrics["step"] == "4/4" and "v_num" not in metrics
    assert bar._get_train_description(0).strip() == "Epoch 0"  # not "Epoch 0/-2": max_epochs=-1 is no limit


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_an_interrupt_saves_its_checkpoint_without_a_weights_only_notice(tmp_path: Path) -> None:
    import signal

    import lightning as L
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    from genlab.callbacks.interrupt import CheckpointOnInterrupt
    from genlab.errors import RunInterrupted

    class CtrlC(Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C: the run stops at the end of this step and saves it

    interrupt = CheckpointOnInterrupt()
    trainer = L.Trainer(
        max_steps=10,
        callbacks=[ModelCheckpoint(dirpath=tmp_path), interrupt, CtrlC()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    # the logger that says it: Lightning's loggers need not propagate to the root, where caplog listens
    records = _Records()
    checkpoint_log = logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector")
    checkpoint_log.addHandler(records)
    sigint = signal.getsignal(signal.SIGINT)  # Lightning ignores further Ctrl-Cs while it shuts down
    try:
        with pytest.raises(RunInterrupted), interrupt.reported(trainer, "go on"):
            trainer.fit(BoringModel())
    finally:
        signal.signal(signal.SIGINT, sigint)
        checkpoint_log.removeHandler(records)
    assert (tmp_path / "last.ckpt").is_file()
    assert not [message for message in records.messages if "weights_only" in message]
