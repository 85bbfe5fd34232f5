"""Whether torch's fused Adam/AdamW kernels can update a module's parameters."""

from __future__ import annotations

from torch import nn


def fused_optimizer_available(module: nn.Module) -> bool:
    """True where the parameters live on a device with fused Adam/AdamW kernels (CPU and CUDA here).

    The fused kernel updates every parameter in one pass instead of looping over tensors: for small
    models that loop's per-tensor overhead, not arithmetic, is what a step costs (on a GPU, one kernel
    launch instead of many). README, Benchmarks, has what it saved on the CPU GPT recipe.
    """
    return next(module.parameters()).device.type in ("cpu", "cuda")
