"""The DataLoader of datasets that cut whole batches at once (through __getitems__)."""

from __future__ import annotations

import os
import signal
import warnings
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import Dataset, RandomSampler, default_convert
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import RandomSampler as StatefulRandomSampler

from genlab.errors import ConfigError

# torchdata 0.11 calls an API that torch 2.14 deprecates, once per loader; nothing for users to act on
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)


def ignore_sigint(worker_id: int) -> None:
    """In a loader's worker process: Ctrl-C reaches every process of the terminal's group, and a worker would die
    of it (torch's worker loop ends on KeyboardInterrupt), failing the next batch of a run that is stopping at the
    end of its step. The main process decides (genlab/callbacks/interrupt.py); it ends its workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):  # Lightning seeds workers only of loaders without a worker_init_fn
        pl_worker_init_function(worker_id)


def check_on_device(on_device: Any, num_workers: int) -> None:
    """`data.on_device` is auto, true or false; true needs the batches cut in this process (data.num_workers=0)."""
    if on_device not in (True, False, "auto"):
        raise ConfigError(f"data.on_device must be auto, true or false, got {on_device!r}")
    if on_device is True and num_workers > 0:
        raise ConfigError(
            f"data.on_device=true holds the data on the training device, which worker processes cannot share: "
            f"use data.num_workers=0 (got {num_workers}), or data.on_device=false"
        )


def data_device(on_device: bool | str, trainer: L.Trainer | None, nbytes: int, num_workers: int) -> torch.device | None:
    """Where a datamodule holds its tensors (`nbytes` in all), None for the host: with data.on_device=true the
    trainer's device; with auto, a CUDA device, when they fit in a quarter of its free memory and batches are cut in
    this process (data.num_workers=0). Without a trainer (a datamodule used alone) the host."""
    if on_device is False or trainer is None:
        return None
    device = trainer.strategy.root_device
    if on_device is True:
        return device
    if device.type != "cuda" or num_workers > 0:
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return device if nbytes <= free // 4 else None


def batch_loader(
    dataset: Dataset | None, batch_size: int, shuffle: bool, num_workers: int, with_replacement: bool = False
) -> StatefulDataLoader:
    """A DataLoader whose dataset's __getitems__(indices) returns the batch itself: nothing is left to collate.
    Shuffled, an epoch is a permutation of the dataset, or as many indices drawn `with_replacement` (no list of
    them all is made: for datasets of billions).

    It resumes mid-epoch: Lightning saves its state_dict (the shuffling generator, the batches already
    drawn) in every checkpoint. Its random numbers come from generators of its own, seeded from the
    run's seed, never from the global one: data order and the model's draws (noise, dropout) are
    separate streams, and a resumed run restores both (see ExactResume in genlab/callbacks/resume.py).
    """
    if dataset is None:
        raise RuntimeError("call setup() before asking for a dataloader")
    # A generator for the order alone: torchdata restores the sampler's generator but not the draw each new
    # iterator makes from the loader's, so sharing one would change the order of every epoch after a mid-epoch resume.
    order = torch.Generator().manual_seed(torch.initial_seed() + 1)
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShuffledOrder(dataset, replacement=with_replacement, generator=order) if shuffle else None,
        num_workers=num_workers,
        collate_fn=default_convert,  # passes the batch's tensors through as they are
        persistent_workers=num_workers > 0,
        worker_init_fn=ignore_sigint,
        generator=torch.Generator().manual_seed(torch.initial_seed()),  # the workers' seeds
    )


class ShuffledOrder(StatefulRandomSampler, RandomSampler):
    """torchdata's RandomSampler (its generator's state is saved and restored with the loader's), which Lightning
    also knows for a torch RandomSampler.

    Under DDP and FSDP, Lightning replaces a torch RandomSampler by a DistributedSampler, whose order is a function of
    the seed and the epoch, so a resumed run draws it again; any other sampler it wraps in a DistributedSamplerWrapper
    that draws each epoch's order from this sampler's generator, whose state no checkpoint holds: a resumed run then
    trained on other batches than the unbroken one (found by tests/test_scale.py).
    """
