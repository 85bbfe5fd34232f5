"""Every family of conf/model/, declared once for the code that runs each of them: its recipe, a net small enough
for a CPU test, and the metrics that stand for its loss.

The GPU suite, the efficiency benchmark and the host-sync test loop over FAMILIES; tests/test_families.py holds
FAMILIES and NOT_LISTED to conf/model/, so a new family that is in neither fails there, not silently nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Family:
    name: str  # a row's name: the conf/model/ option, or the option and its variant (gan-hinge)
    option: str  # conf/model/<option>.yaml
    recipe: list[str]  # the overrides of its recipe (conf/experiment/), on Fashion-MNIST or Tiny Shakespeare
    unit: Literal["images", "tokens"]  # what a batch's items are
    tiny: list[str]  # the recipe's net shrunk to seconds on a CPU: plumbing checked, not numbers
    losses: list[str]  # the logged metrics that stand for its loss in a table

    @property
    def tiny_recipe(self) -> list[str]:
        return [*self.recipe, *self.tiny]


SMALL_UNET = ["model.base_channels=8", "model.channel_multipliers=[1,2]", "model.attention_heads=2"]
SMALL_GAN = ["model.generator_channels=8", "model.discriminator_channels=8"]
GAN_LOSSES = ["train/d_loss", "train/g_loss"]

FAMILIES = [
    Family("ae", "ae", ["experiment=ae_denoising_fashion_mnist"], "images", ["model.channels=[8,16]"], ["val/loss"]),
    Family("vae", "vae", ["experiment=vae_fashion_mnist"], "images", ["model.hidden_dims=[64]"], ["val/nelbo"]),
    Family("gan-bce", "gan", ["experiment=gan_fashion_mnist"], "images", SMALL_GAN, GAN_LOSSES),
    Family("gan-hinge", "gan", ["experiment=gan_hinge_fashion_mnist"], "images", SMALL_GAN, GAN_LOSSES),
    Family("gan-wgan-gp", "gan", ["experiment=gan_wgan_gp_fashion_mnist"], "images", SMALL_GAN, GAN_LOSSES),
    Family(
        "diffusion",
        "diffusion",
        ["experiment=diffusion_fashion_mnist", "model.num_grid_images=0"],
        "images",
        SMALL_UNET,
        ["val/loss"],
    ),
    Family(
        "flow",
        "diffusion",
        ["experiment=flow_fashion_mnist", "model.num_grid_images=0"],
        "images",
        SMALL_UNET,
        ["val/loss"],
    ),
    Family(
        "classifier",
        "classifier",
        ["experiment=classifier_fashion_mnist", "~callbacks.export_best"],
        "images",
        ["model.channels=[8,16]", "model.feature_dim=16"],
        ["val/loss", "val/acc"],
    ),
    Family(
        "normalizing_flow",
        "normalizing_flow",
        ["experiment=normalizing_flow_fashion_mnist", "model.num_grid_images=0"],
        "images",
        ["model.hidden_channels=8", "model.coupling_layers=2"],
        ["val/bpd"],
    ),
    Family(
        "gpt",
        "gpt",
        ["experiment=gpt_shakespeare", "model.sample_length=0"],
        "tokens",
        ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "data.block_size=32", "data.num_val_windows=16"],
        ["val/loss"],
    ),
]

# the options of conf/model/ that FAMILIES leaves out, and why
NOT_LISTED = {
    "latent_diffusion": "trains on a first stage's checkpoint, made by another run: tests/test_latent_diffusion.py "
    "and the leaderboard train one first",
}


def image_families() -> list[Family]:
    return [family for family in FAMILIES if family.unit == "images"]


def tiny_net(option: str) -> list[str]:
    """The tiny net of the first family listed for a conf/model/ option; none for those NOT_LISTED."""
    return next((family.tiny for family in FAMILIES if family.option == option), [])
