"""A DataModule of the user's own, in a folder of theirs with its config found through hydra.searchpath, trains;
src.eval takes its checkpoint with the data given on the command line (what a checkpoint names is never built unless
it is one of genlab's datamodules), and src.sample needs no data at all."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from genlab.eval import main as eval_main
from genlab.sample import main as sample_main
from genlab.train import main as train_main
from genlab.utils.validation import read_from_data
from tests.helpers import ROOT, TEST_OVERRIDES, run_main


def example(language: str) -> str:
    """The code block in `language` of docs/data.md's "Your own DataModule": the test runs what the page shows."""
    section = (ROOT / "docs" / "data.md").read_text().split("## Your own DataModule", 1)[1]
    return re.search(rf"```{language}\n(.*?)```", section, flags=re.DOTALL).group(1)


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's folder: squares.py on the import path (as PYTHONPATH puts it), conf/data/squares.yaml beside it."""
    folder = tmp_path / "mine"
    (folder / "conf" / "data").mkdir(parents=True)
    (folder / "squares.py").write_text(example("python"))  # 25 lines
    (folder / "conf" / "data" / "squares.yaml").write_text(example("yaml"))
    monkeypatch.syspath_prepend(str(folder))
    return folder


@pytest.mark.integration  # four commands end to end, in this process
def test_the_users_own_datamodule_trains_and_its_checkpoint_is_evaluated_and_sampled(
    user_folder: Path, tmp_path: Path
) -> None:
    own_data = [f"hydra.searchpath=[file://{user_folder / 'conf'}]", "data=squares"]
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    trained = run_main(train_main, *own_data, "model=vae", "model.architecture=conv", *TEST_OVERRIDES, logs)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (checkpoint,) = (tmp_path / "logs").glob("train/runs/*/checkpoints/last.ckpt")

    evaluated = run_main(eval_main, f"ckpt_path={checkpoint}", *own_data, logs)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (metrics,) = (tmp_path / "logs").glob("eval/runs/*/metrics.json")
    assert {"test/nelbo", "test/recon", "test/kl"} <= json.loads(metrics.read_text()).keys()

    # without the data: the checkpoint's data class is refused unimported, in one line that says how to give it
    refused = run_main(eval_main, f"ckpt_path={checkpoint}", logs)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {checkpoint}: names the data class 'squares.Squares', which is not one of genlab's datamodules; "
        f"refused without importing it. Give the data on the command line, as src.train was given it: "
        f"data=<its config> (with hydra.searchpath=[file://<your config folder>] for your own; docs/data.md)"
    )
    # data that does not fit the model: one line, before anything is built
    unfit = run_main(eval_main, f"ckpt_path={checkpoint}", *own_data, "data.image_shape=[3,32,32]", logs)
    assert unfit.returncode == 1 and unfit.stderr.strip().splitlines()[-1] == (
        "error: data.image_shape=[3, 32, 32] does not fit the checkpoint's VAE, trained on data with "
        "image_shape=[3, 16, 16]"
    )
    assert len(list((tmp_path / "logs").glob("eval/runs/*"))) == 1  # the refused runs left no folder

    # src.sample needs no data; given src.eval's command line, it says so and draws all the same
    for data in ([], own_data):
        sampled = run_main(sample_main, f"ckpt_path={checkpoint}", "num_samples=4", *data, logs)
        assert sampled.returncode == 0, sampled.stderr[-3000:]
        assert ("data (squares.Squares) is not used" in sampled.stdout + sampled.stderr) == bool(data)
    assert len(list((tmp_path / "logs").glob("sample/runs/*/samples.png"))) == 2


def test_what_a_model_read_from_its_data_is_what_its_config_interpolates() -> None:
    """src.eval holds the data given to these keys only: a data setting that merely shares a name with one of the
    model's (an image folder's `channels`, 3, and the conv VAE's `channels`, its widths) is not compared."""
    assert read_from_data("genlab.models.vae.VAE") == {"image_shape": "image_shape"}
    assert read_from_data("genlab.models.gan.GAN") == {"image_shape": "image_shape", "num_classes": "num_classes"}
    assert read_from_data("genlab.models.gpt.GPT") == {"block_size": "block_size"}
