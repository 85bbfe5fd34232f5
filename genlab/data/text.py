"""Text data for the GPT: a corpus of one's own (`data=text_file`), and Tiny Shakespeare (`data=shakespeare`), the
same module on a known file.

The corpus is tokenized once into a memory-mapped file of ids (genlab/data/token_cache.py); batches are windows
of `block_size + 1` consecutive tokens (input, next-token target), as in nanoGPT. Training draws every window
start in a shuffled order; validation uses a fixed, seeded set of windows so that validation loss is comparable
across runs.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import lightning as L
import numpy as np
import torch
from pydantic import Field
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.utils import calculate_md5, download_url

from genlab.data.batching import batch_loader, check_on_device, data_device
from genlab.data.folders import removed_if_failed
from genlab.data.token_cache import TokenFile, cached_tokens, default_cache_dir
from genlab.data.vocab import BYTES, MAX_VOCAB_SIZE, CharVocab, Vocabulary
from genlab.errors import ConfigError, CorruptDatasetError, DatasetNotFoundError, one_line
from genlab.utils.validation import check_arguments

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_MD5 = "6fb458f1232090904fb40fe944165e91"
# validation windows: 4,096 by default; a million of 256 characters is 2 GB of token ids
MAX_VAL_WINDOWS = 1_000_000
# An epoch visits every window start in a shuffled order: a permutation of all of them, up to this many (its list
# takes 36 bytes a start: 75 MB). A larger corpus draws its windows at random with replacement, as nanoGPT does:
# a permutation of the billion windows of a 4 GB corpus would take 36 GB.
MAX_PERMUTED_WINDOWS = 2**21


class TokenWindows(Dataset):
    """Windows of `block_size + 1` ids of `tokens[begin:end]`, starting at `starts` (None: at every position);
    an item is (input, target). The windows are cut where the ids are held: memory-mapped on the host, or on the
    training device once `to` has put them there."""

    def __init__(self, tokens: TokenFile, begin: int, end: int, block_size: int, starts: Tensor | None = None):
        self.file, self.begin, self.end = tokens, begin, end
        self.starts = starts  # on the host, where the sampler's indices are
        self.offsets = np.arange(block_size + 1)
        self.on_device: Tensor | None = None  # (N,) int64 ids on the training device, or None: cut on the host

    @property
    def tokens(self) -> np.ndarray:
        """The ids, memory-mapped."""
        return self.file.array[self.begin : self.end]

    def __len__(self) -> int:
        return len(self.starts) if self.starts is not None else self.end - self.begin - len(self.offsets) + 1

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        inputs, targets = self.__getitems__([index])
        return inputs[0], targets[0]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        starts = np.asarray(indices) if self.starts is None else self.starts[torch.as_tensor(indices)].numpy()  # (B,)
        if self.on_device is None:
            chunks = torch.from_numpy(self.tokens[starts[:, None] + self.offsets].astype(np.int64))  # (B, T + 1)
        else:  # only the B starts cross
            starts = torch.from_numpy(starts)
            if self.on_device.is_cuda:  # pinned and asynchronous: a copy from pageable memory would wait for the GPU
                starts = starts.pin_memory()
            starts = starts.to(self.on_device.device, non_blocking=True)
            chunks = self.on_device[starts[:, None] + self.device_offsets]  # (B, T + 1)
        return chunks[:, :-1], chunks[:, 1:]  # (B, T) inputs, (B, T) next-token targets

    def to(self, device: torch.device) -> TokenWindows:
        """The same windows, cut from a copy of the ids held on `device` (int64, as the batches are)."""
        if self.on_device is not None and self.on_device.device == device:
            return self
        moved = copy.copy(self)
        moved.on_device = torch.from_numpy(self.tokens.astype(np.int64)).to(device)
        moved.device_offsets = torch.from_numpy(self.offsets).to(device)
        return moved

    @property
    def device_nbytes(self) -> int:
        """The bytes its ids take on a device."""
        return (self.end - self.begin) * 8


class TextFileDataModule(L.LightningDataModule):
    """A UTF-8 text file, or the `.txt` files of a folder, by characters or by a BPE learnt from it: the first
    `train_fraction` of its tokens train, the rest validates (as nanoGPT splits a text)."""

    name = "text_file"

    # each range is declared once, here: a config (genlab/utils/validation.py), a checkpoint's data settings and
    # this constructor are checked against it
    def __init__(
        self,
        path: str,
        cache_dir: str | None = None,
        tokenizer: Literal["char", "bpe"] = "char",
        vocab_size: Annotated[int, Field(gt=BYTES, le=MAX_VOCAB_SIZE)] = 4096,
        block_size: Annotated[int, Field(ge=1)] = 256,
        batch_size: Annotated[int, Field(ge=1)] = 64,
        train_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.9,
        num_val_windows: Annotated[int, Field(ge=1, le=MAX_VAL_WINDOWS)] = 4096,
        num_workers: Annotated[int, Field(ge=0)] = 0,
        seed: int = 42,
        on_device: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        check_arguments(TextFileDataModule, self.hparams, "data")
        check_on_device(on_device, num_workers)
        self.path = Path(path).expanduser().absolute()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.vocab: Vocabulary | None = None
        self.data_train: TokenWindows | None = None
        self.data_val: TokenWindows | None = None

    @property
    def vocab_size(self) -> int:
        if self.vocab is None:
            raise RuntimeError("the vocabulary is built in setup(): call it first")
        return len(self.vocab)

    def prepare_data(self) -> None:
        """Tokenize the corpus into the cache, if it is not there yet (on one process; the others read it)."""
        self._tokens()

    def _tokens(self) -> tuple[Vocabulary, TokenFile]:
        hp = self.hparams
        return cached_tokens(self.path, self.cache_dir, hp.tokenizer, hp.vocab_size)

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is None:
            self._read_splits()
        self._hold_on_device()

    def _hold_on_device(self) -> None:
        """Move the ids to the training device when `data.on_device` says so (genlab.data.batching.data_device):
        each batch is then cut there, and only its B window starts cross from the host. The sampler is the host's,
        so the batches, and a resumed loader's position, are the same as on the host."""
        size = self.data_train.device_nbytes + self.data_val.device_nbytes
        device = data_device(self.hparams.on_device, self.trainer, size, self.hparams.num_workers)
        if device is not None:
            self.data_train, self.data_val = self.data_train.to(device), self.data_val.to(device)

    def _read_splits(self) -> None:
        self.vocab, tokens = self._tokens()
        n_train = int(self.hparams.train_fraction * tokens.num_tokens)
        block_size = self.hparams.block_size
        unit = "characters" if isinstance(self.vocab, CharVocab) else "tokens"
        for split, length in (("train", n_train), ("validation", tokens.num_tokens - n_train)):
            if length <= block_size:
                raise ConfigError(
                    f"data.block_size={block_size} is not smaller than the {split} split ({length:,} {unit} of "
                    f"{self.path}): a window is block_size + 1 {unit}"
                )
        if self.hparams.batch_size > n_train - block_size:
            raise ConfigError(
                f"data.batch_size={self.hparams.batch_size} is larger than the training split: "
                f"{n_train - block_size} windows of data.block_size={block_size} in {self.path}"
            )
        generator = torch.Generator().manual_seed(self.hparams.seed)
        val_starts = torch.randint(
            tokens.num_tokens - n_train - block_size, (self.hparams.num_val_windows,), generator=generator
        )
        self.data_train = TokenWindows(tokens, 0, n_train, block_size)
        self.data_val = TokenWindows(tokens, n_train, tokens.num_tokens, block_size, val_starts)

    def train_dataloader(self) -> DataLoader:
        return self._dataloader(self.data_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._dataloader(self.data_val, shuffle=False)

    def _dataloader(self, dataset: TokenWindows | None, shuffle: bool) -> DataLoader:
        hp = self.hparams
        with_replacement = shuffle and len(dataset) > MAX_PERMUTED_WINDOWS
        return batch_loader(dataset, hp.batch_size, shuffle, hp.num_workers, with_replacement=with_replacement)


class ShakespeareDataModule(TextFileDataModule):
    """Tiny Shakespeare: a text file of 1.1 million characters, downloaded once and checked by its MD5 on every
    load; character by character unless `tokenizer=bpe` (the other settings: TextFileDataModule's)."""

    name = "shakespeare"

    def __init__(
        self,
        data_dir: str,
        cache_dir: str | None = None,
        download: bool = True,
        url: str = TINY_SHAKESPEARE_URL,
        md5: str | None = TINY_SHAKESPEARE_MD5,
        **settings: Any,
    ) -> None:
        if "path" in settings:
            raise ConfigError("data=shakespeare reads its own file: for another text, use data=text_file data.path=...")
        path = Path(data_dir).expanduser().resolve() / "tinyshakespeare" / "input.txt"
        super().__init__(str(path), cache_dir, **settings)

    def prepare_data(self) -> None:
        """Download input.txt if it is missing (into a temporary file, moved in once verified), then tokenize it."""
        self._download_if_missing()
        super().prepare_data()

    def _tokens(self) -> tuple[Vocabulary, TokenFile]:
        self._download_if_missing()
        if self.hparams.md5 is not None and calculate_md5(str(self.path)) != self.hparams.md5:
            raise CorruptDatasetError(
                f"{self.path}: its MD5 checksum is not Tiny Shakespeare's {self.hparams.md5} (truncated or a "
                f"different file). Delete it to download it again, or set data.md5=null to train on your own text."
            )
        return super()._tokens()

    def _download_if_missing(self) -> None:
        if self.path.is_file():
            return
        if not self.hparams.download:
            reason = "downloading is off (data.download=false)"
        else:
            try:
                with removed_if_failed(self.path.parent):
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    with tempfile.TemporaryDirectory(dir=self.path.parent) as tmp:
                        download_url(self.hparams.url, tmp, filename=self.path.name, md5=self.hparams.md5)
                        os.replace(Path(tmp) / self.path.name, self.path)
                return
            except (OSError, RuntimeError) as err:  # urllib's URLError is an OSError
                reason = f"the download from {self.hparams.url} failed ({one_line(err)})"
        raise DatasetNotFoundError(
            f"Tiny Shakespeare was not found at {self.path}, and {reason}. Set DATA_DIR (or paths.data_dir) "
            f"to the folder that holds tinyshakespeare/input.txt, or run once with network access."
        )
