"""Training tokens/second of the Mini-GPT: genlab's training (LightningModule + Trainer) vs a plain PyTorch loop.

    DATA_DIR=../shared/data python -m benchmarks.gpt_throughput [--steps 300] [--rounds 5] [--experiment ...]
    DATA_DIR=../shared/data python -m benchmarks.gpt_throughput --steps 2000 --rounds 1 --validate

Both train the same network (the experiment's), on the same data, with the same optimizer (fused AdamW where
genlab fuses it), schedule and gradient clipping, for the same number of steps. The Lightning side is
`genlab.train.train(cfg)`, what `python -m src.train` runs: every always-on callback, the atomic checkpoint
plugin, the progress bar (lines, where the output is not a terminal), logging, learning-rate monitor, and the last
checkpoint written at the end; without validation (`trainer.limit_val_batches=0`). The plain loop writes no
checkpoint and draws its windows on the device with torch.randint (genlab: a shuffled order of every window start,
cut on the device with `data.on_device` on a GPU). Each is timed after step `--skip` to the end of training, every
timed step's batch loading counted; the rounds alternate which goes first; reported are the median speeds and the
median of the rounds' Lightning/plain ratios.
With `--validate`, both networks are then scored on the experiment's validation windows.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, open_dict

from benchmarks.machine import describe_machine
from benchmarks.timed_fit import timed_train
from genlab.checkpoints import load_model
from genlab.models.fused import fused_optimizer_available
from genlab.models.gpt import adamw, warmup_cosine_lr
from genlab.models.nets.transformer import Transformer
from genlab.utils.config import compose


def lightning_run(cfg: DictConfig, skip: int, output_dir: Path) -> tuple[float, Transformer]:
    """Train through genlab.train.train(cfg), as `python -m src.train` runs it, in `output_dir`; the seconds after step
    `skip` and the trained network (from its last.ckpt)."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.callbacks.run_stats = {"_target_": "benchmarks.timed_fit.RunStats", "skip": skip}
    stats = timed_train(cfg)
    return stats["seconds"], load_model(output_dir / "checkpoints" / "last.ckpt").net


def plain_gpt(cfg: DictConfig, vocab_size: int, device: torch.device):
    """The recipe's network, AdamW (fused where genlab fuses it) and warm-up-then-cosine schedule, as genlab's GPT
    builds them: what a plain loop of the same work trains."""
    m, t = cfg.model, cfg.trainer
    net = Transformer(vocab_size, m.block_size, m.n_layer, m.n_head, m.n_embd, m.dropout, m.bias).to(device).train()
    optimizer = adamw(net, m.lr, m.betas, m.weight_decay, fused=fused_optimizer_available(net))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_lr(step, m.lr, m.min_lr, m.warmup_steps, t.max_steps) / m.lr
    )
    return net, optimizer, schedule


def plain_run(cfg: DictConfig, skip: int, device: torch.device) -> tuple[float, Transformer]:
    """The same training in a minimal plain-PyTorch loop (nanoGPT's, with batches cut by one gather)."""
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    tokens = torch.tensor(datamodule.data_train.tokens, dtype=torch.long, device=device)  # from the memory-mapped ids
    m, t = cfg.model, cfg.trainer
    net, optimizer, schedule = plain_gpt(cfg, datamodule.vocab_size, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16-mixed")
    offsets = torch.arange(m.block_size + 1, device=device)
    start = 0.0
    for step in range(t.max_steps):
        if step == skip:
            _synchronize(device)
            start = time.perf_counter()
        starts = torch.randint(len(tokens) - m.block_size, (cfg.data.batch_size,), device=device)
        chunks = tokens[starts[:, None] + offsets]  # (B, T + 1)
        inputs, targets = chunks[:, :-1], chunks[:, 1:]
        with autocast:
            logits = net(inputs)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), t.gradient_clip_val)
        optimizer.step()
        schedule.step()
    _synchronize(device)
    return time.perf_counter() - start, net


@torch.no_grad()
def validation_loss(net: Transformer, cfg: DictConfig) -> float:
    """Mean cross-entropy over the experiment's fixed validation windows."""
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("validate")
    device = next(net.parameters()).device
    net.eval()
    losses = [
        F.cross_entropy(net(x.to(device)).flatten(0, 1), y.to(device).flatten()) for x, y in datamodule.val_dataloader()
    ]
    return torch.stack(losses).mean().item()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput_config(experiment: str, steps: int, output_dir: str, overrides: list[str]) -> DictConfig:
    """The experiment's training config for `steps` steps without validation (so nothing monitored, no test),
    its rounds writing into folders under `output_dir`."""
    return compose(
        [
            f"experiment={experiment}",
            f"trainer.max_steps={steps}",
            "trainer.limit_val_batches=0",
            "monitor.metric=null",
            "test=false",
            f"paths.output_dir={output_dir}",
            f"paths.log_dir={output_dir}",
            "extras.print_config=false",
            *overrides,
        ]
    )


def training_device(cfg: DictConfig) -> torch.device:
    """The device the Trainer picks for this config, for the plain loop to train on too."""
    gpu = cfg.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def paired_rounds(cfg: DictConfig, skip: int, rounds: int) -> tuple[list[float], list[float], Transformer, Transformer]:
    """Tokens/s of the Lightning path and of the plain loop, one of each per round, the Lightning path first in the
    even rounds and second in the odd ones (drift in the machine's speed falls on both alike); the last nets."""
    device = training_device(cfg)
    timed_tokens = (cfg.trainer.max_steps - skip) * cfg.data.batch_size * cfg.data.block_size
    speeds: dict[str, list[float]] = {"lightning": [], "plain": []}
    nets: dict[str, Transformer] = {}
    for i in range(rounds):
        for side in round_order(i):
            if side == "lightning":
                seconds, nets[side] = lightning_run(cfg, skip, Path(cfg.paths.output_dir) / f"round{i}")
            else:
                seconds, nets[side] = plain_run(cfg, skip, device)
            speeds[side].append(timed_tokens / seconds)
    return speeds["lightning"], speeds["plain"], nets["lightning"], nets["plain"]


def round_order(i: int) -> list[str]:
    """Which side runs first in round i: Lightning in the even rounds, the plain loop in the odd ones."""
    return ["lightning", "plain"] if i % 2 == 0 else ["plain", "lightning"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="gpt_shakespeare_cpu")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip", type=int, default=20, help="steps not timed (first allocations, warm-up)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--validate", action="store_true", help="score both trained networks on the validation windows")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides, e.g. trainer.accelerator=gpu")
    args = parser.parse_args()

    cfg = throughput_config(args.experiment, args.steps, "outputs/benchmarks/gpt_throughput", args.overrides)
    device = training_device(cfg)
    lightning, plain, lightning_net, plain_net = paired_rounds(cfg, args.skip, args.rounds)

    print(describe_machine())
    print(
        f"experiment={args.experiment} {' '.join(args.overrides)}: {args.steps} steps of {cfg.data.batch_size} "
        f"x {cfg.data.block_size} tokens, timed from step {args.skip}, on {device}"
    )
    print(
        f"genlab (train(cfg), Lightning):        {statistics.median(lightning):10,.0f} tokens/s  "
        f"(rounds: {', '.join(f'{x:,.0f}' for x in lightning)})"
    )
    print(
        f"plain PyTorch loop:                    {statistics.median(plain):10,.0f} tokens/s  "
        f"(rounds: {', '.join(f'{x:,.0f}' for x in plain)})"
    )
    # each round's two runs share the machine's state of the moment: their ratio is steadier than either speed
    ratios = [a / b for a, b in zip(lightning, plain, strict=True)]
    print(
        f"Lightning / plain: {statistics.median(ratios):.3f} (median of the rounds' ratios: "
        f"{', '.join(f'{r:.3f}' for r in ratios)})"
    )
    if args.validate:
        losses = {name: validation_loss(net, cfg) for name, net in (("Lightning", lightning_net), ("plain", plain_net))}
        print(
            f"validation loss after {args.steps} steps (last round): "
            f"{', '.join(f'{name} {loss:.4f}' for name, loss in losses.items())}"
        )


if __name__ == "__main__":
    main()
