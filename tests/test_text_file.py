"""A text of one's own: `data=text_file data.tokenizer=bpe` trains the GPT, whose checkpoint (its tokenizer inside)
samples with src.sample, scores with src.eval, reloads to the model that was validated, and resumes exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab import eval as eval_command
from genlab import sample as sample_command
from genlab.checkpoints import load_model, read_checkpoint
from genlab.data.vocab import BpeVocab
from genlab.errors import ConfigError
from genlab.train import train
from genlab.utils.checkpoint_reader import CheckpointError
from tests.helpers import TEST_OVERRIDES, compose_config, run_main, run_module

VOCAB_SIZE = 300
# a one-layer GPT on 32-token windows, 60 steps with dropout (so that resuming must restore the random state too)
TINY_BPE_GPT = [
    *TEST_OVERRIDES,
    "model=gpt",
    "data=text_file",
    "data.tokenizer=bpe",
    f"data.vocab_size={VOCAB_SIZE}",
    "data.block_size=32",
    "data.batch_size=16",
    "data.num_val_windows=32",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.dropout=0.1",
    "model.lr=3e-3",
    "model.warmup_steps=5",
    "model.lr_decay_steps=60",
    "model.sample_length=16",
    "trainer.max_steps=60",
    "trainer.limit_train_batches=null",
    "trainer.limit_val_batches=null",
    "+trainer.val_check_interval=30",
]


def write_corpus(path: Path, seed: int) -> Path:
    """A few hundred sentences of a small grammar: text a tiny model learns something of in 60 steps."""
    rng = np.random.default_rng(seed)
    subjects, verbs = ["the cat", "a dog", "my neighbour", "the old sailor"], ["watched", "followed", "greeted"]
    objects = ["the moon", "a small bird", "the café owner", "every ship"]
    lines = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(1500)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("text") / "story.txt", seed=0)


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """The tiny BPE GPT trained 60 steps on the corpus (a few seconds); its run folder."""
    run_dir = tmp_path_factory.mktemp("bpe") / "run"
    train(compose_config([*TINY_BPE_GPT, f"data.path={corpus}"], run_dir))
    return run_dir


def test_bpe_gpt_learns_the_text_and_its_checkpoint_holds_the_tokenizer(bpe_run: Path, corpus: Path) -> None:
    metrics = json.loads((bpe_run / "metrics.json").read_text())
    assert metrics["val/loss"] < math.log(VOCAB_SIZE) - 2  # an untrained model is at ln(300) = 5.7 nats a token
    # bits per byte of text: a token stands for several bytes, so fewer bits per byte than per token
    assert 0 < metrics["val/bpb"] < metrics["val/loss"] / math.log(2)
    hyper_parameters = read_checkpoint(bpe_run / "checkpoints" / "last.ckpt")["hyper_parameters"]
    assert hyper_parameters["vocab"] is None and len(BpeVocab(hyper_parameters["tokenizer"])) == VOCAB_SIZE
    # the tokenizer is the one the corpus's ids were made with, kept beside them in the run's cache
    (entry,) = (bpe_run.parent / ".cache" / "text").iterdir()
    assert json.loads((entry / "vocab.json").read_text())["tokenizer"] == hyper_parameters["tokenizer"]


def test_sample_prints_text_from_the_checkpoint_alone(bpe_run: Path, tmp_path: Path) -> None:
    result = run_main(
        sample_command.main,
        f"ckpt_path={bpe_run / 'checkpoints' / 'last.ckpt'}",
        'prompt="the cat"',
        "max_new_tokens=30",
        "temperature=0.5",
        f"paths.log_dir={tmp_path}",
        f"paths.data_dir={tmp_path / 'no_data'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "sample" / "runs").iterdir()
    text = (run_dir / "samples.txt").read_text()
    assert sample_command.terminal_safe(text.strip()) in result.stdout
    # the model's own continuation, 30 tokens of several characters (the sampling's seed is the command's, 42)
    model = load_model(bpe_run / "checkpoints" / "last.ckpt")
    (expected,) = model.generate_text("the cat", 30, temperature=0.5, seed=42)
    assert text == expected + "\n" and len(text) > len("the cat") + 40


def test_eval_scores_the_validation_windows_as_training_did(bpe_run: Path, tmp_path: Path) -> None:
    # another log folder, so another cache: the corpus is tokenized again, by the same BPE, trained again
    result = run_main(
        eval_command.main, f"ckpt_path={bpe_run / 'checkpoints' / 'last.ckpt'}", f"paths.log_dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "eval" / "runs").iterdir()
    scored = json.loads((run_dir / "metrics.json").read_text())
    trained = json.loads((bpe_run / "metrics.json").read_text())
    assert scored["val/loss"] == pytest.approx(trained["val/loss"], abs=1e-5)
    assert scored["val/bpb"] == pytest.approx(trained["val/bpb"], abs=1e-5)


def test_a_checkpoint_resumed_on_another_text_is_refused(bpe_run: Path, tmp_path: Path) -> None:
    # the same number of tokens, so the same embedding's shape: ids that would mean other tokens
    other = write_corpus(tmp_path / "other.txt", seed=1)
    overrides = [*TINY_BPE_GPT, f"data.path={other}", f"ckpt_path={bpe_run / 'checkpoints' / 'last.ckpt'}"]
    with pytest.raises(CheckpointError, match="trained with another vocabulary than this run's data has"):
        train(compose_config([*overrides, "trainer.max_steps=61"], tmp_path / "run"))


def test_a_sample_prompt_the_text_cannot_spell_is_refused_before_training(tmp_path: Path) -> None:
    one_line = tmp_path / "one_line.txt"
    one_line.write_text("a single line of text, with no line break at all " * 40)
    overrides = [*TINY_BPE_GPT, "data.tokenizer=char", f"data.path={one_line}"]  # the default prompt: "\n"
    with pytest.raises(ConfigError, match=r"model.sample_prompt='\\n': characters not in the vocabulary"):
        train(compose_config(overrides, tmp_path / "run"))
    assert not list(tmp_path.glob("run/checkpoints/*"))


@pytest.mark.integration
def test_a_bpe_run_resumed_midway_ends_as_the_unbroken_run(bpe_run: Path, corpus: Path, tmp_path: Path) -> None:
    overrides = [*TINY_BPE_GPT, f"data.path={corpus}"]
    train(compose_config([*overrides, "trainer.max_steps=20"], tmp_path / "run"))  # stopped at step 20
    resumed_from = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert read_checkpoint(resumed_from)["global_step"] == 20
    train(compose_config([*overrides, f"ckpt_path={resumed_from}"], tmp_path / "run"))
    expected = read_checkpoint(bpe_run / "checkpoints" / "last.ckpt")
    got = read_checkpoint(resumed_from)
    assert got["global_step"] == expected["global_step"] == 60
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, got["state_dict"][name]), f"{name} differs after resuming"


def test_checkpoint_reloads_to_the_model_that_was_validated(bpe_run: Path) -> None:
    model = load_model(bpe_run / "checkpoints" / "last.ckpt")
    assert isinstance(model.vocab, BpeVocab) and model.net.wte.num_embeddings == VOCAB_SIZE
    (text,) = model.generate_text("the dog", 10, temperature=0, seed=0)
    again = load_model(bpe_run / "checkpoints" / "last.ckpt").generate_text("the dog", 10, temperature=0, seed=0)
    assert text.startswith("the dog") and [text] == again


@pytest.mark.integration
def test_the_command_lines_train_on_a_text_file_and_print_its_text(corpus: Path, tmp_path: Path) -> None:
    trained = run_module(
        "src.train",
        *TINY_BPE_GPT,
        f"data.path={corpus}",
        "trainer.max_steps=30",
        f"paths.log_dir={tmp_path}",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (checkpoint,) = tmp_path.glob("train/runs/*/checkpoints/last.ckpt")
    sampled = run_module(
        "src.sample", f"ckpt_path={checkpoint}", "prompt=the", "max_new_tokens=40", f"paths.log_dir={tmp_path}"
    )
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    (samples,) = tmp_path.glob("sample/runs/*/samples.txt")
    text = samples.read_text()
    # printed as written, but for the bytes a terminal would act on (a BPE can draw any byte)
    assert text.startswith("the") and sample_command.terminal_safe(text.strip()) in sampled.stdout
