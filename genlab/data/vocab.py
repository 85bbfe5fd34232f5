"""The GPT's vocabularies: characters (`CharVocab`), or byte-level BPE trained by Hugging Face `tokenizers`.

A vocabulary travels inside every checkpoint, so it is data someone may have written: a CharVocab holds
printable characters only, and a BpeVocab is a tokenizer JSON that `tokenizers.Tokenizer.from_str` parses into
the library's own components (it names no code), bounded in size and held to the one pipeline genlab trains
(byte-level pre-tokenizer and decoder, a BPE model, no normalizer or added tokens): a checkpoint cannot bring a
pre-tokenizer's regular expression of its own, nor ids the model's embedding does not have.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor

# characters a text may hold beyond the printable ones: a vocabulary is data too (a checkpoint carries it), and
# escape or bell characters in it would reach the terminal and the samples as raw control sequences
LAYOUT_CHARS = frozenset("\n\t\r")
# GPT-2's tokenizer.json is 1.4 MB for 50,257 tokens, Llama 3's 9 MB for 128,256
MAX_TOKENIZER_BYTES = 32 * 2**20
MAX_VOCAB_SIZE = 262_144  # Gemma's, the largest of the common ones
BYTES = 256  # a byte-level BPE starts from every byte


class Vocabulary(Protocol):
    """What the GPT and the text data ask of a vocabulary, whichever kind."""

    def __len__(self) -> int: ...

    def encode(self, text: str) -> Tensor:
        """The ids of `text`, (T,) int64."""

    def encode_pieces(self, pieces: list[str]) -> np.ndarray:
        """The ids of the pieces, one after the other; each piece must end where a token may end."""

    def decode(self, ids: Tensor | list[int]) -> str: ...

    def as_hparams(self) -> dict[str, str | None]:
        """The GPT's hyperparameters that hold it: `vocab` (characters) or `tokenizer` (a JSON)."""


def vocabulary(vocab: str | None, tokenizer: str | None) -> Vocabulary | None:
    """The vocabulary the GPT's hyperparameters hold (None: the data's, known at setup); ValueError if unfit."""
    if vocab is not None and tokenizer is not None:
        raise ValueError("model.vocab (characters) and model.tokenizer (a BPE tokenizer's JSON) are exclusive")
    if vocab is not None:
        return CharVocab(vocab)
    return BpeVocab(tokenizer) if tokenizer is not None else None


@dataclass(frozen=True)
class CharVocab:
    """The characters of a corpus, in sorted order; a character's id is its index."""

    chars: str
    # code points in increasing order, and the id of each
    _points: np.ndarray = field(init=False, repr=False, compare=False)
    _ids: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.chars, str) or not self.chars:
            raise ValueError(f"a vocabulary is a non-empty string of characters, not {self.chars!r}")
        repeated = sorted(char for char, count in Counter(self.chars).items() if count > 1)
        if repeated:
            raise ValueError(f"the vocabulary repeats the characters {''.join(repeated)!r}: ids would be ambiguous")
        control = sorted({char for char in self.chars if not char.isprintable() and char not in LAYOUT_CHARS})
        if control:
            raise ValueError(
                f"the vocabulary holds control or invisible characters {''.join(control)!r}: only printable "
                f"characters, newlines and tabs make text"
            )
        points = _code_points(self.chars)
        order = np.argsort(points)
        object.__setattr__(self, "_points", points[order])
        object.__setattr__(self, "_ids", order)

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls("".join(sorted(set(text))))

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharVocab:
        """The vocabulary of a corpus read in pieces (each piece's characters found by numpy, not a Python loop)."""
        points = np.unique(np.concatenate([np.unique(_code_points(text)) for text in texts] or [np.empty(0, int)]))
        return cls("".join(map(chr, points.tolist())))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        return torch.from_numpy(self.encode_pieces([text]).astype(np.int64))

    def encode_pieces(self, pieces: list[str]) -> np.ndarray:
        points = _code_points("".join(pieces))
        at = np.minimum(np.searchsorted(self._points, points), len(self) - 1)
        unknown = self._points[at] != points
        if unknown.any():
            chars = "".join(map(chr, np.unique(points[unknown]).tolist()))
            raise ValueError(f"characters not in the vocabulary: {chars!r} (known: {self.chars!r})")
        return self._ids[at]

    def decode(self, ids: Tensor | list[int]) -> str:
        return "".join(self.chars[i] for i in torch.as_tensor(ids).tolist())

    def as_hparams(self) -> dict[str, str | None]:
        return {"vocab": self.chars, "tokenizer": None}

    def __str__(self) -> str:
        return f"{len(self)} characters"


def _code_points(text: str) -> np.ndarray:
    # surrogatepass: a lone surrogate (from a command line's undecodable bytes) is a code point too, and unknown
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


@dataclass(frozen=True)
class BpeVocab:
    """A byte-level BPE tokenizer (GPT-2's kind, trained by Hugging Face `tokenizers`), kept as its JSON.

    Any text encodes (every byte is a token), so a prompt never has unknown characters.
    """

    json: str = field(repr=False)
    _tokenizer: Tokenizer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tokenizer", _checked_tokenizer(self.json))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BpeVocab:
        """Learn `vocab_size` tokens (fewer where the corpus has fewer pairs to merge) from a corpus read in pieces."""
        tokenizer = _pipeline()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer.to_str())

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> Tensor:
        return torch.tensor(self._tokenizer.encode(text).ids, dtype=torch.int64)

    def encode_pieces(self, pieces: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch_fast(pieces)  # in parallel, on the library's threads
        return np.concatenate([np.asarray(encoding.ids, dtype=np.int64) for encoding in encodings])

    def decode(self, ids: Tensor | list[int]) -> str:
        return self._tokenizer.decode(torch.as_tensor(ids).tolist())

    def as_hparams(self) -> dict[str, str | None]:
        return {"vocab": None, "tokenizer": self.json}

    def token_bytes(self) -> Tensor:
        """How many bytes of UTF-8 text each token stands for, (vocab_size,): a byte-level token spells each of
        its bytes as one character."""
        lengths = [0] * len(self)
        for token, i in self._tokenizer.get_vocab().items():
            lengths[i] = len(token)
        return torch.tensor(lengths)

    def __str__(self) -> str:
        return f"{len(self):,} BPE tokens"


def _pipeline() -> Tokenizer:
    """The one tokenizer pipeline genlab trains, untrained: GPT-2's byte-level BPE without a prefix space."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _pipeline_settings(tree: dict[str, Any]) -> dict[str, Any]:
    """Everything of a tokenizer JSON but its vocabulary and merges: what must be genlab's own pipeline."""
    model = {key: value for key, value in tree["model"].items() if key not in ("vocab", "merges")}
    return {key: value for key, value in tree.items() if key != "model"} | {"model": model}


_GENLAB_PIPELINE = _pipeline_settings(json.loads(_pipeline().to_str()))


def _checked_tokenizer(text: Any) -> Tokenizer:
    """The tokenizer a JSON describes, if it is a BPE of genlab's pipeline with ids 0 to n-1; else ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"a tokenizer is its JSON text, not a {type(text).__name__}")
    if len(text) > MAX_TOKENIZER_BYTES:
        raise ValueError(
            f"the tokenizer's JSON is {len(text):,} characters, over the {MAX_TOKENIZER_BYTES:,} any of "
            f"{MAX_VOCAB_SIZE:,} tokens needs; refused unparsed"
        )
    try:
        tree = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"the tokenizer is not JSON ({' '.join(str(err).split())[:200]})") from None
    model = tree.get("model") if isinstance(tree, dict) else None
    if not isinstance(model, dict):
        raise ValueError("the tokenizer's JSON has no 'model': not a Hugging Face tokenizer")
    if model.get("type") != "BPE":
        raise ValueError(f"the tokenizer's model is {str(model.get('type'))[:50]!r}; genlab's are 'BPE'")
    settings = _pipeline_settings(tree)
    if settings != _GENLAB_PIPELINE:
        differ = sorted(
            key for key in settings.keys() | _GENLAB_PIPELINE.keys() if settings.get(key) != _GENLAB_PIPELINE.get(key)
        )
        raise ValueError(
            f"the tokenizer's {', '.join(map(repr, differ))} differ from genlab's byte-level BPE (a tokenizer from "
            f"elsewhere, or edited); refused"
        )
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(isinstance(token, str) and type(i) is int for token, i in vocab.items()):
        raise ValueError("the tokenizer's vocabulary is not a mapping of tokens to ids")
    if not BYTES <= len(vocab) <= MAX_VOCAB_SIZE:
        raise ValueError(f"the tokenizer has {len(vocab):,} tokens; a byte-level BPE has {BYTES} to {MAX_VOCAB_SIZE:,}")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(
            f"the tokenizer's ids are not 0 to {len(vocab) - 1}, each once: the embedding has no row for some"
        )
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as err:  # the library's own error type is Exception: a merge of unknown tokens, a wrong field
        raise ValueError(f"the tokenizer's JSON does not load ({' '.join(str(err).split())[:200]})") from None
    if tokenizer.get_vocab_size() != len(vocab):
        raise ValueError(
            f"the tokenizer has {tokenizer.get_vocab_size():,} tokens where its vocabulary lists {len(vocab):,}"
        )
    return tokenizer
