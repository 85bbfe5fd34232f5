"""Property: any override of a family's main settings either trains (fast_dev_run) or fails with one of our
clear errors, never with an unhandled traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genlab.errors import GenlabError
from genlab.train import train
from tests.helpers import TEST_OVERRIDES, built_on, compose_config, model_class, write_mnist_raw

IMAGES = ["data=mnist", "data.val_size=100"]
SMALL_INT = st.integers(min_value=-2, max_value=40)
LR = st.sampled_from(["1e-3", "0", "-1e-3", "1e9"])

FAMILIES = {
    "ae": st.fixed_dictionaries(
        {
            "model.latent_dim": SMALL_INT,
            "model.noise": st.sampled_from(["none", "gaussian", "masking", "blur"]),
            "model.noise_level": st.sampled_from(["0.3", "-1", "2"]),
            "model.lr": LR,
            "data.batch_size": st.integers(min_value=-1, max_value=800),
        }
    ),
    "vae": st.fixed_dictionaries(
        {
            "model.latent_dim": SMALL_INT,
            "model.architecture": st.sampled_from(["mlp", "conv", "rnn"]),
            "model.beta": st.sampled_from(["1", "0", "-1"]),
            "model.kl_warmup_steps": SMALL_INT,
            "model.lr": LR,
        }
    ),
    "gan": st.fixed_dictionaries(
        {
            "model.latent_dim": SMALL_INT,
            "model.loss": st.sampled_from(["bce", "hinge", "wgan-gp", "l2"]),
            "model.n_critic": SMALL_INT,
            "model.label_smoothing": st.sampled_from(["0", "0.1", "1.5"]),
            "model.conditional": st.booleans(),
            "model.lr_generator": LR,
        }
    ),
    "diffusion": st.fixed_dictionaries(
        {
            "model.objective": st.sampled_from(["ddpm", "flow", "score"]),
            "model.base_channels": st.sampled_from([4, 6, 0]),
            "model.num_res_blocks": st.sampled_from([1, -1]),
            "model.channel_multipliers": st.sampled_from(["[1,2]", "[2]", "[1,2,2]", "[]"]),
            "model.sampler": st.sampled_from(["null", "ddim", "heun"]),
            "model.sample_steps": st.sampled_from([2, 1001, 0]),
            "model.guidance_scale": st.sampled_from(["1", "3", "-1"]),
            "model.conditional": st.booleans(),
            "model.num_grid_images": st.sampled_from([10, 0, -1]),
            "model.lr": LR,
        }
    ),
    "latent_diffusion": st.fixed_dictionaries(
        {
            "model.objective": st.sampled_from(["ddpm", "flow", "score"]),
            "model.base_channels": st.sampled_from([4, 0]),
            # 14x14 latents halve once
            "model.channel_multipliers": st.sampled_from(["[1]", "[1,2]", "[]"]),
            "model.sampler": st.sampled_from(["null", "ddim", "heun"]),
            "model.guidance_scale": st.sampled_from(["1", "3"]),
            "model.conditional": st.booleans(),
            "model.first_stage_hash": st.sampled_from(["null", "0" * 64]),
            "model.num_grid_images": st.sampled_from([4, 0]),
        }
    ),
    "classifier": st.fixed_dictionaries(
        {
            "model.channels": st.sampled_from(["[8]", "[8,16]", "[8,8,8,8,8,8]", "[]", "[0]"]),
            "model.feature_dim": SMALL_INT,
            "model.dropout": st.sampled_from(["0", "0.5", "1.5"]),
            "model.lr": LR,
        }
    ),
    "normalizing_flow": st.fixed_dictionaries(
        {
            "model.num_scales": st.integers(min_value=-1, max_value=4),
            "model.coupling_layers": st.sampled_from([1, 0]),
            "model.hidden_channels": st.sampled_from([4, 0]),
            "model.actnorm": st.booleans(),
            "model.lr": LR,
            "model.logit_alpha": st.sampled_from(["0.05", "0", "0.5"]),
            "model.sample_temperature": st.sampled_from([1, 0]),
            "model.num_grid_images": st.sampled_from([8, 0, -1]),
        }
    ),
    "gpt": st.fixed_dictionaries(
        {
            "model.n_layer": SMALL_INT,
            "model.n_head": st.integers(min_value=-1, max_value=8),
            "model.n_embd": st.integers(min_value=-1, max_value=64),
            "data.block_size": st.sampled_from([-1, 0, 8, 2_000_000]),
            "model.dropout": st.sampled_from(["0", "0.2", "1.5"]),
            "model.lr": LR,
        }
    ),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import shared_data_dir

    root = tmp_path_factory.mktemp("fuzz_data")
    write_mnist_raw(root / "MNIST" / "raw")
    shared = shared_data_dir()
    if shared and (shared / "tinyshakespeare").is_dir():
        (root / "tinyshakespeare").symlink_to(shared / "tinyshakespeare")
    return root


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fast_dev_run_succeeds_or_fails_clearly(family: str, data_dir: Path, tmp_path_factory) -> None:
    if family == "gpt" and not (data_dir / "tinyshakespeare").exists():
        pytest.skip("Tiny Shakespeare is not under $DATA_DIR")
    images = [f"model={family}", *IMAGES, *built_on(model_class(family))]  # latent diffusion: an untrained 1st stage
    base = ["experiment=gpt_shakespeare_cpu"] if family == "gpt" else images

    @settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(FAMILIES[family])
    def check(overrides: dict) -> None:
        run_dir = tmp_path_factory.mktemp("run")
        cfg = compose_config(
            [
                *TEST_OVERRIDES,
                *base,
                "debug=fdr",
                f"paths.data_dir={data_dir}",
                *(f"{key}={value}" for key, value in overrides.items()),
            ],
            run_dir,
        )
        try:
            train(cfg)
        except GenlabError:
            pass  # one of ours: a message that names the key and what was expected

    check()
