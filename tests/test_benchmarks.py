"""The CPU speed benchmarks run end to end (tiny settings) and report what they promise."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import run_module


@pytest.mark.slow  # about 30 s on 2 CPU cores: two short trainings in their own processes, each scored
def test_time_to_quality_times_and_scores_both_commands(tmp_path: Path, shakespeare_dir: Path) -> None:
    out, work = tmp_path / "result.json", tmp_path / "work"
    arguments = [
        "--rounds",
        "1",  # the later rounds' seeds and order: test_each_round_seeds_both_anew_and_alternates_their_order
        "--reference",
        "same",
        "--work",
        str(work),
        "--out",
        str(out),
        "trainer.max_steps=30",
        "trainer.val_check_interval=15",
        "data.num_val_windows=48",
        "model.sample_length=10",
        "model.periodic_val_batches=2",
    ]
    result = run_module(
        "benchmarks.gpt_time_to_quality", *arguments, env={"DATA_DIR": str(shakespeare_dir)}, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(out.read_text())
    (work,) = work.iterdir()  # this run's own folder
    (round_,) = summary["rounds"]
    assert "genlab / plain time" in result.stdout
    assert round_["seconds"]["genlab"] > 0 and round_["seconds"]["plain"] > 0
    # 30 steps from ln(65) = 4.17 nats: both have learned, and about as much
    losses = round_["val_loss"]
    assert 2.0 < losses["genlab"] < 3.9 and 2.0 < losses["plain"] < 3.9
    assert abs(losses["genlab"] - losses["plain"]) < 0.3
    # the seeds given reach both commands; the plain loop evaluates and checkpoints at genlab's interval
    assert OmegaConf.load(work / "round0" / "genlab" / "config.yaml").seed == 42
    plain = torch.load(work / "round0" / "plain" / "ckpt.pt", weights_only=True)
    assert plain["model_args"]["seed"] == 1337 and plain["iter_num"] == 30
    evaluations = [
        line.split(":")[0]
        for line in (work / "round0" / "plain.log").read_text().splitlines()
        if line.startswith("step ")
    ]
    assert evaluations == ["step 0", "step 15", "step 30"]


def test_each_round_seeds_both_anew_and_alternates_their_order(tmp_path: Path) -> None:
    from benchmarks.gpt_time_to_quality import round_commands
    from genlab.utils.config import compose

    args = argparse.Namespace(experiment="gpt_shakespeare_cpu", reference="same", overrides=["trainer.max_steps=30"])
    cfg = compose(["experiment=gpt_shakespeare_cpu", *args.overrides])
    for i, order in enumerate([["genlab", "plain"], ["plain", "genlab"], ["genlab", "plain"]]):
        commands = {name: arguments for name, _, arguments in round_commands(i, args, cfg, tmp_path, vocab_size=65)}
        assert list(commands) == order  # drift in the machine's speed falls on both alike
        assert f"seed={42 + i}" in commands["genlab"] and f"--seed={1337 + i}" in commands["plain"]
        assert f"hydra.run.dir={tmp_path / f'round{i}' / 'genlab'}" in commands["genlab"]
        assert f"--out-dir={tmp_path / f'round{i}' / 'plain'}" in commands["plain"]
        assert "trainer.max_steps=30" in commands["genlab"] and "--max-iters=30" in commands["plain"]


def test_text_throughput_times_both_loaders_on_the_same_ids(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmarks import text_throughput

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat, and the dog sat on the log.\n" * 400)
    arguments = ["--path", str(corpus), "--vocab-size", "300", "--block-size", "16", "--batch-size", "4"]
    result = text_throughput.main([*arguments, "--batches", "5"])
    assert result["num_tokens"] > 0 and all(result[key] > 0 for key in ("tokenizing", "ours", "nanogpt"))
    assert "ours / nanoGPT:" in capsys.readouterr().out
