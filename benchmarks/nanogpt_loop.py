"""A plain training loop written the way nanoGPT's train.py works: the reference of `benchmarks.gpt_time_to_quality`.

    python -m benchmarks.nanogpt_loop --data-dir <folder with train.bin, val.bin> --out-dir <folder> [--max-iters ...]

What it keeps of nanoGPT's train.py (run on the CPU with its README's flags, `--device=cpu --compile=False
--eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`, on config/train_shakespeare_char.py):
- batches: `get_batch` opens the uint16 memmap anew for every batch and stacks `batch_size` slices of it;
  the next batch is fetched while the current one's loss is still being backpropagated;
- its AdamW: weight decay on the matrices only, fused only on CUDA (so for-each on the CPU);
- the learning rate set by hand every iteration: linear warm-up, cosine decay to min_lr;
- every `eval_interval` iterations, from iteration 0, the mean loss of `eval_iters` random batches of
  each split, and a checkpoint (`ckpt.pt`: model, optimizer, iteration, best loss) whenever the
  validation estimate improves;
- one printed line every `log_interval` iterations (its loss: `loss.item()`; nanoGPT's CPU flags: every
  iteration), and training until iter_num > max_iters (max_iters + 1 optimizer steps).
Three flags give it genlab's work instead, for `benchmarks.gpt_time_to_quality --reference same`: `--fused` (AdamW's
fused kernel on the CPU too, as genlab's GPT), `--exact-steps` (max_iters optimizer steps, the last evaluated, as a
genlab run ends) and `--log-interval` (genlab's trainer.log_every_n_steps).
The network is genlab's `Transformer`, which computes what nanoGPT's GPT does (pre-LayerNorm blocks,
fused causal attention, GELU MLP, tied embeddings, the GPT-2 initialisation): the comparison is of
the training pipelines, not of two networks.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genlab.models.fused import fused_optimizer_available
from genlab.models.gpt import adamw
from genlab.models.nets.transformer import Transformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="train.bin and val.bin: uint16 token ids (nanoGPT's format)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--bias", action="store_true")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--min-lr", type=float, default=1e-4)
    parser.add_argument("--warmup-iters", type=int, default=100)
    parser.add_argument("--max-iters", type=int, default=2000)
    parser.add_argument("--beta1", type=float, default=0.9)
    parser.add_argument("--beta2", type=float, default=0.99)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--eval-interval", type=int, default=250)
    parser.add_argument("--eval-iters", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--log-interval", type=int, default=1)
    parser.add_argument("--fused", action="store_true", help="AdamW's fused kernel on the CPU too (nanoGPT: CUDA only)")
    parser.add_argument(
        "--exact-steps", action="store_true", help="max_iters optimizer steps, the last evaluated (nanoGPT: one more)"
    )
    args = parser.parse_args()

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    block_size, batch_size = args.block_size, args.batch_size

    def get_batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        # a new memmap for every batch, as nanoGPT does, to avoid its memory leak
        data = np.memmap(Path(args.data_dir) / f"{split}.bin", dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix])
        return x, y

    model = Transformer(args.vocab_size, block_size, args.n_layer, args.n_head, args.n_embd, args.dropout, args.bias)
    # nanoGPT's grouping (decay on the matrices only) is genlab's; it fuses the kernel on CUDA only, genlab where torch
    # has the kernel (fused_optimizer_available: the CPU too)
    fused = args.fused and fused_optimizer_available(model)
    optimizer = adamw(model, args.learning_rate, (args.beta1, args.beta2), args.weight_decay, fused=fused)

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)

    @torch.no_grad()
    def estimate_loss() -> dict[str, float]:
        model.eval()
        out = {}
        for split in ("train", "val"):
            losses = torch.zeros(args.eval_iters)
            for k in range(args.eval_iters):
                losses[k] = loss_of(*get_batch(split)).item()
            out[split] = losses.mean().item()
        model.train()
        return out

    def get_lr(it: int) -> float:
        if it < args.warmup_iters:
            return args.learning_rate * (it + 1) / (args.warmup_iters + 1)
        if it > args.max_iters:  # lr_decay_iters = max_iters
            return args.min_lr
        decay_ratio = (it - args.warmup_iters) / (args.max_iters - args.warmup_iters)
        coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
        return args.min_lr + coeff * (args.learning_rate - args.min_lr)

    x, y = get_batch("train")
    t0 = time.time()
    iter_num, best_val_loss = 0, 1e9
    while True:
        lr = get_lr(iter_num)
        for group in optimizer.param_groups:
            group["lr"] = lr
        last = args.exact_steps and iter_num == args.max_iters  # max_iters steps taken: evaluate them and stop
        if iter_num % args.eval_interval == 0 or last:
            losses = estimate_loss()
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            if losses["val"] < best_val_loss and iter_num > 0:
                best_val_loss = losses["val"]
                checkpoint = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "model_args": vars(args),
                    "iter_num": iter_num,
                    "best_val_loss": best_val_loss,
                }
                print(f"saving checkpoint to {out_dir}")
                torch.save(checkpoint, out_dir / "ckpt.pt")
        if last:
            break
        loss = loss_of(x, y)
        x, y = get_batch("train")  # fetched while the backward pass is still to come
        loss.backward()
        if args.grad_clip != 0.0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t1 = time.time()
        dt, t0 = t1 - t0, t1
        if iter_num % args.log_interval == 0:
            print(f"iter {iter_num}: loss {loss.item():.4f}, time {dt * 1000:.2f}ms")
        iter_num += 1
        if iter_num > args.max_iters:
            break


if __name__ == "__main__":
    main()
