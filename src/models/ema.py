"""An exponential moving average of a network's weights, to sample from (Karras et al., 2018; Ho et al., 2020).

Shared by the families that sample from averaged weights (the GAN's generator, the diffusion U-Net).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def averaged_copy(network: nn.Module, decay: float) -> AveragedModel:
    """A frozen AveragedModel of `network`, weights and buffers (batch-norm statistics), updated by
    `ema_with_warmup(decay)` each time the owner calls `update_parameters(network)`."""
    return AveragedModel(network, multi_avg_fn=ema_with_warmup(decay), use_buffers=True).requires_grad_(False)


def ema_with_warmup(decay: float) -> Callable[[list[Tensor], list[Tensor], Tensor], None]:
    """An EMA update for AveragedModel whose decay ramps up as (1 + n) / (10 + n) after n updates.

    torch's get_ema_multi_avg_fn uses the full decay from the first update, so for the first few
    thousand steps (0.999^1000 = 0.37) the average is still mostly the untrained network.
    A partial of a module-level function, not a closure: the model must pickle (ddp_spawn).
    """
    return functools.partial(_ema_update, decay=decay)


def _ema_update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor, decay: float) -> None:
    step_decay = min(decay, (1 + float(num_averaged)) / (10 + float(num_averaged)))
    for average, value in zip(averaged, current, strict=True):
        if average.is_floating_point():
            average.lerp_(value, 1 - step_decay)
        else:  # batch norm's step counter: nothing to average
            average.copy_(value)
