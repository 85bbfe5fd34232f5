"""An invertible network of affine coupling layers (RealNVP, Dinh et al. 2017; Glow, Kingma & Dhariwal 2018).

Each layer maps x to z and returns log |det dz/dx| per example, so that log p(x) = log N(z; 0, I) + sum of them.
Per scale: couplings with checkerboard masks at full resolution, a squeeze (2x2 pixels -> 4 channels), couplings
with channel masks. No factoring-out: z has the input's dimensions, in the last scale's shape.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genlab.models.nets.resolution import check_stages, depth


class ActNorm(nn.Module):
    """Per-channel affine y = (x - bias) * exp(-log_scale), initialised from the first training batch to give zero
    mean and unit variance per channel (Glow, section 3.1): a normalization that stays invertible."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))  # saved: a reloaded model is not initialised again
        # the buffer's value, kept on the host as well: read on every forward, the buffer would make each training
        # step wait for the device; read back once when weights load
        self.initialized_on_host = False
        self.register_load_state_dict_post_hook(ActNorm._read_initialized)

    @staticmethod
    def _read_initialized(module: ActNorm, incompatible_keys: object) -> None:
        module.initialized_on_host = bool(module.initialized)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self.initialized_on_host:
            with torch.no_grad():
                self.bias.copy_(x.mean(dim=(0, 2, 3), keepdim=True))
                self.log_scale.copy_(x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6).log())
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    # each DDP rank sees its own first batch: all take rank 0's statistics, or the replicas,
                    # which then receive the same averaged updates, would stay different for good
                    torch.distributed.broadcast(self.bias, src=0)
                    torch.distributed.broadcast(self.log_scale, src=0)
                self.initialized.fill_(True)
                self.initialized_on_host = True
        height, width = x.shape[2:]
        log_det = -self.log_scale.sum() * height * width  # the same scale at every pixel
        return (x - self.bias) * torch.exp(-self.log_scale), log_det.expand(len(x))

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(self.log_scale) + self.bias


class AffineCoupling(nn.Module):
    """y = x where mask is 1; elsewhere x * exp(s) + t, with (s, t) computed from the masked x alone, so the
    Jacobian is triangular and log |det| = sum of s over the unmasked entries."""

    def __init__(self, mask: Tensor, channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.register_buffer("mask", mask)  # of 0s and 1s: (1, 1, H, W) a checkerboard, (1, C, 1, 1) channels
        self.net = nn.Sequential(  # Glow's: conv 3x3, conv 1x1, then a zero-initialised conv 3x3
            nn.Conv2d(channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, 2 * channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)  # each coupling starts as the identity
        nn.init.zeros_(self.net[-1].bias)
        # s = scale * tanh(raw): bounded log-scales keep the first steps stable (RealNVP's tanh with a learned scale)
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def _shift_and_log_scale(self, x_fixed: Tensor) -> tuple[Tensor, Tensor]:
        raw_s, t = self.net(x_fixed).chunk(2, dim=1)  # (B, C, H, W) each
        free = 1 - self.mask
        return t * free, self.scale * torch.tanh(raw_s) * free  # zero where the mask keeps x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t, s = self._shift_and_log_scale(x * self.mask)
        return x * torch.exp(s) + t, s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        t, s = self._shift_and_log_scale(y * self.mask)  # the masked entries pass unchanged: the same (s, t)
        return (y - t) * torch.exp(-s)


def checkerboard_mask(height: int, width: int, parity: int) -> Tensor:
    """(1, 1, H, W): 1 where (row + column) % 2 == parity."""
    rows, columns = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return ((rows + columns) % 2 == parity).float()[None, None]


def channel_mask(channels: int, first_half: bool) -> Tensor:
    """(1, C, 1, 1): 1 on the first (or the second) half of the channels."""
    mask = torch.zeros(1, channels, 1, 1)
    half = channels // 2
    mask[:, :half] = 1.0
    return mask if first_half else 1 - mask


def squeeze(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 patch of pixels becomes 4 channels (a permutation: log det 0)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    """The inverse of `squeeze`: (B, 4C, H/2, W/2) -> (B, C, H, W)."""
    b, c4, h, w = x.shape
    x = x.view(b, c4 // 4, 2, 2, h, w)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)


class Squeeze(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return squeeze(x), x.new_zeros(len(x))

    def inverse(self, y: Tensor) -> Tensor:
        return unsqueeze(y)


class CouplingFlow(nn.Module):
    """x (B, C, H, W) <-> z (B, C * 4^S, H / 2^S, W / 2^S) for S = num_scales; `forward` also gives log |det dz/dx|.

    Each scale: `coupling_layers` checkerboard couplings (alternating which half of the pixels they change),
    a squeeze, `coupling_layers` channel couplings (alternating halves); with `actnorm`, an ActNorm before each.
    `num_scales` None: one scale per halving of the image down to 8 pixels or fewer (`resolution.depth`): 2 at 28x28
    and 32x32, 3 at 64x64.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_scales: int | None = None,
        coupling_layers: int = 4,
        hidden_channels: int = 64,
        actnorm: bool = True,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        if num_scales is None:
            num_scales = depth(image_shape, "the normalizing flow")
        check_stages(image_shape, num_scales, f"num_scales={num_scales}")
        layers: list[nn.Module] = []

        def add(coupling: AffineCoupling, channels: int) -> None:
            if actnorm:
                layers.append(ActNorm(channels))
            layers.append(coupling)

        for _ in range(num_scales):
            for i in range(coupling_layers):
                add(AffineCoupling(checkerboard_mask(height, width, i % 2), channels, hidden_channels), channels)
            layers.append(Squeeze())
            channels, height, width = 4 * channels, height // 2, width // 2
            for i in range(coupling_layers):
                add(AffineCoupling(channel_mask(channels, i % 2 == 0), channels, hidden_channels), channels)
        self.layers = nn.ModuleList(layers)
        self.latent_shape = (channels, height, width)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """z (B, *latent_shape) and log |det dz/dx| (B,)."""
        log_det = x.new_zeros(len(x))
        for layer in self.layers:
            x, layer_log_det = layer(x)
            log_det = log_det + layer_log_det
        return x, log_det

    def inverse(self, z: Tensor) -> Tensor:
        """x (B, C, H, W) for z (B, *latent_shape)."""
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z
