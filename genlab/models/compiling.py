"""`model.compile`: torch.compile of a family's networks, one setting with the same meaning in every family."""

from __future__ import annotations

from torch import nn

from genlab.errors import ConfigError

# torch.compile's modes; `true` is its default mode. reduce-overhead replays the compiled forward and backward as
# CUDA graphs on a GPU: for small networks, whose steps are bound by kernel launches rather than arithmetic.
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile(setting: bool | str) -> None:
    if not isinstance(setting, bool) and setting not in MODES:
        raise ConfigError(f"model.compile must be true, false or one of torch.compile's modes {', '.join(MODES)}; "
                          f"got {setting!r}")  # fmt: skip


def compile_networks(setting: bool | str, *networks: nn.Module) -> None:
    """torch.compile each network in place, as `model.compile` says (false: leave them eager). In place
    (nn.Module.compile), so that the state_dict keeps its names: checkpoints load with or without compiling.
    Compiling happens at the first call, on the device and in the precision of that call."""
    if setting is False:
        return
    for network in networks:
        network.compile(mode=None if setting is True or setting == "default" else setting)
