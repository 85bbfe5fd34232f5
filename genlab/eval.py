"""Evaluate a checkpoint: `python -m src.eval ckpt_path=outputs/.../checkpoints/last.ckpt [num_samples=10000]`.

Rebuilds the model from the checkpoint and its data from the data config stored in it (read from this
machine's data folder), runs the test split through the model's own test_step (text data, which has
no test split: the validation windows), and scores the images of an ImageSampler (its samples) or a
Reconstructor (its reconstructions of the test split) against the test split with FID, KID and the
classifier-IS. Models that sample in steps (diffusion, flow matching) take steps=, sampler= and
guidance_scale= for their samples. Writes metrics.json to its run folder and prints a table.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import hydra
import lightning as L
import rich
import rich.table
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf
from rich.progress import track

from genlab.callbacks.interrupt import CheckpointOnInterrupt, interruptible
from genlab.capabilities import Denoiser, ImageSampler, Reconstructor, use_sampling_options
from genlab.checkpoints import datamodule_from, model_from, read_checkpoint
from genlab.data.images import ImageDataModule
from genlab.errors import ConfigError
from genlab.metrics.sample_quality import SampleQuality, load_feature_classifier
from genlab.utils.config import CONF_DIR
from genlab.utils.failed_runs import exit_on_user_error
from genlab.utils.files import check_replaceable
from genlab.utils.run_folder import METRICS, write_metrics

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test metrics of the checkpoint, plus sample-quality metrics where the model makes images."""
    output_dir = Path(cfg.paths.output_dir)
    check_replaceable(output_dir / METRICS, "the metrics")  # not after the whole evaluation
    checkpoint = read_checkpoint(cfg.ckpt_path)  # checked data: genlab's own classes are built from its values
    model = model_from(checkpoint, cfg.ckpt_path)
    use_sampling_options(model, cfg)  # steps=, sampler=, guidance_scale=: refused for models that take none
    L.seed_everything(cfg.seed, workers=True)
    # the run's data, read from this machine's data folder
    datamodule = datamodule_from(checkpoint, cfg.ckpt_path, data_dir=cfg.paths.data_dir, batch_size=cfg.batch_size)
    del checkpoint

    interrupt = CheckpointOnInterrupt()
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        default_root_dir=output_dir,
        enable_checkpointing=False,
        callbacks=[interrupt],
    )
    with interrupt.reported(trainer, "Run the same command again"):
        if is_overridden("test_dataloader", datamodule):
            metrics = dict(trainer.test(model, datamodule=datamodule, verbose=False)[0])
        else:  # text: the fixed validation windows, as training measured them
            metrics = dict(trainer.validate(model, datamodule=datamodule, verbose=False)[0])
    if isinstance(datamodule, ImageDataModule) and isinstance(model, (ImageSampler, Reconstructor)):
        with interruptible("the scoring of images", "Run the same command again"):
            metrics |= score_images(model.to(trainer.strategy.root_device), datamodule, cfg)

    path = write_metrics(output_dir, metrics)
    _print_table(metrics, title=f"{type(model).__name__} · {cfg.ckpt_path}")
    log.info(f"Metrics: {path}")
    return metrics


@torch.no_grad()
def score_images(model: L.LightningModule, datamodule: ImageDataModule, cfg: DictConfig) -> dict[str, float]:
    """FID, KID and IS of the model's samples (or of its reconstructions of the test split) vs the test split."""
    device = model.device
    generative = isinstance(model, ImageSampler)
    num_real = len(datamodule.data_test)
    first_batch, num_fake = first_samples(model, cfg) if generative else (None, num_real)
    classifier = None
    if cfg.metrics.feature == "classifier":
        classifier = load_feature_classifier(cfg.metrics.classifier_ckpt, datamodule.name)
    subset_size = kid_subset_size(cfg.metrics.kid_subset_size, num_real, num_fake)
    quality = SampleQuality(classifier, cfg.metrics.feature, kid_subset_size=subset_size).to(device)

    for images, _ in track(datamodule.test_dataloader(), description="Scoring the test split", transient=True):
        images = images.to(device)
        quality.update(images, real=True)
        if not generative:  # a denoiser reconstructs the corrupted images, as it was trained to
            quality.update(
                model.reconstruct(model.corrupt(images) if isinstance(model, Denoiser) else images), real=False
            )
    if generative:
        quality.update(first_batch, real=False)
        batches = range(len(first_batch), num_fake, cfg.batch_size)
        for start in track(batches, description=f"Generating and scoring {num_fake} samples", transient=True):
            quality.update(model.sample(min(cfg.batch_size, num_fake - start)), real=False)
    prefix = "sample" if generative else "reconstruction"
    return {f"{prefix}/{name}": value for name, value in quality.compute().items()}


# num_samples=null: as many samples as the model draws in sampling_minutes, within these bounds (10,000: FID's usual
# count; below 1,000 FID's bias with the count outgrows the differences between models)
MIN_SAMPLES, MAX_SAMPLES = 1_000, 10_000


def first_samples(model: ImageSampler, cfg: DictConfig) -> tuple[torch.Tensor, int]:
    """The first batch of samples, timed, and how many samples to score: num_samples, or (null) as many as the
    model draws in sampling_minutes, between MIN_SAMPLES and MAX_SAMPLES. Says how long generating them will take."""
    size = min(cfg.batch_size, cfg.num_samples or cfg.batch_size)
    log.info(f"Timing the model's sampling on a first batch of {size}")
    _synchronize(model.device)
    started = time.perf_counter()
    images = model.sample(size)
    _synchronize(model.device)
    rate = size / (time.perf_counter() - started)  # images per second; the first batch's warm-up included
    if cfg.num_samples is None:
        fits = int(rate * cfg.sampling_minutes * 60) // 100 * 100
        num_samples = min(MAX_SAMPLES, max(MIN_SAMPLES, fits))
        why = f"as many as fit in sampling_minutes={cfg.sampling_minutes:g}, within {MIN_SAMPLES:,}-{MAX_SAMPLES:,}"
    else:
        num_samples, why = cfg.num_samples, "num_samples"
    log.info(
        f"Generating {num_samples:,} samples ({why}) at {rate:,.1f} images/s: about "
        f"{_duration(num_samples / rate)} to draw them"
    )
    return images[:num_samples], num_samples


def kid_subset_size(wanted: int, num_real: int, num_fake: int) -> int:
    """KID's subset size: metrics.kid_subset_size, or half the smaller set where that has fewer than twice as many
    images. Subsets as large as the set are all the same images, and the std over them would say nothing."""
    half = min(num_real, num_fake) // 2
    if half < 2:
        raise ConfigError(f"KID needs at least 4 images of each kind; {num_real} real and {num_fake} generated")
    if wanted > half:
        log.warning(
            f"metrics.kid_subset_size={wanted} is more than half of the {min(num_real, num_fake):,} images "
            f"scored: KID on subsets of {half} (its std over subsets of the whole set would be 0)"
        )
        return half
    return wanted


def check_scoring_options(cfg: DictConfig) -> None:
    """Refuse counts and times of the wrong type or range before the checkpoint is read."""
    counts = {"num_samples": 4, "batch_size": 1, "metrics.kid_subset_size": 2}
    for key, minimum in counts.items():
        value = OmegaConf.select(cfg, key)
        if not (value is None and key == "num_samples") and (type(value) is not int or value < minimum):
            raise ConfigError(f"{key}={value!r}: expected a whole number >= {minimum}")
    minutes = cfg.sampling_minutes
    if type(minutes) not in (int, float) or not (math.isfinite(minutes) and minutes > 0):
        raise ConfigError(f"sampling_minutes={minutes!r}: expected a finite number of minutes > 0")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":  # the GPU runs ahead of Python: a time is only true once its work is done
        torch.cuda.synchronize(device)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _print_table(metrics: dict[str, float], title: str) -> None:
    table = rich.table.Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(metrics.items()):
        table.add_row(name, f"{value:.6g}")
    rich.print(table)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    check_scoring_options(cfg)
    # every phase stops on one signal; the test and the scoring below name themselves
    with interruptible("loading the checkpoint and data, or writing metrics.json", "Run the same command again"):
        evaluate(cfg)


if __name__ == "__main__":
    main()
