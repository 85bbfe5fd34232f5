"""Evaluate a checkpoint: `python -m src.eval ckpt_path=outputs/.../checkpoints/last.ckpt [num_samples=10000]`.

Rebuilds the model from the checkpoint and its data from the data config stored in it (read from this
machine's data folder; or the data given on this command line, `data=...`, which a checkpoint trained on
the user's own DataModule needs), runs the test split through the model's own test_step (text data, which
has no test split: the validation windows), and scores the images of an ImageSampler (its samples) or a
Reconstructor (its reconstructions of the test split) with FID, KID, IS, precision and recall against the
reference statistics of metrics.protocol's split (computed once, then read from their file), in
metrics.feature's space; `seeds=3` scores three sets of samples (mean and std). Models with a likelihood
report it in bits/dim on one scale (likelihood/bpd). Models that sample in steps (diffusion, flow matching)
take steps=, sampler= and guidance_scale= for their samples. Writes metrics.json to its run folder and
prints a table.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import hydra
import lightning as L
import numpy as np
import rich
import rich.table
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import Field
from rich.progress import track

from genlab.callbacks.interrupt import CheckpointOnInterrupt
from genlab.capabilities import Denoiser, ImageSampler, LikelihoodModel, Reconstructor, require, use_sampling_options
from genlab.checkpoints import datamodule_from, model_from, read_checkpoint
from genlab.data.images import ImageDataModule
from genlab.errors import ConfigError
from genlab.metrics.features import FeatureSpace, feature_space
from genlab.metrics.protocols import PROTOCOLS, Protocol
from genlab.metrics.reference import reference_images, reference_statistics
from genlab.metrics.sample_quality import SampleQuality
from genlab.utils.config import CONF_DIR
from genlab.utils.failed_runs import exit_on_user_error
from genlab.utils.files import check_replaceable
from genlab.utils.instantiate import instantiate
from genlab.utils.model_size import SizeLimits
from genlab.utils.run_folder import METRICS, write_metrics
from genlab.utils.signals import interruptible, signals_end_the_command
from genlab.utils.validation import check_config, check_options, read_from_data

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test metrics of the checkpoint, plus sample-quality metrics where the model makes images."""
    output_dir = Path(cfg.paths.output_dir)
    check_replaceable(output_dir / METRICS, "the metrics")  # not after the whole evaluation
    checkpoint = read_checkpoint(cfg.ckpt_path)  # checked data: genlab's own classes are built from its values
    # within limits.*; model.first_stage=...: what it builds on, elsewhere
    model = model_from(checkpoint, cfg.ckpt_path, SizeLimits.of(cfg.limits), cfg.model)
    use_sampling_options(model, cfg)  # steps=, sampler=, guidance_scale=: refused for models that take none
    L.seed_everything(cfg.seed, workers=True)
    # the data given on the command line, else the run's (an image folder's decoded images from this machine's cache)
    datamodule = evaluation_data(cfg, checkpoint, model)
    del checkpoint
    scores_images = isinstance(datamodule, ImageDataModule) and isinstance(model, (ImageSampler, Reconstructor))
    if scores_images:  # read before the test: a classifier that cannot score these images is refused before any work
        features = feature_space(
            cfg.metrics.feature,
            datamodule.name,
            datamodule.image_shape,
            cfg.metrics.classifier_ckpt,
            cfg.metrics.inception_weights,
        )

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
    protocol = PROTOCOLS[cfg.metrics.protocol]
    if scores_images:
        with interruptible("the scoring of images", "Run the same command again"):
            metrics |= score_images(model.to(trainer.strategy.root_device), datamodule, features, cfg, protocol)
    elif isinstance(model, (ImageSampler, Reconstructor)):
        log.info(
            f"No FID, KID or IS: they score against the test split of one of genlab's image datamodules, which "
            f"{type(datamodule).__name__} is not"
        )
    num_images = protocol.likelihood_images if cfg.likelihood.num_images is None else cfg.likelihood.num_images
    if isinstance(datamodule, ImageDataModule) and isinstance(model, LikelihoodModel) and num_images != 0:
        with interruptible("the likelihood bound", "Run the same command again"):
            metrics |= likelihood(model.to(trainer.strategy.root_device), datamodule, num_images, cfg)

    _print_table(metrics, title=f"{type(model).__name__} · {cfg.ckpt_path}")
    path = write_metrics(output_dir, metrics)  # written last: a signal before it leaves no metrics.json
    log.info(f"Metrics: {path}")
    return metrics


def evaluation_data(cfg: DictConfig, checkpoint: dict[str, Any], model: L.LightningModule) -> L.LightningDataModule:
    """The data given on this command line (`data=...`: the user's own, built as src.train builds it), else the
    run's, rebuilt from the checkpoint only where it is one of genlab's datamodules, and read from this machine's data
    folder: what a checkpoint names is data, never code to run."""
    if "data" not in cfg:
        return datamodule_from(
            checkpoint,
            cfg.ckpt_path,
            data_dir=cfg.paths.data_dir,
            cache_dir=cfg.paths.cache_dir,
            batch_size=cfg.batch_size,
        )
    check_config(cfg.data, "data")
    # what the model took from its training data (its config's ${data.image_shape}, ${data.num_classes}, ...)
    for model_key, data_key in read_from_data(f"{type(model).__module__}.{type(model).__qualname__}").items():
        given, trained_with = _plain(cfg.data.get(data_key)), _plain(model.hparams.get(model_key))
        if data_key in cfg.data and given != trained_with:
            raise ConfigError(
                f"data.{data_key}={given} does not fit the checkpoint's {type(model).__name__}, trained on data with "
                f"{data_key}={trained_with}"
            )
    this_machine = {"batch_size": cfg.batch_size} if "batch_size" in cfg.data else {}
    return instantiate(cfg.data, key="data", **this_machine)


def _plain(value: Any) -> Any:
    """A config's or a hyperparameter's value as a checkpoint holds it: lists, not ListConfigs or tuples."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return list(value) if isinstance(value, tuple) else value


@torch.no_grad()
def score_images(
    model: L.LightningModule,
    datamodule: ImageDataModule,
    features: FeatureSpace,
    cfg: DictConfig,
    protocol: Protocol,
) -> dict[str, float]:
    """FID, KID, IS, precision and recall of the model's samples (against the protocol's reference split), or of
    its reconstructions of the test split (against the test split), in the feature space `features`; with seeds > 1,
    their mean and std over seeds."""
    device = model.device
    generative = scores_samples(model, cfg.metrics.score)
    features = features.to(device)
    split = protocol.reference_split if generative else "test"
    real = reference_images(datamodule, split)
    reference = reference_statistics(
        features, real, datamodule.name, split, Path(cfg.metrics.statistics_dir), cfg.batch_size
    )
    if not generative:
        subset_size = kid_subset_size(cfg.metrics.kid_subset_size, len(real), len(real))
        quality = SampleQuality(features, reference, subset_size)
        for images, _ in track(datamodule.test_dataloader(), description="Scoring reconstructions", transient=True):
            images = images.to(device)  # a denoiser reconstructs the corrupted images, as it was trained to
            inputs = model.corrupt(images) if isinstance(model, Denoiser) else images
            quality.update(model.reconstruct(inputs), real=False)
        return {f"reconstruction/{name}": value for name, value in quality.compute().items()}

    runs = []
    for index, seed in enumerate(range(cfg.seed, cfg.seed + cfg.seeds)):
        L.seed_everything(seed, workers=True, verbose=False)
        if index == 0:  # the count is the first seed's: every seed scores as many samples
            first_batch, num_fake = first_samples(model, cfg, protocol.num_samples)
            subset_size = kid_subset_size(cfg.metrics.kid_subset_size, len(real), num_fake)
            quality = SampleQuality(features, reference, subset_size)
        else:
            first_batch = model.sample(min(cfg.batch_size, num_fake))
        quality.reset_generated()
        quality.update(first_batch, real=False)
        batches = range(len(first_batch), num_fake, cfg.batch_size)
        for start in track(batches, description=f"Generating and scoring {num_fake} samples", transient=True):
            quality.update(model.sample(min(cfg.batch_size, num_fake - start)), real=False)
        runs.append(quality.compute())
        log.info(f"Seed {seed}: " + ", ".join(f"{name} {value:.4g}" for name, value in runs[-1].items()))
    scores = {f"sample/{name}": float(np.mean([run[name] for run in runs])) for name in runs[0]}
    if len(runs) > 1:  # the spread over seeds, as papers quote mean +- std (sample standard deviation)
        for name in ("fid", "kid", "is", "precision", "recall"):
            scores[f"sample/{name}_std_over_seeds"] = float(np.std([run[name] for run in runs], ddof=1))
    # how it was measured: the protocol, the counts, the split (in the key) and the feature space
    return scores | {
        f"protocol/{cfg.metrics.protocol}": 1,
        "sample/num_samples": num_fake,
        "sample/seed": cfg.seed,
        "sample/num_seeds": cfg.seeds,
        f"sample/reference/{split}": len(real),
        f"sample/feature/{features.name}": features.num_features,
    }


def scores_samples(model: L.LightningModule, score: str | None) -> bool:
    """Whether src.eval scores the model's samples (else its reconstructions of the test split): metrics.score, or
    with null samples where the model draws them. A first stage's reconstructions are the floor of the latent model
    built on it."""
    if score is None:
        return isinstance(model, ImageSampler)
    capability = ImageSampler if score == "samples" else Reconstructor
    require(model, capability, f"metrics.score={score}")
    return score == "samples"


@torch.no_grad()
def likelihood(model: LikelihoodModel, datamodule: ImageDataModule, num_images: int | None, cfg: DictConfig) -> dict:
    """The model's bound on -log2 P of the test split's 8-bit images, in bits/dim (genlab/models/likelihood.py):
    on its first `num_images` (None: all of them), one scale for every family."""
    if model.likelihood_bound is None:
        log.info(f"{type(model).__name__}: offers no likelihood bound (flow matching, latent diffusion)")
        return {}
    bits, seen = [], 0
    log.info(f"Likelihood: {model.likelihood_bound}, k={cfg.likelihood.importance_samples}")
    for images, _ in track(datamodule.test_dataloader(), description="Bounding the likelihood", transient=True):
        images = images[: None if num_images is None else num_images - seen].to(model.device)
        bits.append(model.nll_bits_per_dim(images, cfg.likelihood.importance_samples).cpu())
        seen += len(images)
        if seen == num_images:
            break
    return {
        "likelihood/bpd": float(torch.cat(bits).mean()),
        "likelihood/num_images": seen,
        "likelihood/importance_samples": cfg.likelihood.importance_samples,
    }


# num_samples=null: as many samples as the model draws in sampling_minutes, within these bounds (10,000: FID's usual
# count; below 1,000 FID's bias with the count outgrows the differences between models)
MIN_SAMPLES, MAX_SAMPLES = 1_000, 10_000
MAX_SCORED = 100_000  # num_samples given
MAX_BATCH_SIZE = 10_000
MAX_SEEDS = 100
MAX_IMPORTANCE_SAMPLES = 100_000  # twenty times the 5,000 of Burda et al.


def first_samples(model: ImageSampler, cfg: DictConfig, protocol_count: int | None = None) -> tuple[torch.Tensor, int]:
    """The first batch of samples, timed, and how many samples to score: num_samples, else the protocol's count, or
    (both null) as many as the model draws in sampling_minutes, between MIN_SAMPLES and MAX_SAMPLES. Says how long
    generating them will take."""
    count = cfg.num_samples if cfg.num_samples is not None else protocol_count
    size = min(cfg.batch_size, count or cfg.batch_size)
    log.info(f"Timing the model's sampling on a first batch of {size}")
    _synchronize(model.device)
    started = time.perf_counter()
    images = model.sample(size)
    _synchronize(model.device)
    rate = size / (time.perf_counter() - started)  # images per second; the first batch's warm-up included
    if count is None:
        fits = int(rate * cfg.sampling_minutes * 60) // 100 * 100
        num_samples = min(MAX_SAMPLES, max(MIN_SAMPLES, fits))
        why = f"as many as fit in sampling_minutes={cfg.sampling_minutes:g}, within {MIN_SAMPLES:,}-{MAX_SAMPLES:,}"
    else:
        num_samples = count
        why = "num_samples" if cfg.num_samples is not None else f"metrics.protocol={cfg.metrics.protocol}"
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


@dataclass(frozen=True)
class EvalOptions:
    """What src.eval's command line may ask for, each type and range declared once: checked before the checkpoint
    is read (genlab/utils/validation.py's check_options), stepped past by tests/helpers.py's declared_breaches. A
    stepwise sampler checks its own steps, sampler and guidance."""

    # KID needs 4 images of each kind; past MAX_SCORED, twice the 50,000 of FID in the literature
    num_samples: Annotated[int, Field(ge=4, le=MAX_SCORED, strict=True)] | None = None
    # the seeds scored, from seed on: papers quote the mean and std over a few
    seeds: Annotated[int, Field(ge=1, le=MAX_SEEDS, strict=True)] = 1
    sampling_minutes: Annotated[float, Field(gt=0, strict=True)] = 5
    # images generated and scored together, and the test split's batches
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE, strict=True)] = 500
    steps: Annotated[int, Field(ge=1, strict=True)] | None = None
    sampler: str | None = None
    guidance_scale: float | None = None


@dataclass(frozen=True)
class MetricsOptions:
    """src.eval's `metrics.*`, declared as EvalOptions are."""

    protocol: Literal[tuple(PROTOCOLS)] = "quick"
    # null: samples where the model draws them, else reconstructions (a first stage's: the floor of a latent model)
    score: Literal["samples", "reconstructions"] | None = None
    feature: Literal["classifier", "inception"] = "classifier"
    classifier_ckpt: str | None = None
    inception_weights: str | None = None
    kid_subset_size: Annotated[int, Field(ge=2, strict=True)] = 1000


@dataclass(frozen=True)
class LikelihoodOptions:
    """src.eval's `likelihood.*`, declared as EvalOptions are."""

    num_images: Annotated[int, Field(ge=0, strict=True)] | None = None
    importance_samples: Annotated[int, Field(ge=1, le=MAX_IMPORTANCE_SAMPLES, strict=True)] = 5000


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


@signals_end_the_command
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    check_options(EvalOptions, cfg, "src.eval")
    check_options(MetricsOptions, cfg.metrics, "src.eval", prefix="metrics")
    check_options(LikelihoodOptions, cfg.likelihood, "src.eval", prefix="likelihood")
    check_config(cfg.limits, "limits")
    # every phase stops on one signal; the test and the scoring below name themselves
    with interruptible("loading the checkpoint and data, or writing metrics.json", "Run the same command again"):
        evaluate(cfg)


if __name__ == "__main__":
    main()
