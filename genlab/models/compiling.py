"""`model.compile`: torch.compile of a family's networks, one setting with the same meaning in every family."""

from __future__ import annotations

from typing import Literal

from pydantic import StrictBool
from torch import nn

# true (torch.compile's default mode), false (eager), or one of its modes. reduce-overhead replays the compiled
# forward and backward as CUDA graphs on a GPU: for small networks, whose steps are bound by kernel launches rather
# than arithmetic. Strict: a loose bool would take "yes" or "1" as true
Compile = StrictBool | Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


def compile_networks(setting: Compile, *networks: nn.Module) -> None:
    """torch.compile each network in place, as `model.compile` says (false: leave them eager). In place
    (nn.Module.compile), so that the state_dict keeps its names: checkpoints load with or without compiling.
    Compiling happens at the first call, on the device and in the precision of that call."""
    if setting is False:
        return
    for network in networks:
        network.compile(mode=None if setting is True or setting == "default" else setting)
