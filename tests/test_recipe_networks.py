"""The networks of the built-in recipes (28x28 and 32x32) are the ones they were before the networks learned to follow
the image size: the same parameter names and shapes, the same initial weights for the same seed (hashed exactly), and
the same outputs (to float rounding, which differs between CPUs' kernels)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import hydra
import pytest
import torch

from genlab.models.autoencoder import Autoencoder
from genlab.models.classifier import Classifier
from genlab.models.diffusion import Diffusion
from genlab.models.gan import GAN
from genlab.models.normalizing_flow import NormalizingFlow
from genlab.models.vae import VAE
from tests.helpers import compose_config, options

# every recipe on the built-in image datasets, and each image family's defaults on the 28x28 and the 32x32 data
CASES = {
    **{name: [f"experiment={name}"] for name in options("experiment") if name.endswith(("mnist", "cifar10"))},
    **{
        f"{model}-{data}": [f"model={model}", f"data={data}"]
        for model in ("ae", "classifier", "diffusion", "gan", "normalizing_flow", "vae")
        for data in ("fashion_mnist", "cifar10")
    },
    **{
        f"vae-conv-{data}": ["model=vae", "model.architecture=conv", f"data={data}"]
        for data in ("fashion_mnist", "cifar10")
    },
}
# where a recipe is the family's defaults on that data, one case holds both
del CASES["classifier-fashion_mnist"], CASES["vae-fashion_mnist"]
# recipes of networks that did not exist at the recording: nothing to be the same as
del CASES["vae_first_stage_fashion_mnist"], CASES["latent_diffusion_fashion_mnist"]
# the one change: the default U-Net attends at 16x16 as DDPM's does, which a 32x32 image has (28x28 has no such level)
CASES["diffusion-cifar10"].append("model.attention_resolutions=[]")
# a checkpoint written before attention_resolutions existed has no such key: the constructor's default is the old net
CASES["diffusion-cifar10-as-an-old-checkpoint"] = ["model=diffusion", "data=cifar10", "~model.attention_resolutions"]


def _outputs(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """One forward pass of each of the model's networks."""
    if isinstance(model, Autoencoder):
        return [model.reconstruct(images)]
    if isinstance(model, VAE):
        return [model.generate(model.encode(images)[0])]
    if isinstance(model, GAN):
        classes = labels if model.hparams.conditional else None
        z = torch.randn(len(images), model.hparams.latent_dim, generator=torch.Generator().manual_seed(1))
        return [model.generator(z, classes), model.discriminator(images * 2 - 1, classes)]
    if isinstance(model, Diffusion):
        classes = labels if model.hparams.conditional else None
        return [model.unet(images * 2 - 1, torch.linspace(0.1, 0.9, len(images)), classes)]
    if isinstance(model, NormalizingFlow):
        return list(model.flow(images))
    assert isinstance(model, Classifier)
    return [model.net(images)]


def fingerprint(overrides: list[str]) -> tuple[str, list[float]]:
    """sha256 of the state dict (names, shapes, dtypes, values) of the model built at seed 0; then, its parameters
    set to seeded random values, the sum and the sum of absolute values of each output of `_outputs` on two fixed
    images."""
    cfg = compose_config(overrides, Path("never-made/run"))
    torch.manual_seed(0)
    model = hydra.utils.instantiate(cfg.model, _convert_="all").eval()
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # weights away from their initial zeros (the last layers of the U-Net and the couplings)
        for parameter in model.parameters():
            parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    images = torch.rand(2, *cfg.data.image_shape, generator=generator)
    labels = torch.arange(2) % cfg.data.num_classes
    with torch.no_grad():
        outputs = _outputs(model, images, labels)
    sums = [value for output in outputs for value in (output.double().sum().item(), output.double().abs().sum().item())]
    return digest.hexdigest(), sums


# recorded with the code of main at fdd9a11, before the networks followed the image size (diffusion-cifar10 without
# its override, which that code did not know)
RECORDED = {
    "ae_denoising_fashion_mnist": (
        "0cc3c472c608ee47e910a22437278c1b509e3d0ba6372a50c25deca48f165263",
        [792.8517517745495, 792.8517517745495],
    ),
    "classifier_cifar10": (
        "b78cfc7d58e2e084772ab441e2eed2d0e7cc0bc37a432f724c7908828f5dee61",
        [-0.0789718572050333, 1.3786465916782618],
    ),
    "classifier_fashion_mnist": (
        "9f8b65d62a0841721d45236c708d67a82fdde7538f577261fcfc9435cad11c37",
        [0.15889175981283188, 1.082638867199421],
    ),
    "classifier_mnist": (
        "9f8b65d62a0841721d45236c708d67a82fdde7538f577261fcfc9435cad11c37",
        [0.15889175981283188, 1.082638867199421],
    ),
    "diffusion_cifar10": (
        "e7a5bcbb6e1d574ebf297467e658dadc5847ebc3089eb275aa837469e4f1b14e",
        [252.32317973836325, 525.5151683066506],
    ),
    "diffusion_fashion_mnist": (
        "269c4e7d0a82c5e8269839493c941507495dbda999c0daa21c02bdd67fcdafc8",
        [-141.2425774037838, 141.2425774037838],
    ),
    "flow_fashion_mnist": (
        "269c4e7d0a82c5e8269839493c941507495dbda999c0daa21c02bdd67fcdafc8",
        [-141.2425774037838, 141.2425774037838],
    ),
    "gan_cifar10": (
        "39806ee2e4e158e928e7d77712b423d306fab4e974b354d0f4e525985ab22c7d",
        [247.8116434905678, 247.8116434905678, -2.725085139274597, 2.725085139274597],
    ),
    "gan_fashion_mnist": (
        "8031cc9eb127b2128a955ee77652e4f688d173a9b2ff6c6d250f320a0bb574ac",
        [89.64979602210224, 89.64979602210224, -0.5723184794187546, 0.5723184794187546],
    ),
    "gan_hinge_fashion_mnist": (
        "8031cc9eb127b2128a955ee77652e4f688d173a9b2ff6c6d250f320a0bb574ac",
        [89.64979602210224, 89.64979602210224, -0.5723184794187546, 0.5723184794187546],
    ),
    "gan_wgan_gp_fashion_mnist": (
        "8031cc9eb127b2128a955ee77652e4f688d173a9b2ff6c6d250f320a0bb574ac",
        [89.64979602210224, 89.64979602210224, -0.5723184794187546, 0.5723184794187546],
    ),
    "normalizing_flow_fashion_mnist": (
        "9528f33c58c6cedbfc1bf82ca79c3c29cd1eba14b71e9d24db1b5f4da41201d5",
        [799.5037767187168, 854.9819283204561, 100.03376007080078, 100.03376007080078],
    ),
    "vae_conv_fashion_mnist": (
        "210d77d59a6807c93128d0386b2126d397e572ecb9c7c3dcb02171d9bb70a052",
        [792.0838274359703, 792.0838274359703],
    ),
    "vae_fashion_mnist": (
        "ea27eabf6b7e2e2fe2a8448e68129d6a697d5a4d8b89d89884e604871fae0c5c",
        [784.6477812230587, 784.6477812230587],
    ),
    "ae-fashion_mnist": (
        "79ac0d7f86826609bb203f3568a37e11d98c89c295e4b28d29c3f0f6584f9f0b",
        [771.5727235972881, 771.5727235972881],
    ),
    "ae-cifar10": (
        "79ebcc8a2d5bf90c47b845304ec2ef90a64a2ac3ebb996640ad5390b68a273a5",
        [3033.3731032907963, 3033.3731032907963],
    ),
    "classifier-cifar10": (
        "b78cfc7d58e2e084772ab441e2eed2d0e7cc0bc37a432f724c7908828f5dee61",
        [-0.0789718572050333, 1.3786465916782618],
    ),
    "diffusion-fashion_mnist": (
        "b139643d892db82e2dbd512f601ff14dbc3f7ef4f1ee4f6b1dffee8478d44da7",
        [110.90197144076228, 110.90197144076228],
    ),
    "diffusion-cifar10": (
        "d07cbcb0efadaaef31a95248c44fb23ec25d1ba14541fe122f2cc1ca7243a297",
        [-50.45528926048428, 343.34553181100637],
    ),
    "gan-fashion_mnist": (
        "2c2d1e8efcfc8cc0a8a50da56882ac3e56c81ea5b017a9123ecf3918ccd4c2d9",
        [-146.9442428201437, 146.9442428201437, -0.991775393486023, 0.991775393486023],
    ),
    "gan-cifar10": (
        "622109f9a014de83d2c9ba8f634fb9ca8092804fbf815bb03a372a86b3c20efc",
        [-320.4583970295498, 326.7014560996322, -0.7284888532012701, 0.7284888532012701],
    ),
    "normalizing_flow-fashion_mnist": (
        "9528f33c58c6cedbfc1bf82ca79c3c29cd1eba14b71e9d24db1b5f4da41201d5",
        [799.5037767187168, 854.9819283204561, 100.03376007080078, 100.03376007080078],
    ),
    "normalizing_flow-cifar10": (
        "84f169c624c759b4b07014a30c1a7f94c0045b414c3737671a3ba0c3316908c1",
        [3225.689450882579, 3601.846026553685, -73.54585647583008, 73.54585647583008],
    ),
    "vae-cifar10": (
        "b46c5a607920a78b4d8a7530a71193da75e080960dcc2f8cee22d3a7bae77949",
        [3074.007660239935, 3074.007660239935],
    ),
    "vae-conv-fashion_mnist": (
        "494410360384fc275f75a690f5744b3495f6d2fd56da6961740e7e8a266aa07f",
        [795.4773941338062, 795.4773941338062],
    ),
    "vae-conv-cifar10": (
        "662574954d513d25c4c3623d1e4f33132e23e07b352b7ac7f7c4cf02fc04af2f",
        [3086.997034162283, 3086.997034162283],
    ),
}


RECORDED["diffusion-cifar10-as-an-old-checkpoint"] = RECORDED["diffusion-cifar10"]


@pytest.mark.parametrize("case", CASES)
def test_recipe_networks_are_the_ones_recorded_before(case: str) -> None:
    digest, sums = fingerprint(CASES[case])
    recorded_digest, recorded_sums = RECORDED[case]
    assert digest == recorded_digest  # names, shapes and initial weights, exactly
    assert sums == pytest.approx(recorded_sums, rel=1e-6, abs=1e-6)  # the same outputs
