"""Latent diffusion: the first stage it builds on (a VAE whose latent is a map), read through the one checkpoint reader
and rebuild and refused when planted or other than the one it trained over, the process on its latents, their scale,
and the family through src.train, src.sample and src.eval."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from genlab.capabilities import FirstStage, TrainedModel
from genlab.checkpoints import CheckpointError, load_model, read_checkpoint
from genlab.checkpoints.rebuild import content_hash, trained_models
from genlab.errors import ConfigError
from genlab.eval import main as eval_main
from genlab.models.latent_diffusion import LatentDiffusion
from genlab.models.vae import VAE
from genlab.sample import main as sample_main
from genlab.train import train
from tests.helpers import TEST_OVERRIDES, compose_config, first_stage, run_main, write_mnist_raw

TINY = {"base_channels": 8, "channel_multipliers": (1,), "num_res_blocks": 1, "attention_heads": 2}


def trained(path: Path) -> TrainedModel:
    """The first stage at `path`, as genlab/checkpoints/rebuild.py hands it to the family."""
    return trained_models(LatentDiffusion, {"first_stage": path}, "model")["first_stage"]


def latent_diffusion(path: Path | None = None, **settings: Any) -> LatentDiffusion:
    settings = {"image_shape": (1, 28, 28), "num_classes": 10, "conditional": True, **TINY, **settings}
    return LatentDiffusion(trained(path or first_stage()), **settings)


def save(model: torch.nn.Module, path: Path) -> Path:
    """A checkpoint of the model in the form src.train writes one: its state dict, hyperparameters and config."""
    hyper_parameters = dict(model.hparams)
    config = {"model": {"_target_": f"{type(model).__module__}.{type(model).__name__}", **hyper_parameters}}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hyper_parameters, "config": config}, path)
    return path


# --- the first stage: a VAE whose latent is a map ----------------------------------------------------------------
def test_a_spatial_vae_encodes_images_to_a_latent_map_and_decodes_it() -> None:
    vae = VAE((1, 28, 28), latent_dim=2, architecture="spatial", channels=(8,))
    images = torch.rand(3, 1, 28, 28)
    mu, logvar = vae.encode(images)
    assert mu.shape == logvar.shape == (3, *vae.latent_shape) == (3, 2, 14, 14)
    assert vae.generate(mu).shape == images.shape and vae.sample(2).shape == (2, 1, 28, 28)
    assert isinstance(vae, FirstStage)
    assert torch.isfinite(vae.nll_bits_per_dim(images, 3)).all()  # the importance-weighted bound over a map
    # the latent-diffusion paper's KL-f4 at 64 pixels: two stages, 16x16
    assert VAE((3, 64, 64), latent_dim=4, architecture="spatial", channels=(8, 16)).latent_shape == (4, 16, 16)


# --- the process on latents -------------------------------------------------------------------------------------
def test_the_loss_is_the_denoising_loss_of_the_first_stages_scaled_posterior_draws() -> None:
    model = latent_diffusion(warmup_steps=0).eval()
    model.latent_scale.fill_(0.5)
    images, labels = torch.rand(4, 1, 28, 28), torch.arange(4)
    with torch.no_grad():
        loss = model.loss(model.unet, images, labels, torch.Generator().manual_seed(0))
        # written out: a posterior draw of each image's latents, scaled, then DDPM's x_t and noise target
        generator = torch.Generator().manual_seed(0)
        mu, logvar = model.first_stage.encode(images)  # (4, 2, 14, 14) each
        z = (mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=generator)) * 0.5
        noise = torch.randn(z.shape, generator=generator)
        t = torch.randint(1000, (4,), generator=generator)
        alpha_cumprod = model.alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = alpha_cumprod.sqrt() * z + (1 - alpha_cumprod).sqrt() * noise
        expected = F.mse_loss(model.unet(noisy, t / 1000, labels), noise)
    assert torch.equal(loss, expected)


def test_samples_are_the_first_stages_decodings_of_unclipped_latents() -> None:
    model = latent_diffusion(sample_steps=2).eval()
    model.latent_scale.fill_(0.5)
    assert model.noise_shape == (2, 14, 14) and model.image_shape == (1, 28, 28)
    samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1
    noise = torch.randn(3, 2, 14, 14, generator=torch.Generator().manual_seed(1))
    states = model.denoising_trajectory(noise, 3, generator=torch.Generator().manual_seed(2))
    assert states.shape == (3, 3, 1, 28, 28)
    with torch.no_grad():  # the first state: the noise itself, decoded at the latents' scale
        assert torch.equal(states[0], model.first_stage.generate(noise / 0.5))
    assert model.likelihood_bound is None  # DDPM's bound would be the latents', not the images' pixels'


def test_the_first_stage_is_frozen_in_eval_mode_and_outside_the_models_weights() -> None:
    model = latent_diffusion()
    model.train()
    assert model.unet.training and not model.first_stage.training
    assert not any(parameter.requires_grad for parameter in model.first_stage.parameters())
    state = model.state_dict()
    assert "latent_scale" in state and not any(name.startswith("first_stage.") for name in state)
    before = {name: tensor.clone() for name, tensor in model.first_stage.state_dict().items()}
    other = latent_diffusion()
    other.load_state_dict(state, strict=True)  # the U-Net's weights are all it needs
    assert all(torch.equal(before[name], tensor) for name, tensor in model.first_stage.state_dict().items())
    assert model.hparams.first_stage == str(first_stage().resolve())
    assert model.hparams.first_stage_hash == content_hash(read_checkpoint(first_stage())["state_dict"])


class FakeTrainer(SimpleNamespace):
    """What on_fit_start reads of a Trainer: its datamodule, and its strategy's broadcast (one process: the value)."""

    strategy = SimpleNamespace(broadcast=lambda value, src: value)


def test_latent_scale_is_measured_once_on_the_first_training_images_to_unit_variance() -> None:
    model = latent_diffusion()
    images = torch.rand(40, 1, 28, 28)
    batches = [(images[i : i + 16], torch.zeros(16)) for i in range(0, 40, 16)]
    model.trainer = FakeTrainer(datamodule=SimpleNamespace(train_dataloader=lambda: batches))
    model.on_fit_start()
    assert model.latent_scale > 0
    # the same draws of the same images, scaled: unit variance
    assert model.x0_from_images(images, torch.Generator().manual_seed(0)).std().item() == pytest.approx(1, abs=1e-5)
    measured = model.latent_scale.clone()
    model.trainer = FakeTrainer(datamodule=SimpleNamespace(train_dataloader=lambda: [(images[:4] * 0, None)]))
    model.on_fit_start()  # a resumed run has its scale: not measured again
    assert torch.equal(model.latent_scale, measured)


# --- the first stage as untrusted data: read and rebuilt as any checkpoint, refused when planted or other ---------
@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model = latent_diffusion(sample_steps=2).eval()
    model.latent_scale.fill_(0.7)
    return save(model, tmp_path / "latent.ckpt")


def test_a_checkpoint_reloads_with_its_first_stage_to_the_same_samples_and_losses(saved: Path) -> None:
    model, reloaded = latent_diffusion(sample_steps=2).eval(), load_model(saved)
    model.load_state_dict(read_checkpoint(saved)["state_dict"])
    assert isinstance(reloaded, LatentDiffusion) and reloaded.latent_scale.item() == pytest.approx(0.7)
    assert torch.equal(
        model.sample(2, generator=torch.Generator().manual_seed(0)),
        reloaded.sample(2, generator=torch.Generator().manual_seed(0)),
    )
    images, labels = torch.rand(2, 1, 28, 28), torch.arange(2)
    with torch.no_grad():
        losses = [m.loss(m.unet, images, labels, torch.Generator().manual_seed(0)) for m in (model, reloaded)]
    assert torch.equal(*losses)


def planted_first_stage(tmp_path: Path, section: str) -> Path:
    """The test's first stage with a `_target_` planted: as the class its config names, or inside a hyperparameter."""
    checkpoint = torch.load(first_stage(), weights_only=True)
    if section == "config":
        checkpoint["config"]["model"]["_target_"] = "os.system"
    else:
        checkpoint["hyper_parameters"]["channels"] = {"_target_": "os.system", "command": "touch pwned"}
    torch.save(checkpoint, tmp_path / f"planted-{section}.ckpt")
    return tmp_path / f"planted-{section}.ckpt"


@pytest.mark.parametrize(
    ("section", "refusal"),
    [
        ("config", "names the model class 'os.system', which is not one of genlab's models"),
        ("hyper_parameters", "its hyper_parameters.channels holds a dict where VAE takes text, numbers or lists"),
    ],
)
def test_a_first_stage_with_a_planted_target_is_refused_in_one_line_naming_nothing_it_names(
    saved: Path, tmp_path: Path, section: str, refusal: str
) -> None:
    planted = planted_first_stage(tmp_path, section)
    with pytest.raises(CheckpointError) as refused:
        load_model(saved, trained={"first_stage": str(planted)})
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{saved}: its model.first_stage: {planted}: ")
    assert refusal in message and not (tmp_path / "pwned").exists()


def test_a_first_stage_of_other_weights_is_refused_in_one_line(saved: Path) -> None:
    other = first_stage(seed=1)
    with pytest.raises(CheckpointError) as refused:
        load_model(saved, trained={"first_stage": str(other)})
    message = str(refused.value)
    assert "\n" not in message and "holds other weights (sha256" in message and f"{other.resolve()}" in message
    assert load_model(saved, trained={"first_stage": str(first_stage())}).latent_scale.item() == pytest.approx(0.7)


def test_a_missing_first_stage_is_refused_in_one_line_saying_how_to_give_it(saved: Path) -> None:
    checkpoint = torch.load(saved, weights_only=True)
    checkpoint["hyper_parameters"]["first_stage"] = "/nowhere/first_stage.ckpt"  # a run moved to another machine
    torch.save(checkpoint, saved)
    with pytest.raises(CheckpointError, match=r"^[^\n]*: no such checkpoint file \(model.first_stage=PATH names"):
        load_model(saved)
    assert isinstance(load_model(saved, trained={"first_stage": str(first_stage())}), LatentDiffusion)


@pytest.mark.parametrize(
    ("first", "refusal"),
    [
        ("mlp", r"a VAE whose latents are \(2,\); latent diffusion works in latent maps"),
        ("7x7", r"its latents are 7x7, which the U-Net cannot halve"),
        ("latent", r"builds on a trained model itself"),
    ],
)
def test_what_is_no_first_stage_is_refused_in_one_line(saved: Path, tmp_path: Path, first: str, refusal: str) -> None:
    if first == "latent":
        path = saved  # a latent diffusion model given as a first stage: no chains of files
    else:
        settings = {"architecture": "mlp"} if first == "mlp" else {"architecture": "spatial", "channels": (8, 8)}
        path = save(VAE((1, 28, 28), latent_dim=2, **settings), tmp_path / "first.ckpt")
    with pytest.raises((ConfigError, CheckpointError), match=refusal) as refused:
        latent_diffusion(path)
    assert "\n" not in str(refused.value)


def test_model_first_stage_is_refused_for_a_checkpoint_that_builds_on_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^model.first_stage: .* holds a VAE, which builds on no trained model$"):
        load_model(first_stage(), trained={"first_stage": str(first_stage())})


# --- the family through the entry points -------------------------------------------------------------------------
TINY_RUN = [
    *TEST_OVERRIDES,
    "data.val_size=100",
    "data.batch_size=16",
    "test=false",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A first stage trained a few steps as its recipe says (on random images in Fashion-MNIST's files: the shipped
    classifier's data, which src.eval scores in), then latent diffusion over it, as src.train runs them: their last
    checkpoints."""
    root = tmp_path_factory.mktemp("latent_runs")
    write_mnist_raw(root / "data" / "FashionMNIST" / "raw")
    common = [*TINY_RUN, f"paths.data_dir={root / 'data'}"]
    train(compose_config(["experiment=vae_first_stage_fashion_mnist", *common, "model.channels=[8]"], root / "first"))
    first = root / "first" / "checkpoints" / "last.ckpt"
    latent = [
        "experiment=latent_diffusion_fashion_mnist",
        *common,
        f"model.first_stage={first}",
        "model.base_channels=8",
        "model.channel_multipliers=[1]",
        "model.attention_heads=2",
        "model.sample_steps=2",
        "model.num_grid_images=4",
    ]
    train(compose_config(latent, root / "latent"))
    return {"first": first, "latent": root / "latent" / "checkpoints" / "last.ckpt", "root": root}


@pytest.mark.integration
def test_src_train_measures_the_scale_and_records_the_first_stage(runs: dict[str, Path]) -> None:
    checkpoint = read_checkpoint(runs["latent"])
    assert checkpoint["state_dict"]["latent_scale"] > 0
    assert not any(name.startswith("first_stage.") for name in checkpoint["state_dict"])
    first = read_checkpoint(runs["first"])
    assert checkpoint["hyper_parameters"]["first_stage"] == str(runs["first"].resolve())
    assert checkpoint["hyper_parameters"]["first_stage_hash"] == content_hash(first["state_dict"])
    assert (runs["latent"].parent.parent / "images" / "samples_epoch000.png").is_file()  # the grid, decoded


@pytest.mark.integration
def test_src_sample_and_src_eval_find_the_first_stage_or_are_given_it(runs: dict[str, Path], tmp_path: Path) -> None:
    latent, out = runs["latent"], f"paths.log_dir={tmp_path}"
    sampled = run_main(sample_main, f"ckpt_path={latent}", "num_samples=4", "steps=2", out)
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert list(tmp_path.glob("sample/runs/*/samples.png"))
    evaluated = run_main(
        eval_main,
        f"ckpt_path={latent}",
        f"model.first_stage={runs['first']}",
        f"paths.data_dir={runs['root'] / 'data'}",
        "num_samples=8",
        "batch_size=8",
        "metrics.kid_subset_size=4",
        "steps=2",
        out,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    (metrics,) = tmp_path.glob("eval/runs/*/metrics.json")  # the samples' scores, decoded by the first stage
    assert {"sample/fid", "sample/kid", "test/loss"} <= json.loads(metrics.read_text()).keys()
    # another first stage, on the command line: one line, exit 1
    refused = run_main(sample_main, f"ckpt_path={latent}", f"model.first_stage={first_stage()}", out)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("error: ") and "holds other weights (sha256" in refused.stderr


@pytest.mark.integration
def test_resuming_over_another_first_stage_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    latent = [
        "experiment=latent_diffusion_fashion_mnist",
        *TINY_RUN,
        f"paths.data_dir={runs['root'] / 'data'}",
        f"model.first_stage={first_stage()}",  # untrained: other weights than the run's
        "model.base_channels=8",
        "model.channel_multipliers=[1]",
        "model.attention_heads=2",
        f"ckpt_path={runs['latent']}",
        "trainer.max_epochs=2",
    ]
    with pytest.raises(CheckpointError, match=r"trained over a first stage whose weights have sha256"):
        train(compose_config(latent, tmp_path / "resumed"))
