"""Runs killed with SIGKILL (kill -9) lose only the work since their last checkpoint, and resume exactly."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from genlab.checkpoints import read_checkpoint
from genlab.utils.locks import try_lock
from tests.helpers import built_on, compose_config, families, model_class, run_train, start_train

KILL_AT_STEP = "GENLAB_TEST_KILL_AT_STEP"


class KillAtStep(Callback):
    """Fault injection: SIGKILL this process at the end of the first batch that reaches global step $KILL_AT_STEP.

    A callback, so the step is exact; SIGKILL, so nothing of the run's own code gets to react. Lightning
    runs checkpoint callbacks last: a save due at that step never happens.
    """

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if KILL_AT_STEP in os.environ and trainer.global_step >= int(os.environ[KILL_AT_STEP]):
            os.kill(os.getpid(), signal.SIGKILL)


QUIET = [
    "~callbacks.rich_progress_bar",
    "+trainer.enable_progress_bar=false",
    "extras.print_config=false",
    "test=false",
]
# the diffusion families' tiny recipe: the pixels' and the latents' process alike
DIFFUSION = [
    "data=mnist",
    "data.val_size=100",
    "data.batch_size=32",
    "model.base_channels=8",
    "model.num_res_blocks=1",
    "model.attention_heads=2",
    "model.conditional=true",
    "model.dropout=0.1",
    "model.sampler=ddpm",
    "model.sample_steps=3",
    "model.num_grid_images=10",
    "model.warmup_steps=30",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=8",
]
# every family on CPU with deterministic=true, last.ckpt every 10 optimizer steps, killed between two of them
FAMILIES = {
    # 3 epochs of 8 batches; killed in epoch 1, so the resumed run also crosses an epoch boundary
    "ae": (
        [
            "model=ae",
            "data=mnist",
            "data.val_size=100",
            "data.batch_size=32",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=8",
        ],
        14,
    ),
    # two optimizers (a global step per update: 2 per batch), manual optimization, EMA weights, noise
    "gan": (
        [
            "model=gan",
            "data=mnist",
            "data.val_size=100",
            "data.batch_size=32",
            "model.generator_channels=16",
            "model.discriminator_channels=16",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=8",
        ],
        24,
    ),
    # noise, times and dropped labels drawn each step, EMA weights, LR warm-up, ancestral sampling at validation
    "diffusion": (["model=diffusion", *DIFFUSION], 14),
    # diffusion's draws, and the first stage's posterior drawn each step; latent_scale measured once, then restored
    "latent_diffusion": (["model=latent_diffusion", *DIFFUSION], 14),
    # random windows from a 125,000-batch epoch, dropout, warm-up + cosine LR; validations at steps 20 and 40
    "gpt": (
        [
            "model=gpt",
            "data=shakespeare",
            "model.n_layer=1",
            "model.n_head=2",
            "model.n_embd=32",
            "model.dropout=0.1",
            "data.block_size=32",
            "data.batch_size=8",
            "data.num_val_windows=16",
            "model.sample_length=20",
            "trainer.max_steps=50",
            "+trainer.val_check_interval=20",
        ],
        33,
    ),
}


# the other families of conf/model/ (held to it below with FAMILIES), and why each is not killed here
NOT_RESUMED = {
    "vae": "its per-step randomness (reparameterisation noise from torch's generator) is the kind diffusion's checks",
    "classifier": "dropout and a one-cycle LR by step: the kinds diffusion's (dropout, warm-up) and gpt's check",
    "normalizing_flow": "its dequantization noise (torch's generator) is the kind diffusion's checks, and its ActNorm "
    "buffers reload bit for bit in tests/test_normalizing_flow.py",
}


def test_resumed_families_and_the_excused_ones_are_the_registry() -> None:
    assert not FAMILIES.keys() & NOT_RESUMED.keys(), "both FAMILIES and NOT_RESUMED"
    assert FAMILIES.keys() | NOT_RESUMED.keys() == families().keys(), "FAMILIES and NOT_RESUMED: conf/model/"


@pytest.mark.integration  # subprocesses and whole runs (make test-integration)
@pytest.mark.parametrize("family", FAMILIES)
def test_killed_run_resumed_with_ckpt_path_last_ends_as_the_unbroken_run(
    tmp_path: Path, request: pytest.FixtureRequest, family: str
) -> None:
    data_fixture = "shakespeare_dir" if family == "gpt" else "mnist_dir"
    data_dir = request.getfixturevalue(data_fixture)
    overrides, kill_at = FAMILIES[family]
    command = [
        *overrides,
        *built_on(model_class(family)),  # latent diffusion's first stage, untrained
        *QUIET,
        f"paths.data_dir={data_dir}",
        "trainer.deterministic=true",
        "callbacks=[default,periodic_checkpoint]",
        "callbacks.periodic_checkpoint.every_n_train_steps=10",
        "+callbacks.kill._target_=tests.test_resume.KillAtStep",
    ]

    unbroken = run_train(*command, f"paths.log_dir={tmp_path / 'unbroken'}")
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]

    resumed_dir = tmp_path / "resumed"
    killed = run_train(*command, f"paths.log_dir={resumed_dir}", env={KILL_AT_STEP: str(kill_at)})
    assert killed.returncode == -signal.SIGKILL
    (killed_last,) = resumed_dir.glob("train/runs/*/checkpoints/last.ckpt")
    assert read_checkpoint(killed_last)["global_step"] == kill_at // 10 * 10  # the work since then is lost, no more

    resumed = run_train(*command, "ckpt_path=last", f"paths.log_dir={resumed_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"ckpt_path=last: resuming from {killed_last}" in resumed.stdout

    # the run went on in its own folder: one last.ckpt, and the continuation's CSV log beside the first one's
    (expected,) = (tmp_path / "unbroken").glob("train/runs/*/checkpoints/last.ckpt")
    (got,) = resumed_dir.glob("train/runs/*/checkpoints/last.ckpt")
    assert got == killed_last
    run = killed_last.parent.parent
    assert (run / "csv" / f"from_step_{kill_at // 10 * 10}" / "metrics.csv").is_file()
    expected, got = read_checkpoint(expected), read_checkpoint(got)
    assert got["global_step"] == expected["global_step"] and got["epoch"] == expected["epoch"]
    assert expected["state_dict"].keys() == got["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, got["state_dict"][name]), f"{name} differs after resuming"
    for expected_optimizer, got_optimizer in zip(expected["optimizer_states"], got["optimizer_states"], strict=True):
        for index, state in expected_optimizer["state"].items():
            assert all(torch.equal(value, got_optimizer["state"][index][key]) for key, value in state.items())


@pytest.mark.integration
def test_kill_during_a_save_leaves_the_previous_checkpoint_whole(tmp_path: Path, shakespeare_dir: Path) -> None:
    # a checkpoint of about 80 MB written after every step: a save is nearly always under way
    command = [
        "model=gpt",
        "data=shakespeare",
        "model.n_layer=2",
        "model.n_head=4",
        "model.n_embd=512",
        "data.block_size=16",
        "data.batch_size=2",
        "data.num_val_windows=4",
        "model.sample_length=0",
        "trainer.max_steps=1000",
        f"paths.data_dir={shakespeare_dir}",
        f"paths.log_dir={tmp_path}",
        "callbacks=[default,periodic_checkpoint]",
        "callbacks.periodic_checkpoint.every_n_train_steps=1",
        *QUIET,
    ]
    process = start_train(*command)
    try:
        deadline = time.monotonic() + 120
        # wait for a save to be half-way: last.ckpt from an earlier one, and the next one's bytes arriving
        while not any(
            p.stat().st_size > 1_000_000
            for p in tmp_path.glob("train/runs/*/checkpoints/.last.ckpt.*.tmp")
            if (p.parent / "last.ckpt").is_file()
        ):
            assert process.poll() is None and time.monotonic() < deadline, "no checkpoint was being written"
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()

    (checkpoints,) = tmp_path.glob("train/runs/*/checkpoints")
    last = checkpoints / "last.ckpt"
    assert list(checkpoints.glob(".last.ckpt.*.tmp")), "the kill did not land during a save"
    checkpoint = read_checkpoint(last)  # whole: it loads, with all its weights
    assert checkpoint["global_step"] >= 1 and len(checkpoint["state_dict"]) > 10
    assert torch.load(last, weights_only=True)["optimizer_states"]  # the resume state too, not only weights


@pytest.mark.integration
def test_periodic_checkpoints_by_steps_or_by_time(tmp_path: Path) -> None:
    by_steps = compose_config(["callbacks=[default,periodic_checkpoint]"], tmp_path)
    by_time = compose_config(
        [
            "callbacks=[default,periodic_checkpoint]",
            "callbacks.periodic_checkpoint.every_n_train_steps=null",
            "callbacks.periodic_checkpoint.train_time_interval={_target_:datetime.timedelta,minutes:30}",
        ],
        tmp_path,
    )
    assert instantiate(by_steps.callbacks.periodic_checkpoint)._every_n_train_steps == 500
    assert instantiate(by_time.callbacks.periodic_checkpoint)._train_time_interval == timedelta(minutes=30)


@pytest.mark.integration
def test_ckpt_path_last_with_no_earlier_run_starts_anew(tmp_path: Path, mnist_dir: Path) -> None:
    result = run_train(
        "model=ae",
        "data=mnist",
        "data.val_size=100",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        *QUIET,
        f"paths.data_dir={mnist_dir}",
        f"paths.log_dir={tmp_path}",
        "ckpt_path=last",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ckpt_path=last: no earlier run of these overrides" in result.stdout and "starting anew" in result.stdout


@pytest.mark.integration
def test_a_missing_ckpt_path_is_refused_before_training(tmp_path: Path) -> None:
    result = run_train(f"ckpt_path={tmp_path / 'nope.ckpt'}", f"paths.log_dir={tmp_path}", "extras.print_config=false")
    assert result.returncode == 1
    assert f"error: ckpt_path={tmp_path / 'nope.ckpt'}: no such checkpoint file" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_ckpt_path_last_finds_the_run_when_it_should_train_longer(tmp_path: Path, mnist_dir: Path) -> None:
    """The same command again, with a longer trainer.max_epochs: the finished run is found and goes on."""
    command = [
        "data=mnist",
        "data.val_size=100",
        f"paths.data_dir={mnist_dir}",
        f"paths.log_dir={tmp_path}",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        *QUIET,
    ]
    first = run_train(*command, "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-2000:]
    (finished,) = tmp_path.glob("train/runs/*/checkpoints/last.ckpt")

    # while a process trains the run (here: holds its lock, as every training run does), nothing else may
    lock, _ = try_lock(finished.parent.parent / ".run.lock")
    blocked = run_train(*command, "trainer.max_epochs=2", "ckpt_path=last")
    assert blocked.returncode == 1 and "Traceback" not in blocked.stderr
    assert f"error: {finished.parent.parent}: process {os.getpid()} is training this run" in blocked.stderr
    lock.close()

    again = run_train(*command, "trainer.max_epochs=1", "ckpt_path=last")  # finished: nothing left to train
    assert again.returncode == 0, again.stderr[-2000:]
    longer = run_train(*command, "trainer.max_epochs=2", "ckpt_path=last")
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert f"ckpt_path=last: resuming from {finished}" in longer.stdout
    # one training, one folder: the same last.ckpt goes on, each session's CSV log beside the first one's
    assert list(tmp_path.glob("train/runs/*/checkpoints/last.ckpt")) == [finished]
    assert read_checkpoint(finished)["global_step"] == 6  # 3 steps, then 3 more
    csv = finished.parent.parent / "csv"
    assert {path.name for path in csv.iterdir() if path.is_dir()} == {"from_step_3", "from_step_3_2"}
    assert (csv / "metrics.csv").is_file() and (csv / "from_step_3_2" / "metrics.csv").is_file()
