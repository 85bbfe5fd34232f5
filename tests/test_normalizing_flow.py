"""The normalizing flow: exact inverse, log-determinants against autograd's Jacobian, a likelihood that training
lowers, checkpoints that reload bit for bit, and the recipe from the command line through src.sample and src.eval."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlab.callbacks.checkpoint import RunCheckpointIO
from genlab.capabilities import ImageSampler, LatentDecoder
from genlab.checkpoints import load_model
from genlab.errors import ConfigError
from genlab.models.likelihood import dequantize
from genlab.models.nets.coupling_flow import CouplingFlow, squeeze, unsqueeze
from genlab.models.normalizing_flow import NormalizingFlow
from genlab.utils.validation import check_config
from tests.helpers import compose_config, run_module, run_train

TINY = {"num_scales": 2, "coupling_layers": 2, "hidden_channels": 8}


def perturbed(flow: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The flow with every weight moved off its initial value: zero-initialised couplings are the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return flow


def blocky_images(count: int, seed: int = 0) -> torch.Tensor:
    """Images (count, 1, 8, 8) in [0, 1] of a few grey levels in 2x2 blocks: far from uniform noise, so a flow
    can learn much of their structure in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 4, (count, 1, 4, 4), generator=generator).float() / 3
    return levels.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def test_shapes_and_capabilities() -> None:
    model = NormalizingFlow(image_shape=(3, 32, 32), **TINY)
    assert isinstance(model, ImageSampler) and isinstance(model, LatentDecoder)
    assert model.flow.latent_shape == (48, 8, 8) and model.latent_dim == 3 * 32 * 32
    images = torch.rand(5, 3, 32, 32)
    assert model.bits_per_dim(images).shape == (5,)
    samples = model.sample(4)
    assert samples.shape == (4, 3, 32, 32) and 0 <= samples.min() and samples.max() <= 1
    assert model.generate(torch.randn(2, model.latent_dim)).shape == (2, 3, 32, 32)


def test_squeeze_is_a_permutation_that_unsqueeze_undoes() -> None:
    x = torch.arange(2 * 3 * 4 * 6.0).view(2, 3, 4, 6)
    squeezed = squeeze(x)
    assert squeezed.shape == (2, 12, 2, 3)
    assert torch.equal(squeezed[0, :4, 0, 0], x[0, 0, :2, :2].flatten())  # one 2x2 patch -> 4 channels
    assert torch.equal(unsqueeze(squeezed), x)


@pytest.mark.parametrize("actnorm", [True, False])
def test_inverse_undoes_forward_exactly(actnorm: bool) -> None:
    torch.manual_seed(0)
    flow = CouplingFlow((3, 8, 8), **TINY, actnorm=actnorm).double()
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    flow(x)  # in training mode: the ActNorms initialise from this batch
    perturbed(flow).eval()
    z, _ = flow(x)
    assert not torch.allclose(unsqueeze(unsqueeze(z)), x, atol=0.1)  # the flow does more than reshape
    assert torch.allclose(flow.inverse(z), x, atol=1e-12, rtol=0)
    assert torch.allclose(flow(flow.inverse(z))[0], z, atol=1e-10, rtol=1e-12)  # z reaches about 100


def test_log_determinant_matches_autograds_jacobian() -> None:
    torch.manual_seed(0)
    flow = perturbed(CouplingFlow((2, 4, 4), num_scales=1, coupling_layers=2, hidden_channels=4).double())
    flow(torch.randn(8, 2, 4, 4, dtype=torch.float64))  # initialise the ActNorms, then read them as they are
    flow.eval()
    for x in torch.randn(3, 1, 2, 4, 4, dtype=torch.float64):
        jacobian = torch.autograd.functional.jacobian(lambda x: flow(x)[0].flatten(), x).reshape(32, 32)
        sign, expected = torch.linalg.slogdet(jacobian)
        _, log_det = flow(x)
        assert sign != 0 and torch.allclose(log_det, expected.reshape(1), atol=1e-10)


def test_logit_transform_log_determinant_matches_autograd() -> None:
    model = NormalizingFlow(image_shape=(1, 4, 4), num_scales=1, coupling_layers=1, hidden_channels=2).double()
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda x: model.to_logits(x)[0].flatten(), x).reshape(16, 16)
    assert torch.allclose(model.to_logits(x)[1], torch.linalg.slogdet(jacobian)[1].reshape(1), atol=1e-10)


def test_bits_per_dim_of_the_untrained_flow_is_the_uniform_densitys_through_the_logit() -> None:
    # zero-initialised couplings and untouched ActNorms: z is the logit of the dequantized image, so the NLL is
    # log N(logit) minus the logit's log-det, which a plain sum writes out
    torch.manual_seed(0)
    model = NormalizingFlow(image_shape=(1, 8, 8), **TINY).eval()
    images = torch.rand(4, 1, 8, 8)
    torch.manual_seed(1)
    bpd = model.bits_per_dim(images)
    torch.manual_seed(1)
    x = dequantize(images)
    logits, log_det = model.to_logits(x)
    normal = torch.distributions.Normal(0.0, 1.0)
    nats = -(normal.log_prob(logits).flatten(1).sum(1) + log_det) + 64 * math.log(256)
    assert torch.allclose(bpd, nats / (64 * math.log(2)), rtol=1e-5)
    assert ((torch.round(images * 255) / 256 <= x) & (x <= (torch.round(images * 255) + 1) / 256)).all()


def test_training_lowers_the_negative_log_likelihood() -> None:
    torch.manual_seed(0)
    model = NormalizingFlow(image_shape=(1, 8, 8), **TINY)
    images = blocky_images(64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model.bits_per_dim(images).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses  # bits per dimension, from about 8 for the untrained flow


def test_checkpoint_reloads_to_the_same_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = NormalizingFlow(image_shape=(1, 8, 8), **TINY)
    images = blocky_images(32)
    loader = DataLoader(TensorDataset(images, torch.zeros(32)), batch_size=16)
    config = {"model": {"_target_": "genlab.models.normalizing_flow.NormalizingFlow"}}  # as src.train saves it
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        plugins=[RunCheckpointIO(config)],
    )
    trainer.fit(model, train_dataloaders=loader)
    trainer.save_checkpoint(tmp_path / "flow.ckpt")
    reloaded = load_model(tmp_path / "flow.ckpt")
    assert isinstance(reloaded, NormalizingFlow)
    model.eval()
    assert all(layer.initialized for layer in reloaded.flow.layers if hasattr(layer, "initialized"))
    z = torch.randn(3, model.latent_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(reloaded.generate(z), model.generate(z))
    assert torch.equal(reloaded.flow(images[:4])[0], model.flow(images[:4])[0])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.hidden_channels=0", "model.hidden_channels=0 is not valid for NormalizingFlow: expected int"),
        ("model.logit_alpha=0.5", "model.logit_alpha=0.5 is not valid for NormalizingFlow: expected float"),
        ("model.sample_temperature=-1", "greater than 0"),
    ],
)
def test_declared_ranges_are_checked_naming_the_key(tmp_path: Path, override: str, message: str) -> None:
    cfg = compose_config(["model=normalizing_flow", override], tmp_path)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_image_sizes_that_do_not_halve_for_every_scale_are_refused() -> None:
    with pytest.raises(ConfigError, match="model.num_scales=3 halves the 28x28 images 3 times, .*; at most 2 for"):
        NormalizingFlow(image_shape=(1, 28, 28), num_scales=3)


@pytest.mark.slow
def test_recipe_trains_samples_and_evaluates_from_the_command_line(tmp_path: Path, fashion_mnist_dir: Path) -> None:
    tiny = [
        "model.hidden_channels=8",
        "model.coupling_layers=1",
        "model.num_grid_images=8",
        "data.batch_size=16",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "~callbacks.rich_progress_bar",
        "extras.print_config=false",
    ]
    result = run_train(
        "experiment=normalizing_flow_fashion_mnist",
        *tiny,
        f"paths.data_dir={fashion_mnist_dir}",
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "normalizing_flow_fashion_mnist" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 < metrics["test/bpd"] < 9 and math.isclose(
        metrics["test/nll"], metrics["test/bpd"] * 784 * math.log(2), rel_tol=1e-4
    )
    assert (run_dir / "images" / "samples_epoch000.png").is_file()  # the fixed-noise grid, from LatentDecoder
    checkpoint = run_dir / "checkpoints" / "last.ckpt"

    # ImageSampler: src.sample and src.eval's sample scores, with no code of the flow's own
    sampled = run_module("src.sample", f"ckpt_path={checkpoint}", "num_samples=8", f"paths.log_dir={tmp_path}")
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert list((tmp_path / "sample" / "runs").glob("*/samples.png"))
    evaluated = run_module(
        "src.eval",
        f"ckpt_path={checkpoint}",
        "num_samples=20",
        "batch_size=10",
        f"paths.data_dir={fashion_mnist_dir}",
        f"paths.log_dir={tmp_path}",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (eval_metrics,) = (tmp_path / "eval" / "runs").glob("*/metrics.json")
    scores = json.loads(eval_metrics.read_text())
    assert {"test/bpd", "sample/fid", "sample/kid"} <= scores.keys()


class SaveWeightsPerRank(L.Callback):
    """Each DDP rank writes its weights at the end of training, to compare the replicas."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.save(pl_module.state_dict(), self.folder / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_replicas_under_ddp_hold_the_same_weights(tmp_path: Path, mnist_dir: Path) -> None:
    # ActNorm initialises from each rank's own first batch: rank 0's statistics must reach the other rank
    result = run_train(
        "trainer=ddp_sim",
        "model=normalizing_flow",
        "model.hidden_channels=4",
        "model.coupling_layers=1",
        "data=mnist",
        "data.val_size=100",
        "data.batch_size=16",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "test=false",
        "extras.print_config=false",
        "~callbacks.rich_progress_bar",
        f"paths.data_dir={mnist_dir}",
        f"paths.log_dir={tmp_path}",
        "+callbacks.weights._target_=tests.test_normalizing_flow.SaveWeightsPerRank",
        f"+callbacks.weights.folder={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)
    assert any(name.endswith("initialized") and rank0[name] for name in rank0)
