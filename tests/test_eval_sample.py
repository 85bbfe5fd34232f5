"""`python -m src.eval` and `python -m src.sample` on checkpoints trained here, and on bad checkpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from genlab.checkpoints import CheckpointError, read_checkpoint
from genlab.train import train
from tests.helpers import TEST_OVERRIDES, compose_config, run_module


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An autoencoder and an exported feature classifier, both trained briefly on small MNIST-format files."""
    from tests.helpers import write_mnist_raw

    root = tmp_path_factory.mktemp("trained")
    write_mnist_raw(root / "data" / "MNIST" / "raw")
    data = ["data=mnist", "data.val_size=100", "data.batch_size=50", f"paths.data_dir={root / 'data'}"]
    classifier = root / "eval" / "mnist.ckpt"
    train(
        compose_config(
            [*TEST_OVERRIDES, *data, "experiment=classifier_mnist", f"callbacks.export_best.path={classifier}"],
            root / "classifier",
        )
    )
    train(compose_config([*TEST_OVERRIDES, *data, "model=ae"], root / "ae"))
    train(compose_config([*TEST_OVERRIDES, *data, "model=vae"], root / "vae"))
    checkpoints = {name: root / name / "checkpoints" / "last.ckpt" for name in ("ae", "vae")}
    return {"data": root / "data", "classifier": classifier, **checkpoints}


def test_exported_classifier_is_slim_and_self_contained(trained: dict[str, Path]) -> None:
    checkpoint = read_checkpoint(trained["classifier"])
    assert "optimizer_states" not in checkpoint
    assert checkpoint["config"]["model"]["_target_"] == "genlab.models.classifier.Classifier"
    assert trained["classifier"].stat().st_size < 2_000_000


@pytest.mark.integration
def test_eval_reports_test_and_reconstruction_metrics(tmp_path: Path, trained: dict[str, Path]) -> None:
    result = run_module(
        "src.eval",
        f"ckpt_path={trained['ae']}",
        f"metrics.classifier_ckpt={trained['classifier']}",
        f"paths.data_dir={trained['data']}",
        f"paths.log_dir={tmp_path}",
        "metrics.kid_subset_size=50",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "eval" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test/loss", "test/mse", "reconstruction/fid", "reconstruction/kid", "reconstruction/is"} <= metrics.keys()
    assert metrics["reconstruction/fid"] > 0 and 1.0 <= metrics["reconstruction/is"] <= 10.0
    assert "reconstruction/fid" in result.stdout  # the printed table


@pytest.mark.integration
def test_eval_reports_elbo_and_sample_quality_of_a_vae(tmp_path: Path, trained: dict[str, Path]) -> None:
    result = run_module(
        "src.eval",
        f"ckpt_path={trained['vae']}",
        f"metrics.classifier_ckpt={trained['classifier']}",
        f"paths.data_dir={trained['data']}",
        f"paths.log_dir={tmp_path}",
        "num_samples=300",
        "batch_size=100",
        "metrics.kid_subset_size=50",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "eval" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test/nelbo", "test/bpd", "sample/fid", "sample/kid", "sample/is"} <= metrics.keys()
    assert "Generating 300 samples" in result.stdout


@pytest.mark.integration
def test_sample_refuses_a_model_that_does_not_generate(tmp_path: Path, trained: dict[str, Path]) -> None:
    result = run_module("src.sample", f"ckpt_path={trained['ae']}", f"paths.log_dir={tmp_path}")
    assert result.returncode == 1
    assert f"error: {trained['ae']}: its model, Autoencoder, does not generate samples" in result.stderr
    assert "Traceback" not in result.stderr


class _RunsCode:
    """Unpickling this runs a shell command: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_checkpoints(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"model": {"weight": torch.zeros(2)}, "epoch": 3}, foreign)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    malicious = tmp_path / "malicious.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "config": _RunsCode(tmp_path / "pwned")}, malicious)
    return {
        "missing": (tmp_path / "nope.ckpt", "no such checkpoint file"),
        "text": (text, "not a readable PyTorch checkpoint, or truncated"),
        "foreign": (
            foreign,
            "not a genlab checkpoint (expected 'state_dict', 'hyper_parameters' and 'config' entries, found "
            "['epoch', 'model'])",
        ),
        "truncated": (truncated, "not a readable PyTorch checkpoint, or truncated"),
        "malicious": (malicious, "refused to load objects other than tensors and plain data"),
    }


@pytest.mark.parametrize("case", ["missing", "text", "foreign", "truncated", "malicious"])
def test_bad_checkpoints_get_one_clear_error(tmp_path: Path, trained: dict[str, Path], case: str) -> None:
    path, message = _bad_checkpoints(tmp_path, trained["ae"])[case]
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    assert str(caught.value) == f"{path}: {message}" or str(caught.value).startswith(f"{path}: {message}")
    assert not (tmp_path / "pwned").exists()  # nothing in the file ran


@pytest.mark.integration
@pytest.mark.parametrize("module", ["src.eval", "src.sample"])
def test_entry_points_exit_cleanly_on_a_bad_checkpoint(tmp_path: Path, trained: dict[str, Path], module: str) -> None:
    path, message = _bad_checkpoints(tmp_path, trained["ae"])["malicious"]
    result = run_module(module, f"ckpt_path={path}", f"paths.log_dir={tmp_path / 'out'}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {path}: {message}")
    assert "Traceback" not in result.stderr and not (tmp_path / "pwned").exists()


def test_fid_during_training_is_logged_and_picks_the_best(tmp_path: Path, trained: dict[str, Path]) -> None:
    cfg = compose_config(
        [
            *TEST_OVERRIDES,
            "model=vae",
            "data=mnist",
            "data.val_size=100",
            "data.batch_size=50",
            f"paths.data_dir={trained['data']}",
            "callbacks=[default,sample_fid]",
            f"callbacks.sample_fid.classifier_ckpt={trained['classifier']}",
            "callbacks.sample_fid.num_samples=100",
            "callbacks.sample_fid.batch_size=50",
            "monitor.metric=val/fid",
            "trainer.max_epochs=2",
            "test=false",
        ],
        tmp_path / "run",
    )
    value, metrics = train(cfg)
    assert value == metrics["val/fid"] > 0 and {"val/kid", "val/is"} <= metrics.keys()
    best = [path.name for path in (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")]
    assert len(best) == 1  # chosen by val/fid
