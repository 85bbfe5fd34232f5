"""What the GPU needs, checked on the CPU: images and token ids held on the training device give the same batches,
the same resumed order and the same training as on the host; and `model.compile` trains every family as eager does.
(`python -m benchmarks.gpu_efficiency --smoke`: tests/test_gpu_suite.py, from the GPU suite's smoke run.)"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from genlab.checkpoints import load_model, read_checkpoint
from genlab.data.images import MNISTDataModule
from genlab.data.text import ShakespeareDataModule, TokenWindows
from genlab.errors import ConfigError
from genlab.train import train
from tests.helpers import TEST_OVERRIDES, compose_config, families, family_config, model_class


# --- images held on the device ------------------------------------------------------------------------------
def _datamodule(data_dir: Path, on_device: bool | str) -> MNISTDataModule:
    """MNIST as the Trainer sets it up for training on the CPU, which stands in for the GPU here."""
    datamodule = MNISTDataModule(str(data_dir), (1, 28, 28), 10, batch_size=32, val_size=100, on_device=on_device)
    datamodule.trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    datamodule.setup("fit")
    return datamodule


def _batches(loader, count: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    for batch in loader:
        batches.append(batch)
        if count is not None and len(batches) == count:
            break
    return batches


def test_images_held_on_the_device_give_the_same_batches_and_the_same_resumed_order(mnist_dir: Path) -> None:
    torch.manual_seed(0)
    host = _batches(_datamodule(mnist_dir, on_device=False).train_dataloader())
    torch.manual_seed(0)
    on_device = _datamodule(mnist_dir, on_device=True)
    assert on_device.data_device() == torch.device("cpu")  # the trainer's device: the device path is taken
    loader = on_device.train_dataloader()
    first = _batches(loader, 5)
    state = loader.state_dict()  # as a checkpoint saves it, mid-epoch
    torch.manual_seed(123)  # a resumed process: another global seed; the order comes from the loader's state
    resumed_loader = _datamodule(mnist_dir, on_device=True).train_dataloader()
    resumed_loader.load_state_dict(state)
    device_batches = first + _batches(resumed_loader)
    assert len(device_batches) == len(host) == 16  # 500 images in batches of 32
    for (images, labels), (host_images, host_labels) in zip(device_batches, host, strict=True):
        assert torch.equal(images, host_images) and torch.equal(labels, host_labels)
        assert images.dtype == torch.float32 and images.max() <= 1.0


def test_auto_holds_the_images_on_a_cuda_device_only(mnist_dir: Path) -> None:
    assert _datamodule(mnist_dir, on_device="auto").data_device() is None  # the trainer is on the CPU
    alone = MNISTDataModule(str(mnist_dir), (1, 28, 28), 10, on_device=True)
    assert alone.data_device() is None  # no trainer: nowhere else to hold them


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"on_device": "yes"}, "data.on_device must be auto, true or false, got 'yes'"),
        ({"on_device": True, "num_workers": 2}, "use data.num_workers=0 (got 2), or data.on_device=false"),
    ],
)
def test_impossible_device_settings_are_refused_naming_the_key(mnist_dir: Path, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        MNISTDataModule(str(mnist_dir), (1, 28, 28), 10, **options)


# --- token ids held on the device ---------------------------------------------------------------------------
def _text_datamodule(data_dir: Path, on_device: bool | str) -> ShakespeareDataModule:
    """A small text as the Trainer sets it up for training on the CPU, which stands in for the GPU here."""
    datamodule = ShakespeareDataModule(
        str(data_dir), block_size=8, batch_size=16, num_val_windows=20, md5=None, on_device=on_device
    )
    datamodule.trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    datamodule.setup("fit")
    return datamodule


def test_token_ids_held_on_the_device_give_the_same_batches_and_the_same_resumed_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("First Citizen:\nBefore we proceed, hear me speak.\n" * 8)
    torch.manual_seed(0)
    host = _batches(_text_datamodule(tmp_path, on_device=False).train_dataloader())
    moved_to = []
    move = TokenWindows.to
    monkeypatch.setattr(TokenWindows, "to", lambda windows, device: (moved_to.append(device), move(windows, device))[1])
    torch.manual_seed(0)
    on_device = _text_datamodule(tmp_path, on_device=True)
    assert moved_to == [torch.device("cpu")] * 2  # the device path: both splits held on the trainer's device
    loader = on_device.train_dataloader()
    first = _batches(loader, 5)
    state = loader.state_dict()
    torch.manual_seed(123)  # a resumed process: the order comes from the loader's state
    resumed_loader = _text_datamodule(tmp_path, on_device=True).train_dataloader()
    resumed_loader.load_state_dict(state)
    device_batches = first + _batches(resumed_loader)
    assert len(device_batches) == len(host) > 5
    for (inputs, targets), (host_inputs, host_targets) in zip(device_batches, host, strict=True):
        assert torch.equal(inputs, host_inputs) and torch.equal(targets, host_targets)
    val_inputs, _ = next(iter(_text_datamodule(tmp_path, on_device=True).val_dataloader()))
    host_val_inputs, _ = next(iter(_text_datamodule(tmp_path, on_device=False).val_dataloader()))
    assert torch.equal(val_inputs, host_val_inputs)  # the fixed validation windows too
    with pytest.raises(ConfigError, match=re.escape("use data.num_workers=0 (got 2), or data.on_device=false")):
        ShakespeareDataModule(str(tmp_path), on_device=True, num_workers=2)


@pytest.mark.slow  # two short GAN trainings: about 15 s on 2 CPU cores
def test_training_on_device_held_images_ends_with_the_same_weights(tmp_path: Path, mnist_dir: Path) -> None:
    weights = {}
    for on_device in ("true", "false"):
        overrides = [
            *TEST_OVERRIDES,
            "model=gan",
            "data=mnist",
            "data.val_size=100",
            "data.batch_size=32",
            "model.generator_channels=8",
            "model.discriminator_channels=8",
            f"paths.data_dir={mnist_dir}",
            f"data.on_device={on_device}",
            "test=false",
        ]
        train(compose_config(overrides, tmp_path / on_device))
        weights[on_device] = read_checkpoint(tmp_path / on_device / "checkpoints" / "last.ckpt")["state_dict"]
    assert weights["true"].keys() == weights["false"].keys()
    assert all(torch.equal(weights["true"][name], weights["false"][name]) for name in weights["true"])


# --- model.compile ------------------------------------------------------------------------------------------
# the networks that `model.compile` compiles, of each family that takes the setting: those that train (the EMA copies,
# which validate and sample, stay eager); the GAN's critic too, but for WGAN-GP (its double backward)
COMPILED_NETWORKS = {
    "ae": ["encoder", "decoder"],
    "vae": ["encoder", "decoder"],
    "gan": ["generator", "discriminator"],
    "diffusion": ["unet"],
    "gpt": ["net"],
    "classifier": ["net"],
}


def test_compiled_networks_are_every_family_that_takes_model_compile() -> None:
    takes = {name for name in families() if "compile" in inspect.signature(model_class(name)).parameters}
    assert COMPILED_NETWORKS.keys() == takes, "COMPILED_NETWORKS: the families whose constructor takes compile"


@pytest.mark.parametrize("setting", [True, "max-autotune"])
@pytest.mark.parametrize("family", COMPILED_NETWORKS)
def test_model_compile_compiles_each_trained_network_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, family: str, setting: bool | str
) -> None:
    """Each network that trains goes through torch.compile, with the mode asked, in place: the model's own module
    then runs its forward traced by dynamo. torch.compile's backend is swapped for "eager" (dynamo's tracing without
    inductor's code generation: seconds, not minutes); the slow tier's tests train with the real one."""
    compiled = []
    real_compile = torch.compile

    def recording(function, *args, **kwargs):
        compiled.append((function.__self__, kwargs.get("mode")))  # nn.Module.compile compiles its bound _call_impl
        return real_compile(function, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch, "compile", recording)
    cfg = family_config(family, tmp_path / "run")
    cfg.model.compile = setting
    if family == "gpt":  # its network is built once the vocabulary is known
        cfg.model.vocab = "abc"
    model = instantiate(cfg.model)
    model.configure_model()
    expected = [getattr(model, name) for name in COMPILED_NETWORKS[family]]
    assert [module for module, _ in compiled] == expected
    assert {mode for _, mode in compiled} == {None if setting is True else setting}
    if family == "ae":  # and the compiled forward is the one that runs
        traced = []
        model.encoder.register_forward_hook(lambda *call: traced.append(torch.compiler.is_compiling()))
        model.encoder(torch.rand(2, *cfg.data.image_shape))
        assert traced == [True]


class LossCurve(Callback):
    """Every training batch's loss, read on the host (a test may wait for the device) into <run>/losses.json."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args) -> None:
        self.losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        (Path(trainer.default_root_dir) / "losses.json").write_text(json.dumps(self.losses))


COMPILED = {
    # two optimizers stepped by hand, EMA; clipping under bf16-mixed (the fused-optimizer path)
    "gan": [
        "model=gan",
        "model.generator_channels=8",
        "model.discriminator_channels=8",
        "model.gradient_clip_val=1.0",
        "trainer.precision=bf16-mixed",
    ],
    # EMA, gradient clipping by the Trainer, LR warm-up, conditional labels dropped at random
    "diffusion": [
        "experiment=diffusion_fashion_mnist",
        "data=mnist",
        "model.base_channels=8",
        "model.channel_multipliers=[1,2]",
        "model.attention_heads=2",
        "model.num_grid_images=0",
    ],
}


@pytest.mark.slow  # torch.compile of small networks on a CPU: a minute or two each
@pytest.mark.parametrize("family", COMPILED)
def test_compiled_training_follows_the_eager_loss_curve_and_checkpoints_load_eager(
    tmp_path: Path, mnist_dir: Path, family: str
) -> None:
    curves = {}
    for compile_ in ("false", "true"):
        overrides = [
            *TEST_OVERRIDES,
            *COMPILED[family],
            "data=mnist",
            "data.val_size=100",
            "data.batch_size=16",
            f"paths.data_dir={mnist_dir}",
            "trainer.limit_train_batches=6",
            "trainer.max_steps=-1",
            "trainer.max_epochs=1",
            "test=false",
            f"model.compile={compile_}",
            "seed=3",
            # no validation: eval mode and its batch sizes would compile the networks again
            "trainer.limit_val_batches=0",
            "monitor.metric=null",
            "+callbacks.loss_curve._target_=tests.test_gpu_efficiency.LossCurve",
        ]
        train(compose_config(overrides, tmp_path / compile_))
        curves[compile_] = json.loads((tmp_path / compile_ / "losses.json").read_text())
    assert len(curves["true"]) == len(curves["false"]) == 6
    # the same computation, fused differently: equal up to rounding (bf16 for the GAN), not bit for bit
    tolerance = 2e-2 if family == "gan" else 1e-3
    assert curves["true"] == pytest.approx(curves["false"], rel=tolerance)
    # in place: the checkpoint's names are the eager model's, so it loads into one
    checkpoint = read_checkpoint(tmp_path / "true" / "checkpoints" / "last.ckpt")
    assert not any("_orig_mod" in name for name in checkpoint["state_dict"])
    assert load_model(tmp_path / "true" / "checkpoints" / "last.ckpt") is not None


def test_unknown_compile_modes_are_refused_naming_the_key(tmp_path: Path, mnist_dir: Path) -> None:
    overrides = [*TEST_OVERRIDES, "model=ae", "data=mnist", f"paths.data_dir={mnist_dir}", "model.compile=fast"]
    with pytest.raises(
        ConfigError,
        match=r"^model.compile='fast' is not valid for Autoencoder: expected bool or "
        r"Literal\['default', 'reduce-overhead'",
    ):
        train(compose_config(overrides, tmp_path / "run"))
