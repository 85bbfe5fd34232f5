"""Inception-v3 metrics without the real weights: an Inception-v3 of torch-fidelity's layout with fixed random weights,
saved to a file, gives genlab's FID/KID/IS/precision/recall equal to torch-fidelity's own calculate_metrics on the
same images; reference statistics files are reused, and refused when stale, foreign or unsafe; src.eval scores a
CIFAR-10-shaped model with protocol paper, seeds=3 and cached statistics, and says in one line what is missing
without the weights file.

Inception on a CPU costs about 0.3 s an image at 299x299 (torch-fidelity resizes every input to that), so these tests
use a few 8x8 or 32x32 images.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch_fidelity
import torchvision
from torch_fidelity import FeatureExtractorInceptionV3
from torch_fidelity import feature_extractor_inceptionv3 as fidelity_inception

import genlab.eval
import genlab.fid_stats
from genlab.checkpoints import CheckpointError
from genlab.metrics import ClassifierFeatures, InceptionFeatures, SampleQuality
from genlab.metrics.inception import PUBLISHED_SHA256, WEIGHTS_FILE_NAME, weights_path
from genlab.metrics.reference import (
    StatisticsError,
    canonical_order,
    file_name,
    load_statistics,
    reference_key,
    reference_statistics,
    save_statistics,
)
from genlab.models.nets.classifier import ConvClassifier
from genlab.train import train
from tests.helpers import TEST_OVERRIDES, compose_config, run_main, write_mnist_raw


def random_inception_weights(path: Path) -> Path:
    """torch-fidelity's Inception-v3 with fixed random weights (He-initialised convolutions: features of order 1),
    saved as a state dict: the layout of the published file. Its constructor loads weights, so it is given none."""
    torch.manual_seed(0)
    with (
        mock.patch.object(fidelity_inception, "load_state_dict_from_url", return_value={}),
        mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict"),
    ):
        network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.nn.init.normal_(network.fc.weight, std=0.05)  # logits that differ between images: an IS above 1
    torch.save(network.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_inception_weights(tmp_path_factory.mktemp("inception") / WEIGHTS_FILE_NAME)


class Images(torch.utils.data.Dataset):
    """uint8 images (3, H, W), as torch-fidelity reads its inputs."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


@pytest.mark.slow  # 30 Inception passes at 299x299 on the CPU: about 10 s on 2 quiet cores
def test_scores_equal_torch_fidelitys_and_cached_statistics_give_the_same_fid(
    tmp_path: Path, inception_weights: Path
) -> None:
    generator = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=generator)
    noise = torch.randint(-60, 61, (3, 3, 8, 8), generator=generator)
    fake = torch.cat([real[:3], (real[3:].int() + noise).clamp(0, 255).to(torch.uint8)])  # half copies, half near

    features = InceptionFeatures(inception_weights)
    cached = reference_statistics(features, real, "cifar10", "test", tmp_path, batch_size=64)
    quality = SampleQuality(features, cached, kid_subset_size=3, is_splits=2)
    quality.update(fake.float() / 255, real=False)
    ours = quality.compute()
    theirs = torch_fidelity.calculate_metrics(
        input1=Images(fake),  # generated
        input2=Images(canonical_order(real)[0]),  # KID's subsets depend on the order: the file's, sorted by content
        feature_extractor="inception-v3-compat",  # torch-fidelity measures precision/recall in VGG-16 by default
        feature_extractor_weights_path=str(inception_weights),
        cuda=False,
        fid=True,
        kid=True,
        isc=True,
        prc=True,
        kid_subset_size=3,
        isc_splits=2,
        save_cpu_ram=True,  # no loader processes; precision and recall in blocks, as genlab computes them
        cache=False,
        verbose=False,
    )
    keys = {
        "fid": torch_fidelity.KEY_METRIC_FID,
        "kid": torch_fidelity.KEY_METRIC_KID_MEAN,
        "kid_std": torch_fidelity.KEY_METRIC_KID_STD,
        "is": torch_fidelity.KEY_METRIC_ISC_MEAN,
        "is_std": torch_fidelity.KEY_METRIC_ISC_STD,
        "precision": torch_fidelity.KEY_METRIC_PRECISION,
        "recall": torch_fidelity.KEY_METRIC_RECALL,
    }
    assert {name: ours[name] for name in keys} == pytest.approx({n: theirs[k] for n, k in keys.items()}, abs=1e-4)
    # the numbers are not degenerate: a distance, an IS above 1, precision and recall strictly between 0 and 1
    assert ours["fid"] > 0 and ours["is"] > 1 and 0 < ours["precision"] <= 1 and 0 < ours["recall"] <= 1

    # the same FID from the statistics file as from the real images' features computed again, in memory (in their
    # given order: the float32 mean of the same numbers summed in another order differs in its last bits)
    (path,) = tmp_path.glob("*.npz")
    quality.reference = load_statistics(path, cached.key)
    from_file = quality.compute()["fid"]
    quality.reference = None
    quality.update(real.float() / 255, real=True)
    assert from_file == ours["fid"] and from_file == pytest.approx(quality.compute()["fid"], rel=1e-6)


# --- the statistics file: reused, and refused when it is not the one asked for ---------------------------------


@pytest.fixture
def tiny_features() -> ClassifierFeatures:
    torch.manual_seed(0)
    return ClassifierFeatures(ConvClassifier(image_shape=(1, 8, 8), num_classes=3, channels=(4,), feature_dim=5))


def test_statistics_are_computed_once_then_read(tmp_path: Path, tiny_features: ClassifierFeatures) -> None:
    images = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8)
    first = reference_statistics(tiny_features, images, "mnist", "test", tmp_path, batch_size=8)
    (path,) = tmp_path.iterdir()
    assert path.name.startswith(f"mnist-test20-1x8x8-{tiny_features.identity}-")
    with mock.patch("genlab.metrics.reference.compute_statistics") as compute:
        again = reference_statistics(tiny_features, images.flip(0), "mnist", "test", tmp_path, batch_size=8)
    compute.assert_not_called()  # the same images in another order: the same file, read
    assert np.array_equal(again.sigma, first.sigma) and torch.equal(again.features, first.features)
    assert again.mu.dtype == np.float32 and again.sigma.dtype == np.float64  # torch-fidelity's own dtypes


def statistics_file(tmp_path: Path, tiny_features: ClassifierFeatures) -> tuple[Path, dict]:
    images, digest = canonical_order(torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8))
    statistics = reference_statistics(tiny_features, images, "mnist", "test", tmp_path, batch_size=8)
    return tmp_path / file_name(statistics.key), reference_key("mnist", "test", images, tiny_features, digest)


def rewrite(path: Path, **arrays: np.ndarray) -> None:
    with np.load(path) as archive:
        content = dict(archive) | arrays
    np.savez(path, **content)


class _RunsCode:
    """Unpickling this runs a shell command: what a malicious statistics file would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_stale_foreign_or_unsafe_statistics_are_refused_in_one_line(
    tmp_path: Path, tiny_features: ClassifierFeatures
) -> None:
    path, key = statistics_file(tmp_path, tiny_features)
    good = path.read_bytes()

    def refused(match: str, expected: dict = key) -> None:
        with pytest.raises(StatisticsError, match=match) as error:
            load_statistics(path, expected)
        assert "\n" not in str(error.value)
        path.write_bytes(good)

    # stale: the data changed (other images), or another network's features
    refused(r"statistics of other images sha256 .*stale or foreign; delete it", key | {"images_sha256": "0" * 64})
    refused(r"statistics of other feature space", key | {"feature_space": "inception-0123456789abcdef"})
    # foreign: another array, shape or dtype, non-finite values, a changed key
    rewrite(path, sigma=np.zeros((5, 4)))
    refused(r"its sigma is float64 of shape \[5, 4\], expected <f8 of shape \[5, 5\]")
    rewrite(path, mu=np.zeros(5, dtype=np.float64))
    refused(r"its mu is float64 of shape \[5\], expected <f4")
    rewrite(path, mu=np.full(5, np.nan, dtype=np.float32))
    refused(r"its mu holds NaN or infinite values")
    rewrite(path, key=np.array(json.dumps(key | {"num_images": 11})))
    refused(r"its features is float32 of shape \[10, 5\], expected <f4 of shape \[11, 5\]")
    rewrite(path, extra=np.zeros(1))
    refused(r"holds .*not genlab's key, mu, sigma and features")
    path.write_bytes(good[: len(good) // 2])
    refused(r"not a readable statistics file, or truncated")
    # unsafe: an object array, whose unpickling would run code, is refused before its bytes are read
    marker = tmp_path / "pwned"
    rewrite(path, mu=np.array([_RunsCode(marker)], dtype=object))
    refused(r"its mu is object of shape \[1\]")
    assert not marker.exists()


def test_statistics_written_whole_are_read_back_exactly(tmp_path: Path, tiny_features: ClassifierFeatures) -> None:
    path, key = statistics_file(tmp_path, tiny_features)
    statistics = load_statistics(path, key)
    copy = tmp_path / "copy.npz"
    save_statistics(statistics, copy)
    assert load_statistics(copy, key).key == key and copy.read_bytes() == path.read_bytes()


def test_fid_stats_writes_the_file_that_evaluations_read_and_refuses_a_bad_split(tmp_path: Path) -> None:
    write_mnist_raw(tmp_path / "data" / "FashionMNIST" / "raw", num_train=60, num_test=20)
    common = [f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'outputs'}", "accelerator=cpu"]
    result = run_main(genlab.fid_stats.main, *common, "split=test")
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = (tmp_path / "outputs" / "statistics").iterdir()
    assert path.name.startswith("fashion_mnist-test20-1x28x28-classifier-")
    assert load_statistics(path).features.shape == (20, 64)
    written = path.stat().st_mtime_ns
    assert run_main(genlab.fid_stats.main, *common, "split=test").returncode == 0
    assert path.stat().st_mtime_ns == written  # read and checked, not computed again
    result = run_main(genlab.fid_stats.main, *common, "split=validation")
    assert result.returncode == 1 and "error: split='validation': expected one of train, val, test" in result.stderr


# --- the weights file ----------------------------------------------------------------------------------------------


def test_missing_weights_say_which_file_its_checksum_and_how_to_fetch_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / WEIGHTS_FILE_NAME
    with pytest.raises(CheckpointError) as error:
        weights_path(str(missing))
    message = str(error.value)
    assert "\n" not in message and str(missing) in message and PUBLISHED_SHA256 in message
    assert f"curl -L --create-dirs -o {missing} https://" in message and "metrics.inception_weights=PATH" in message


def test_weights_are_read_as_data_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    malicious = tmp_path / "malicious.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": _RunsCode(marker)}, malicious)
    with pytest.raises(CheckpointError, match="refused to load objects other than tensors"):
        InceptionFeatures(malicious)
    assert not marker.exists()
    other_layout = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3)}, other_layout)
    with pytest.raises(CheckpointError, match=r"resnet.pth: not the weights of torch-fidelity's Inception-v3"):
        InceptionFeatures(other_layout)


# --- src.eval end to end on a CIFAR-10-shaped model -----------------------------------------------------------------


@pytest.fixture
def small_cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """CIFAR-10's python batches with 6 random images each (30 train, 6 test), and torchvision's checksums of them:
    genlab's own CIFAR10DataModule reads them, as a checkpoint trained on CIFAR-10 names it."""
    dataset = torchvision.datasets.CIFAR10
    folder = tmp_path / "data" / dataset.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5 = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        batch = {"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, 6).tolist()}
        content = {"label_names": [f"class{i}" for i in range(10)]} if name == "batches.meta" else batch
        (folder / name).write_bytes(pickle.dumps(content))
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    monkeypatch.setattr(dataset, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(dataset, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(dataset, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]})
    return tmp_path / "data"


@pytest.mark.slow  # about 60 Inception passes on the CPU (30 real images once, 3 x 6 samples, then 6): ~25 s
def test_eval_scores_a_cifar10_model_with_the_paper_protocol_in_inception_features(
    tmp_path: Path, small_cifar10: Path, inception_weights: Path
) -> None:
    data = [f"paths.data_dir={small_cifar10}", "data.val_size=6", "data.batch_size=6"]
    train(compose_config([*TEST_OVERRIDES, "model=vae", "data=cifar10", *data, "test=false"], tmp_path / "vae"))
    paper = [
        f"ckpt_path={tmp_path / 'vae' / 'checkpoints' / 'last.ckpt'}",
        f"paths.data_dir={small_cifar10}",
        f"paths.log_dir={tmp_path / 'outputs'}",
        "metrics.feature=inception",
        "metrics.protocol=paper",
        "num_samples=6",  # the protocol's 50,000, overridden down
        "likelihood.importance_samples=16",
        "batch_size=6",  # at most the 24 training images (the split is set up for the reference)
        "accelerator=cpu",
    ]
    result = run_main(genlab.eval.main, *paper, f"metrics.inception_weights={inception_weights}", "seeds=3")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = tmp_path / "outputs" / "eval" / "runs"
    (run,) = runs.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("fid", "kid", "is", "precision", "recall"):
        assert np.isfinite(metrics[f"sample/{name}"]) and metrics[f"sample/{name}_std_over_seeds"] >= 0
    assert metrics["protocol/paper"] == 1 and metrics["sample/reference/train"] == 30  # the whole train split
    assert metrics["sample/num_samples"] == 6 and metrics["sample/num_seeds"] == 3 and metrics["sample/seed"] == 42
    assert metrics["sample/feature/inception"] == 2048
    assert metrics["likelihood/num_images"] == 6 and 0 < metrics["likelihood/bpd"] < 16  # the whole test split
    (statistics,) = (tmp_path / "outputs" / "statistics").iterdir()
    assert statistics.name.startswith("cifar10-train30-3x32x32-inception-")

    # a second evaluation reads the statistics file: the one it wrote, unchanged
    written = statistics.stat().st_mtime_ns
    result = run_main(genlab.eval.main, *paper, f"metrics.inception_weights={inception_weights}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert statistics.stat().st_mtime_ns == written and "Computing the reference statistics" not in result.stdout

    # without the weights file: one line naming the file, its checksum and how to fetch it
    missing = tmp_path / "none" / WEIGHTS_FILE_NAME
    result = run_main(genlab.eval.main, *paper, f"metrics.inception_weights={missing}")
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(missing) in line and PUBLISHED_SHA256 in line and "curl -L" in line
    assert "Traceback" not in result.stderr
