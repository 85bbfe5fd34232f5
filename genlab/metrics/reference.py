"""Reference statistics: the real images' features, their mean and covariance, computed once per dataset, split,
number of images, resolution and feature space, and kept in a file that later evaluations, sweep trials and the
SampleFID callback read instead of running the real images through the network again.

A statistics file is data that may come from anywhere, and is read as genlab reads a checkpoint:
- an .npz archive of exactly the four arrays genlab writes (key, mu, sigma, features), each stored uncompressed
  and no larger than the archive;
- each array's header (dtype, shape) checked against what the key says before its bytes are read, and read with
  `allow_pickle=False`: an object array, the only way an .npy holds code, is refused, never unpickled;
- every value finite;
- its key (format, dataset, split, number of images, their shape, the feature space's weights, a digest of the
  images themselves) equal to the one this evaluation computes: a file from other data or another network is
  refused in one line that says which field differs and how to recompute it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_fidelity.metric_fid import fid_features_to_statistics

from genlab.data.images import ImageDataModule
from genlab.errors import GenlabError, one_line
from genlab.metrics.features import FeatureSpace
from genlab.utils.files import replaced_atomically

log = logging.getLogger(__name__)

FORMAT = "genlab-reference-statistics/1"
MAX_KEY_CHARS = 4096


class StatisticsError(GenlabError):
    """A reference statistics file that is unreadable, unsafe, or not the one this evaluation needs."""


@dataclasses.dataclass(frozen=True)
class ReferenceStatistics:
    """The real images' statistics in one feature space, as torch-fidelity computes them."""

    key: dict[str, Any]  # what they are of: see reference_key
    mu: np.ndarray  # (D,) float32: the features' mean (torch-fidelity's fid_features_to_statistics)
    sigma: np.ndarray  # (D, D) float64: their covariance
    features: Tensor  # (N, D) float32: KID's subsets, precision's and recall's neighbourhoods


def canonical_order(images: Tensor) -> tuple[Tensor, str]:
    """The images (N, C, H, W) uint8 sorted by their own SHA-256, and a digest of the sorted set: the same for the
    same images in any order (a split shuffled by another data.seed is the same reference)."""
    pixels = images.cpu().contiguous().numpy()
    digests = [hashlib.sha256(image.tobytes()).digest() for image in pixels]
    order = sorted(range(len(digests)), key=digests.__getitem__)
    return images[torch.as_tensor(order, dtype=torch.long)], hashlib.sha256(b"".join(sorted(digests))).hexdigest()


def reference_key(dataset: str, split: str, images: Tensor, features: FeatureSpace, digest: str) -> dict[str, Any]:
    """The fields that say which statistics these are; a file's must equal the evaluation's."""
    return {
        "format": FORMAT,
        "dataset": dataset,
        "split": split,
        "num_images": len(images),
        "image_shape": list(images.shape[1:]),
        "feature_space": features.identity,
        "num_features": features.num_features,
        "images_sha256": digest,
    }


def file_name(key: dict[str, Any]) -> str:
    """cifar10-train50000-3x32x32-inception-<weights>-<images>.npz: other images or weights, another file."""
    channels, height, width = key["image_shape"]
    what = f"{key['dataset']}-{key['split']}{key['num_images']}-{channels}x{height}x{width}"
    return f"{what}-{key['feature_space']}-{key['images_sha256'][:12]}.npz"


@torch.no_grad()
def compute_statistics(
    features: FeatureSpace, images: Tensor, key: dict[str, Any], batch_size: int
) -> ReferenceStatistics:
    """The features of `images` (N, C, H, W) uint8, in batches on the feature network's device, and their moments."""
    device = next(features.parameters()).device
    extracted = [features(batch.to(device).float() / 255)[0].float().cpu() for batch in images.split(batch_size)]
    real = torch.cat(extracted)  # (N, D)
    moments = fid_features_to_statistics(real)
    return ReferenceStatistics(key, moments["mu"], moments["sigma"], real)


def save_statistics(statistics: ReferenceStatistics, path: Path) -> None:
    """Write the file whole or not at all (a sweep's trials may read it as soon as it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path, "wb") as file:
        np.savez(
            file,
            key=np.array(json.dumps(statistics.key, sort_keys=True)),
            mu=statistics.mu,
            sigma=statistics.sigma,
            features=statistics.features.numpy(),
        )


def load_statistics(path: Path, expected: dict[str, Any] | None = None) -> ReferenceStatistics:
    """A statistics file as checked data (see the module's docstring); `expected`: the key it must have."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            if set(members) != {"key.npy", "mu.npy", "sigma.npy", "features.npy"}:
                raise StatisticsError(f"{path}: holds {sorted(members)[:6]}, not genlab's key, mu, sigma and features")
            size = path.stat().st_size
            if any(info.compress_type != zipfile.ZIP_STORED or info.file_size > size for info in members.values()):
                raise StatisticsError(f"{path}: holds compressed or oversized entries; genlab writes neither")
            key = _key(_read(archive, "key.npy", np.dtype(f"<U{MAX_KEY_CHARS}"), (), path), path)
            count, dims = key["num_images"], key["num_features"]
            mu = _read(archive, "mu.npy", np.dtype("<f4"), (dims,), path)
            sigma = _read(archive, "sigma.npy", np.dtype("<f8"), (dims, dims), path)
            features = _read(archive, "features.npy", np.dtype("<f4"), (count, dims), path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise StatisticsError(f"{path}: not a readable statistics file, or truncated ({one_line(err)})") from None
    if expected is not None:
        _check_key(key, expected, path)
    return ReferenceStatistics(key, mu, sigma, torch.from_numpy(features))


def _read(archive: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...], path: Path) -> np.ndarray:
    """One array, its header checked before its bytes are read; never unpickled."""
    with archive.open(name) as file:
        version = np.lib.format.read_magic(file)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        found_shape, fortran_order, found_dtype = header(file)
        fits = found_dtype.kind == "U" and found_dtype.itemsize <= dtype.itemsize if dtype.kind == "U" else False
        if not (fits or found_dtype == dtype) or found_shape != shape or fortran_order:
            raise StatisticsError(
                f"{path}: its {name.removesuffix('.npy')} is {found_dtype} of shape {list(found_shape)}, expected "
                f"{dtype.str if dtype.kind != 'U' else 'text'} of shape {list(shape)}"
            )
    with archive.open(name) as file:
        array = np.lib.format.read_array(file, allow_pickle=False)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise StatisticsError(f"{path}: its {name.removesuffix('.npy')} holds NaN or infinite values")
    return array


def _key(array: np.ndarray, path: Path) -> dict[str, Any]:
    try:
        key = json.loads(str(array))
    except json.JSONDecodeError:
        key = None
    fields = {"format": str, "num_images": int, "num_features": int}
    if not isinstance(key, dict) or not all(isinstance(key.get(name), kind) for name, kind in fields.items()):
        raise StatisticsError(f"{path}: its key is not the JSON object genlab writes")
    if key["format"] != FORMAT:
        raise StatisticsError(f"{path}: format {key['format']!r}, not {FORMAT!r}")
    if not (1 <= key["num_images"] <= 10_000_000 and 1 <= key["num_features"] <= 100_000):
        raise StatisticsError(f"{path}: its key claims {key['num_images']} images of {key['num_features']} features")
    return key


def _check_key(key: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    for name, value in expected.items():
        if key.get(name) != value:
            raise StatisticsError(
                f"{path}: statistics of other {name.replace('_', ' ')} ({key.get(name)!r}, this evaluation's is "
                f"{value!r}): stale or foreign; delete it to have it recomputed"
            )


def reference_statistics(
    features: FeatureSpace, images: Tensor, dataset: str, split: str, folder: Path, batch_size: int
) -> ReferenceStatistics:
    """The statistics of the real `images` (N, C, H, W) uint8 from their file in `folder`, computed and written there
    first if there is none."""
    images, digest = canonical_order(images)
    key = reference_key(dataset, split, images, features, digest)
    path = folder / file_name(key)
    if path.is_file():
        log.info(f"Reference statistics of {len(images):,} {dataset} {split} images: {path}")
        return load_statistics(path, key)
    log.info(f"Computing the reference statistics of {len(images):,} {dataset} {split} images, once: {path}")
    statistics = compute_statistics(features, images, key, batch_size)
    save_statistics(statistics, path)
    return statistics


def reference_images(datamodule: ImageDataModule, split: str) -> Tensor:
    """The real images (N, C, H, W) uint8 of a split: `train`, the whole official training split (the validation
    images genlab holds out of it included, as published FIDs use all of it), `val` or `test`."""
    datamodule.setup("test" if split == "test" else "fit")
    if split == "train":
        return torch.cat([datamodule.data_train.images, datamodule.data_val.images])
    return (datamodule.data_test if split == "test" else datamodule.data_val).images
