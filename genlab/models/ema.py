"""An exponential moving average of a network's weights, to sample from (Karras et al., 2018; Ho et al., 2020).

Shared by the families that sample from averaged weights (the GAN's generator, the diffusion U-Net).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class ExponentialMovingAverage(AveragedModel):
    """A frozen AveragedModel of a network, weights and buffers (batch-norm statistics), whose decay ramps up as
    (1 + n) / (10 + n) after n updates, to at most `decay`.

    torch's get_ema_multi_avg_fn uses the full decay from the first update, so for the first few thousand steps
    (0.999^1000 = 0.37) the average is still mostly the untrained network. And AveragedModel.update_parameters
    reads its update count on the host (`if n_averaged == 0`) at every call: on a GPU, a wait for every queued
    kernel once per training step. Here the count is also kept on the host (read from a checkpoint as it
    loads), and one fused lerp moves every floating-point tensor. Same state_dict as AveragedModel
    (module.*, n_averaged), and the same numbers.
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        super().__init__(network, use_buffers=True)
        self.decay = decay
        self.num_updates = 0  # n_averaged, on the host
        self.requires_grad_(False)
        self.register_load_state_dict_pre_hook(_read_num_updates)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [tensor.detach() for tensor in (*model.parameters(), *model.buffers())]
        if self.num_updates == 0:  # as AveragedModel: the first update copies
            torch._foreach_copy_(averaged, current)
        else:
            n = self.num_updates
            weight = 1 - min(self.decay, (1 + n) / (10 + n))
            floating = [i for i, tensor in enumerate(averaged) if tensor.is_floating_point()]
            torch._foreach_lerp_([averaged[i] for i in floating], [current[i] for i in floating], weight)
            for average, value in zip(averaged, current, strict=True):
                if not average.is_floating_point():  # batch norm's step counter: nothing to average
                    average.copy_(value)
        self.n_averaged += 1
        self.num_updates += 1


def _read_num_updates(module: ExponentialMovingAverage, state_dict: dict, prefix: str, *args) -> None:
    """Keep the host's count in step with a loaded n_averaged (a module-level function: the model must pickle)."""
    if f"{prefix}n_averaged" in state_dict:
        module.num_updates = int(state_dict[f"{prefix}n_averaged"])


def averaged_copy(network: nn.Module, decay: float) -> ExponentialMovingAverage:
    """A frozen ExponentialMovingAverage of `network`, updated each time the owner calls `update_parameters`."""
    return ExponentialMovingAverage(network, decay)
