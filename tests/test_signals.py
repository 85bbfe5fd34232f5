"""A signal at any instant of a run (Ctrl-C's SIGINT, a preemption's SIGTERM) stops it at a safe point, and
`ckpt_path=` its last.ckpt ends as the unbroken run does: every weight and optimizer tensor bit for bit, the
same validations with the same values, the same best checkpoint."""

from __future__ import annotations

import csv
import gc
import os
import shlex
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import get_object
from lightning.pytorch.callbacks import Callback

from genlab.checkpoints import read_checkpoint
from genlab.errors import RunInterrupted
from genlab.train import train
from tests.helpers import TEST_OVERRIDES, compose_config, run_main, write_mnist_raw

# subprocesses and whole runs: the integration tier (make test-integration)
pytestmark = pytest.mark.integration

SIGNALS_OFF = "GENLAB_TEST_SIGNALS_OFF"  # set: SignalAt sends nothing (a resumed command keeps its overrides)


class SignalAt(Callback):
    """Fault injection: send this process `signum` (`times` times over) when `hook` first runs at global step
    `step` of the training (never in the sanity check), as a signal from outside landing at that instant.

    `hook` is a Callback hook, or "data_loading": inside the training loader's fetch of a batch.
    """

    def __init__(self, hook: str, step: int, signum: int, times: int = 1) -> None:
        self.hook, self.step, self.signum, self.times, self.sent = hook, step, signum, times, False
        setattr(self, hook if hook != "data_loading" else "on_train_start", self._maybe_send)

    def _maybe_send(self, trainer: L.Trainer, *args, **kwargs) -> None:
        if self.hook == "data_loading":  # on_train_start: wrap the dataset's batch cutting
            dataset = trainer.train_dataloader.dataset
            cut = dataset.__getitems__
            dataset.__getitems__ = lambda indices: (self._send(trainer), cut(indices))[1]
        else:
            self._send(trainer)

    def _send(self, trainer: L.Trainer) -> None:
        if os.environ.get(SIGNALS_OFF) or self.sent or trainer.sanity_checking or trainer.global_step != self.step:
            return
        self.sent = True
        for _ in range(self.times):
            os.kill(os.getpid(), self.signum)


# a VAE draws random numbers in training and in validation, and its validation draws pictures (sampling
# callbacks); 2 epochs of 6 batches, validating every 3: after steps 3, 6 (an epoch's end), 9 and 12
def vae_overrides(data_dir: Path, *extra: str) -> list[str]:
    return [
        *TEST_OVERRIDES,
        "model=vae",
        "data=mnist",
        "data.val_size=100",
        "data.batch_size=32",
        f"paths.data_dir={data_dir}",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=6",
        "+trainer.val_check_interval=3",
        "trainer.limit_val_batches=2",
        "test=false",
        "trainer.deterministic=true",
        *extra,
    ]


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("data")
    write_mnist_raw(data_dir / "MNIST" / "raw")
    return data_dir


@pytest.fixture(scope="module")
def unbroken(mnist_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of the VAE run that nothing interrupts."""
    run = tmp_path_factory.mktemp("unbroken")
    train(compose_config(vae_overrides(mnist_data), run))
    return run


def validation_losses(*runs: Path) -> dict[int, float]:
    """{step: val/loss} of every validation logged in the runs' CSV logs (a resumed run's beside the first)."""
    losses = {}
    for run in runs:
        for metrics in sorted(run.glob("csv/**/metrics.csv")):
            for row in csv.DictReader(metrics.open()):
                if row.get("val/loss"):
                    losses[int(row["step"])] = float(row["val/loss"])
    return losses


def assert_same_training(expected_path: Path, got_path: Path) -> None:
    """Same step and epoch, every weight and optimizer tensor bit for bit, the same best validation score."""
    expected, got = read_checkpoint(expected_path), read_checkpoint(got_path)
    assert (got["global_step"], got["epoch"]) == (expected["global_step"], expected["epoch"])
    assert expected["state_dict"].keys() == got["state_dict"].keys()
    differ = [name for name, value in expected["state_dict"].items() if not torch.equal(value, got["state_dict"][name])]
    assert not differ, f"{len(differ)} of {len(expected['state_dict'])} weights differ: {differ[:3]}"
    for expected_optimizer, got_optimizer in zip(expected["optimizer_states"], got["optimizer_states"], strict=True):
        assert expected_optimizer["state"].keys() == got_optimizer["state"].keys()
        for index, state in expected_optimizer["state"].items():
            assert all(torch.equal(value, got_optimizer["state"][index][key]) for key, value in state.items())
    (expected_best,) = [
        state for key, state in expected["callbacks"].items() if key.startswith("ModelCheckpoint") and state["monitor"]
    ]
    (got_best,) = [
        state for key, state in got["callbacks"].items() if key.startswith("ModelCheckpoint") and state["monitor"]
    ]
    assert torch.equal(got_best["best_model_score"], expected_best["best_model_score"])


# (hook, global step): where the signal lands; the batch after step 2 validates at its end, the one after step 3 not
POINTS = {
    "data_loading": ("data_loading", 1),
    "batch_start": ("on_train_batch_start", 1),
    "forward": ("on_before_backward", 2),  # the loss is computed, backward not begun
    "after_backward": ("on_after_backward", 2),  # where a person's Ctrl-C usually lands
    "optimizer_step": ("on_before_optimizer_step", 2),
    "batch_end": ("on_train_batch_end", 1),
    "validating_batch_end": ("on_train_batch_end", 3),  # a validation follows
    "validation": ("on_validation_batch_start", 3),
    "sampling": ("on_validation_epoch_end", 3),  # the model's sample grids are drawn in this hook
    "checkpoint_save": ("on_save_checkpoint", 3),  # ModelCheckpoint's save after the validation
    "after_backward_no_validation": ("on_after_backward", 3),
    "last_batch_of_epoch": ("on_train_batch_end", 6),  # validates, then the epoch ends
    "epoch_end": ("on_train_epoch_end", 6),
    "next_epoch_start": ("on_train_batch_start", 6),
}


def interrupt_and_resume(mnist_data: Path, tmp_path: Path, hook: str, step: int, signum: int) -> Path:
    """Run with a signal at (hook, step), check how it ended, resume its last.ckpt; the run's folder."""
    fault = f"+callbacks.fault={{_target_:tests.test_signals.SignalAt,hook:{hook},step:{step},signum:{signum}}}"
    with pytest.raises(RunInterrupted) as interruption:
        train(compose_config(vae_overrides(mnist_data, fault), tmp_path / "broken"))
    last = tmp_path / "broken" / "checkpoints" / "last.ckpt"
    assert interruption.value.exit_code == 128 + signum
    assert f"saved {last}" in str(interruption.value)
    del interruption  # its traceback holds train()'s frame, and so the run folder's lock
    gc.collect()
    # as `ckpt_path=last` does: the run goes on in its own folder (a run folder is one that Hydra made)
    (tmp_path / "broken" / ".hydra").mkdir()
    train(compose_config(vae_overrides(mnist_data, f"ckpt_path={last}"), tmp_path / "resumed"))
    return tmp_path / "broken"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point", POINTS)
def test_a_signal_at_any_point_resumes_as_the_unbroken_run(
    mnist_data: Path, unbroken: Path, tmp_path: Path, point: str, signum: int
) -> None:
    hook, step = POINTS[point]
    resumed = interrupt_and_resume(mnist_data, tmp_path, hook, step, signum)
    assert_same_training(unbroken / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")
    expected_losses = validation_losses(unbroken)
    assert len(expected_losses) == 4  # the config validates where the points above assume
    assert validation_losses(resumed) == expected_losses


@pytest.mark.parametrize(("point", "signum"), [("after_backward", signal.SIGINT), ("validation", signal.SIGTERM)])
def test_ctrl_c_mid_step_and_sigterm_mid_validation_resume_as_the_unbroken_run(
    mnist_data: Path, unbroken: Path, tmp_path: Path, point: str, signum: int
) -> None:
    """The fast tier's two cases of the matrix above: where a person's Ctrl-C lands, and a preemption's SIGTERM
    in a validation (before it: the stop waits for the validation's end, its checkpoints, its logged val/loss)."""
    resumed = interrupt_and_resume(mnist_data, tmp_path, *POINTS[point], signum)
    assert_same_training(unbroken / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")
    assert validation_losses(resumed) == validation_losses(unbroken)


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(mnist_data: Path, tmp_path: Path) -> None:
    # two SIGINTs in one training step, after the validation at step 3 wrote last.ckpt
    fault = "+callbacks.fault={_target_:tests.test_signals.SignalAt,hook:on_after_backward,step:4,signum:2,times:2}"
    with pytest.raises(RunInterrupted) as interruption:
        train(compose_config(vae_overrides(mnist_data, fault), tmp_path / "run"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert interruption.value.exit_code == 130
    assert str(interruption.value) == (
        f"SIGINT during training at step 4; stopped at once, without saving this step; the last checkpoint is "
        f"{last}. Resume with: python -m src.train <same overrides> ckpt_path=last"
    )
    assert read_checkpoint(last)["global_step"] == 3  # the half-done step 4 was not saved over it
    assert not list(last.parent.glob(".*.partial"))


# --- outside fit: one signal ends src.eval and src.sample in every phase --------------------------------------------


@pytest.fixture(scope="module")
def vae_and_classifier(mnist_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trained")
    data = ["data=mnist", "data.val_size=100", "data.batch_size=50", f"paths.data_dir={mnist_data}"]
    classifier = root / "mnist.ckpt"
    train(
        compose_config(
            [*TEST_OVERRIDES, *data, "experiment=classifier_mnist", f"callbacks.export_best.path={classifier}"],
            root / "classifier",
        )
    )
    train(compose_config([*TEST_OVERRIDES, *data, "model=vae", "test=false"], root / "vae"))
    return {"vae": root / "vae" / "checkpoints" / "last.ckpt", "classifier": classifier}


def send_in(monkeypatch: pytest.MonkeyPatch, target: str, signum: int, sent_at: list[float], then: float = 0) -> None:
    """Fault injection: send this process `signum` the first time `target` (a dotted path) is called, then go on
    with the call after `then` seconds: a slow step (a compile on the first batch, a big model's batch)."""
    owner_name, name = target.rsplit(".", 1)
    owner = get_object(owner_name)
    original = getattr(owner, name)

    def call_and_send(*args, **kwargs):
        if not sent_at:
            sent_at.append(time.monotonic())
            os.kill(os.getpid(), signum)
            time.sleep(then)  # a handler that stops at once ends the sleep
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, call_and_send)


# the phases of src.eval and src.sample, in order: (entry point, where the signal lands, seconds the call goes on
# after it (a slow step), the phase the one line names)
ENTRY_POINT_PHASES = {
    "eval composing": ("eval", "genlab.utils.before_run.check_before_run", 0, "Hydra's start-up"),
    "eval loading the checkpoint": ("eval", "genlab.eval.read_checkpoint", 0, "loading the checkpoint and data"),
    "eval building the model": ("eval", "genlab.models.nets.mlp.MLPEncoder.__init__", 0, "loading the checkpoint"),
    "eval building data": ("eval", "genlab.eval.datamodule_from", 0, "loading the checkpoint and data"),
    "eval test setup": ("eval", "genlab.data.images.MNISTDataModule.setup", 0, "the setup or teardown of the test"),
    "eval test start, slow": ("eval", "genlab.models.vae.VAE.on_test_start", 30, "the test at step 0"),
    "eval test step, slow": ("eval", "genlab.models.vae.VAE.test_step", 30, "the test at step 0"),
    "eval generation": ("eval", "genlab.models.vae.VAE.sample", 0, "the scoring of images"),
    "eval feature extraction": (
        "eval",
        "genlab.metrics.features.ClassifierFeatures.forward",
        0,
        "the scoring of images",
    ),
    "eval scoring": ("eval", "genlab.metrics.sample_quality.SampleQuality.update", 0, "the scoring of images"),
    "eval writing": (
        "eval",
        "genlab.utils.run_folder.write_text_atomically",
        0,
        "loading the checkpoint and data, or writing",
    ),
    "sample loading": ("sample", "genlab.sample.load_model", 0, "loading the checkpoint, or writing"),
    "sample generation": ("sample", "genlab.models.vae.VAE.sample", 0, "sampling"),
    "sample writing": ("sample", "genlab.sample.save_image", 0, "loading the checkpoint, or writing"),
}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("case", ENTRY_POINT_PHASES)
def test_one_signal_ends_eval_and_sample_in_every_phase_even_when_started_ignoring_sigint(
    vae_and_classifier: dict[str, Path],
    mnist_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    signum: int,
) -> None:
    """Within seconds, however long the step it lands in would go on; with the one `interrupted:` line naming the
    phase, 128 + the signal's number, and nothing written but Hydra's record of the command line."""
    entry_point, target, then, phase = ENTRY_POINT_PHASES[case]
    sent_at: list[float] = []
    send_in(monkeypatch, target, signum, sent_at, then)
    run_dir = tmp_path / "run"
    arguments = [f"ckpt_path={vae_and_classifier['vae']}", f"hydra.run.dir={run_dir}", "accelerator=cpu"]
    if entry_point == "eval":
        arguments += [
            f"paths.data_dir={mnist_data}",
            "num_samples=8",
            "batch_size=50",
            "metrics.kid_subset_size=4",
            f"metrics.classifier_ckpt={vae_and_classifier['classifier']}",
        ]
    else:
        arguments += ["num_samples=4"]

    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell script's background job starts
    try:
        result = run_main(get_object(f"genlab.{entry_point}.main"), *arguments)
    finally:
        signal.signal(signal.SIGINT, ignored)
    assert sent_at and result.returncode == 128 + signum, result.stderr[-2000:]
    assert time.monotonic() - sent_at[0] < 5, "the signal was not acted on within a few seconds"
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"interrupted: {signal.Signals(signum).name} during {phase}"), lines[-1]
    assert "Traceback" not in result.stderr
    written = {path.name for path in run_dir.iterdir()} if run_dir.exists() else set()
    assert written <= {".hydra", f"{entry_point}.log"}, written  # no metrics.json, samples, nor a temporary file


@pytest.mark.slow
def test_ctrl_c_mid_step_from_the_command_line_resumes_with_ckpt_path_last(
    mnist_data: Path, unbroken: Path, tmp_path: Path
) -> None:
    """The issue's case end to end: Ctrl-C after backward, before the optimizer step, then `ckpt_path=last`."""
    from tests.helpers import run_train

    fault = "+callbacks.fault={_target_:tests.test_signals.SignalAt,hook:on_after_backward,step:2,signum:2}"
    command = [*vae_overrides(mnist_data), f"paths.log_dir={tmp_path}", fault]
    interrupted = run_train(*command)
    assert interrupted.returncode == 130, interrupted.stderr[-3000:]
    (last,) = tmp_path.glob("train/runs/*/checkpoints/last.ckpt")
    assert interrupted.stderr.strip().splitlines()[-1] == (
        f"interrupted: SIGINT during validation at step 3; saved {last}. Resume with: python -m src.train "
        f"{shlex.join([*command, 'ckpt_path=last'])}"
    )  # the step it landed in, then the validation that follows it, were finished first; the command's own overrides
    assert "Traceback" not in interrupted.stderr and "weights_only` was not set" not in interrupted.stderr

    resumed = run_train(*command, "ckpt_path=last", env={SIGNALS_OFF: "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "never logged" not in resumed.stderr  # ModelCheckpoint's warning when a validation was skipped
    assert_same_training(unbroken / "checkpoints" / "last.ckpt", last)
    assert validation_losses(last.parent.parent) == validation_losses(unbroken)


@pytest.mark.slow
def test_ctrl_c_to_the_whole_process_group_with_loader_workers_still_stops_at_a_safe_point(
    mnist_data: Path, tmp_path: Path
) -> None:
    """A terminal's Ctrl-C signals the whole process group, the data loader's workers too: the run still finishes
    its step, saves and ends with its one line."""
    from tests.helpers import start_train

    # a session of its own: the process group a terminal would signal, without this test's own process in it
    process = start_train(
        *vae_overrides(mnist_data),
        "trainer.max_epochs=1000",
        "data.num_workers=1",
        f"paths.log_dir={tmp_path}",
        new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not list(tmp_path.glob("train/runs/*/checkpoints/last.ckpt")):  # trained through a validation
            assert process.poll() is None and time.monotonic() < deadline, "training did not get going"
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr[-3000:]
    (last,) = tmp_path.glob("train/runs/*/checkpoints/last.ckpt")
    assert f"saved {last}" in stderr.strip().splitlines()[-1] and "Traceback" not in stderr
