"""Every family gets its validation and test steps, and when its pictures are shown, from SharedHooks."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from genlab.checkpoints import build_model
from genlab.models.hooks import SharedHooks
from tests.helpers import built_on, compose_config, model_class, options


def build(model: str, tmp_path: Path) -> L.LightningModule:
    data = "shakespeare" if model == "gpt" else "mnist"
    cfg = compose_config([f"model={model}", f"data={data}", *built_on(model_class(model))], tmp_path)
    return build_model(cfg.model)


@pytest.mark.parametrize("model", options("model"))
def test_validation_and_test_steps_run_the_familys_own_evaluate_on_their_split(
    model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = build(model, tmp_path)
    family = type(module)
    # before L.LightningModule, whose own steps do nothing
    assert family.__mro__.index(SharedHooks) < family.__mro__.index(L.LightningModule)
    # the family's own class, or the family it extends (latent diffusion evaluates as diffusion does)
    own = family.__mro__[: family.__mro__.index(SharedHooks)]
    assert any("_evaluate" in vars(cls) for cls in own), f"{family.__name__} must say what its evaluation computes"
    calls = []
    monkeypatch.setattr(family, "_evaluate", lambda self, *args: calls.append(args))
    module.validation_step("batch", 3)
    module.test_step("batch", 4)
    assert calls == [("batch", 3, "val"), ("batch", 4, "test")]


@pytest.mark.parametrize("model", options("model"))
def test_previews_reach_lightning_while_fitting_only(
    model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = build(model, tmp_path)
    module.trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    previews = [type(callback) for callback in module.previews()]
    if not previews:  # a family that shows no pictures (the classifier) inherits that; the hook shows a stand-in
        assert "previews" not in vars(type(module)), f"{type(module).__name__}.previews returns nothing"
        previews = [Callback]
        monkeypatch.setattr(module, "previews", lambda: [Callback()])
    for fn in TrainerFn:
        module.trainer.state.fn = fn
        shown = [type(callback) for callback in module.configure_callbacks()]
        assert shown == (previews if fn == TrainerFn.FITTING else []), fn
