"""Diffusion and flow matching: the forward process, the samplers with exact predictors, the U-Net, and the
family through src.train, src.sample and src.eval."""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from genlab.callbacks.checkpoint import RunCheckpointIO
from genlab.capabilities import ImageSampler, StepwiseSampler, use_sampling_options
from genlab.checkpoints import load_model
from genlab.errors import ConfigError
from genlab.eval import evaluate
from genlab.metrics import load_feature_classifier
from genlab.models.diffusion import (
    Diffusion,
    ddim_trajectory,
    ddpm_trajectory,
    euler_trajectory,
    heun_trajectory,
    noise_schedule,
    spaced_timesteps,
)
from genlab.models.gan import GAN
from genlab.models.nets.unet import UNet
from genlab.sample import sample
from genlab.train import train
from genlab.utils.config import compose
from tests.helpers import TEST_OVERRIDES, compose_config, run_module, run_train, shared_data_dir, write_idx

TINY = {"base_channels": 8, "channel_multipliers": (1, 2), "num_res_blocks": 1, "attention_heads": 2}


def _last(trajectory) -> Tensor:
    return collections.deque(trajectory, maxlen=1).pop()


# --- the U-Net ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_unet_keeps_the_image_shape(image_shape: tuple[int, int, int], num_classes: int) -> None:
    net = UNet(
        image_shape,
        base_channels=8,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        attention_heads=2,
        num_classes=num_classes,
    )
    x = torch.randn(3, *image_shape)
    labels = torch.tensor([0, 9, 10]) if num_classes else None  # 10: "no class"
    assert net(x, torch.rand(3), labels).shape == x.shape
    if num_classes:
        assert net(x, torch.rand(3)).shape == x.shape  # labels=None: all "no class"


# --- the forward process -----------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_forward_process_matches_its_closed_form(schedule: str) -> None:
    """q(x_t | x_0) from iterating q(x_s | x_{s-1}) = N(sqrt(1 - beta_s) x_{s-1}, beta_s) equals the closed form."""
    model = Diffusion((1, 4, 4), 10, schedule=schedule, **TINY)
    betas = noise_schedule(schedule, 1000)
    x0 = torch.linspace(-1, 1, 16, dtype=torch.float64).view(1, 1, 4, 4)
    # the moments, step by step: mean sqrt(1 - beta) m, variance (1 - beta) v + beta
    mean, variance = x0.clone(), torch.zeros(())
    # and Monte Carlo: 4,000 chains run step by step
    generator = torch.Generator().manual_seed(0)
    chains = x0.expand(4000, -1, -1, -1).clone()
    for t, beta in enumerate(betas):
        mean, variance = (1 - beta).sqrt() * mean, (1 - beta) * variance + beta
        chains = (1 - beta).sqrt() * chains + beta.sqrt() * torch.randn(
            chains.shape, generator=generator, dtype=torch.float64
        )
        if t in (0, 99, 499, 999):
            alpha_cumprod = model.alphas_cumprod[t].double()
            assert torch.allclose(mean, alpha_cumprod.sqrt() * x0, atol=1e-5)
            assert torch.isclose(variance, 1 - alpha_cumprod, atol=1e-5)
            closed = model.q_sample(
                x0.float().expand(4000, -1, -1, -1),
                torch.full((4000,), t),
                torch.randn(4000, 1, 4, 4, generator=generator),
            )
            for draws in (chains, closed.double()):  # 4,000 draws: within about 4 standard errors
                assert torch.allclose(draws.mean(0), mean, atol=4 * math.sqrt(float(variance) / 4000) + 1e-6)
                assert torch.allclose(draws.var(0), variance.expand_as(mean), rtol=0.1, atol=1e-6)


# --- samplers with exact predictors ------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [10, 50, 1000])
def test_a_perfect_noise_predictor_recovers_x0(schedule: str, steps: int) -> None:
    """For data that is one image x0, the true noise of x_t is (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t):
    DDIM and ancestral DDPM sampling with it end on x0 from any noise."""
    alphas_cumprod = torch.cumprod(1 - noise_schedule(schedule, 1000), 0).float()
    x0 = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def true_noise(x: Tensor, t: int) -> Tensor:
        return (x - alphas_cumprod[t].sqrt() * x0) / (1 - alphas_cumprod[t]).sqrt()

    timesteps = spaced_timesteps(1000, steps)
    assert timesteps == sorted(set(timesteps), reverse=True) and timesteps[-1] == 0 and len(timesteps) == steps
    noise = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    expected = x0.expand(8, -1, -1, -1)
    assert torch.allclose(_last(ddim_trajectory(true_noise, noise, alphas_cumprod, timesteps)), expected, atol=1e-4)
    assert torch.allclose(_last(ddpm_trajectory(true_noise, noise, alphas_cumprod, timesteps)), expected, atol=1e-4)


def test_ddim_with_the_ideal_denoiser_of_two_points_lands_on_both() -> None:
    """Data: two points, equally likely. E[x0 | x_t] is a softmax over them; DDIM's deterministic paths from
    Gaussian noise end on one point or the other, half of them on each."""
    alphas_cumprod = torch.cumprod(1 - noise_schedule("cosine", 1000), 0).float()
    points = torch.tensor([[-0.6, 0.4], [0.5, -0.5]])  # (2, D)

    def ideal_noise(x: Tensor, t: int) -> Tensor:  # x (B, D)
        alpha_cumprod = alphas_cumprod[t]
        distances = ((x[:, None] - alpha_cumprod.sqrt() * points[None]) ** 2).sum(-1)  # (B, 2)
        posterior = torch.softmax(-distances / (2 * (1 - alpha_cumprod)), dim=1)  # p(x0 = point | x_t)
        return (x - alpha_cumprod.sqrt() * posterior @ points) / (1 - alpha_cumprod).sqrt()

    noise = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    samples = _last(ddim_trajectory(ideal_noise, noise, alphas_cumprod, spaced_timesteps(1000, 20)))
    nearest = torch.cdist(samples, points)  # (B, 2)
    assert nearest.min(1).values.max() < 1e-3
    assert 0.45 < (nearest.argmin(1) == 0).float().mean() < 0.55


# tolerances on the standard deviation: Euler's first-order error at 50 steps is about 3%, Heun's at 20 below 1%
@pytest.mark.parametrize(
    ("integrate", "steps", "tolerance"), [(euler_trajectory, 50, 0.05), (heun_trajectory, 20, 0.015)]
)
def test_flow_with_the_true_velocity_lands_on_a_gaussian(integrate, steps: int, tolerance: float) -> None:
    """Data N(mu, s^2 I), x_t = (1 - t) noise + t x0: the velocity E[x0 - noise | x_t] is linear in x_t;
    integrating it from t = 0 ends on the data's mean and standard deviation."""
    mu, s = torch.tensor([0.5, -0.3, 0.2, 0.0]), 0.4

    def true_velocity(x: Tensor, t: float) -> Tensor:
        a, b = 1 - t, t  # x_t = a noise + b x0, with Var(x_t) = a^2 + b^2 s^2
        return mu + (b * s**2 - a) / (a**2 + b**2 * s**2) * (x - b * mu)

    noise = torch.randn(20000, 4, generator=torch.Generator().manual_seed(0))
    samples = _last(integrate(true_velocity, noise, steps))
    assert torch.allclose(samples.mean(0), mu, atol=0.01)
    assert torch.allclose(samples.std(0), torch.full((4,), s), rtol=tolerance)


def test_flow_euler_lands_exactly_on_a_point_mass() -> None:
    point = torch.tensor([0.3, -0.7])
    velocity = lambda x, t: (point - x) / (1 - t)  # noqa: E731  E[x0 - noise | x_t] for x0 = point
    samples = _last(euler_trajectory(velocity, torch.randn(100, 2), 7))
    assert torch.allclose(samples, point.expand(100, -1), atol=1e-5)


# --- the model: sampling options, guidance, determinism, errors ----------------------------------------
class LabelEcho(nn.Module):
    """A stand-in network whose prediction is 0.01 * label everywhere ("no class" is label 10)."""

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        return 0.01 * labels.float()[:, None, None, None].expand_as(x)


@pytest.mark.parametrize("guidance_scale", [0.0, 1.0, 3.0])
def test_classifier_free_guidance_mixes_the_conditional_and_unconditional_predictions(guidance_scale: float) -> None:
    model = Diffusion(
        (1, 4, 4),
        10,
        objective="flow",
        conditional=True,
        ema_decay=None,
        sample_steps=1,
        guidance_scale=guidance_scale,
        **TINY,
    )
    model.unet = LabelEcho()
    labels = torch.tensor([0, 3, 9])
    # one Euler step from zero noise: the sample is the guided velocity itself
    images = model.denoising_trajectory(torch.zeros(3, 1, 4, 4), 2, labels)[-1] * 2 - 1
    conditional, unconditional = 0.01 * labels.float(), torch.full((3,), 0.1)
    expected = unconditional + guidance_scale * (conditional - unconditional)
    assert torch.allclose(images[:, 0, 0, 0], expected, atol=1e-6)


@pytest.mark.parametrize(("objective", "samplers"), [("ddpm", ["ddim", "ddpm"]), ("flow", ["euler", "heun"])])
def test_sampling_is_reproducible_from_a_generator(objective: str, samplers: list[str]) -> None:
    model = Diffusion((1, 8, 8), 10, objective=objective, conditional=True, sample_steps=3, **TINY).eval()
    assert isinstance(model, StepwiseSampler) and isinstance(model, ImageSampler)
    for sampler in samplers:
        model.set_sampling(sampler=sampler, guidance_scale=2.0)
        first = model.sample(4, generator=torch.Generator().manual_seed(1))
        assert first.shape == (4, 1, 8, 8) and 0 <= first.min() and first.max() <= 1
        assert torch.equal(first, model.sample(4, generator=torch.Generator().manual_seed(1)))
        assert not torch.equal(first, model.sample(4, generator=torch.Generator().manual_seed(2)))
    trajectory = model.denoising_trajectory(torch.randn(2, 1, 8, 8), 10)
    assert trajectory.shape == (4, 2, 1, 8, 8)  # at most steps + 1 states


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"channel_multipliers": [1, 2, 2]},
            "model.channel_multipliers=[1, 2, 2] halves the 28x28 images 3 times, which does not divide evenly; "
            "at most 2 for this size",
        ),
        ({"attention_heads": 3}, "model.attention_heads=3 must divide the channels of every resolution that attends"),
        (  # the middle's 16 channels divide by 16 heads; those of the 28x28 level, 8, do not
            {"attention_heads": 16, "attention_resolutions": [28]},
            "model.attention_heads=16 must divide the channels of every resolution that attends "
            "(base_channels * channel_multipliers: 8, 16)",
        ),
        ({"sampler": "euler"}, "model.sampler=euler does not fit model.objective=ddpm: its samplers are ddpm, ddim"),
        ({"objective": "flow", "sampler": "ddim"}, "model.sampler=ddim does not fit model.objective=flow"),
        ({"sample_steps": 1001}, "model.sample_steps=1001: expected at most model.num_timesteps=1000"),
        ({"guidance_scale": 2.0}, "model.guidance_scale=2.0: classifier-free guidance needs a class-conditional model"),
    ],
)
def test_settings_that_do_not_fit_together_are_refused_naming_the_key(options: dict, message: str) -> None:
    # each setting's own range: tests/test_configs.py, from the declarations
    with pytest.raises(ConfigError) as caught:
        Diffusion((1, 28, 28), 10, **{**TINY, **options})
    assert message in str(caught.value)


def test_sampling_options_are_checked_and_refused_for_models_that_do_not_step() -> None:
    model = Diffusion((1, 8, 8), 10, objective="flow", **TINY)
    use_sampling_options(model, {"steps": 7, "sampler": "heun", "guidance_scale": None})
    assert (model.sampling.steps, model.sampling.sampler, model.sampling.guidance_scale) == (7, "heun", 1.0)
    with pytest.raises(ConfigError, match=r"^sampler=ddpm does not fit model.objective=flow: its samplers are euler"):
        use_sampling_options(model, {"sampler": "ddpm"})
    with pytest.raises(ConfigError, match=r"^guidance_scale=3: classifier-free guidance needs a class-conditional"):
        use_sampling_options(model, {"guidance_scale": 3})
    # the ranges the constructor declares for sample_steps and guidance_scale
    with pytest.raises(ConfigError, match=r"^steps=2.5 is not valid for Diffusion: expected int \(Input should be a"):
        use_sampling_options(model, {"steps": 2.5})
    with pytest.raises(
        ConfigError,
        match=r"^guidance_scale=-1 is not valid for Diffusion: expected float \(Input "
        r"should be greater than or equal to 0\)",
    ):
        use_sampling_options(model, {"guidance_scale": -1})
    gan = GAN(image_shape=(1, 28, 28), num_classes=10, generator_channels=8, discriminator_channels=8)
    use_sampling_options(gan, {"steps": None, "sampler": None, "guidance_scale": None})  # nothing given: fine
    with pytest.raises(ConfigError, match=r"^steps=20 sampler=ddim: GAN does not sample in steps"):
        use_sampling_options(gan, {"steps": 20, "sampler": "ddim"})


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
@pytest.mark.parametrize("objective", ["ddpm", "flow"])
def test_a_checkpoint_reloads_to_the_same_samples_and_losses(tmp_path: Path, objective: str) -> None:
    model = Diffusion(
        (1, 8, 8),
        10,
        objective=objective,
        conditional=True,
        sample_steps=3,
        num_grid_images=0,
        lr=1e-2,
        warmup_steps=0,
        **TINY,
    )
    data = torch.utils.data.TensorDataset(torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,)))
    config = {"model": {"_target_": "genlab.models.diffusion.Diffusion"}}
    trainer = L.Trainer(
        max_steps=3,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        plugins=[RunCheckpointIO(config)],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=8))
    assert model.ema_unet.n_averaged.item() == 3  # once per optimizer step
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    reloaded = load_model(tmp_path / "model.ckpt")
    model.eval()
    assert torch.equal(
        model.sample(4, generator=torch.Generator().manual_seed(0)),
        reloaded.sample(4, generator=torch.Generator().manual_seed(0)),
    )
    images, labels = data.tensors
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        assert torch.equal(
            model.loss(model.sampling_network, images, labels, generator()),
            reloaded.loss(reloaded.sampling_network, images, labels, generator()),
        )


# --- the family through the entry points, on Fashion-MNIST ----------------------------------------------
TINY_OVERRIDES = [
    "model.base_channels=8",
    "model.channel_multipliers=[1,2]",
    "model.num_res_blocks=1",
    "model.attention_heads=2",
    "model.sample_steps=3",
    "model.num_grid_images=10",
    "data.batch_size=32",
    "trainer.max_steps=4",
    "trainer.log_every_n_steps=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


def write_small_fashion_mnist(shared: Path, root: Path, num_train: int = 2000, num_test: int = 500) -> None:
    """The first images of the real Fashion-MNIST splits, in its raw IDX files: src.eval scores a small test split."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", num_train), ("t10k", num_test)):
        for kind, header, shape in (("images", 16, (count, 28, 28)), ("labels", 8, (count,))):
            name = f"{prefix}-{kind}-idx{len(shape)}-ubyte"
            data = np.fromfile(shared / "FashionMNIST" / "raw" / name, dtype=np.uint8, offset=header)
            write_idx(raw / name, data[: math.prod(shape)].reshape(shape))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two Fashion-MNIST recipes, tiny, on 2,000 of its images: diffusion through `python -m src.train`, flow
    in this process."""
    shared = shared_data_dir()
    if shared is None or not (shared / "FashionMNIST" / "raw").is_dir():
        pytest.skip("Fashion-MNIST is not under $DATA_DIR (set DATA_DIR=../shared/data)")
    root = tmp_path_factory.mktemp("diffusion")
    data_dir = root / "data"
    write_small_fashion_mnist(shared, data_dir)
    data = [f"paths.data_dir={data_dir}", "data.val_size=200"]
    result = run_train(
        "experiment=diffusion_fashion_mnist",
        *TINY_OVERRIDES,
        *data,
        f"paths.log_dir={root}",
        "extras.print_config=false",
        "~callbacks.rich_progress_bar",
        "+trainer.enable_progress_bar=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (ddpm_run,) = (root / "diffusion_fashion_mnist" / "runs").iterdir()
    flow_run = root / "flow"
    train(compose_config([*TEST_OVERRIDES, "experiment=flow_fashion_mnist", *TINY_OVERRIDES, *data], flow_run))
    return {"data": data_dir, "ddpm": ddpm_run, "flow": flow_run}


@pytest.mark.parametrize("objective", ["ddpm", "flow"])
def test_training_logs_losses_and_draws_samples_and_trajectories(trained: dict[str, Path], objective: str) -> None:
    run = trained[objective]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"train/loss", "val/loss", "test/loss"} <= metrics.keys()
    assert all(math.isfinite(metrics[key]) for key in ("train/loss", "val/loss", "test/loss"))
    images = sorted(path.name for path in (run / "images").iterdir())
    assert images == ["samples_epoch000.png", "trajectory_epoch000.png"]
    assert len(list((run / "checkpoints").glob("epoch_*.ckpt"))) == 1  # the best by val/loss
    # the strip: one row per image of the grid's first row (one per class), noise to image across
    strip = Image.open(run / "images" / "trajectory_epoch000.png")
    samples = Image.open(run / "images" / "samples_epoch000.png")
    tile = samples.height - 2  # the grid is one row of 10 (a tile and its 2-pixel padding), with 2 pixels below
    assert strip.size == (4 * tile + 2, 10 * tile + 2)  # 10 rows of 4 states: the noise and the 3 steps' states


@pytest.mark.integration
@pytest.mark.parametrize(
    ("objective", "sampler"), [("ddpm", "ddpm"), ("ddpm", "ddim"), ("flow", "euler"), ("flow", "heun")]
)
def test_every_sampler_runs_from_src_sample(
    tmp_path: Path, trained: dict[str, Path], objective: str, sampler: str
) -> None:
    ckpt = trained[objective] / "checkpoints" / "last.ckpt"
    options = [f"ckpt_path={ckpt}", "num_samples=6", f"sampler={sampler}", "steps=2", "guidance_scale=3"]
    if sampler == "ddpm":  # once as a user runs it
        result = run_module("src.sample", *options, f"paths.log_dir={tmp_path}")
        assert result.returncode == 0, result.stderr[-3000:]
        (path,) = tmp_path.glob("sample/runs/*/samples.png")
    else:
        path = sample(compose([*options, f"paths.output_dir={tmp_path}"], config_name="sample"))
    # 6 images of 28x28 drawn at 56x56, 3 per row, 2-pixel padding
    assert Image.open(path).size == (3 * 58 + 2, 2 * 58 + 2)


def test_sample_refuses_what_the_model_cannot_use(tmp_path: Path, trained: dict[str, Path]) -> None:
    ckpt = trained["flow"] / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"^sampler=ddim does not fit model.objective=flow"):
        sample(compose([f"ckpt_path={ckpt}", "sampler=ddim", f"paths.output_dir={tmp_path}"], config_name="sample"))
    with pytest.raises(ConfigError, match=r"^steps=0 is not valid for src.sample: expected int or null"):
        sample(compose([f"ckpt_path={ckpt}", "steps=0", f"paths.output_dir={tmp_path}"], config_name="sample"))


def test_eval_reports_the_test_loss_and_sample_quality(tmp_path: Path, trained: dict[str, Path]) -> None:
    metrics = evaluate(
        compose(
            [
                f"ckpt_path={trained['ddpm'] / 'checkpoints' / 'last.ckpt'}",
                f"paths.data_dir={trained['data']}",
                f"paths.output_dir={tmp_path}",
                "num_samples=60",
                "batch_size=500",
                "steps=2",
                "sampler=ddpm",
                "metrics.kid_subset_size=30",
            ],
            config_name="eval",
        )
    )
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)
    assert {"test/loss", "sample/fid", "sample/kid", "sample/is"} <= metrics.keys()
    assert metrics["sample/fid"] > 0 and 1.0 <= metrics["sample/is"] <= 10.0


def test_sample_fid_during_training_picks_the_best_checkpoint(tmp_path: Path, trained: dict[str, Path]) -> None:
    cfg = compose_config(
        [
            *TEST_OVERRIDES,
            "experiment=flow_fashion_mnist",
            *TINY_OVERRIDES,
            f"paths.data_dir={trained['data']}",
            "data.val_size=200",
            "trainer.max_steps=-1",
            "trainer.max_epochs=2",
            "model.num_grid_images=0",
            "callbacks=[default,sample_fid]",
            "callbacks.sample_fid.num_samples=50",
            "callbacks.sample_fid.batch_size=50",
            "monitor.metric=val/fid",
            "test=false",
        ],
        tmp_path / "run",
    )
    value, metrics = train(cfg)
    assert value == metrics["val/fid"] > 0 and {"val/kid", "val/is", "val/loss"} <= metrics.keys()
    assert len(list((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))) == 1  # chosen by val/fid


# about a minute on one CPU core: 150 training steps, then 200 guided samples of 20 steps. After 150 steps the
# samples were of their asked class 59-61% of the time (seeds 0, 1, 42), and of the class one off at most 1%
@pytest.mark.slow
def test_conditional_samples_are_of_the_asked_classes(tmp_path: Path, fashion_mnist_dir: Path) -> None:
    cfg = compose_config(
        [
            *TEST_OVERRIDES,
            "experiment=flow_fashion_mnist",
            f"paths.data_dir={fashion_mnist_dir}",
            "trainer.limit_train_batches=150",
            "trainer.max_steps=150",
            "model.num_grid_images=0",
            "test=false",
        ],
        tmp_path / "run",
    )
    train(cfg)
    model = load_model(tmp_path / "run" / "checkpoints" / "last.ckpt")
    model.set_sampling(steps=20, guidance_scale=2.0)
    classifier = load_feature_classifier(None, "fashion_mnist", (1, 28, 28))
    labels = torch.arange(10).repeat(20)
    with torch.no_grad():
        predicted = classifier(model.sample(len(labels), labels, torch.Generator().manual_seed(0))).argmax(1)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy > 0.3, accuracy  # chance is 0.1


def test_cifar10_recipe_runs_two_steps_on_random_images(tmp_path: Path, cifar10_dir: Path) -> None:
    """The GPU recipe as it is (its U-Net, bf16-mixed), on the CPU: two steps of batch 2, and its pictures."""
    cfg = compose_config(
        [
            *TEST_OVERRIDES,
            "experiment=diffusion_cifar10",
            "+trainer.fast_dev_run=2",
            "trainer.accelerator=cpu",
            "data._target_=tests.helpers.LocalCIFAR10DataModule",
            f"paths.data_dir={cifar10_dir}",
            "data.val_size=20",
            "data.batch_size=2",
            "model.sample_steps=2",
            "model.num_grid_images=2",
        ],
        tmp_path / "run",
    )
    _, metrics = train(cfg)
    assert {"train/loss", "val/loss", "test/loss"} <= metrics.keys()
    assert all(math.isfinite(value) for value in metrics.values())
    assert sorted(path.name for path in (tmp_path / "run" / "images").iterdir()) == [
        "samples_epoch000.png",
        "trajectory_epoch000.png",
    ]
