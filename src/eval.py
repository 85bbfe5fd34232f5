"""Evaluate a checkpoint: `python -m src.eval ckpt_path=outputs/.../checkpoints/last.ckpt [num_samples=10000]`.

Rebuilds the model from the checkpoint and its data from the data config stored in it (read from this
machine's data folder), runs the test split through the model's own test_step (text data, which has
no test split: the validation windows), and scores the images of an ImageSampler (its samples) or a
Reconstructor (its reconstructions of the test split) against the test split with FID, KID and the
classifier-IS. Models that sample in steps (diffusion, flow matching) take steps=, sampler= and
guidance_scale= for their samples. Writes metrics.json to its run folder and prints a table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
import rich
import rich.table
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig
from rich.progress import track

from src.callbacks.interrupt import CheckpointOnInterrupt, interruptible
from src.capabilities import Denoiser, ImageSampler, Reconstructor, use_sampling_options
from src.data import DATA_CLASSES
from src.data.images import ImageDataModule
from src.metrics.sample_quality import SampleQuality, load_feature_classifier
from src.utils.checkpoint import CheckpointError, load_checkpoint, load_model
from src.utils.failed_runs import exit_on_user_error
from src.utils.instantiate import instantiate

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test metrics of the checkpoint, plus sample-quality metrics where the model makes images."""
    model = load_model(cfg.ckpt_path)
    use_sampling_options(model, cfg)  # steps=, sampler=, guidance_scale=: refused for models that take none
    data_config = load_checkpoint(cfg.ckpt_path)["config"].get("data", {})
    if data_config.get("_target_") not in DATA_CLASSES:
        raise CheckpointError(
            f"{cfg.ckpt_path}: names the data class {data_config.get('_target_')!r}, which is not one of genlab's "
            f"datamodules; refused without importing it"
        )
    L.seed_everything(cfg.seed, workers=True)
    # the run's data, read from this machine's data folder
    datamodule = instantiate({**data_config, "data_dir": cfg.paths.data_dir, "batch_size": cfg.batch_size}, "data")

    output_dir = Path(cfg.paths.output_dir)
    interrupt = CheckpointOnInterrupt()
    trainer = L.Trainer(
        accelerator=cfg.accelerator, devices=1, logger=False, default_root_dir=output_dir, enable_checkpointing=False,
        callbacks=[interrupt],
    )  # fmt: skip
    with interrupt.reported(trainer, "Run the same command again"):
        if is_overridden("test_dataloader", datamodule):
            metrics = dict(trainer.test(model, datamodule=datamodule, verbose=False)[0])
        else:  # text: the fixed validation windows, as training measured them
            metrics = dict(trainer.validate(model, datamodule=datamodule, verbose=False)[0])
    if isinstance(datamodule, ImageDataModule) and isinstance(model, (ImageSampler, Reconstructor)):
        with interruptible("the scoring of images", "Run the same command again"):
            metrics |= score_images(model.to(trainer.strategy.root_device), datamodule, cfg)

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    _print_table(metrics, title=f"{type(model).__name__} · {cfg.ckpt_path}")
    log.info(f"Metrics: {output_dir / 'metrics.json'}")
    return metrics


@torch.no_grad()
def score_images(model: L.LightningModule, datamodule: ImageDataModule, cfg: DictConfig) -> dict[str, float]:
    """FID, KID and IS of the model's samples (or of its reconstructions of the test split) vs the test split."""
    device = model.device
    generative = isinstance(model, ImageSampler)
    num_real = len(datamodule.data_test)
    num_fake = cfg.num_samples if generative else num_real
    classifier = None
    if cfg.metrics.feature == "classifier":
        classifier = load_feature_classifier(cfg.metrics.classifier_ckpt, datamodule.name)
    kid_subset_size = min(cfg.metrics.kid_subset_size, num_real, num_fake)
    quality = SampleQuality(classifier, cfg.metrics.feature, kid_subset_size=kid_subset_size).to(device)

    for images, _ in track(datamodule.test_dataloader(), description="Scoring the test split", transient=True):
        images = images.to(device)
        quality.update(images, real=True)
        if not generative:  # a denoiser reconstructs the corrupted images, as it was trained to
            quality.update(model.reconstruct(model.corrupt(images) if isinstance(model, Denoiser) else images),
                           real=False)  # fmt: skip
    if generative:
        log.info(f"Generating {num_fake} samples")
        batches = range(0, num_fake, cfg.batch_size)
        for start in track(batches, description=f"Generating and scoring {num_fake} samples", transient=True):
            quality.update(model.sample(min(cfg.batch_size, num_fake - start)), real=False)
    prefix = "sample" if generative else "reconstruction"
    return {f"{prefix}/{name}": value for name, value in quality.compute().items()}


def _print_table(metrics: dict[str, float], title: str) -> None:
    table = rich.table.Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(metrics.items()):
        table.add_row(name, f"{value:.6g}")
    rich.print(table)


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
