"""A run followed off a terminal (`> log`, nohup, a SLURM job), where the rich bar cannot draw: the short config at
start, plain progress lines, a line per validation, and an interruption's resume command with the real overrides."""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

import lightning as L
import pytest
import rich.console
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from genlab.callbacks.progress import ProgressBar, ProgressLines, items_in, progress_bar
from genlab.train import main
from tests.helpers import run_main

CONTROL_CODES = re.compile(r"\x1b|\r")  # ANSI escapes (colours, cursor moves) and carriage returns: a bar redrawn


def test_a_run_with_its_output_in_a_file_logs_its_config_progress_and_how_to_resume(
    tmp_path: Path, mnist_dir: Path
) -> None:
    overrides = [
        "model=ae",
        "data=mnist",
        "data.val_size=100",
        "data.batch_size=32",
        f"paths.data_dir={mnist_dir}",
        f"paths.log_dir={tmp_path / 'outputs'}",
        "trainer.max_epochs=-1",
        "trainer.max_steps=9",
        "+trainer.val_check_interval=3",
        "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=2",  # train/loss reaches the bar on these steps (genlab/models/logged_steps.py)
        "callbacks.rich_progress_bar.line_every_n_steps=2",
        "ckpt_path=null",  # given: the resume command replaces it
        # a Ctrl-C in step 8: the run stops at its end, saves it, and says how to go on
        "+callbacks.fault={_target_:tests.test_signals.SignalAt,hook:on_after_backward,step:7,signum:2}",
    ]
    # in this process, as `python -m src.train ... > log` runs it: Hydra's parsing and logging, stdout not a terminal
    result = run_main(main, *overrides)
    assert result.returncode == 130, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert not CONTROL_CODES.search(output)
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()

    # the short config: the command as typed, the values that say what runs; the whole tree in the run folder
    assert f"  command: python -m src.train {shlex.join(overrides)}\n" in result.stdout
    assert "  model: genlab.models.autoencoder.Autoencoder\n" in result.stdout
    assert "  trainer: accelerator auto, devices 1, precision 32, max_epochs -1, max_steps 9\n" in result.stdout
    assert f"  run folder: {run_dir}\n" in result.stdout
    assert "├── model" not in result.stdout and "├── model" in (run_dir / "config_tree.log").read_text()

    progress = re.findall(r"- (step \d+/9, epoch 0: .*)", result.stdout)
    assert progress[0].startswith("step 2/9, epoch 0: train/loss ")
    number = r"\d[\d,]*(\.\d+)?(e-\d+)?"
    # after the first validation: the train loss, the last validation's score, the speed, the time left
    assert re.fullmatch(
        rf"step 4/9, epoch 0: train/loss {number}, val/loss {number}, {number} ms/step, {number} images/s, "
        r"\d+:\d\d:\d\d left",
        progress[2],
    ), progress
    assert re.fullmatch(rf"step 3/9, epoch 0: validation val/loss {number}, val/mse {number}", progress[1]), progress
    assert progress[-1].startswith("step 8/9, epoch 0: ")  # the line where the run stopped

    last = run_dir / "checkpoints" / "last.ckpt"
    resume = f"python -m src.train {shlex.join([*overrides[:-2], overrides[-1], 'ckpt_path=last'])}"
    assert result.stderr.strip().splitlines()[-1] == (
        f"interrupted: SIGINT during training at step 8; saved {last}. Resume with: {resume}"
    )
    # pasted into a shell, it is these overrides again (the fault's braces and commas quoted)
    assert shlex.split(resume)[3:] == [*overrides[:-2], overrides[-1], "ckpt_path=last"]


def test_progress_lines_on_a_file_and_the_rich_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for terminal, expected in ((False, ProgressLines), (True, ProgressBar)):
        console = rich.console.Console(force_terminal=terminal, force_jupyter=False)
        monkeypatch.setattr(rich, "get_console", lambda console=console: console)
        assert type(progress_bar(peak_flops=1e12)) is expected


def test_progress_lines_every_n_steps_or_seconds_with_the_time_left(caplog: pytest.LogCaptureFixture) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=10,
        limit_val_batches=0,
        callbacks=[ProgressLines(every_n_steps=4, every_s=3600)],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    with caplog.at_level(logging.INFO, logger="genlab.callbacks.progress"):
        trainer.fit(BoringModel())
    lines = [record.getMessage() for record in caplog.records if record.name == "genlab.callbacks.progress"]
    # every 4 steps, and at the end; BoringModel's batches are (B, 32) floats: samples
    assert [line[: line.index(":")] for line in lines[:3]] == [
        "step 4/10, epoch 0",
        "step 8/10, epoch 0",
        "step 10/10, epoch 0",
    ]
    assert re.search(r"\d ms/step, [\d,]+ samples/s, 0:00:\d\d left$", lines[1])
    assert lines[2].endswith(" 0:00:00 left") and lines[-1].startswith("Speed at the end of training: ")

    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        limit_val_batches=0,
        callbacks=[ProgressLines(every_n_steps=1000, every_s=1e-9)],  # every batch: its seconds have passed
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="genlab.callbacks.progress"):
        trainer.fit(BoringModel())
    lines = [record.getMessage() for record in caplog.records if record.name == "genlab.callbacks.progress"]
    assert [line[:9] for line in lines[:3]] == ["step 1/3,", "step 2/3,", "step 3/3,"]


def test_a_batch_counts_as_tokens_images_or_samples() -> None:
    tokens = torch.zeros(4, 16, dtype=torch.long)
    assert items_in((tokens, tokens)) == (64, "tokens")
    assert items_in([torch.zeros(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)]) == (8, "images")
    assert items_in({"x": torch.zeros(5, 3)}) == (5, "samples")
    assert items_in(["not a tensor"]) is None
