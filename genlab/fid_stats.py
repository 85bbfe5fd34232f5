"""Reference statistics ahead of time: `python -m src.fid_stats data=cifar10 split=train metrics.feature=inception`.

Runs a split's real images through the feature network once and writes their features, mean and covariance where
src.eval, sweep trials and the SampleFID callback read them (metrics.statistics_dir; genlab/metrics/reference.py
says what the file holds and how it is checked). They compute the file themselves where there is none; computing
it first spares a sweep's parallel trials the work, and tells the protocol's cost in advance. A file already there
is read and checked, not recomputed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from genlab.data.images import ImageDataModule
from genlab.errors import ConfigError
from genlab.metrics.features import feature_space
from genlab.metrics.reference import file_name, reference_images, reference_statistics
from genlab.utils.config import CONF_DIR
from genlab.utils.failed_runs import exit_on_user_error
from genlab.utils.instantiate import instantiate
from genlab.utils.signals import interruptible, signals_end_the_command

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def write_statistics(cfg: DictConfig) -> Path:
    """The statistics file of cfg.data's cfg.split (its first cfg.num_images, null: all) in metrics.feature's space."""
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r}: expected one of {', '.join(SPLITS)} (protocol paper: train)")
    if cfg.num_images is not None and (type(cfg.num_images) is not int or cfg.num_images < 2):
        raise ConfigError(f"num_images={cfg.num_images!r}: expected a whole number >= 2, or null for the whole split")
    datamodule = instantiate(cfg.data, "data")
    if not isinstance(datamodule, ImageDataModule):
        raise ConfigError(f"data={datamodule.name}: reference statistics are of images; this dataset holds none")
    device = torch.device("cuda" if cfg.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
    features = feature_space(
        cfg.metrics.feature,
        datamodule.name,
        datamodule.image_shape,
        cfg.metrics.classifier_ckpt,
        cfg.metrics.inception_weights,
    ).to(device)
    datamodule.prepare_data()
    images = reference_images(datamodule, cfg.split)[: cfg.num_images]
    folder = Path(cfg.metrics.statistics_dir)
    statistics = reference_statistics(features, images, datamodule.name, cfg.split, folder, cfg.batch_size)
    path = folder / file_name(statistics.key)
    log.info(f"Statistics of {len(images):,} {datamodule.name} {cfg.split} images in {features.identity}: {path}")
    return path


@signals_end_the_command
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="fid_stats")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    with interruptible("computing the reference statistics", "Run the same command again"):
        write_statistics(cfg)


if __name__ == "__main__":
    main()
