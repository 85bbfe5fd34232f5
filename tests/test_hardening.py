"""Hardening as a matrix: every entry point x each class of bad input, and each phase of a run x each signal.

Each refused input must end with exit code 1, one `error:` line on stderr and no traceback, leave no run
folder behind, and leave earlier checkpoints as they were. Each interruption must exit 128 + the signal
with one `interrupted:` line saying what was saved, and a checkpoint it saved must resume exactly.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from genlab.checkpoints import CheckpointError, load_model, read_checkpoint
from genlab.checkpoints.resume import check_resumable
from genlab.train import train
from tests.helpers import TEST_OVERRIDES, compose_config, run_module, write_mnist_raw

# subprocesses and whole runs: the integration tier (make test-integration)
pytestmark = pytest.mark.integration

AE = "genlab.models.autoencoder.Autoencoder"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A short autoencoder run on small MNIST-format files: its data folder and its last checkpoint."""
    root = tmp_path_factory.mktemp("hardening")
    write_mnist_raw(root / "data" / "MNIST" / "raw")
    cfg = compose_config(
        [*TEST_OVERRIDES, "data=mnist", "data.val_size=100", f"paths.data_dir={root / 'data'}", "test=false"],
        root / "run",
    )
    train(cfg)
    train(
        compose_config(
            [
                *TEST_OVERRIDES,
                "model=vae",
                "data=mnist",
                "data.val_size=100",
                f"paths.data_dir={root / 'data'}",
                "test=false",
            ],
            root / "vae",
        )
    )
    return {
        "data": root / "data",
        "ckpt": root / "run" / "checkpoints" / "last.ckpt",
        "root": root,
        "vae": root / "vae" / "checkpoints" / "last.ckpt",
    }


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bad_checkpoint(case: str, good: Path, folder: Path) -> tuple[Path, str]:
    """A checkpoint file of one class of badness, and the start of the message it must be refused with."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case}.ckpt"
    checkpoint = torch.load(good, weights_only=True)
    if case == "missing":
        return path, "no such checkpoint file"
    if case == "empty":
        path.write_bytes(b"")
        return path, "not a readable PyTorch checkpoint, or truncated"
    if case == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return path, "not a readable PyTorch checkpoint, or truncated"
    if case == "foreign":
        torch.save({"model": {"weight": torch.zeros(2)}}, path)
        return path, "not a genlab checkpoint"
    if case == "pickled_code":
        torch.save({**checkpoint, "config": _RunsCode(folder / "pwned")}, path)
        return path, "refused to load objects other than tensors and plain data"
    if case == "names_code":  # loads as plain data, but names a callable to build the model with
        config = {**checkpoint["config"], "model": {"_target_": "os.system", "command": f"touch {folder / 'pwned'}"}}
        torch.save({**checkpoint, "config": config}, path)
        return path, "names the model class 'os.system', which is not one of genlab's models"
    if case == "nonfinite":
        state_dict = {
            name: torch.full_like(t, math.nan) if t.is_floating_point() else t
            for name, t in checkpoint["state_dict"].items()
        }
        torch.save({**checkpoint, "state_dict": state_dict}, path)
        return path, "its weights hold NaN or infinite values"
    raise ValueError(case)


CHECKPOINT_CASES = ["missing", "empty", "truncated", "foreign", "pickled_code", "names_code", "nonfinite"]


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
@pytest.mark.parametrize("loader", ["load_model", "check_resumable"])
def test_bad_checkpoints_are_refused_by_every_loader(run: dict[str, Path], tmp_path: Path, case: str, loader: str):
    path, message = bad_checkpoint(case, run["ckpt"], tmp_path)
    with pytest.raises(CheckpointError) as refused:
        load_model(path) if loader == "load_model" else check_resumable(path, AE)
    assert str(refused.value).startswith(f"{path}: {message}"), str(refused.value)
    assert not (tmp_path / "pwned").exists()  # nothing named in the file ran


def test_resuming_another_family_or_shape_is_refused(run: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="holds a Autoencoder, and this run trains a VAE"):
        check_resumable(run["ckpt"], "genlab.models.vae.VAE")
    cfg = compose_config(
        [
            *TEST_OVERRIDES,
            "data=mnist",
            "data.val_size=100",
            f"paths.data_dir={run['data']}",
            "model.latent_dim=3",
            f"ckpt_path={run['ckpt']}",
        ],
        tmp_path / "run",
    )
    with pytest.raises(CheckpointError, match=r"does not fit this run's Autoencoder \(shapes encoder"):
        train(cfg)


def run_under(log_dir: Path, module: str, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m <module>`; the entry points that make run folders make them under log_dir."""
    paths = [f"paths.log_dir={log_dir}"] if module in ("src.train", "src.eval", "src.sample") else []
    return run_module(module, *overrides, *paths)


# (entry point, overrides, start of the one-line error); {data}, {ckpt} (an autoencoder's), {vae} and {tmp} are
# filled in
BAD_INPUTS = {
    "train non-finite": ("src.train", ["model.lr=inf"], "error: model.lr=inf"),
    "train range (Lightning)": ("src.train", ["trainer.max_epochs=-5"], "error: trainer: "),
    "train range (ours)": ("src.train", ["data.num_workers=-1"], "error: data.num_workers=-1 is not valid"),
    "train choice": ("src.train", ["callbacks.model_checkpoint.mode=sideways"], "error: callbacks.model_checkpoint:"),
    "train too many devices": ("src.train", ["trainer.devices=999"], "error: trainer.devices=999 asks for 999 CPU"),
    "train missing GPU": ("src.train", ["trainer.accelerator=gpu"], "error: trainer.accelerator=gpu, but this machine"),
    "train metric never logged": (
        "src.train",
        ["monitor.metric=val/nonsense"],
        "error: monitor.metric='val/nonsense' is never logged",
    ),
    "train foreign checkpoint": ("src.train", ["model=vae", "ckpt_path={ckpt}"], "error: ckpt_path={ckpt}: holds a"),
    "train empty checkpoint": ("src.train", ["ckpt_path={tmp}/empty.ckpt"], "error: {tmp}/empty.ckpt: not a readable"),
    "eval code-naming checkpoint": ("src.eval", ["ckpt_path={tmp}/names_code.ckpt"], "error: {tmp}/names_code.ckpt"),
    "eval non-finite weights": ("src.eval", ["ckpt_path={tmp}/nonfinite.ckpt"], "error: {tmp}/nonfinite.ckpt"),
    "report on a file": ("src.report", ["run_dir={ckpt}"], "error: run_dir={ckpt}: not a folder"),
    "report on a missing folder": ("src.report", ["run_dir={tmp}/nope"], "error: run_dir={tmp}/nope: not a folder"),
    "report on odd contents": ("src.report", ["run_dir={tmp}/odd"], "error: {tmp}/odd/metrics.json: not the JSON"),
    "summary of a non-sweep": ("src.sweep_summary", ["sweep_dir={tmp}/odd"], "error: {tmp}/odd: not a sweep folder"),
    "sample zero nrow": ("src.sample", ["ckpt_path={vae}", "nrow=0"], "error: nrow=0 is not valid for src.sample"),
    "sample too many": (
        "src.sample",
        ["ckpt_path={vae}", "num_samples=1000000000000"],
        "error: num_samples=1000000000000: a grid of that many images needs",
    ),
}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of a GPU on a machine without one")
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_leaves_nothing(run: dict[str, Path], tmp_path: Path, case: str) -> None:
    module, overrides, expected = BAD_INPUTS[case]
    for name in ("empty", "names_code", "nonfinite"):
        bad_checkpoint(name, run["ckpt"], tmp_path)
    (tmp_path / "odd").mkdir()  # a folder that looks like a run's, with a metrics.json that is not JSON
    (tmp_path / "odd" / "config.yaml").write_text("model: {}\n")
    (tmp_path / "odd" / "metrics.json").write_text("{not json")
    before = run["ckpt"].read_bytes()
    fill = {"data": run["data"], "ckpt": run["ckpt"], "vae": run["vae"], "tmp": tmp_path}
    overrides = [o.format(**fill) for o in overrides]
    data = [f"paths.data_dir={run['data']}", "data=mnist", "data.val_size=100", *TEST_OVERRIDES[:5]]
    result = run_under(tmp_path / "logs", module, *(data if module == "src.train" else []), *overrides)

    assert result.returncode == 1, result.stderr[-2000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(expected.format(**fill)), last_line
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "logs").glob("*/runs/*")), "a refused run left its folder"
    assert not (tmp_path / "nope").exists() and not (tmp_path / "odd" / "report.html").exists()
    assert run["ckpt"].read_bytes() == before and not (tmp_path / "pwned").exists()


# --- interruptions, phase by phase ----------------------------------------------------------


class SignalAt(Callback):
    """Fault injection: send this process `signum` once, in the given phase of a run."""

    def __init__(self, phase: str, signum: int, step: int = 3) -> None:
        self.phase, self.signum, self.step, self.sent = phase, signum, step, False

    def _send(self, phase: str, trainer: L.Trainer) -> None:
        if phase == self.phase and not self.sent and (phase in ("sanity", "test") or trainer.global_step >= self.step):
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._send("sanity" if trainer.sanity_checking else "validation", trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._send("train", trainer)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._send("test", trainer)


PHASES = ["sanity", "train", "validation", "test"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("phase", PHASES)
def test_every_phase_interrupted_exits_with_the_signal_and_says_so(
    run: dict[str, Path], tmp_path: Path, phase: str, signum: signal.Signals
) -> None:
    result = run_under(
        tmp_path / "logs",
        # batches of 32: validation and test have several, and Lightning acts on a SIGTERM between two batches
        "src.train",
        f"paths.data_dir={run['data']}",
        "data=mnist",
        "data.val_size=100",
        "data.batch_size=32",
        *TEST_OVERRIDES[:5],
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=3",
        "trainer.limit_test_batches=3",
        f"+callbacks.fault={{_target_:tests.test_hardening.SignalAt,phase:{phase},signum:{int(signum)}}}",
    )
    assert result.returncode == 128 + signum, result.stderr[-2000:]
    last_line = result.stderr.strip().splitlines()[-1]
    phase_words = {"sanity": "the sanity check", "train": "training", "validation": "validation", "test": "the test"}
    assert last_line.startswith(f"interrupted: {signum.name} during {phase_words[phase]}"), last_line
    assert "Traceback" not in result.stderr
    (run_dir,) = (tmp_path / "logs").glob("*/runs/*")
    if phase == "test":  # training had finished: its checkpoints are there, the way to test them is named
        assert "test it with: python -m src.eval ckpt_path=" in last_line
        assert not (run_dir / "metrics.json").exists()
    else:
        assert f"saved {run_dir / 'checkpoints' / 'last.ckpt'}" in last_line
        read_checkpoint(run_dir / "checkpoints" / "last.ckpt")  # whole
    assert not list(run_dir.glob("checkpoints/.*.partial"))


def _vae_config(run: dict[str, Path], output_dir: Path, *extra: str):
    # a VAE draws random numbers in validation too; limit_train_batches=6 with validation every 4 batches
    return compose_config(
        [
            *TEST_OVERRIDES[:5],
            "model=vae",
            "data=mnist",
            "data.val_size=100",
            "data.batch_size=32",
            f"paths.data_dir={run['data']}",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=6",
            "+trainer.val_check_interval=4",
            "trainer.limit_val_batches=2",
            "test=false",
            "trainer.deterministic=true",
            "+trainer.enable_progress_bar=false",
            "~callbacks.rich_progress_bar",
            "extras.print_config=false",
            *extra,
        ],
        output_dir,
    )


@pytest.mark.parametrize("phase", ["sanity", "validation", "train"])
def test_a_checkpoint_saved_by_an_interruption_resumes_exactly(run: dict[str, Path], tmp_path: Path, phase: str):
    """In process: SIGTERM in `phase`, resume from the saved last.ckpt, and end with the unbroken run's weights."""
    from genlab.errors import RunInterrupted

    train(_vae_config(run, tmp_path / "unbroken"))
    fault = f"+callbacks.fault={{_target_:tests.test_hardening.SignalAt,phase:{phase},signum:{int(signal.SIGTERM)}}}"
    with pytest.raises(RunInterrupted):
        train(_vae_config(run, tmp_path / "broken", fault))
    last = tmp_path / "broken" / "checkpoints" / "last.ckpt"
    train(_vae_config(run, tmp_path / "resumed", f"ckpt_path={last}"))

    expected = read_checkpoint(tmp_path / "unbroken" / "checkpoints" / "last.ckpt")["state_dict"]
    resumed = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["state_dict"]
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_previous_one(tmp_path: Path) -> None:
    from genlab.errors import FileRefusedError
    from genlab.utils.checkpoint_writer import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(
        FileRefusedError,
        match=r"refused to write the checkpoint .*not_a_folder/last.ckpt: .*not_a_folder is a file, not a folder",
    ):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, blocker / "last.ckpt")

    def write_fails(*args, **kwargs):  # the disk fills up in the middle of the write
        raise OSError(28, "No space left on device")

    original = torch.save
    torch.save = write_fails
    try:
        with pytest.raises(FileRefusedError, match="No space left on device; the previous one, if any, is unchanged"):
            io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, target)
    finally:
        torch.save = original
    assert torch.equal(torch.load(target, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_interruption_without_checkpoints_says_nothing_was_saved(run: dict[str, Path], tmp_path: Path) -> None:
    from genlab.errors import RunInterrupted

    fault = f"+callbacks.fault={{_target_:tests.test_hardening.SignalAt,phase:train,signum:{int(signal.SIGTERM)}}}"
    quiet = [o for o in TEST_OVERRIDES if o != "~callbacks.rich_progress_bar"]  # callbacks=none has no bar
    overrides = [
        *quiet,
        "data=mnist",
        "data.val_size=100",
        f"paths.data_dir={run['data']}",
        "callbacks=none",
        "+trainer.enable_checkpointing=false",
        fault,
    ]
    cfg = compose_config(overrides, tmp_path / "run")
    with pytest.raises(RunInterrupted, match="nothing was saved .* Run the same command again$"):
        train(cfg)


def test_dataset_files_that_do_not_match_the_config_are_refused(tmp_path: Path) -> None:
    """Whole IDX files, but of 32x32 images with labels up to 11, where MNIST's config says 28x28 in 10 classes."""
    from genlab.data.images import MNISTDataModule
    from genlab.errors import CorruptDatasetError
    from tests.helpers import write_idx

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 300), ("t10k", 50)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.zeros((n, 32, 32), dtype=np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 12)
    datamodule = MNISTDataModule(str(tmp_path), image_shape=(1, 28, 28), num_classes=10, val_size=50, download=False)
    with pytest.raises(
        CorruptDatasetError, match=r"holds images of shape \[1, 32, 32\] with labels 0..11, but the config"
    ):
        datamodule.setup("fit")
