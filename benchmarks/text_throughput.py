"""Tokens/second of text batches: data=text_file's loader over its memory-mapped ids vs nanoGPT's get_batch.

    DATA_DIR=../shared/data python -m benchmarks.text_throughput [--path FILE|DIR] [--tokenizer bpe]
        [--vocab-size 4096] [--block-size 256] [--batch-size 64] [--batches 2000] [--num-workers 0]

Both read the same file of ids (the one data=text_file writes into its cache, which is a nanoGPT `.bin`: uint16
ids, one after the other) and deliver (B, T) int64 inputs and next-token targets on the host, from random windows
of the training split. nanoGPT's get_batch (train.py) maps the file again for every batch (np.memmap, to avoid a
memory leak it documents), draws B starts with torch.randint, and stacks B slices through torch.from_numpy;
ours cuts the batch with one gather from a mapping kept open, through the StatefulDataLoader that training uses.
Each is timed over `--batches` batches after a warm-up batch. The tokenizing (the first run's cost, which the
cache then saves) is timed apart, and reported in tokens/s too. Default corpus: Tiny Shakespeare.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.machine import describe_machine
from genlab.data.text import TextFileDataModule


def nanogpt_batches(path: Path, dtype: str, num_train: int, block_size: int, batch_size: int) -> Iterator:
    """nanoGPT's train.py get_batch('train') on the device 'cpu', the training split being the first `num_train`
    ids of the file."""
    while True:
        # nanoGPT: "We recreate np.memmap every batch to avoid a memory leak"
        data = np.memmap(path, dtype=dtype, mode="r")[:num_train]
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy((data[i : i + block_size]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((data[i + 1 : i + 1 + block_size]).astype(np.int64)) for i in ix])
        yield x, y


def tokens_per_second(batches: Iterator, num_batches: int) -> float:
    """Input tokens per second over `num_batches` batches, after a warm-up batch."""
    inputs, _ = next(batches)
    start = time.perf_counter()
    for _ in range(num_batches):
        inputs, _ = next(batches)
    return inputs.numel() * num_batches / (time.perf_counter() - start)


def epochs(loader: DataLoader) -> Iterator:
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def measure(args: argparse.Namespace, cache_dir: Path) -> dict[str, float]:
    """Tokenizing's and both loaders' tokens/s, and the corpus's size in tokens."""
    datamodule = TextFileDataModule(
        str(args.path),
        cache_dir=str(cache_dir),
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        block_size=args.block_size,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )
    start = time.perf_counter()
    datamodule.prepare_data()  # the first run: learn the vocabulary, write the ids
    tokenizing = time.perf_counter() - start
    datamodule.setup("fit")
    windows = datamodule.data_train
    num_tokens = windows.file.num_tokens
    ours = tokens_per_second(epochs(datamodule.train_dataloader()), args.batches)
    file = windows.file
    theirs = tokens_per_second(
        nanogpt_batches(file.path, file.dtype, len(windows.tokens), args.block_size, args.batch_size), args.batches
    )
    return {"num_tokens": num_tokens, "tokenizing": num_tokens / tokenizing, "ours": ours, "nanogpt": theirs}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_corpus = Path(os.environ.get("DATA_DIR", "data")) / "tinyshakespeare" / "input.txt"
    parser.add_argument("--path", type=Path, default=default_corpus, help="a UTF-8 text file, or a folder of .txt")
    parser.add_argument("--tokenizer", choices=["char", "bpe"], default="bpe")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as cache_dir:  # a cold cache: the tokenizing is the first run's
        result = measure(args, Path(cache_dir))

    print(describe_machine())
    print(
        f"{args.path}: {result['num_tokens']:,} tokens ({args.tokenizer}, vocab {args.vocab_size}); block "
        f"{args.block_size}, batch {args.batch_size}, {args.batches} batches, {args.num_workers} workers"
    )
    print(f"tokenizing once (first run):              {result['tokenizing']:14,.0f} tokens/s")
    print(f"ours (memory-mapped ids, one gather):     {result['ours']:14,.0f} tokens/s")
    print(f"nanoGPT get_batch (np.memmap + stack):    {result['nanogpt']:14,.0f} tokens/s")
    print(f"ours / nanoGPT: {result['ours'] / result['nanogpt']:.2f}x")
    return result


if __name__ == "__main__":
    main()
