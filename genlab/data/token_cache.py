"""A text corpus's token ids, written once into a cache folder and memory-mapped, as nanoGPT's `.bin` files.

The corpus (one UTF-8 file, or the `.txt` files of a folder tree) is streamed in pieces, never held whole as a
Python string: a pass to learn the vocabulary (its characters, or a BPE), then a pass that encodes it into
uint16 ids (uint32 where the vocabulary has more than 65,536 tokens). An entry of the cache is a folder
named by the corpus and the tokenizer settings, and by every file's name, size and modification time: a
changed file makes a new entry (the old one is removed), never a stale read. An entry is written under a
temporary name and renamed into place whole, so a run stopped while writing leaves nothing a later run reads,
and two runs that build the same entry at once both end up reading the one that was renamed first.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genlab.data.vocab import BpeVocab, CharVocab, Vocabulary, vocabulary
from genlab.errors import ConfigError, CorruptDatasetError, DatasetNotFoundError, GenlabError

log = logging.getLogger(__name__)

FORMAT = 1  # of an entry's files; a new format makes new entries
PIECE_BYTES = 1 << 20  # bytes of a file decoded at a time
PIECES_PER_BATCH = 16  # encoded together, on the tokenizer's threads


def default_cache_dir() -> Path:
    """Where a datamodule built in Python (not by src.train, whose paths.cache_dir says) keeps its caches."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genlab"


@dataclass(frozen=True)
class TokenFile:
    """`num_tokens` ids of `dtype` in a file; `array` maps it (opened again in each process it reaches)."""

    path: Path
    dtype: str
    num_tokens: int

    @cached_property
    def array(self) -> np.ndarray:
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.num_tokens,))

    def __getstate__(self) -> dict[str, Any]:  # a loader's worker maps the file itself, rather than receive a copy
        return {key: value for key, value in vars(self).items() if key != "array"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)


def corpus_files(path: Path) -> list[Path]:
    """The file `path`, or the `.txt` files under the folder `path` (links followed, in sorted order)."""
    what = _checked_stat(path, "data.path")
    if not os.path.isdir(path):
        if not _is_regular(what):
            raise CorruptDatasetError(f"{path}: not a regular file or a folder (data.path)")
        return [path]
    files: list[Path] = []
    _walk(path, [(what.st_dev, what.st_ino)], files)
    if not files:
        found = "an empty folder" if not any(path.iterdir()) else "a folder without .txt files"
        raise DatasetNotFoundError(
            f"{path}: {found} (data.path); data=text_file reads one text file, or the UTF-8 .txt files of a folder"
        )
    return files


def _walk(folder: Path, ancestors: list[tuple[int, int]], files: list[Path]) -> None:
    for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
        path = Path(entry.path)
        what = _checked_stat(path, "a file of data.path")
        if os.path.isdir(path):
            if (what.st_dev, what.st_ino) in ancestors:  # a link back to a folder that holds it: endless
                raise CorruptDatasetError(
                    f"{path}: a symbolic link loop (it leads back to {os.path.realpath(path)}, a folder above it)"
                )
            _walk(path, [*ancestors, (what.st_dev, what.st_ino)], files)
        elif path.suffix.lower() == ".txt" and _is_regular(what):
            files.append(path)


def _checked_stat(path: Path, what: str) -> os.stat_result:
    try:
        return path.stat()
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise CorruptDatasetError(f"{path}: a symbolic link loop ({what})") from None
        if path.is_symlink():
            raise DatasetNotFoundError(f"{path}: a link to nothing ({os.readlink(path)} does not exist)") from None
        if err.errno == errno.ENOENT:
            raise DatasetNotFoundError(f"{path}: no such file or folder ({what})") from None
        raise DatasetNotFoundError(f"{path}: cannot be read ({err.strerror})") from None


def _is_regular(what: os.stat_result) -> bool:
    return stat.S_ISREG(what.st_mode)


# a token may end where a word ends: between a non-space and a space, no byte-level pre-token spans (GPT-2's
# pattern splits there), so pieces cut there encode to the ids of the whole text
_LAST_WORD_END = re.compile(r".*\S(?=\s)", re.DOTALL)


def read_pieces(path: Path, piece_bytes: int = PIECE_BYTES) -> Iterator[str]:
    """The UTF-8 text of `path` in pieces of about `piece_bytes`, each cut where a word ends (a BOM dropped);
    CorruptDatasetError naming the byte offset of the first bytes that are not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    read, carry = 0, ""
    try:
        file = open(path, "rb")  # noqa: SIM115 (closed below, after its last piece)
    except OSError as err:
        raise DatasetNotFoundError(f"{path}: cannot be read ({err.strerror})") from None
    with file:
        while True:
            data = file.read(piece_bytes)
            held = decoder.getstate()[0]  # the start of a character split by the last read
            try:
                text = carry + decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:
                offset = read - len(held) + err.start
                raise CorruptDatasetError(
                    f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {offset:,}: {err.reason}); "
                    f"save it as UTF-8"
                ) from None
            read += len(data)
            if not data:
                if text:
                    yield text
                return
            # the carried text holds no word's end: searched from its last character on (linear, even in one long word)
            cut = _LAST_WORD_END.match(text, max(0, len(carry) - 1))
            if cut is None:  # no word ends in it yet: one long word, read on
                carry = text
                continue
            carry = text[cut.end() :]
            yield text[: cut.end()]


def fingerprint(files: list[Path]) -> list[tuple[str, int, int]]:
    """Each file's name, size and modification time: what says that a corpus changed."""
    stats = [(file, file.stat()) for file in files]
    return [(str(file), what.st_size, what.st_mtime_ns) for file, what in stats]


def cached_tokens(
    path: Path, cache_dir: Path, tokenizer: Literal["char", "bpe"], vocab_size: int
) -> tuple[Vocabulary, TokenFile]:
    """The corpus at `path`'s vocabulary and memory-mapped ids, from the cache, or made and cached now."""
    files = corpus_files(path)
    settings = {"format": FORMAT, "path": str(path.resolve()), "tokenizer": tokenizer}
    if tokenizer == "bpe":
        settings["vocab_size"] = vocab_size
    corpus_key = _digest(settings)
    stats = fingerprint(files)
    entry = cache_dir / "text" / f"{corpus_key}-{_digest(stats)}"
    loaded = _load(entry)
    if loaded is not None:
        return loaded
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(entry.parent, corpus_key)
        _build(path, entry, files, stats, tokenizer, vocab_size)
    except GenlabError:
        raise
    except OSError as err:  # a full disk, a read-only folder: nothing was left behind (_build removes its files)
        raise ConfigError(
            f"{entry.parent}: cannot write the corpus's token ids there ({err.strerror or err}); free some space, "
            f"or set paths.cache_dir to another folder"
        ) from None
    for old in entry.parent.glob(f"{corpus_key}-*"):  # the entries of earlier versions of the corpus
        if old != entry:
            shutil.rmtree(old, ignore_errors=True)
    loaded = _load(entry)
    if loaded is None:
        raise CorruptDatasetError(f"{entry}: the cache entry just written does not read back")
    return loaded


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _load(entry: Path) -> tuple[Vocabulary, TokenFile] | None:
    """The entry's vocabulary and ids; None if there is no entry, or one that does not read (then removed)."""
    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text())
        vocab = vocabulary(**json.loads((entry / "vocab.json").read_text()))
        tokens = TokenFile(entry / "tokens.bin", meta["dtype"], meta["num_tokens"])
        if tokens.path.stat().st_size != tokens.num_tokens * np.dtype(tokens.dtype).itemsize:
            raise ValueError("tokens.bin is not as long as meta.json says")
    except (OSError, ValueError, KeyError, TypeError) as err:  # written whole, then changed by someone: made again
        log.warning(f"{entry}: a cache entry that does not read ({err}); making it again")
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return vocab, tokens


def _build(path: Path, entry: Path, files: list[Path], stats: list, tokenizer: str, vocab_size: int) -> None:
    size = sum(length for _, length, _ in stats)
    if not size:
        raise CorruptDatasetError(
            f"{path}: {'empty' if len(files) == 1 else 'its .txt files are empty'}: no text to train on"
        )
    what = "characters" if tokenizer == "char" else f"a BPE of {vocab_size:,} tokens"
    log.info(f"Tokenizing {len(files)} file(s), {size / 2**20:,.1f} MiB, into {what}: {entry}")
    started = time.perf_counter()
    partial = entry.with_name(f".{entry.name}.{socket.gethostname()}.{os.getpid()}.partial")
    try:
        partial.mkdir()
        vocab = _learn(path, files, tokenizer, vocab_size)
        dtype = np.uint16 if len(vocab) <= 1 << 16 else np.uint32
        with open(partial / "tokens.bin", "wb") as out:
            num_tokens = sum(_encode_into(out, file, vocab, dtype) for file in files)
            out.flush()
            os.fsync(out.fileno())
        if fingerprint(files) != stats:
            raise CorruptDatasetError(f"{entry}: a file of the corpus changed while it was read; run again")
        (partial / "vocab.json").write_text(json.dumps(vocab.as_hparams()))
        meta = {"dtype": np.dtype(dtype).name, "num_tokens": num_tokens, "files": stats}
        (partial / "meta.json").write_text(json.dumps(meta))
        try:
            partial.rename(entry)
        except OSError:  # another process renamed the same entry into place first: its copy is read
            if not entry.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info(f"{num_tokens:,} tokens of {len(vocab):,} kinds in {time.perf_counter() - started:.1f} s")


def _remove_abandoned(folder: Path, corpus_key: str) -> None:
    """Remove the partial entries of this machine's processes that were killed while they wrote them (a cache
    folder shared between machines keeps the others': their processes may be writing)."""
    for partial in folder.glob(f".{corpus_key}-*.{socket.gethostname()}.*.partial"):
        pid = int(partial.suffixes[-2].lstrip("."))
        try:
            os.kill(pid, 0)  # no signal: whether the process exists
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except PermissionError:  # another user's, alive
            pass


def _learn(path: Path, files: list[Path], tokenizer: str, vocab_size: int) -> Vocabulary:
    """The vocabulary of the corpus: its characters, or a BPE trained on it; a first pass over the files."""
    pieces = (piece for file in files for piece in read_pieces(file))
    if tokenizer == "bpe":
        return BpeVocab.train(pieces, vocab_size)
    try:
        return CharVocab.from_texts(pieces)
    except CorruptDatasetError:  # a file that is not UTF-8, said as it is
        raise
    except ValueError as err:  # characters no text should hold: escapes, invisible ones
        raise CorruptDatasetError(f"{path}: {err}") from None


def _encode_into(out: Any, file: Path, vocab: Vocabulary, dtype: type) -> int:
    """Append the ids of `file` to `out`, a batch of pieces at a time; how many ids."""
    count = 0
    for batch in _batched(read_pieces(file), PIECES_PER_BATCH):
        ids = vocab.encode_pieces(batch).astype(dtype)
        out.write(ids.tobytes())
        count += len(ids)
    return count


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
