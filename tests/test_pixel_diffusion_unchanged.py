"""The diffusion process denoises pixels or a first stage's latents with the same code (genlab/models/diffusion.py);
the pixel family's results are the ones recorded before it learned latents, at main 08a0d23: on every built-in recipe
and the family's defaults, the validation loss at its fixed draws, the training loss at a seed, and the samples of
each sampler (with the recipe's guidance, and unguided) and the denoising trajectory from fixed noise.

Bit for bit where the CPU's kernels are the recording machine's (a fixed convolution and product give the recorded
bytes); to float rounding elsewhere, where other kernels round differently."""

from __future__ import annotations

import hashlib
from pathlib import Path

import hydra
import pytest
import torch
import torch.nn.functional as F

from genlab.models.diffusion import SAMPLERS, Diffusion
from tests.helpers import compose_config, write_class_folders

CASES = {
    "diffusion_fashion_mnist": ["experiment=diffusion_fashion_mnist"],
    "flow_fashion_mnist": ["experiment=flow_fashion_mnist"],
    "diffusion_cifar10": ["experiment=diffusion_cifar10"],
    "diffusion_image_folder": ["experiment=diffusion_image_folder"],
    "diffusion-fashion_mnist": ["model=diffusion", "data=fashion_mnist"],
    "diffusion-cifar10": ["model=diffusion", "data=cifar10"],
}
SLOW = {"diffusion_cifar10", "diffusion_image_folder"}  # U-Nets of 35M and 9M weights: half a minute each on 2 cores
STEPS = 2  # sampling steps: each sampler's update, from noise and onto the last step


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().float().contiguous().numpy().tobytes()).hexdigest()[:16]


def kernels() -> str:
    """The bytes this CPU's kernels give a fixed convolution and matrix product: where they are the recording
    machine's, so are the model's."""
    generator = torch.Generator().manual_seed(0)
    x, weight = torch.randn(2, 16, 14, 14, generator=generator), torch.randn(32, 16, 3, 3, generator=generator)
    matrix = torch.randn(64, 64, generator=generator)
    return digest(torch.cat([F.conv2d(x, weight, padding=1).flatten(), (matrix @ matrix).flatten()]))


def results(overrides: list[str], folder: Path) -> dict[str, tuple[str, float]]:
    """{what: (digest of its bytes, its float64 sum)} of a recipe's model at seed 0, its weights set to seeded random
    values (away from the U-Net's zero-initialised output)."""
    if any("image_folder" in override for override in overrides):
        overrides = [*overrides, f"data.path={write_class_folders(folder / 'images', per_class=2, size=8)}"]
    cfg = compose_config(overrides, folder / "run")
    torch.manual_seed(0)
    model: Diffusion = hydra.utils.instantiate(cfg.model, _convert_="all").eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    images = torch.rand(2, *cfg.data.image_shape, generator=generator)
    labels = torch.arange(2) % max(1, model.hparams.num_classes)
    hp, found = model.hparams, {}
    with torch.no_grad():
        found["val_loss"] = model.loss(model.sampling_network, images, labels, torch.Generator().manual_seed(1))
        torch.manual_seed(2)
        dropped = model._drop_labels(labels) if hp.conditional else None
        found["train_loss"] = model.loss(model.unet, images, dropped)
        scales = {hp.guidance_scale, 1.0, 0.0} if hp.conditional else {1.0}
        for sampler in SAMPLERS[hp.objective]:
            for scale in sorted(scales):
                model.set_sampling(steps=STEPS, sampler=sampler, guidance_scale=scale)
                found[f"sample/{sampler}/{scale:g}"] = model.sample(2, generator=torch.Generator().manual_seed(3))
        model.set_sampling(sampler=SAMPLERS[hp.objective][0], guidance_scale=hp.guidance_scale)
        noise = torch.randn(2, *cfg.data.image_shape, generator=torch.Generator().manual_seed(4))
        found["trajectory"] = model.denoising_trajectory(noise, 3, generator=torch.Generator().manual_seed(5))
    return {name: (digest(value), value.double().sum().item()) for name, value in found.items()}


# recorded with the code of main at 08a0d23, before the process learned latents
RECORDING_KERNELS = "a8c3e3ceccef266b"
RECORDED: dict[str, dict[str, tuple[str, float]]] = {
    "diffusion_fashion_mnist": {
        "val_loss": ("15f7398efb3b1773", 1.0558395385742188),
        "train_loss": ("554b9d73034e4e2d", 1.01255202293396),
        "sample/ddpm/0": ("4764cdb50bd3d7f9", 733.8333678245544),
        "sample/ddpm/1": ("2cf22f7ef49ddb28", 733.527901083231),
        "sample/ddpm/2": ("cb23a2dcaf30881b", 733.2224341332912),
        "sample/ddim/0": ("a7195623acd0e278", 733.9657962918282),
        "sample/ddim/1": ("aaf6f94b34543917", 733.6619329750538),
        "sample/ddim/2": ("09467f0756c0ab52", 733.3580701649189),
        "trajectory": ("b9dec8005acaae5d", 2213.5818920731544),
    },
    "flow_fashion_mnist": {
        "val_loss": ("544e8797762ea8b0", 1.419961929321289),
        "train_loss": ("98324826e7a1a241", 1.331343650817871),
        "sample/euler/0": ("cd3edb8d4808dfc0", 779.8988356292248),
        "sample/euler/1": ("c0d2d2812c80b65d", 780.2906011044979),
        "sample/euler/2": ("f9028566374ac12d", 780.6835529208183),
        "sample/heun/0": ("22be4e917a86022b", 779.9491946101189),
        "sample/heun/1": ("269eb2a45e5be04c", 780.3453384041786),
        "sample/heun/2": ("6a61b28471811f25", 780.7428865432739),
        "trajectory": ("9e3eb6f84bd4a172", 2298.4776890575886),
    },
    "diffusion_cifar10": {
        "val_loss": ("f9c762b3ccc63014", 1.029603362083435),
        "train_loss": ("c11c19559781f6cf", 0.9723148941993713),
        "sample/ddpm/0": ("80fe944921079908", 3109.79797488451),
        "sample/ddpm/1": ("215bd3a893671849", 3107.462475001812),
        "sample/ddpm/1.3": ("af3cc5b07bd828da", 3106.760494709015),
        "sample/ddim/0": ("c28a5914e55cc38b", 3109.586513251066),
        "sample/ddim/1": ("c28e56b924a3bae9", 3107.2716159820557),
        "sample/ddim/1.3": ("209de1baa01a86cc", 3106.576061517),
        "trajectory": ("120d5c7767c9ea36", 9238.83500945568),
    },
    "diffusion_image_folder": {
        "val_loss": ("f218ed7db57038c2", 1.0095890760421753),
        "train_loss": ("a361f527d34d974e", 0.997852087020874),
        "sample/ddpm/1": ("437d3ccdd31e8bab", 12523.16959643364),
        "sample/ddim/1": ("ea83ee0810f9544f", 12521.685163497925),
        "trajectory": ("ab92304860a4838c", 37161.75788131356),
    },
    "diffusion-fashion_mnist": {
        "val_loss": ("fe5b5b6666d95bc3", 1.0528342723846436),
        "train_loss": ("7d6af05d50659f44", 0.9874968528747559),
        "sample/ddpm/1": ("936bc670e9f83714", 742.709563344717),
        "sample/ddim/1": ("020b23892707d2d5", 742.7800418436527),
        "trajectory": ("5d0956c7103eaa95", 2231.2578649520874),
    },
    "diffusion-cifar10": {
        "val_loss": ("8aa445e61d297cb2", 1.0268265008926392),
        "train_loss": ("d21d2fae162060f5", 0.9829955101013184),
        "sample/ddpm/1": ("188a940292f63636", 3053.199346780777),
        "sample/ddim/1": ("f26203207c4e4032", 3053.410443544388),
        "trajectory": ("df6a5fa2cab6e995", 9155.445325791836),
    },
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=[pytest.mark.slow] if c in SLOW else []) for c in CASES])
def test_pixel_diffusion_gives_the_results_recorded_before_latents(case: str, tmp_path: Path) -> None:
    found, recorded = results(CASES[case], tmp_path), RECORDED[case]
    assert found.keys() == recorded.keys()
    if kernels() == RECORDING_KERNELS:  # the recording machine's arithmetic: the same bytes
        assert {name: value[0] for name, value in found.items()} == {name: value[0] for name, value in recorded.items()}
    for name, (_, total) in found.items():
        assert total == pytest.approx(recorded[name][1], rel=1e-5, abs=1e-6), name


if __name__ == "__main__":  # prints RECORDING_KERNELS and RECORDED for the code checked out
    import tempfile

    print(f"RECORDING_KERNELS = {kernels()!r}")
    with tempfile.TemporaryDirectory() as folder:
        recorded = {case: results(CASES[case], Path(folder) / case) for case in CASES}
    print(f"RECORDED = {recorded!r}")
