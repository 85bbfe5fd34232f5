"""Check the devices a run asks for against the machine, before anything starts."""

from __future__ import annotations

import os

from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from omegaconf import DictConfig

from src.errors import ConfigError


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
