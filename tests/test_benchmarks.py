"""The CPU speed benchmarks run end to end (tiny settings) and report what they promise."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

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
        "trainer.log_every_n_steps=1",  # the plain loop's line per iteration: it takes the same 30 steps
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
    plain_log = (work / "round0" / "plain.log").read_text()
    evaluations = [line.split(":")[0] for line in plain_log.splitlines() if line.startswith("step ")]
    assert evaluations == ["step 0", "step 15", "step 30"]
    iterations = [line.split(":")[0] for line in plain_log.splitlines() if line.startswith("iter ")]
    assert iterations == [f"iter {i}" for i in range(30)]  # genlab's 30 steps, not nanoGPT's max_iters + 1
    # each scored by the same rule: its best checkpoint (genlab's recorded in its last.ckpt)
    assert Path(round_["scored"]["genlab"]).name == "epoch_000.ckpt" and round_["scored"]["plain"].endswith("ckpt.pt")


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
        # genlab's work: its fused AdamW, its step count (nanoGPT takes one more), its logging interval
        assert {"--fused", "--exact-steps", "--log-interval=50"} <= set(commands["plain"])


class _SlowItems(Dataset):
    """Items that take 100 ms each to load (a batch is one): far more than a BoringModel's step."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int) -> torch.Tensor:
        time.sleep(0.1)
        return torch.randn(32)


class _SlowLoading(BoringModel):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(_SlowItems(), batch_size=1)


def test_the_benchmark_timers_count_every_timed_batchs_loading_as_a_plain_loop_does(tmp_path: Path) -> None:
    from benchmarks.gpu_efficiency import TimedBatches
    from benchmarks.timed_fit import StepTimer

    # 2 batches not timed, then 3 timed: each one's loading in the time, as a plain loop's clock has it (Lightning
    # fetches a batch ahead: the window holds 3 fetches however they fall)
    timers = {"gpu_efficiency": TimedBatches(warmup=2, batches=3), "timed_fit": StepTimer(skip=2)}
    for name, timer in timers.items():
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=5 if name == "timed_fit" else 50,  # TimedBatches stops the run itself
            limit_val_batches=0,
            callbacks=[timer],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
        )
        trainer.fit(_SlowLoading())
        assert trainer.global_step == 5 and timer.batches == 3, name
        assert timer.seconds >= 3 * 0.1, name


def test_throughput_rounds_alternate_which_side_goes_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from benchmarks import gpt_throughput

    runs = []

    def lightning_run(cfg, skip: int, output_dir: Path) -> tuple[float, None]:
        runs.append(f"lightning in {output_dir.name}")
        return 1.0, None

    def plain_run(cfg, skip: int, device: torch.device) -> tuple[float, None]:
        runs.append("plain")
        return 1.0, None

    monkeypatch.setattr(gpt_throughput, "lightning_run", lightning_run)
    monkeypatch.setattr(gpt_throughput, "plain_run", plain_run)
    cfg = gpt_throughput.throughput_config("gpt_shakespeare_cpu", 30, str(tmp_path), [])
    gpt_throughput.paired_rounds(cfg, skip=10, rounds=3)
    # drift in the machine's speed falls on both alike; each round's genlab run in a folder of its own
    assert runs == ["lightning in round0", "plain", "plain", "lightning in round1", "lightning in round2", "plain"]


def test_text_throughput_times_both_loaders_on_the_same_ids(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmarks import text_throughput

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat, and the dog sat on the log.\n" * 400)
    arguments = ["--path", str(corpus), "--vocab-size", "300", "--block-size", "16", "--batch-size", "4"]
    result = text_throughput.main([*arguments, "--batches", "5"])
    assert result["num_tokens"] > 0 and all(result[key] > 0 for key in ("tokenizing", "ours", "nanogpt"))
    assert "ours / nanoGPT:" in capsys.readouterr().out
