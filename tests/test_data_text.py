"""Text data: a corpus of one's own (data=text_file, by characters or BPE), its token-id cache, bad text, and Tiny
Shakespeare (the same module on a known file, with the batches it has always had)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import pickle
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from genlab.checkpoints import datamodule_from, load_model, model_from, read_checkpoint
from genlab.data import token_cache
from genlab.data.text import TINY_SHAKESPEARE_MD5, TINY_SHAKESPEARE_URL, ShakespeareDataModule, TextFileDataModule
from genlab.data.vocab import BpeVocab, CharVocab
from genlab.errors import ConfigError, CorruptDatasetError, DatasetNotFoundError, GenlabError
from genlab.models.gpt import GPT
from genlab.utils.checkpoint_reader import CheckpointError


def _ready(datamodule: TextFileDataModule) -> TextFileDataModule:
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def corpus_text(lines: int = 400, seed: int = 0) -> str:
    """Sentences of a small vocabulary, some words with accents, Greek and an emoji (multi-byte UTF-8)."""
    words = "the cat sat on a mat while café owners sang λόγος songs 🎵 of spring and autumn".split()
    rng = np.random.default_rng(seed)
    return "\n".join(" ".join(rng.choice(words, 10)) for _ in range(lines)) + "\n"


def text_file(folder: Path, text: str, **settings) -> TextFileDataModule:
    path = folder / "corpus.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return TextFileDataModule(str(path), cache_dir=str(folder / "cache"), **settings)


# --- Tiny Shakespeare ------------------------------------------------------------------------------------------

# sha256 of Tiny Shakespeare's first three training batches and two validation batches (block 64, batch 12, 240
# validation windows, torch seeded with 1234), as genlab 0.2 (fdd9a11, before data=text_file) cut them
SHAKESPEARE_BATCHES = "420e685e92d1096844a48ddd817761461e60fdc23c659aae9b663341ee63f406"


def batches_digest(datamodule: TextFileDataModule) -> str:
    torch.manual_seed(1234)  # the loaders' order is seeded from torch's seed
    digest = hashlib.sha256()
    batches = [*itertools.islice(datamodule.train_dataloader(), 3), *itertools.islice(datamodule.val_dataloader(), 2)]
    for inputs, targets in batches:
        assert inputs.dtype == targets.dtype == torch.int64
        digest.update(inputs.numpy().tobytes() + targets.numpy().tobytes())
    return digest.hexdigest()


def test_shakespeare_is_the_text_file_module_with_the_batches_it_always_had(
    shakespeare_dir: Path, tmp_path: Path
) -> None:
    settings = {"block_size": 64, "batch_size": 12, "num_val_windows": 240, "cache_dir": str(tmp_path)}
    shakespeare = _ready(ShakespeareDataModule(str(shakespeare_dir), **settings))
    assert batches_digest(shakespeare) == SHAKESPEARE_BATCHES
    # the same file as a text of one's own: the same vocabulary, ids, split and batches
    own = _ready(TextFileDataModule(str(shakespeare_dir / "tinyshakespeare" / "input.txt"), **settings))
    assert own.vocab == shakespeare.vocab and own.vocab_size == 65
    assert batches_digest(own) == SHAKESPEARE_BATCHES
    n_train, n_val = len(shakespeare.data_train.tokens), len(shakespeare.data_val.tokens)
    assert n_train + n_val == 1_115_394 and n_train == int(0.9 * 1_115_394)
    assert shakespeare.data_train.tokens.dtype == np.uint16  # memory-mapped, 2 bytes a character
    inputs, targets = next(iter(shakespeare.train_dataloader()))
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are the inputs shifted by one character
    text = shakespeare.vocab.decode(inputs[0])
    assert len(text) == 64 and text in (shakespeare_dir / "tinyshakespeare" / "input.txt").read_text()


def test_a_checkpoint_from_before_text_files_still_loads_and_validates(shakespeare_dir: Path, tmp_path: Path) -> None:
    # genlab 0.2's GPT hyperparameters (no `tokenizer`) and data config (conf/data/shakespeare.yaml at fdd9a11)
    model = GPT(
        block_size=8, vocab=CharVocab.from_text((shakespeare_dir / "tinyshakespeare/input.txt").read_text()).chars
    )
    model.configure_model()
    old_data = {
        "_target_": "genlab.data.text.ShakespeareDataModule",
        **{"data_dir": "/elsewhere", "block_size": 8, "batch_size": 64, "train_fraction": 0.9, "num_val_windows": 16},
        **{"num_workers": 0, "download": True, "url": TINY_SHAKESPEARE_URL, "md5": TINY_SHAKESPEARE_MD5, "seed": 42},
    }
    hyper_parameters = {key: value for key, value in model.hparams.items() if key != "tokenizer"}
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": hyper_parameters, "config": {}}
    checkpoint["config"] = {"model": {"_target_": "genlab.models.gpt.GPT"}, "data": old_data}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    loaded = read_checkpoint(tmp_path / "old.ckpt")
    datamodule = datamodule_from(
        loaded, tmp_path / "old.ckpt", data_dir=str(shakespeare_dir), cache_dir=str(tmp_path), batch_size=8
    )
    (metrics,) = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).validate(
        model_from(loaded, tmp_path / "old.ckpt"), datamodule=datamodule, verbose=False
    )
    assert metrics["val/loss"] == pytest.approx(math.log(65), abs=0.3)  # an untrained model of its 65 characters


def test_validation_windows_are_fixed_by_the_seed(tmp_path: Path) -> None:
    def val_batch(seed: int) -> torch.Tensor:
        datamodule = _ready(text_file(tmp_path, corpus_text(), block_size=32, num_val_windows=64, seed=seed))
        return next(iter(datamodule.val_dataloader()))[0]

    assert torch.equal(val_batch(0), val_batch(0))
    assert not torch.equal(val_batch(0), val_batch(1))


def test_char_vocab_round_trip_and_unknown_characters() -> None:
    vocab = CharVocab.from_text("hello world")
    assert vocab.chars == " dehlorw"
    assert vocab.decode(vocab.encode("hold or low")) == "hold or low"
    with pytest.raises(ValueError, match=r"not in the vocabulary: 'QZ'"):
        vocab.encode("Zero Q")
    # a vocabulary given in any order (model.vocab=...) keeps its ids
    assert CharVocab("cab").encode("abc").tolist() == [1, 2, 0]


def test_download_from_url_with_checksum(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    url, folder = http_server
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50
    (folder / "input.txt").write_text(text)
    md5 = hashlib.md5(text.encode()).hexdigest()
    cache = str(tmp_path / "cache")
    datamodule = _ready(
        ShakespeareDataModule(str(tmp_path / "data"), cache, block_size=16, url=f"{url}input.txt", md5=md5)
    )
    assert (tmp_path / "data" / "tinyshakespeare" / "input.txt").read_text() == text
    assert datamodule.vocab_size == len(set(text))
    # a download whose checksum does not match is refused, and leaves no folder (nor file) behind
    with pytest.raises(DatasetNotFoundError, match="the download from .* failed"):
        ShakespeareDataModule(str(tmp_path / "other"), cache, url=f"{url}input.txt", md5="0" * 32).prepare_data()
    assert not (tmp_path / "other").exists()
    # into a data folder that exists already: it stays, and is left as it was
    (tmp_path / "mine").mkdir()
    with pytest.raises(DatasetNotFoundError, match="the download from .* failed"):
        ShakespeareDataModule(str(tmp_path / "mine"), cache, url=f"{url}input.txt", md5="0" * 32).prepare_data()
    assert list((tmp_path / "mine").iterdir()) == []


def test_missing_text_without_network_leaves_no_folder_behind(tmp_path: Path) -> None:
    datamodule = ShakespeareDataModule(str(tmp_path / "data"), str(tmp_path / "cache"), url="http://127.0.0.1:9/x")
    with pytest.raises(DatasetNotFoundError, match=r"Tiny Shakespeare was not found at .*input.txt.*DATA_DIR"):
        datamodule.prepare_data()
    assert list(tmp_path.iterdir()) == []


def test_truncated_shakespeare_is_named(tmp_path: Path, shakespeare_dir: Path) -> None:
    path = tmp_path / "tinyshakespeare" / "input.txt"
    path.parent.mkdir()
    path.write_bytes((shakespeare_dir / "tinyshakespeare" / "input.txt").read_bytes()[:100_000])
    with pytest.raises(CorruptDatasetError, match=rf"{path}: its MD5 checksum is not Tiny Shakespeare's"):
        _ready(ShakespeareDataModule(str(tmp_path), str(tmp_path / "cache")))
    assert not (tmp_path / "cache").exists()  # refused before anything was tokenized
    # the same file as a corpus of one's own
    assert _ready(ShakespeareDataModule(str(tmp_path), str(tmp_path / "cache"), block_size=32, md5=None)).vocab_size > 1


# --- a text of one's own: the token-id cache ---------------------------------------------------------------------


def test_bpe_ids_in_the_cache_are_those_of_the_whole_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = corpus_text() + "a" * 350 + " word of 350 letters\n"
    # read 100 bytes at a time: pieces cut inside words and inside multi-byte characters are carried over
    monkeypatch.setattr(token_cache, "PIECE_BYTES", 100)
    datamodule = _ready(text_file(tmp_path, text, tokenizer="bpe", vocab_size=300, block_size=16))
    assert isinstance(datamodule.vocab, BpeVocab) and datamodule.vocab_size == 300
    ids = np.concatenate([datamodule.data_train.tokens, datamodule.data_val.tokens])
    assert ids.dtype == np.uint16 and np.array_equal(ids, datamodule.vocab.encode(text).numpy())
    assert datamodule.vocab.decode(ids.tolist()) == text
    assert len(ids) < len(text) / 2  # merges learnt: far fewer tokens than characters
    pieces = list(token_cache.read_pieces(tmp_path / "corpus.txt", piece_bytes=100))
    assert "".join(pieces) == text and not any(piece[-1].isspace() for piece in pieces[:-1])  # cut where words end


def test_the_bpe_a_corpus_trains_is_the_same_every_time(tmp_path: Path) -> None:
    # src.eval on another machine trains it again: the checkpoint's tokenizer must be the one it gets
    first = _ready(text_file(tmp_path / "a", corpus_text(), tokenizer="bpe", vocab_size=300)).vocab
    second = _ready(text_file(tmp_path / "b", corpus_text(), tokenizer="bpe", vocab_size=300)).vocab
    assert first.json == second.json


def test_the_cache_is_read_again_and_made_again_when_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "b.txt").write_text(corpus_text(seed=1))
    (corpus / "sub").mkdir()
    (corpus / "sub" / "a.txt").write_text(corpus_text(seed=2))
    (corpus / "notes.md").write_text("not read: only .txt files are")
    settings = {"cache_dir": str(tmp_path / "cache"), "tokenizer": "bpe", "vocab_size": 300, "block_size": 16}
    first = _ready(TextFileDataModule(str(corpus), **settings))
    # the files in sorted order, each encoded on its own, then joined
    joined = np.concatenate([first.vocab.encode(corpus_text(seed=s)).numpy() for s in (1, 2)])
    assert np.array_equal(np.concatenate([first.data_train.tokens, first.data_val.tokens]), joined)
    (entry,) = (tmp_path / "cache" / "text").iterdir()

    built: list[Path] = []
    build = token_cache._build
    monkeypatch.setattr(token_cache, "_build", lambda *args: built.append(args[1]) or build(*args))
    again = _ready(TextFileDataModule(str(corpus), **settings))
    assert built == [] and again.vocab == first.vocab  # read from the cache, not made again
    assert np.array_equal(again.data_train.tokens, first.data_train.tokens)

    # the same size, another modification time (an edit in place): made again, the old entry gone, and so is
    # what a process killed while it wrote an entry left
    killed = subprocess.Popen(["true"])
    killed.wait()
    abandoned = entry.with_name(f".{entry.name}.{socket.gethostname()}.{killed.pid}.partial")
    abandoned.mkdir()
    (corpus / "b.txt").write_text(corpus_text(seed=1).replace("cat", "dog"))
    changed = _ready(TextFileDataModule(str(corpus), **settings))
    (new_entry,) = (tmp_path / "cache" / "text").iterdir()
    assert len(built) == 1 and new_entry != entry
    assert changed.vocab.decode(changed.data_train.tokens[:200].tolist()).startswith(
        corpus_text(seed=1).replace("cat", "dog")[:20]
    )


def test_windows_reach_a_loader_worker_as_a_file_name(tmp_path: Path) -> None:
    # a worker started by spawn or forkserver receives the dataset pickled: the file's name, which it maps itself
    windows = _ready(text_file(tmp_path, corpus_text(), block_size=16)).data_train
    first = windows.__getitems__([0, 7])  # the ids mapped in this process
    pickled = pickle.dumps(windows)
    assert len(pickled) < windows.tokens.nbytes / 20
    again = pickle.loads(pickled)
    assert isinstance(again.tokens, np.memmap)
    (inputs, targets), (inputs_again, targets_again) = first, again.__getitems__([0, 7])
    assert torch.equal(inputs, inputs_again) and torch.equal(targets, targets_again)


def test_ids_are_uint32_when_the_vocabulary_outgrows_uint16(tmp_path: Path) -> None:
    # 70,000 CJK ideographs: a character vocabulary larger than 65,536
    chars = [chr(point) for point in (*range(0x3400, 0x4DC0), *range(0x4E00, 0xA000), *range(0x20000, 0x2A6E0))]
    chars = chars[:70_000]
    text = "".join(chars) * 2
    datamodule = _ready(text_file(tmp_path, text, block_size=8))
    assert datamodule.vocab_size == 70_000 and datamodule.data_train.tokens.dtype == np.uint32
    assert datamodule.vocab.decode(datamodule.data_val.tokens[-5:].tolist()) == text[-5:]


def test_a_corpus_larger_than_a_permutation_draws_windows_with_replacement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genlab.data import text

    datamodule = _ready(text_file(tmp_path, corpus_text(), block_size=16, batch_size=4))
    assert not datamodule.train_dataloader().sampler.replacement  # an epoch: every window once
    monkeypatch.setattr(text, "MAX_PERMUTED_WINDOWS", 100)
    loader = datamodule.train_dataloader()
    assert loader.sampler.replacement and len(loader.sampler) == len(datamodule.data_train)


# --- bad text, one line each ---------------------------------------------------------------------------------------


def corpus(**files: bytes) -> Callable[[Path], Path]:
    """A folder holding `files` (a name's '__' is a subfolder)."""

    def make(tmp: Path) -> Path:
        folder = tmp / "corpus"
        folder.mkdir()
        for name, content in files.items():
            path = folder / name.replace("__", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        return folder

    return make


def linked(target: str, name: str = "link") -> Callable[[Path], Path]:
    """A corpus folder whose `name` is a symbolic link to `target`."""

    def make(tmp: Path) -> Path:
        folder = corpus(**{"a.txt": b"some text " * 20})(tmp)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(target)
        return folder

    return make


def bpe_checkpoint(edit: Callable[[dict], object]) -> Callable[[Path], Path]:
    """A one-layer BPE GPT's checkpoint whose tokenizer JSON (as a tree) `edit` has changed."""

    def make(tmp: Path) -> Path:
        vocab = _ready(text_file(tmp, corpus_text(), tokenizer="bpe", vocab_size=300)).vocab
        model = GPT(block_size=8, tokenizer=vocab.json, n_layer=1, n_head=2, n_embd=16)
        model.configure_model()
        tree = json.loads(vocab.json)
        edited = edit(tree)
        hyper_parameters = dict(model.hparams) | {"tokenizer": edited if isinstance(edited, str) else json.dumps(tree)}
        config = {"model": {"_target_": "genlab.models.gpt.GPT"}}
        path = tmp / "bpe.ckpt"
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": hyper_parameters, "config": config}, path)
        return path

    return make


def drop_last_token(tree: dict) -> None:
    vocab = tree["model"]["vocab"]
    last = max(vocab, key=vocab.get)
    del vocab[last]
    tree["model"]["merges"] = [merge for merge in tree["model"]["merges"] if "".join(merge) != last]


BAD_TEXT = [  # (case, what makes it, the start of its one line)
    ("not UTF-8", corpus(**{"a.txt": "café ok".encode() + b"\xff"}), r"a.txt: not UTF-8 text \(byte 0xff at offset 8"),
    ("cut UTF-8", corpus(**{"a.txt": b"ok " * 9 + "é".encode()[:1]}), r"a.txt: not UTF-8 .* offset 27: unexpected"),
    ("empty folder", corpus(), r"corpus: an empty folder \(data.path\)"),
    ("no .txt files", corpus(**{"a.md": b"text", "b.csv": b"1,2"}), r"corpus: a folder without .txt files"),
    ("empty files", corpus(**{"a.txt": b"", "sub__b.txt": b""}), r"corpus: its .txt files are empty: no text"),
    ("shorter than a window", corpus(**{"a.txt": b"to be or not"}), r"data.block_size=8 is not smaller than the val"),
    ("control characters", corpus(**{"a.txt": b"ring \x07 the bell " * 9}), r"corpus: .*control or invisible .*x07"),
    ("folder link loop", linked("..", "sub/up"), r"corpus/sub/up: a symbolic link loop \(it leads back to .*corpus,"),
    ("file link loop", linked("b.txt", "b.txt"), r"corpus/b.txt: a symbolic link loop"),
    ("dangling link", linked("nowhere.txt", "b.txt"), r"corpus/b.txt: a link to nothing \(nowhere.txt does not exist"),
    ("missing path", lambda tmp: tmp / "nope", r"nope: no such file or folder \(data.path\)"),
    ("tokenizer not JSON", bpe_checkpoint(lambda t: "{'not': json"), r"cannot rebuild its GPT .*tokenizer is not JSON"),
    ("tokenizer huge", bpe_checkpoint(lambda t: " " * (2**25 + 1)), r"tokenizer's JSON is 33,554,433 char.* unparsed"),
    ("tokenizer other model", bpe_checkpoint(lambda t: t["model"].update(type="WordPiece")), r"'WordPiece'; genlab's"),
    ("tokenizer own regex", bpe_checkpoint(lambda t: t.update(pre_tokenizer={"type": "Split"})), r"'pre_tokenizer'"),
    ("tokenizer id gap", bpe_checkpoint(lambda t: t["model"]["vocab"].update(the=10**6)), r"ids are not 0 to 299"),
    ("tokenizer not the embedding's", bpe_checkpoint(drop_last_token), r"weights are not those of the GPT"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "message"), [case[1:] for case in BAD_TEXT], ids=[case[0] for case in BAD_TEXT])
def test_bad_text_is_refused_in_one_line_and_leaves_nothing(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path)
    cache = tmp_path / "text cache"
    with pytest.raises(GenlabError, match=message) as refused:
        if path.suffix == ".ckpt":
            load_model(path)
        else:
            _ready(TextFileDataModule(str(path), cache_dir=str(cache), block_size=8, batch_size=2))
    assert "\n" not in str(refused.value)
    assert isinstance(refused.value, (CheckpointError, ConfigError, CorruptDatasetError, DatasetNotFoundError))
    # no half-made cache entry: an entry is renamed into place whole, or not at all
    assert [path.name for path in cache.glob("text/*") if not os.path.exists(path / "meta.json")] == []
