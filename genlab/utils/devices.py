"""Check the devices a run asks for against the machine, before anything starts."""

from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig

from genlab.errors import ConfigError


def check_devices(trainer: DictConfig) -> None:
    """Refuse, with one line saying what this machine has, an accelerator it lacks or more devices than it has.

    Lightning itself would start one process per CPU "device" (`trainer.devices=999` on a laptop starts
    999 DDP processes), and names a missing GPU only in a traceback.
    """
    accelerator, devices = str(trainer.get("accelerator", "auto")), trainer.get("devices", "auto")
    gpus = CUDAAccelerator.auto_device_count() if CUDAAccelerator.is_available() else 0
    available = f"this machine has {os.cpu_count()} CPU cores and {gpus} CUDA GPU(s)" + (
        " and Apple's MPS" if MPSAccelerator.is_available() else ""
    )
    if accelerator in ("gpu", "cuda") and not gpus and not MPSAccelerator.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator}, but {available}: use trainer=cpu (or trainer=default)")
    if not isinstance(devices, int) or devices < 1:
        if devices in ("auto", -1) or isinstance(devices, (list, str)):
            return  # Lightning picks or parses them, and refuses what does not exist
        raise ConfigError(f"trainer.devices={devices}: expected a count >= 1, a list of GPU indices, -1 or auto")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus)
    limit = gpus if on_gpu else os.cpu_count() or 1
    if devices > limit:
        kind = "GPUs" if on_gpu else "CPU processes (one per core at most)"
        raise ConfigError(f"trainer.devices={devices} asks for {devices} {kind}, but {available}")


def check_sharding(trainer: L.Trainer, model: L.LightningModule, trainer_cfg: DictConfig) -> None:
    """Refuse trainer=fsdp for a model that does not shard itself, or a data-parallel size that is not the number of
    processes: Lightning says either only in a traceback, once the processes have started."""
    if not isinstance(trainer.strategy, ModelParallelStrategy):
        return
    if not is_overridden("configure_model", model):  # the same test as Lightning's
        raise ConfigError(
            f"trainer=fsdp shards a model that builds and shards its network in configure_model (model=gpt); "
            f"{type(model).__name__} does not. Its network is small enough to copy whole: use trainer=ddp"
        )
    processes = trainer.num_devices * trainer.num_nodes
    data_parallel_size = trainer_cfg.strategy.get("data_parallel_size")
    if data_parallel_size != processes:
        raise ConfigError(
            f"trainer.strategy.data_parallel_size={data_parallel_size}, but the run has {processes} processes "
            f"({trainer.num_devices} devices x {trainer.num_nodes} nodes): set trainer.devices to a count, and on "
            f"several nodes trainer.strategy.data_parallel_size to devices x nodes"
        )
