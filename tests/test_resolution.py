"""Every image network takes its depth from the image size (genlab/models/nets/resolution.py), from 16 to 256 pixels
and at sizes that are no power of two; a size it cannot take is refused in one line naming the sizes it can."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.models.nets.classifier import ConvClassifier
from genlab.models.nets.conv import ConvDecoder, ConvEncoder
from genlab.models.nets.coupling_flow import CouplingFlow
from genlab.models.nets.dcgan import Discriminator, Generator
from genlab.models.nets.resolution import halvings
from genlab.models.nets.unet import SelfAttention, UNet, ddpm_multipliers

# (height, width) -> the halvings on the way to 8 pixels or fewer, and the lowest resolution's side
SIZES = {
    (16, 16): (1, 8),
    (28, 28): (2, 7),
    (32, 32): (2, 8),
    (48, 48): (3, 6),
    (64, 64): (3, 8),
    (128, 128): (4, 8),
    (256, 256): (5, 8),
    (36, 36): (2, 9),  # an odd side stops the halving
    (48, 64): (3, 6),  # not square: the smaller side decides
}


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@torch.no_grad()
def test_each_network_is_as_deep_as_the_image_halves_and_keeps_its_shape(size: tuple[int, int]) -> None:
    count, lowest = SIZES[size]
    assert halvings(*size) == count and min(size) >> count == lowest
    lowest_shape = (size[0] >> count, size[1] >> count)
    image_shape = (3, *size)
    images, labels = torch.rand(1, *image_shape), torch.tensor([1])  # one image: 256x256 stays cheap

    generator, discriminator = Generator(8, image_shape, channels=4, num_classes=2), Discriminator(image_shape, 4, 2)
    assert generator.project[1].unflattened_size[1:] == lowest_shape
    assert generator.eval()(torch.randn(1, 8), labels).shape == images.shape
    assert discriminator(images, labels).shape == (1,)

    encoder, decoder = ConvEncoder(image_shape, 6), ConvDecoder(image_shape, 6)
    assert len(encoder.features) == 2 * count + 1  # a conv and a ReLU per stage, then the flatten
    assert decoder(encoder(images)).shape == images.shape

    classifier = ConvClassifier(image_shape, num_classes=3, feature_dim=5).eval()
    assert sum(isinstance(layer, nn.MaxPool2d) for layer in classifier.features) == count
    assert classifier(images).shape == (1, 3)

    flow = CouplingFlow(image_shape, coupling_layers=1, hidden_channels=4)
    z, log_det = flow(images)
    assert flow.latent_shape == (3 * 4**count, *lowest_shape) == z.shape[1:] and log_det.shape == (1,)
    torch.testing.assert_close(flow.inverse(z), images, atol=1e-4, rtol=1e-4)

    unet = UNet(image_shape, 4, num_res_blocks=1, attention_heads=2, num_classes=2, attention_resolutions=(16,))
    attended = set()
    for module in unet.modules():
        if isinstance(module, SelfAttention):
            module.register_forward_hook(lambda module, inputs, output: attended.add(tuple(inputs[0].shape[2:])))
    assert unet(images, torch.rand(1), labels).shape == images.shape
    assert len(unet.down_levels) == count
    # the middle, and DDPM's 16x16 where the image has such a level (not 28x28, 48x48 or 36x36)
    sixteen = {(16, 16)} if 16 in [size[0] >> level for level in range(count)] else set()
    assert attended == {lowest_shape} | sixteen


@pytest.mark.parametrize(
    ("image_size", "multipliers"),
    [(16, (1,)), (28, (1, 2)), (32, (1, 2)), (64, (1, 2, 2)), (128, (1, 1, 2, 2)), (256, (1, 1, 2, 2, 4))],
)
def test_the_unet_takes_ddpm_channel_multipliers_for_the_image_size(image_size: int, multipliers: tuple) -> None:
    unet = UNet((3, image_size, image_size), base_channels=2, num_res_blocks=1, attention_heads=1)
    assert [blocks[0].conv1.out_channels // 2 for blocks in unet.down_levels] == list(multipliers)


@pytest.mark.parametrize("side", [8, 15, 17, 255])
@pytest.mark.parametrize(
    ("network", "build"),
    [
        ("the DCGAN generator", lambda shape: Generator(8, shape, 4)),
        ("the DCGAN discriminator", lambda shape: Discriminator(shape, 4)),
        ("the convolutional encoder and decoder", lambda shape: ConvEncoder(shape, 4)),
        ("the classifier", lambda shape: ConvClassifier(shape, 2)),
        ("the normalizing flow", lambda shape: CouplingFlow(shape, coupling_layers=1, hidden_channels=2)),
        ("the U-Net", lambda shape: UNet(shape, base_channels=2, attention_heads=1)),
    ],
)
def test_a_size_a_network_cannot_halve_is_refused_naming_the_sizes_it_takes(side: int, network: str, build) -> None:
    with pytest.raises(ConfigError) as caught:
        build((3, side, side))
    assert str(caught.value) == (
        f"{network} cannot take {side}x{side} images: it halves them on the way to 8 pixels or fewer, and these do "
        f"not halve; it takes sides that are even and above 8 (16, 28, 32, 48, 64, 128, 256, ...)"
    )


def test_an_image_past_ddpm_s_sizes_needs_its_multipliers_given() -> None:
    assert ddpm_multipliers((3, 512, 512)) == (1, 1, 2, 2, 4, 4)  # DDPM's 256-pixel multipliers, all six levels
    with pytest.raises(ConfigError, match="1024x1024 halves 7 times: give model.channel_multipliers$"):
        ddpm_multipliers((3, 1024, 1024))
