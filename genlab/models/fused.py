"""Fused Adam/AdamW: where torch's kernels can update a module's parameters, clipping gradients under them, and the
range of their betas."""

from __future__ import annotations

from typing import Annotated

import lightning as L
import torch
from pydantic import Field
from torch import nn

# Adam's (beta1, beta2), each in [0, 1) as torch.optim.Adam requires: declared, so that a config is refused before
# its run starts rather than when the optimizer is built
AdamBetas = tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]]


def fused_optimizer_available(module: nn.Module) -> bool:
    """True where the parameters live on a device with fused Adam/AdamW kernels (CPU and CUDA here), unless a
    gradient scaler (16-mixed) must unscale the gradients before they are clipped: a fused step unscales them
    itself, too late for clipping.

    The fused kernel updates every parameter in one pass instead of looping over tensors: for small
    models that loop's per-tensor overhead, not arithmetic, is what a step costs (on a GPU, one kernel
    launch instead of many). docs/results.md has what it saved on the CPU GPT recipe.
    """
    if isinstance(module, L.LightningModule) and getattr(module.trainer.precision_plugin, "scaler", None) is not None:
        return False
    return next(module.parameters()).device.type in ("cpu", "cuda")


def clip_gradients(module: L.LightningModule, optimizer, clip_val: float, algorithm: str = "norm") -> None:
    """`module.clip_gradients`, also for a fused optimizer under bf16-mixed.

    Lightning 2.6 refuses to clip for an optimizer that unscales its own gradients even where no gradient
    scaler exists (bf16-mixed), so that there is nothing to unscale (Lightning issue #21435, fixed by PR #21436
    after 2.6.6). Without a scaler this clips as Lightning would, with torch; with one (16-mixed, where
    `fused_optimizer_available` is False) Lightning clips. Call module.clip_gradients alone again once the
    pinned Lightning has the fix.
    """
    if getattr(module.trainer.precision_plugin, "scaler", None) is not None:
        module.clip_gradients(optimizer, clip_val, algorithm)
        return
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    if algorithm == "value":
        torch.nn.utils.clip_grad_value_(parameters, clip_val)
    else:
        torch.nn.utils.clip_grad_norm_(parameters, clip_val)
