"""What a model holds, counted while it is built on the meta device: past the limits, it is refused before any memory
is allocated, and before its build has done more than the limits' worth of work.

A few numbers in a config or a checkpoint can describe a model of any size: `n_layer=1000000` is a million blocks
(minutes of Python to build, even on the meta device), `n_embd=1048576` terabytes of weights, `num_timesteps=2e9` an
8 GB noise schedule. torch calls its global registration hooks as each module, parameter and buffer joins a module,
so a build on the meta device (shapes, no memory) is counted as it goes and stopped at the first count past a limit.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)

from genlab.errors import GenlabError


@dataclass(frozen=True)
class SizeLimits:
    """The most one model may hold; `limits.*` in the config of src.train, src.eval and src.sample
    (conf/limits/default.yaml). The defaults are tens of times the largest default model's (the GPT's 10.7 M
    weights, the diffusion U-Net's 220 modules). Counted as the build registers each tensor: a weight that is later
    tied to another (the GPT's head) counts until it is."""

    # weights and buffers, in numbers: a billion is 4 GB in float32, 16 GB to train with Adam
    max_parameters: Annotated[int, Field(ge=1)] = 1_000_000_000
    # modules (a GPT block has 12): 10,000 take a second or two to build, even on the meta device
    max_modules: Annotated[int, Field(ge=1)] = 10_000

    @classmethod
    def of(cls, limits: Mapping[str, Any]) -> SizeLimits:
        """The limits a config's `limits` node gives (checked by check_config first), built from its plain values
        alone: never through instantiate in a command that reads checkpoints."""
        return cls(**{entry.name: limits[entry.name] for entry in fields(cls)})


DEFAULT_LIMITS = SizeLimits()


class ModelTooLarge(GenlabError):
    """Settings that describe a model past SizeLimits; the message says which limit, to be prefixed with whose
    settings they are (the config's model, a checkpoint's hyperparameters)."""


@dataclass
class _Count:
    """What a build has registered so far, checked against the limits at each registration."""

    limits: SizeLimits
    modules: int = 0
    numbers: int = 0
    # by identity, and kept alive so that no id is reused: a tied weight (the GPT's head) is counted once, and a
    # module is counted when first seen, as a parent or as the owner of a weight: a loop that builds a list of layers
    # before it registers them (nn.Sequential(*layers)) is counted while it runs
    seen: dict[int, nn.Module | torch.Tensor] = field(default_factory=dict, repr=False)

    def module(self, parent: nn.Module, name: str, module: nn.Module | None) -> None:
        self._see(parent, f"{type(parent).__name__}.{name}")
        if module is not None:
            self._see(module, f"{type(parent).__name__}.{name}")

    def tensor(self, parent: nn.Module, name: str, tensor: torch.Tensor | None) -> None:
        self._see(parent, f"{type(parent).__name__}.{name}")
        replaced = getattr(parent, name, None)  # the hook runs before the assignment: a weight tied over another
        if (
            isinstance(replaced, torch.Tensor)
            and replaced is not tensor
            and self.seen.pop(id(replaced), None) is not None
        ):
            self.numbers -= replaced.numel()
        if tensor is not None and id(tensor) not in self.seen:
            self.seen[id(tensor)] = tensor
            self.numbers += tensor.numel()
            self.check(f"stopped building at {type(parent).__name__}.{name}, of shape {_shape(tensor)}")

    def _see(self, module: nn.Module, where: str) -> None:
        if id(module) not in self.seen:
            self.seen[id(module)] = module
            self.modules += 1
            self.check(f"stopped building at {where}")

    def check(self, where: str) -> None:
        if self.modules > self.limits.max_modules:
            raise ModelTooLarge(
                f"has over {self.limits.max_modules:,} modules ({where}); raise limits.max_modules to build one "
                f"this large"
            )
        if self.numbers > self.limits.max_parameters:
            raise ModelTooLarge(
                f"holds over {self.limits.max_parameters:,} weights and buffers ({where}); raise "
                f"limits.max_parameters to build one this large"
            )


def built_within(limits: SizeLimits, build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` on the meta device, counted as it goes; ModelTooLarge at the first module or number past `limits`.
    Returns the model built, without memory (on the meta device): the shapes to compare a checkpoint's with."""
    count = _Count(limits)
    with _registrations(count), torch.device("meta"), warnings.catch_warnings():
        # weights a build loads (latent diffusion's first stage) land nowhere on the meta device, and torch says so
        # for each tensor: only the count matters here
        warnings.filterwarnings("ignore", message="for .*: copying from a non-meta parameter", category=UserWarning)
        model = build()
    # counted again whole (parameters() and buffers() name a shared tensor once): copies made without registering
    # anything, as an EMA's deepcopy is, are in it now
    whole = _Count(limits, modules=sum(1 for _ in model.modules()))
    whole.numbers = sum(tensor.numel() for tensor in [*model.parameters(), *model.buffers()])
    whole.check("counted once built, copies included")
    return model


@contextlib.contextmanager
def _registrations(count: _Count) -> Iterator[None]:
    """torch's global hooks on every module, parameter and buffer registered while the block runs."""
    handles = [
        register_module_module_registration_hook(count.module),
        register_module_parameter_registration_hook(count.tensor),
        register_module_buffer_registration_hook(count.tensor),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _shape(tensor: torch.Tensor) -> str:
    return " x ".join(f"{size:,}" for size in tensor.shape) or "()"
