"""Character-level text data: Tiny Shakespeare, encoded once into one integer tensor.

Batches are windows of `block_size + 1` consecutive characters (input, next-character target),
as in nanoGPT. Training draws every window start in a shuffled order; validation uses a fixed,
seeded set of windows so that validation loss is comparable across runs.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.utils import calculate_md5, download_url

from genlab.data.batching import batch_loader, check_on_device, data_device
from genlab.data.folders import removed_if_failed
from genlab.errors import ConfigError, CorruptDatasetError, DatasetNotFoundError, one_line

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_MD5 = "6fb458f1232090904fb40fe944165e91"
# validation windows: 4,096 by default; a million of 256 characters is 2 GB of token ids
MAX_VAL_WINDOWS = 1_000_000


# characters a text may hold beyond the printable ones: a vocabulary is data too (a checkpoint carries it), and
# escape or bell characters in it would reach the terminal and the samples as raw control sequences
LAYOUT_CHARS = frozenset("\n\t\r")


@dataclass(frozen=True)
class CharVocab:
    """The characters of a corpus, in sorted order; a character's id is its index."""

    chars: str

    def __post_init__(self) -> None:
        if not isinstance(self.chars, str) or not self.chars:
            raise ValueError(f"a vocabulary is a non-empty string of characters, not {self.chars!r}")
        repeated = sorted({char for char in self.chars if self.chars.count(char) > 1})
        if repeated:
            raise ValueError(f"the vocabulary repeats the characters {''.join(repeated)!r}: ids would be ambiguous")
        control = sorted({char for char in self.chars if not char.isprintable() and char not in LAYOUT_CHARS})
        if control:
            raise ValueError(
                f"the vocabulary holds control or invisible characters {''.join(control)!r}: only printable "
                f"characters, newlines and tabs make text"
            )

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        index = {char: i for i, char in enumerate(self.chars)}
        unknown = sorted(set(text) - index.keys())
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(unknown)!r} (known: {self.chars!r})")
        return torch.tensor([index[char] for char in text], dtype=torch.long)

    def decode(self, ids: Tensor | list[int]) -> str:
        return "".join(self.chars[i] for i in torch.as_tensor(ids).tolist())


class TokenWindows(Dataset):
    """Windows of `block_size + 1` tokens starting at `starts`; an item is (input, target). The windows are cut
    where the tokens are held: on the host, or on the training device (`to`)."""

    def __init__(self, tokens: Tensor, block_size: int, starts: Tensor) -> None:
        self.tokens = tokens
        self.block_size = block_size
        self.starts = starts  # on the host, where the sampler's indices are
        self.offsets = torch.arange(block_size + 1, device=tokens.device)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        inputs, targets = self.__getitems__([index])
        return inputs[0], targets[0]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        starts = self.starts[torch.as_tensor(indices)]  # (B,)
        if self.tokens.is_cuda:  # pinned and asynchronous: a copy from pageable memory would wait for the GPU
            starts = starts.pin_memory().to(self.tokens.device, non_blocking=True)
        chunks = self.tokens[starts[:, None] + self.offsets]  # (B, T + 1)
        return chunks[:, :-1], chunks[:, 1:]  # (B, T) inputs, (B, T) next-character targets

    def to(self, device: torch.device) -> TokenWindows:
        """The same windows, cut from the tokens held on `device`."""
        return TokenWindows(self.tokens.to(device), self.block_size, self.starts)


class ShakespeareDataModule(L.LightningDataModule):
    """Tiny Shakespeare, character by character: 90% train, 10% validation (as nanoGPT splits it)."""

    name = "shakespeare"

    def __init__(
        self,
        data_dir: str,
        block_size: int = 256,
        batch_size: int = 64,
        train_fraction: float = 0.9,
        num_val_windows: int = 4096,
        num_workers: int = 0,
        download: bool = True,
        url: str = TINY_SHAKESPEARE_URL,
        md5: str | None = TINY_SHAKESPEARE_MD5,
        seed: int = 42,
        on_device: bool | str = "auto",
    ) -> None:
        super().__init__()
        if block_size < 1 or batch_size < 1 or num_val_windows < 1:
            raise ConfigError(
                f"data.block_size, data.batch_size and data.num_val_windows must be >= 1, "
                f"got {block_size}, {batch_size} and {num_val_windows}"
            )
        if num_val_windows > MAX_VAL_WINDOWS:  # a checkpoint's data settings are rebuilt by src.eval: bound them
            raise ConfigError(f"data.num_val_windows must be at most {MAX_VAL_WINDOWS:,}, got {num_val_windows}")
        if not 0.0 < train_fraction < 1.0:
            raise ConfigError(f"data.train_fraction must be between 0 and 1, got {train_fraction}")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0 (0 loads in the main process), got {num_workers}")
        check_on_device(on_device, num_workers)
        self.save_hyperparameters(logger=False)
        self.path = Path(data_dir).expanduser().resolve() / "tinyshakespeare" / "input.txt"
        self.vocab: CharVocab | None = None
        self.data_train: TokenWindows | None = None
        self.data_val: TokenWindows | None = None

    @property
    def vocab_size(self) -> int:
        if self.vocab is None:
            raise RuntimeError("the vocabulary is built in setup(): call it first")
        return len(self.vocab)

    def prepare_data(self) -> None:
        """Download input.txt if it is missing: into a temporary file, moved in once verified."""
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

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is None:
            self._read_splits()
        self._hold_on_device()

    def _hold_on_device(self) -> None:
        """Move the tokens to the training device when `data.on_device` says so (genlab.data.batching.data_device):
        each batch is then cut there, and only its B window starts cross from the host. The sampler is the host's,
        so the batches, and a resumed loader's position, are the same as on the host."""
        size = self.data_train.tokens.nbytes + self.data_val.tokens.nbytes
        device = data_device(self.hparams.on_device, self.trainer, size, self.hparams.num_workers)
        if device is not None:  # tokens already there are not copied again (Tensor.to)
            self.data_train, self.data_val = self.data_train.to(device), self.data_val.to(device)

    def _read_splits(self) -> None:
        if not self.path.is_file():
            self.prepare_data()
        text = self._read_text()
        try:
            self.vocab = CharVocab.from_text(text)
        except ValueError as err:
            raise CorruptDatasetError(f"{self.path}: {err}") from None
        tokens = self.vocab.encode(text)
        n_train = int(self.hparams.train_fraction * len(tokens))
        train_tokens, val_tokens = tokens[:n_train], tokens[n_train:]
        block_size = self.hparams.block_size
        for split, split_tokens in (("train", train_tokens), ("validation", val_tokens)):
            if len(split_tokens) <= block_size:
                raise ConfigError(
                    f"data.block_size={block_size} is not smaller than the {split} split "
                    f"({len(split_tokens)} characters of {self.path})"
                )
        if self.hparams.batch_size > len(train_tokens) - block_size:
            raise ConfigError(
                f"data.batch_size={self.hparams.batch_size} is larger than the training split: "
                f"{len(train_tokens) - block_size} windows of data.block_size={block_size} in {self.path}"
            )
        generator = torch.Generator().manual_seed(self.hparams.seed)
        val_starts = torch.randint(len(val_tokens) - block_size, (self.hparams.num_val_windows,), generator=generator)
        self.data_train = TokenWindows(train_tokens, block_size, torch.arange(len(train_tokens) - block_size))
        self.data_val = TokenWindows(val_tokens, block_size, val_starts)

    def _read_text(self) -> str:
        if self.hparams.md5 is not None and calculate_md5(str(self.path)) != self.hparams.md5:
            raise CorruptDatasetError(
                f"{self.path}: its MD5 checksum is not Tiny Shakespeare's {self.hparams.md5} (truncated or a "
                f"different file). Delete it to download it again, or set data.md5=null to train on your own text."
            )
        try:
            return self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise CorruptDatasetError(f"{self.path}: not UTF-8 text ({err})") from None

    def train_dataloader(self) -> DataLoader:
        return self._dataloader(self.data_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._dataloader(self.data_val, shuffle=False)

    def _dataloader(self, dataset: TokenWindows | None, shuffle: bool) -> DataLoader:
        return batch_loader(dataset, self.hparams.batch_size, shuffle, self.hparams.num_workers)
