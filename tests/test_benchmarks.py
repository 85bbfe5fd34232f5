"""The CPU speed benchmarks run end to end (tiny settings) and report what they promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import run_module


@pytest.mark.slow  # about 30 s on 2 CPU cores: four short trainings in their own processes, each scored
def test_time_to_quality_times_and_scores_both_commands(tmp_path: Path, shakespeare_dir: Path) -> None:
    out, work = tmp_path / "result.json", tmp_path / "work"
    arguments = [
        "--rounds",
        "2",
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
    assert len(summary["rounds"]) == 2 and "genlab / plain time" in result.stdout
    for i, round_ in enumerate(summary["rounds"]):
        assert round_["seconds"]["genlab"] > 0 and round_["seconds"]["plain"] > 0
        # 30 steps from ln(65) = 4.17 nats: both have learned, and about as much
        losses = round_["val_loss"]
        assert 2.0 < losses["genlab"] < 3.9 and 2.0 < losses["plain"] < 3.9
        assert abs(losses["genlab"] - losses["plain"]) < 0.3
        # each round seeds both anew; the plain loop evaluates and checkpoints at genlab's interval
        assert OmegaConf.load(work / f"round{i}" / "genlab" / "config.yaml").seed == 42 + i
        plain = torch.load(work / f"round{i}" / "plain" / "ckpt.pt", weights_only=True)
        assert plain["model_args"]["seed"] == 1337 + i and plain["iter_num"] == 30
        evaluations = [
            line.split(":")[0]
            for line in (work / f"round{i}" / "plain.log").read_text().splitlines()
            if line.startswith("step ")
        ]
        assert evaluations == ["step 0", "step 15", "step 30"]
