"""Tiny Shakespeare DataModule: vocabulary, windows, the seeded validation set, download and bad files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from genlab.data.text import CharVocab, ShakespeareDataModule
from genlab.errors import ConfigError, CorruptDatasetError, DatasetNotFoundError


def _ready(datamodule: ShakespeareDataModule) -> ShakespeareDataModule:
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_shakespeare_vocab_split_and_windows(shakespeare_dir: Path) -> None:
    datamodule = _ready(ShakespeareDataModule(str(shakespeare_dir), block_size=64, batch_size=12))
    assert datamodule.vocab_size == 65
    n_train, n_val = len(datamodule.data_train.tokens), len(datamodule.data_val.tokens)
    assert n_train + n_val == 1_115_394 and n_train == int(0.9 * 1_115_394)
    inputs, targets = next(iter(datamodule.train_dataloader()))
    assert inputs.shape == targets.shape == (12, 64) and inputs.dtype == torch.int64
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are the inputs shifted by one character
    text = datamodule.vocab.decode(inputs[0])
    assert len(text) == 64 and text in (shakespeare_dir / "tinyshakespeare" / "input.txt").read_text()


def test_validation_windows_are_fixed_by_the_seed(shakespeare_dir: Path) -> None:
    def val_batch(seed: int) -> torch.Tensor:
        datamodule = _ready(ShakespeareDataModule(str(shakespeare_dir), block_size=32, num_val_windows=64, seed=seed))
        return next(iter(datamodule.val_dataloader()))[0]

    assert torch.equal(val_batch(0), val_batch(0))
    assert not torch.equal(val_batch(0), val_batch(1))


def test_char_vocab_round_trip_and_unknown_characters() -> None:
    vocab = CharVocab.from_text("hello world")
    assert vocab.chars == " dehlorw"
    assert vocab.decode(vocab.encode("hold or low")) == "hold or low"
    with pytest.raises(ValueError, match=r"not in the vocabulary: 'QZ'"):
        vocab.encode("Zero Q")


def test_download_from_url_with_checksum(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    url, folder = http_server
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50
    (folder / "input.txt").write_text(text)
    md5 = hashlib.md5(text.encode()).hexdigest()
    datamodule = _ready(ShakespeareDataModule(str(tmp_path / "data"), block_size=16, url=f"{url}input.txt", md5=md5))
    assert (tmp_path / "data" / "tinyshakespeare" / "input.txt").read_text() == text
    assert datamodule.vocab_size == len(set(text))
    # a download whose checksum does not match is refused, and leaves no folder (nor file) behind
    with pytest.raises(DatasetNotFoundError, match="the download from .* failed"):
        ShakespeareDataModule(str(tmp_path / "other"), url=f"{url}input.txt", md5="0" * 32).prepare_data()
    assert not (tmp_path / "other").exists()
    # into a data folder that exists already: it stays, and is left as it was
    (tmp_path / "mine").mkdir()
    with pytest.raises(DatasetNotFoundError, match="the download from .* failed"):
        ShakespeareDataModule(str(tmp_path / "mine"), url=f"{url}input.txt", md5="0" * 32).prepare_data()
    assert list((tmp_path / "mine").iterdir()) == []


def test_missing_text_without_network_leaves_no_folder_behind(tmp_path: Path) -> None:
    datamodule = ShakespeareDataModule(str(tmp_path / "data"), url="http://127.0.0.1:9/input.txt")
    with pytest.raises(DatasetNotFoundError, match=r"Tiny Shakespeare was not found at .*input.txt.*DATA_DIR"):
        datamodule.prepare_data()
    assert list(tmp_path.iterdir()) == []


def test_truncated_text_is_named(tmp_path: Path, shakespeare_dir: Path) -> None:
    path = tmp_path / "tinyshakespeare" / "input.txt"
    path.parent.mkdir()
    path.write_bytes((shakespeare_dir / "tinyshakespeare" / "input.txt").read_bytes()[:100_000])
    with pytest.raises(CorruptDatasetError, match=rf"{path}: its MD5 checksum is not Tiny Shakespeare's"):
        _ready(ShakespeareDataModule(str(tmp_path)))
    # the same file as a corpus of one's own
    assert _ready(ShakespeareDataModule(str(tmp_path), block_size=32, md5=None)).vocab_size > 1


def test_block_size_larger_than_the_split(tmp_path: Path) -> None:
    path = tmp_path / "tinyshakespeare" / "input.txt"
    path.parent.mkdir()
    path.write_text("to be or not to be " * 20)
    with pytest.raises(
        ConfigError, match=r"data.block_size=256 is not smaller than the validation split \(38 characters"
    ):
        _ready(ShakespeareDataModule(str(tmp_path), block_size=256, md5=None))
