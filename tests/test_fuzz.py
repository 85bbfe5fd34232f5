"""Property: an override of a family's main settings either trains (fast_dev_run) or fails with one clear ConfigError
naming the key at fault, never with an unhandled traceback. Each example draws every setting from values its
family declares valid and must train, or puts one setting outside its range and must be refused naming that key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from genlab.callbacks.finite_loss import NonFiniteLossError
from genlab.errors import ConfigError
from genlab.train import train
from tests.helpers import (
    TEST_OVERRIDES,
    built_on,
    compose_config,
    families,
    model_class,
    shared_data_dir,
    write_mnist_raw,
)

IMAGES = ["data=mnist", "data.val_size=100"]
# 1e9 is valid, and diverges: a run ends, or stops with NonFiniteLossError (test_a_gpt_diverging_...: the GPT's)
LR = st.sampled_from(["1e-3", "3e-4", "1e9"])
BAD_LR = st.sampled_from(["0", "-1e-3"])
BAD_COUNT = st.integers(min_value=-2, max_value=0)  # a count of layers, channels, steps: at least 1

# per family: (valid values of each setting, values outside the range its family declares or the data allows);
# the refusal of a bad value names its key, whatever the other settings are. Settings valid only together are drawn
# together: a tuple of keys, a strategy of tuples of their values
FAMILIES: dict[str, tuple[dict[Any, st.SearchStrategy], dict[str, st.SearchStrategy]]] = {
    "ae": (
        {
            "model.latent_dim": st.integers(min_value=1, max_value=40),
            "model.noise": st.sampled_from(["none", "gaussian", "masking"]),
            "model.noise_level": st.sampled_from(["0", "0.3", "1"]),
            "model.lr": LR,
            "data.batch_size": st.integers(min_value=1, max_value=500),  # the training split: 600 less 100
        },
        {
            "model.latent_dim": BAD_COUNT,
            "model.noise": st.sampled_from(["blur", "None"]),
            "model.noise_level": st.sampled_from(["-1", "2"]),
            "model.lr": BAD_LR,
            "data.batch_size": st.sampled_from([-1, 0, 501, 800]),
        },
    ),
    "vae": (
        {
            "model.latent_dim": st.integers(min_value=1, max_value=40),
            "model.architecture": st.sampled_from(["mlp", "conv"]),
            "model.beta": st.sampled_from(["0", "1", "4"]),
            "model.kl_warmup_steps": st.integers(min_value=0, max_value=40),
            "model.lr": LR,
        },
        {
            "model.latent_dim": BAD_COUNT,
            "model.architecture": st.just("rnn"),
            "model.beta": st.just("-1"),
            "model.kl_warmup_steps": st.integers(min_value=-2, max_value=-1),
            "model.lr": BAD_LR,
        },
    ),
    "gan": (
        {
            "model.latent_dim": st.integers(min_value=1, max_value=40),
            # label smoothing applies to the BCE loss only
            ("model.loss", "model.label_smoothing"): st.sampled_from(
                [("bce", "0"), ("bce", "0.1"), ("bce", "0.49"), ("hinge", "0"), ("wgan-gp", "0")]
            ),
            "model.n_critic": st.integers(min_value=1, max_value=40),
            "model.conditional": st.booleans(),
            "model.lr_generator": LR,
        },
        {
            "model.latent_dim": BAD_COUNT,
            "model.loss": st.just("l2"),
            "model.n_critic": BAD_COUNT,
            "model.label_smoothing": st.sampled_from(["-0.1", "0.5", "1.5"]),
            "model.lr_generator": BAD_LR,
        },
    ),
    "diffusion": (
        {
            # each objective's samplers (null: its default); guidance (a scale other than 1) for a conditional model
            ("model.objective", "model.sampler"): st.sampled_from(
                [("ddpm", "null"), ("ddpm", "ddim"), ("flow", "null"), ("flow", "euler"), ("flow", "heun")]
            ),
            ("model.conditional", "model.guidance_scale"): st.sampled_from(
                [(False, "1"), (True, "0"), (True, "1"), (True, "3")]
            ),
            "model.base_channels": st.sampled_from([4, 8]),
            "model.num_res_blocks": st.just(1),
            "model.channel_multipliers": st.sampled_from(["[1,2]", "[2]"]),
            "model.sample_steps": st.sampled_from([1, 2]),
            "model.num_grid_images": st.sampled_from([0, 10]),
            "model.lr": LR,
        },
        {
            "model.objective": st.just("score"),
            "model.base_channels": BAD_COUNT,
            "model.num_res_blocks": BAD_COUNT,
            "model.channel_multipliers": st.sampled_from(["[]", "[0]", "[1,2,2]"]),  # 28x28 halves twice at most
            "model.sampler": st.just("euler_a"),
            "model.sample_steps": st.sampled_from([0, 1001]),  # at most num_timesteps, 1000
            "model.guidance_scale": st.just("-1"),
            "model.num_grid_images": st.just(-1),
            "model.lr": BAD_LR,
        },
    ),
    "latent_diffusion": (  # over an untrained first stage whose latents are 2 x 14 x 14 (tests/helpers.py)
        {
            ("model.objective", "model.sampler"): st.sampled_from(
                [("ddpm", "null"), ("ddpm", "ddim"), ("flow", "null"), ("flow", "heun")]
            ),
            ("model.conditional", "model.guidance_scale"): st.sampled_from([(False, "1"), (True, "3")]),
            "model.base_channels": st.sampled_from([4, 8]),
            "model.num_res_blocks": st.just(1),
            "model.channel_multipliers": st.sampled_from(["[1]", "[1,2]"]),  # 14x14 latents halve once
            "model.num_grid_images": st.sampled_from([0, 4]),
            "model.lr": LR,
        },
        {
            "model.objective": st.just("score"),
            "model.base_channels": BAD_COUNT,
            "model.channel_multipliers": st.sampled_from(["[]", "[0]"]),
            "model.sampler": st.just("euler_a"),
            "model.num_grid_images": st.just(-1),
            "model.lr": BAD_LR,
        },
    ),
    "classifier": (
        {
            "model.channels": st.sampled_from(["[]", "[8]", "[8,16]", "[4,4]"]),  # []: the features of the pixels
            "model.feature_dim": st.integers(min_value=1, max_value=40),
            "model.dropout": st.sampled_from(["0", "0.5", "0.99"]),
            "model.lr": LR,
        },
        {
            "model.channels": st.sampled_from(["[0]", "[8,-1]"]),
            "model.feature_dim": BAD_COUNT,
            "model.dropout": st.sampled_from(["-0.5", "1", "1.5"]),
            "model.lr": BAD_LR,
        },
    ),
    "normalizing_flow": (
        {
            "model.num_scales": st.integers(min_value=1, max_value=2),  # 28x28 halves twice
            "model.coupling_layers": st.sampled_from([1, 2]),
            "model.hidden_channels": st.sampled_from([4, 8]),
            "model.actnorm": st.booleans(),
            "model.lr": LR,
            "model.logit_alpha": st.sampled_from(["0.05", "0.49"]),
            "model.sample_temperature": st.sampled_from([0.7, 1]),
            "model.num_grid_images": st.sampled_from([0, 8]),
        },
        {
            "model.num_scales": st.sampled_from([-1, 0, 3, 4]),
            "model.coupling_layers": BAD_COUNT,
            "model.hidden_channels": BAD_COUNT,
            "model.lr": BAD_LR,
            "model.logit_alpha": st.sampled_from(["0", "0.5"]),
            "model.sample_temperature": st.sampled_from([0, -1]),
            "model.num_grid_images": st.just(-1),
        },
    ),
    "gpt": (
        {
            "model.n_layer": st.integers(min_value=1, max_value=3),
            "model.n_head": st.sampled_from([1, 2, 4]),
            "model.n_embd": st.sampled_from([8, 16, 32]),  # divisible by every n_head above
            "data.block_size": st.sampled_from([1, 8, 32]),
            "model.dropout": st.sampled_from(["0", "0.2", "0.99"]),
            "model.lr": st.sampled_from(["1e-3", "3e-4"]),
        },
        {
            "model.n_layer": BAD_COUNT,
            "model.n_head": BAD_COUNT,
            "model.n_embd": BAD_COUNT,
            "data.block_size": st.sampled_from([-1, 0, 2_000_000]),  # longer than the text's train split
            "model.dropout": st.sampled_from(["1", "1.5"]),
            "model.lr": BAD_LR,
        },
    ),
}


@st.composite
def overrides(draw: st.DrawFn, family: str) -> tuple[dict[str, Any], str | None]:
    """Every setting valid, or one of them (returned) outside its range."""
    valid, bad = FAMILIES[family]
    values = {}
    for keys, value in draw(st.fixed_dictionaries(valid)).items():
        values |= dict(zip(keys, value, strict=True)) if isinstance(keys, tuple) else {keys: value}
    broken = draw(st.sampled_from([None, *sorted(bad)]))  # as likely as each key: most examples fail fast
    if broken is not None:
        values[broken] = draw(bad[broken])
    return values, broken


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz_data")
    write_mnist_raw(root / "MNIST" / "raw")
    shared = shared_data_dir()
    if shared and (shared / "tinyshakespeare").is_dir():
        (root / "tinyshakespeare").symlink_to(shared / "tinyshakespeare")
    return root


def test_fuzzed_families_are_the_registry() -> None:
    assert FAMILIES.keys() == families().keys(), "FAMILIES: conf/model/"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fast_dev_run_trains_valid_settings_and_refuses_a_bad_one_naming_its_key(
    family: str, data_dir: Path, tmp_path_factory
) -> None:
    if family == "gpt" and not (data_dir / "tinyshakespeare").exists():
        pytest.skip("Tiny Shakespeare is not under $DATA_DIR")
    images = [f"model={family}", *IMAGES, *built_on(model_class(family))]  # latent diffusion: an untrained 1st stage
    base = ["experiment=gpt_shakespeare_cpu"] if family == "gpt" else images

    @settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(overrides(family))
    def check(drawn: tuple[dict[str, Any], str | None]) -> None:
        values, broken = drawn
        run_dir = tmp_path_factory.mktemp("run")
        cfg = compose_config(
            [
                *TEST_OVERRIDES,
                *base,
                "debug=fdr",
                "test=false",  # one batch of training and of validation: the test step is the validation's
                f"paths.data_dir={data_dir}",
                *(f"{key}={value}" for key, value in values.items()),
            ],
            run_dir,
        )
        if broken is None:
            try:
                train(cfg)  # any other exception fails the example
            except NonFiniteLossError as diverged:
                assert "1e9" in values.values() and "\n" not in str(diverged), str(diverged)
            return
        with pytest.raises(ConfigError) as refusal:
            train(cfg)
        # the key itself, or a model key that reads it (model.block_size: ${data.block_size})
        named = [broken] + [f"model.{k}" for k, v in OmegaConf.to_container(cfg.model).items() if v == f"${{{broken}}}"]
        message = str(refusal.value)
        assert message.startswith(tuple(named)) and "\n" not in message, f"{broken}={values[broken]}: {message}"

    check()


def test_a_gpt_diverging_at_its_first_step_stops_with_one_line(data_dir: Path, tmp_path: Path) -> None:
    """lr=1e9 makes the weights, still finite, so large in the first step (its loss was finite) that the validation's
    text sample would draw from infinite scores, where torch.multinomial raised a traceback: one line instead."""
    if not (data_dir / "tinyshakespeare").exists():
        pytest.skip("Tiny Shakespeare is not under $DATA_DIR")
    overrides = [*TEST_OVERRIDES, "experiment=gpt_shakespeare_cpu", "debug=fdr", f"paths.data_dir={data_dir}"]
    with pytest.raises(NonFiniteLossError, match="NaN or infinite") as stopped:
        train(compose_config([*overrides, "model.lr=1e9"], tmp_path))
    assert "\n" not in str(stopped.value)
