"""Mini-GPT: the transformer's shapes and causality, KV-cache generation, the schedule, and real runs."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from benchmarks.commands import command_line
from genlab.checkpoints import load_model, read_checkpoint
from genlab.data.text import ShakespeareDataModule
from genlab.models.gpt import GPT, adamw, warmup_cosine_lr
from genlab.models.nets.transformer import Transformer, sample_next_token
from genlab.train import train
from tests.helpers import ROOT, TEST_OVERRIDES, compose_config, run_module


def tiny_net(block_size: int = 16, dropout: float = 0.0) -> Transformer:
    torch.manual_seed(0)
    return Transformer(vocab_size=11, block_size=block_size, n_layer=2, n_head=2, n_embd=16, dropout=dropout).eval()


def test_logits_have_one_row_per_position() -> None:
    net = tiny_net()
    idx = torch.randint(11, (3, 16))
    assert net(idx).shape == (3, 16, 11)
    with pytest.raises(ValueError, match="block_size=16"):
        net(torch.randint(11, (1, 17)))


def test_a_later_token_never_changes_earlier_logits() -> None:
    net = tiny_net()
    idx = torch.randint(11, (2, 12))
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 11
    before, after = net(idx), net(changed)
    torch.testing.assert_close(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])


def test_output_head_shares_the_token_embedding() -> None:
    net = tiny_net()
    assert net.lm_head.weight is net.wte.weight
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for _, p in net.named_parameters())


@pytest.mark.parametrize(
    "sampling", [{"temperature": 1.0}, {"temperature": 0.8, "top_k": 5, "top_p": 0.9}, {"temperature": 0.0}]
)
def test_kv_cache_generates_the_same_tokens_as_recomputing(sampling: dict) -> None:
    net = tiny_net(block_size=16)
    prompt = torch.randint(11, (3, 5))
    # 40 new tokens overrun the 16-token block twice: the window shifts are part of what must agree
    cached = net.generate(prompt, 40, **sampling, use_cache=True, generator=torch.Generator().manual_seed(1))
    recomputed = net.generate(prompt, 40, **sampling, use_cache=False, generator=torch.Generator().manual_seed(1))
    assert cached.shape == (3, 45)
    assert torch.equal(cached, recomputed)
    assert torch.equal(cached[:, :5], prompt)


def test_kv_cache_encodes_each_position_about_once() -> None:
    net = tiny_net(block_size=16)
    encoded = []  # the number of positions of each forward pass
    net.wte.register_forward_hook(lambda module, args, output: encoded.append(args[0].size(1)))

    def positions(use_cache: bool, n: int) -> int:
        encoded.clear()
        net.generate(torch.zeros(1, 1, dtype=torch.long), n, use_cache=use_cache)
        return sum(encoded)

    # with the cache: one position per token plus half a block re-encoded every half block, at most 2 per token
    assert positions(True, 200) <= 2 * 200
    assert positions(True, 400) <= 2 * positions(True, 200) + 16
    assert positions(False, 200) > 4 * positions(True, 200)  # without it, the whole window for every token


def test_sampling_filters() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).expand(200, -1)
    assert sample_next_token(logits, temperature=0.0).eq(1).all()
    assert sample_next_token(logits, top_k=1).eq(1).all()
    assert set(sample_next_token(logits, top_k=2).flatten().tolist()) == {1, 3}
    # probabilities 0.64, 0.24, 0.09, 0.03: top_p=0.8 keeps the first two, the mass before the third is 0.88
    assert set(sample_next_token(logits, top_p=0.8).flatten().tolist()) == {1, 3}
    assert sample_next_token(logits, top_p=0.5).eq(1).all()


def test_learning_rate_warms_up_then_decays_to_min_lr() -> None:
    lrs = [warmup_cosine_lr(step, lr=1e-3, min_lr=1e-4, warmup_steps=100, decay_steps=2000) for step in range(2500)]
    assert lrs[0] == pytest.approx(1e-3 / 101)
    assert max(lrs) == pytest.approx(1e-3, rel=1e-3) and lrs.index(max(lrs)) in (99, 100)
    assert lrs[1050] == pytest.approx(0.55e-3, rel=1e-2)  # halfway through the cosine
    assert lrs[2000:] == [1e-4] * 500
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:], strict=False))


def test_weight_decay_only_on_matrices() -> None:
    optimizer = adamw(tiny_net(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, fused=False)
    decayed, not_decayed = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decayed["params"])
    assert not_decayed["weight_decay"] == 0.0 and all(p.dim() == 1 for p in not_decayed["params"])


def test_model_refuses_heads_that_do_not_divide_channels() -> None:
    with pytest.raises(Exception, match="model.n_embd=100 must be divisible by model.n_head=3"):
        GPT(block_size=8, vocab="abc", n_head=3, n_embd=100)


# --- real runs on Tiny Shakespeare ----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_gpt(tmp_path_factory: pytest.TempPathFactory, shakespeare_dir: Path) -> Path:
    """The CPU recipe for 150 iterations (about 10 s), validated at 50 and at 150; its run folder."""
    run_dir = tmp_path_factory.mktemp("gpt") / "run"
    overrides = [
        *TEST_OVERRIDES,
        "experiment=gpt_shakespeare_cpu",
        f"paths.data_dir={shakespeare_dir}",
        "trainer.max_steps=150",
        "trainer.limit_train_batches=null",
        "trainer.limit_val_batches=null",
        "trainer.val_check_interval=50",
        "data.num_val_windows=240",
        "model.sample_length=40",
    ]
    train(compose_config(overrides, run_dir))
    return run_dir


def test_loss_falls_and_the_logs_show_it(trained_gpt: Path) -> None:
    metrics = json.loads((trained_gpt / "metrics.json").read_text())
    # an untrained model is at ln(65) = 4.17 nats; 150 iterations of the recipe reach about 2.5
    assert metrics["val/loss"] < 2.9
    assert metrics["val/bpc"] == pytest.approx(metrics["val/loss"] / math.log(2), rel=1e-4)
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-3)
    samples = sorted((trained_gpt / "samples").glob("step_*.txt"))
    assert [path.name for path in samples] == ["step_000050.txt", "step_000100.txt", "step_000150.txt"]
    assert all(len(path.read_text()) == 41 for path in samples)  # the prompt "\n" and 40 characters


def test_checkpoint_reloads_to_the_model_that_was_validated(trained_gpt: Path, shakespeare_dir: Path) -> None:
    checkpoint = read_checkpoint(trained_gpt / "checkpoints" / "last.ckpt")
    assert len(checkpoint["hyper_parameters"]["vocab"]) == 65  # the vocabulary rides in the checkpoint, once
    assert "vocab" not in checkpoint
    model = load_model(trained_gpt / "checkpoints" / "last.ckpt")
    # the last checkpoint was written right after the last validation: the same windows give the same loss
    cache = str(trained_gpt.parent / ".cache")  # the run's paths.cache_dir
    datamodule = ShakespeareDataModule(str(shakespeare_dir), cache, block_size=64, batch_size=12, num_val_windows=240)
    datamodule.setup("validate")
    losses = [F.cross_entropy(model(x).flatten(0, 1), y.flatten()) for x, y in datamodule.val_dataloader()]
    metrics = json.loads((trained_gpt / "metrics.json").read_text())
    assert torch.stack(losses).mean().item() == pytest.approx(metrics["val/loss"], abs=1e-5)


def test_periodic_validations_are_estimates_and_the_last_one_scores_every_window(
    tmp_path: Path, shakespeare_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scored: list[int] = []  # batches scored, one entry per validation (the sanity check's included)
    evaluate = GPT._evaluate

    def counting_evaluate(self: GPT, *args) -> None:
        scored[-1] += 1
        evaluate(self, *args)

    monkeypatch.setattr(GPT, "on_validation_start", lambda self: scored.append(0))
    monkeypatch.setattr(GPT, "_evaluate", counting_evaluate)
    overrides = [
        *TEST_OVERRIDES,
        "experiment=gpt_shakespeare_cpu",
        f"paths.data_dir={shakespeare_dir}",
        "trainer.max_steps=7",
        "trainer.val_check_interval=3",
        "trainer.limit_train_batches=null",
        "trainer.limit_val_batches=null",
        "data.num_val_windows=48",
        "model.periodic_val_batches=1",
        "model.sample_length=10",
    ]
    train(compose_config(overrides, tmp_path / "run"))
    # 48 windows are 4 batches of 12: the sanity check and the validations at steps 3 and 6 score the first,
    # the last validation (step 7, between two intervals) all four
    assert scored == [1, 1, 1, 4]
    # validating a checkpoint scores every window too
    model = load_model(tmp_path / "run" / "checkpoints" / "last.ckpt")
    cache = str(tmp_path / ".cache")  # the run's paths.cache_dir
    datamodule = ShakespeareDataModule(str(shakespeare_dir), cache, block_size=64, batch_size=12, num_val_windows=48)
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).validate(model, datamodule=datamodule)
    assert scored[-1] == 4


def test_sample_cli_prints_a_continuation_with_no_data(tmp_path: Path, trained_gpt: Path) -> None:
    result = run_module(
        "src.sample",
        f"ckpt_path={trained_gpt / 'checkpoints' / 'last.ckpt'}",
        "prompt=ROMEO:",
        "max_new_tokens=100",
        "temperature=0.8",
        "top_k=50",
        f"paths.log_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'no_data'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "sample" / "runs").iterdir()
    text = (run_dir / "samples.txt").read_text()
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 100 + 1  # and a final newline
    assert text.strip() in result.stdout


@pytest.mark.integration
def test_sample_cli_reads_a_quoted_prompt_or_a_prompt_file(tmp_path: Path, trained_gpt: Path) -> None:
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("To be, or not to be:")
    for prompt, expected in [
        ("'prompt=\"To be, or not\"'", "To be, or not"),
        (f"prompt_file={prompt_file}", "To be, or not to be:"),
    ]:
        result = subprocess.run(  # through a shell, as a user types it
            f"{shlex.join(command_line('src.sample'))} ckpt_path={trained_gpt / 'checkpoints' / 'last.ckpt'} {prompt} "
            f"max_new_tokens=20 paths.log_dir={tmp_path / 'out'}",
            shell=True,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert expected in result.stdout


@pytest.mark.integration
def test_sample_cli_names_the_characters_it_does_not_know(tmp_path: Path, trained_gpt: Path) -> None:
    result = run_module(
        "src.sample",
        f"ckpt_path={trained_gpt / 'checkpoints' / 'last.ckpt'}",
        "prompt='ROMÉO@é:'",
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 1
    assert "characters not in the vocabulary: '@Éé'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_compiled_model_trains_and_its_checkpoint_samples(tmp_path: Path, shakespeare_dir: Path) -> None:
    overrides = [
        *TEST_OVERRIDES,
        "experiment=gpt_shakespeare_cpu",
        f"paths.data_dir={shakespeare_dir}",
        "model.compile=true",
        "trainer.max_steps=20",
        "trainer.val_check_interval=20",
        "trainer.limit_train_batches=null",
        "data.num_val_windows=24",
        "model.sample_length=20",
    ]
    _, metrics = train(compose_config(overrides, tmp_path / "run"))
    assert metrics["val/loss"] < math.log(65)
    model = load_model(tmp_path / "run" / "checkpoints" / "last.ckpt")
    (text,) = model.generate_text("ROMEO:", 30, temperature=0.8, seed=0)
    assert text.startswith("ROMEO:") and len(text) == 36


def test_losses_lr_and_text_reach_dashboards(tmp_path: Path, shakespeare_dir: Path, monkeypatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no `wandb login`: W&B runs offline
    overrides = [
        *TEST_OVERRIDES,
        "experiment=gpt_shakespeare_cpu",
        f"paths.data_dir={shakespeare_dir}",
        "logger=many",
        "trainer.max_steps=12",
        "trainer.val_check_interval=5",
        "trainer.limit_train_batches=null",
        "trainer.log_every_n_steps=2",  # about what reaches the dashboards: several logged steps in 10
        "data.num_val_windows=24",
        "model.sample_length=20",
    ]
    train(compose_config(overrides, tmp_path / "run"))
    (tensorboard_dir,) = (tmp_path / "run" / "tensorboard").iterdir()  # named by the run: task and overrides
    assert tensorboard_dir.name == "gpt_shakespeare_cpu"  # no Hydra command line here: the task alone
    events = EventAccumulator(str(tensorboard_dir))
    events.Reload()
    assert {"train/loss", "val/loss", "val/bpc", "val/ppl", "lr-AdamW/pg1"} <= set(events.Tags()["scalars"])
    assert "samples/text_summary" in events.Tags()["tensors"]
    # validated every 5 steps, and at the run's end, which falls between two of those
    # (Lightning logs a step's metrics at the count of steps before it)
    assert [event.step for event in events.Scalars("val/loss")] == [4, 9, 11]
    # the HParams tab: the run's settings against its final metrics
    hparams = {tag: HParamsPluginData.FromString(data) for tag, data in events.PluginTagToContent("hparams").items()}
    assert hparams["_hparams_/session_start_info"].session_start_info.hparams["model/n_layer"].number_value == 4
    metric_infos = hparams["_hparams_/experiment"].experiment.metric_infos
    assert {"final/val/loss", "final/val/bpc"} <= {info.name.tag for info in metric_infos}
    (offline_run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    # one W&B table that grows by a row per validation: an incremental table, each increment a file of its rows
    increments = [json.loads(path.read_text()) for path in offline_run.glob("files/media/table/samples_*.table.json")]
    assert all(increment["columns"] == ["step", "text"] for increment in increments)
    assert sorted(row[0] for increment in increments for row in increment["data"]) == [5, 10, 12]
    (run_log,) = offline_run.glob("run-*.wandb")
    assert b"incremental-table-file" in run_log.read_bytes()
