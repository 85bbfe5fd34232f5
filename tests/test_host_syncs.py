"""No family's training step, and no always-on callback, waits for the device on steps that log nothing.

A host synchronisation (`.item()`, `bool(tensor)`, `float(tensor)`, `.tolist()`, `.cpu()`, a tensor-valued `if`)
stalls Python until the GPU has finished every queued kernel: one per step serialises host and device, and the
GPU idles while Python prepares the next step. On a CPU nothing waits, but the calls can still be counted: every
tensor-to-Python-scalar conversion goes through the `aten._local_scalar_dense` operator, which a TorchDispatchMode
sees, and the calls that copy tensors to the host are wrapped on torch.Tensor. What runs inside a training step
(the model's step, Lightning's loop, the callbacks' batch hooks) is counted per batch; validation is not.
"""

from __future__ import annotations

import functools
import json
import traceback
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.utils._pytree as pytree
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict
from torch.optim.swa_utils import AveragedModel
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.families import FAMILIES, Family
from genlab.models.ema import averaged_copy
from genlab.train import train
from tests.helpers import compose_config

# operators that make the host wait for the device's result: a scalar read, and those whose output size is data
SYNCING_OPS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
    torch.ops.aten.unique_dim.default,
    torch.ops.aten._unique2.default,
    torch.ops.aten.is_nonzero.default,
}
# Python-level methods that hand a tensor's values to the host (on a CPU some never reach the dispatcher)
HOST_METHODS = ("tolist", "cpu", "numpy", "__array__")


class _SyncingOps(TorchDispatchMode):
    """Counts the syncing operators on device tensors. On a CPU every tensor is a host tensor; here the ones
    that came out of `.cpu()` (on a GPU, a copy to the host), and every tensor computed from those alone, count
    as host tensors, and reading them is free."""

    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts
        self.host_ids: set[int] = set()

    def mark_host(self, tensor: torch.Tensor) -> None:
        if id(tensor) not in self.host_ids:
            self.host_ids.add(id(tensor))
            weakref.finalize(tensor, self.host_ids.discard, id(tensor))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
        on_host = bool(inputs) and all(id(x) in self.host_ids for x in inputs)
        if func in SYNCING_OPS and not on_host:
            self.counts[f"{func} at {_caller()}"] += 1
        out = func(*args, **(kwargs or {}))
        if on_host:
            for tensor in pytree.tree_leaves(out):
                if isinstance(tensor, torch.Tensor):
                    self.mark_host(tensor)
        return out


def _caller() -> str:
    """Where the sync was asked for: the innermost frame outside torch and the counting, so a failure says where."""
    for frame in reversed(traceback.extract_stack()):
        counting = frame.filename == __file__ and frame.name in ("__torch_dispatch__", "method", "_caller")
        if "/torch/" not in frame.filename and not counting:
            return f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})"
    return "?"


class HostSyncCounter(Callback):
    """Counts host synchronisations per training batch (from one batch's start to the next's) into
    <run>/host_syncs.json: a list of {"step", "logs", "syncs"}. Listed first, so that its batch start comes
    before every other callback's."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.batches: list[dict[str, Any]] = []
        self._mode: _SyncingOps | None = None
        self._originals: dict[str, Any] = {}

    def _start(self) -> None:
        self._mode = _SyncingOps(self.counts)
        self._mode.__enter__()
        for name in HOST_METHODS:
            original = self._originals[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._counting(name, original))

    def _counting(self, name: str, original):
        def method(tensor, *args, **kwargs):
            if self._mode is not None and id(tensor) not in self._mode.host_ids:
                self.counts[f"Tensor.{name} at {_caller()}"] += 1
            out = original(tensor, *args, **kwargs)
            if name == "cpu" and self._mode is not None:
                self._mode.mark_host(out)
            return out

        return method

    def _stop(self) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        self._originals.clear()

    def _close_batch(self) -> None:
        if self.batches and self.batches[-1]["syncs"] is None:
            self.batches[-1]["syncs"] = dict(self.counts)
        self.counts.clear()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self._close_batch()
        # the step Lightning's loggers write this batch under: every log_every_n_steps-th batch, and the last
        batches = trainer.fit_loop.epoch_loop.batch_progress.total.ready
        last = 0 < trainer.max_steps <= trainer.global_step + 1 or idx + 1 == trainer.num_training_batches
        self.batches.append({"batch": batches, "logs": batches % trainer.log_every_n_steps == 0 or last, "syncs": None})
        if self._mode is None:
            self._start()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop()
        self._close_batch()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop()
        self._close_batch()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop()
        self._close_batch()
        (Path(trainer.default_root_dir) / "host_syncs.json").write_text(json.dumps(self.batches, indent=1))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop()


# validated at the epoch's end (a recipe's every-500-steps is past the 7 batches)
SMALL_IMAGES = ["data=mnist", "data.val_size=100", "data.batch_size=16", "++trainer.val_check_interval=1.0"]
# the GAN clips its own gradients (manual optimization): its clipping checked too, where the loss needs it
CLIPPED = {"gan-wgan-gp": ["model.gradient_clip_val=1.0"]}
SMALL_TEXT = [
    "trainer=cpu",
    "trainer.precision=32",
    "data.batch_size=8",
    "model.sample_length=8",
    "trainer.val_check_interval=7",
]


def count_host_syncs(overrides: list[str], run_dir: Path) -> list[dict[str, Any]]:
    """Train 7 batches as `python -m src.train` does (progress bar on: it reads the logged values), logging every
    3rd; the per-batch counts. Here, off a terminal, the progress is lines: one every batch, which reads the bar's
    values at every batch, as the rich bar on a terminal does."""
    cfg = compose_config(
        [
            "trainer.accelerator=cpu",
            "trainer.max_epochs=1",
            "trainer.max_steps=-1",
            "trainer.limit_train_batches=7",
            "trainer.limit_val_batches=1",
            "trainer.log_every_n_steps=3",
            "+trainer.num_sanity_val_steps=0",
            "extras.print_config=false",
            "test=false",
            "callbacks.rich_progress_bar.line_every_n_steps=1",
            "+callbacks.host_syncs._target_=tests.test_host_syncs.HostSyncCounter",
            *overrides,
        ],
        run_dir,
    )
    with open_dict(cfg):  # first among the callbacks: it sees the whole batch
        counter = cfg.callbacks.pop("host_syncs")
        cfg.callbacks = {"host_syncs": counter, **cfg.callbacks}
    train(cfg)
    return json.loads((run_dir / "host_syncs.json").read_text())


@pytest.mark.slow  # 7 batches through a dispatch mode that sees every operator: 5 to 25 s a family on 2 cores
@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_steps_that_log_nothing_never_wait_for_the_device(
    family: Family, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every family of benchmarks/families.py, its tiny net: the images on a small MNIST, the GPT on Tiny Shakespeare
    with a validation (its text sample included) at the last batch."""
    if family.unit == "images":
        data = [*SMALL_IMAGES, f"paths.data_dir={request.getfixturevalue('mnist_dir')}"]
    else:
        data = [*SMALL_TEXT, f"paths.data_dir={request.getfixturevalue('shakespeare_dir')}"]
    batches = count_host_syncs([*family.tiny_recipe, *CLIPPED.get(family.name, []), *data], tmp_path / "run")
    assert len(batches) == 7
    quiet = [batch for batch in batches if not batch["logs"]]
    assert len(quiet) == 4  # batches 1, 2, 4, 5
    assert [batch for batch in quiet if batch["syncs"]] == []


def test_the_counter_sees_a_sync_in_a_training_step(tmp_path: Path, mnist_dir: Path) -> None:
    """The test above can fail: one `.item()` in a step shows up in every batch."""
    overrides = [
        "model=ae",
        *SMALL_IMAGES,
        f"paths.data_dir={mnist_dir}",
        "+callbacks.reads_loss._target_=tests.test_host_syncs.ReadsLossEachStep",
    ]
    batches = count_host_syncs(overrides, tmp_path / "run")
    assert all(
        any(where.startswith("aten._local_scalar_dense.default at test_host_syncs.py") for where in batch["syncs"])
        for batch in batches
    )


class ReadsLossEachStep(Callback):
    """What not to do: read the loss on the host every step."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, *args) -> None:
        float(outputs["loss"])


def _reference_ema_update(
    averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor, decay: float
) -> None:
    """The warm-up EMA as genlab wrote it for AveragedModel (reading the count on the host at every update)."""
    step_decay = min(decay, (1 + float(num_averaged)) / (10 + float(num_averaged)))
    for average, value in zip(averaged, current, strict=True):
        if average.is_floating_point():
            average.lerp_(value, 1 - step_decay)
        else:
            average.copy_(value)


def test_sync_free_ema_equals_averaged_model_bit_for_bit_across_a_reload() -> None:
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    reference = AveragedModel(
        network, multi_avg_fn=functools.partial(_reference_ema_update, decay=0.99), use_buffers=True
    )
    ema = averaged_copy(network, 0.99)
    for step in range(30):
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(torch.randn_like(parameter))
        network(torch.randn(2, 1, 5, 5))  # batch-norm statistics and its step counter move too
        reference.update_parameters(network)
        ema.update_parameters(network)
        if step == 14:  # a resumed run: a fresh copy loads the state, and its count on the host follows
            state = ema.state_dict()
            ema = averaged_copy(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)), 0.99)
            ema.load_state_dict(state)
            assert ema.num_updates == 15
    assert reference.state_dict().keys() == ema.state_dict().keys()
    pairs = zip(reference.state_dict().values(), ema.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
