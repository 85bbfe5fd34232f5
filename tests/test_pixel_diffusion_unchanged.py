"""The diffusion process denoises pixels or a first stage's latents with the same code (genlab/models/diffusion.py);
the pixel family's results are the ones recorded before it learned latents, at main 08a0d23: on every built-in recipe
and the family's defaults, the validation loss at its fixed draws, the training loss at a seed, and the samples of
each sampler (with the recipe's guidance, and unguided) and the denoising trajectory from fixed noise.

Bit for bit where the CPU's kernels are the recording machine's (a fixed convolution and product give the recorded
bytes); to float rounding elsewhere, where other kernels round differently."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
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


# recorded with the code of main at 08a0d23, before the process learned latents, on one thread (as every test runs)
RECORDING_KERNELS = "a8c3e3ceccef266b"
RECORDED: dict[str, dict[str, tuple[str, float]]] = {
    "diffusion_fashion_mnist": {
        "val_loss": ("15f7398efb3b1773", 1.0558395385742188),
        "train_loss": ("554b9d73034e4e2d", 1.01255202293396),
        "sample/ddpm/0": ("8187bdf23f3c8afe", 733.8333668708801),
        "sample/ddpm/1": ("d0c66b6a32ca4b8d", 733.5278996229172),
        "sample/ddpm/2": ("015ff39451c1edaf", 733.2224333882332),
        "sample/ddim/0": ("9b411d770b498440", 733.9657958745956),
        "sample/ddim/1": ("35b006565bc43aec", 733.6619316935539),
        "sample/ddim/2": ("4c21cd02749adfb3", 733.3580701649189),
        "trajectory": ("7ac3d0337ad487b6", 2213.5818841159344),
    },
    "flow_fashion_mnist": {
        "val_loss": ("544e8797762ea8b0", 1.419961929321289),
        "train_loss": ("98324826e7a1a241", 1.331343650817871),
        "sample/euler/0": ("584691d1f207c283", 779.8988355696201),
        "sample/euler/1": ("10cb4677e31433a8", 780.2906025350094),
        "sample/euler/2": ("89f4b1384404d6c6", 780.6835527122021),
        "sample/heun/0": ("525b63ba87080b1c", 779.9491940438747),
        "sample/heun/1": ("22f58ab1bb7b1cd7", 780.3453394770622),
        "sample/heun/2": ("b6008b530951aa8c", 780.742887109518),
        "trajectory": ("7533c5e2e6f3b84d", 2298.477687329054),
    },
    "diffusion_cifar10": {
        "val_loss": ("f9c762b3ccc63014", 1.029603362083435),
        "train_loss": ("c11c19559781f6cf", 0.9723148941993713),
        "sample/ddpm/0": ("d9200ee3f5f5ff3d", 3109.7979762256145),
        "sample/ddpm/1": ("542e78f3880ec666", 3107.462478786707),
        "sample/ddpm/1.3": ("a4d530f6b4ca5013", 3106.760491758585),
        "sample/ddim/0": ("bef66ef8a3146272", 3109.5865151286125),
        "sample/ddim/1": ("b04da7dfe21d2f2c", 3107.271618396044),
        "sample/ddim/1.3": ("23289a1ba207935c", 3106.5760596990585),
        "trajectory": ("a85e036c5ea935df", 9238.834999620914),
    },
    "diffusion_image_folder": {
        "val_loss": ("f218ed7db57038c2", 1.0095890760421753),
        "train_loss": ("a361f527d34d974e", 0.997852087020874),
        "sample/ddpm/1": ("2cadf9f207d2c3dc", 12523.169599235058),
        "sample/ddim/1": ("11888f50822ff923", 12521.685168087482),
        "trajectory": ("a06898146f0cd71c", 37161.75788408518),
    },
    "diffusion-fashion_mnist": {
        "val_loss": ("fe5b5b6666d95bc3", 1.0528342723846436),
        "train_loss": ("7d6af05d50659f44", 0.9874968528747559),
        "sample/ddpm/1": ("86e19ec464a92fad", 742.7095639109612),
        "sample/ddim/1": ("adfd4af5da7b3ffa", 742.7800425291061),
        "trajectory": ("e771360d0cdbd627", 2231.257864356041),
    },
    "diffusion-cifar10": {
        "val_loss": ("8aa445e61d297cb2", 1.0268265008926392),
        "train_loss": ("d21d2fae162060f5", 0.9829955101013184),
        "sample/ddpm/1": ("bbb08beb056351dd", 3053.19934669137),
        "sample/ddim/1": ("90e3dab75bbdf7d4", 3053.4104430675507),
        "trajectory": ("ead5438e5eff02ed", 9155.445325732231),
    },
}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One thread, as the recording ran and as pytest's workers run: a convolution split over threads sums in
    another order (the same kernels, other bytes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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

    torch.set_num_threads(1)
    print(f"RECORDING_KERNELS = {kernels()!r}")
    with tempfile.TemporaryDirectory() as folder:
        recorded = {case: results(CASES[case], Path(folder) / case) for case in CASES}
    print(f"RECORDED = {recorded!r}")
