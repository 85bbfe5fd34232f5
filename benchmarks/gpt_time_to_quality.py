"""Time to quality of the Mini-GPT: genlab's whole training command against a nanoGPT-style plain loop.

    DATA_DIR=../shared/data python -m benchmarks.gpt_time_to_quality [--rounds 3] [--reference nanogpt|same]
        [--threads N] [--out FILE.json] [Hydra overrides for genlab's command ...]

Each round runs, one after the other (the order alternating between rounds, so that drift in the
machine's speed falls on both alike), as separate processes timed from start to exit:
(a) genlab: `python -m src.train experiment=gpt_shakespeare_cpu` with the given Hydra overrides, as users run it;
(b) plain: `python -m benchmarks.nanogpt_loop`, nanoGPT's train.py written out (see its docstring), on the
    same text prepared as nanoGPT's prepare.py does (uint16 token files; not timed, as nanoGPT prepares once).
    `--reference nanogpt` (the default) trains it with nanoGPT's documented CPU settings, its own defaults
    (learning rate 1e-3, 2,000 iterations): the time to quality a nanoGPT user gets. `--reference same`
    gives it genlab's settings and work (network, batch, schedule, evaluation interval and size, steps, the
    fused AdamW, a loss printed every trainer.log_every_n_steps): the cost of the pipelines alone. What still
    differs there (SAME_WORK_EXCEPT) is printed beside the result.
Round i seeds both with their default seed + i (genlab 42, nanoGPT 1337), so the rounds sample seed noise.
Afterwards both trained networks are scored on the experiment's fixed validation windows (2,400 windows
of 64 characters for the CPU recipe, drawn with seed 42), each by the same rule, its best checkpoint: genlab's
by its validations (what its test and `src.eval` of the best take), the plain loop's ckpt.pt by its 20-batch
estimates (what nanoGPT's sample.py loads).
Reported: each round's seconds and losses, the median seconds and losses, and the median of the rounds'
time ratios (genlab / plain).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from benchmarks.commands import run_logged
from benchmarks.gpt_throughput import validation_loss
from benchmarks.machine import describe_machine
from genlab.checkpoints import load_model, read_checkpoint
from genlab.models.nets.transformer import Transformer
from genlab.utils.config import compose

NANOGPT_CPU_BLOCK_SIZE = 64  # benchmarks/nanogpt_loop.py's default, from nanoGPT's README
# with --reference same, the work that still differs between the two commands
SAME_WORK_EXCEPT = (
    "the loop's evaluations also estimate the training split's loss (20 more batches each) and start at iteration "
    "0 (genlab: a 2-batch sanity check), and read a new memmap per batch; genlab's last validation scores all of "
    "the windows (the loop's: 20 random batches), writes last.ckpt after each validation and the best when it "
    "improves (the loop: ckpt.pt when it improves), and draws text samples at each validation"
)


def prepare_token_files(cfg: DictConfig, folder: Path) -> int:
    """train.bin and val.bin as nanoGPT's shakespeare_char/prepare.py writes them; the vocabulary's size."""
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")  # the same characters, ids and 90/10 split as nanoGPT's prepare.py
    folder.mkdir(parents=True, exist_ok=True)
    for split, windows in (("train", datamodule.data_train), ("val", datamodule.data_val)):
        np.asarray(windows.tokens, dtype=np.uint16).tofile(folder / f"{split}.bin")
    return datamodule.vocab_size


def plain_arguments(cfg: DictConfig | None, data_dir: Path, out_dir: Path, vocab_size: int, seed: int) -> list[str]:
    """benchmarks.nanogpt_loop's arguments: with `cfg`'s settings, or (None) with its own, nanoGPT's CPU settings."""
    command = [f"--data-dir={data_dir}", f"--out-dir={out_dir}", f"--vocab-size={vocab_size}", f"--seed={seed}"]
    if cfg is None:
        return command
    m, t = cfg.model, cfg.trainer
    return command + [
        f"--block-size={cfg.data.block_size}",
        f"--batch-size={cfg.data.batch_size}",
        f"--n-layer={m.n_layer}",
        f"--n-head={m.n_head}",
        f"--n-embd={m.n_embd}",
        f"--dropout={m.dropout}",
        *(["--bias"] if m.bias else []),
        f"--learning-rate={m.lr}",
        f"--min-lr={m.min_lr}",
        f"--warmup-iters={m.warmup_steps}",
        f"--max-iters={t.max_steps}",
        f"--beta1={m.betas[0]}",
        f"--beta2={m.betas[1]}",
        f"--weight-decay={m.weight_decay}",
        f"--grad-clip={t.gradient_clip_val}",
        f"--eval-iters={m.get('periodic_val_batches') or 20}",
        *([f"--eval-interval={t.val_check_interval}"] if isinstance(t.val_check_interval, int) else []),
        f"--log-interval={t.log_every_n_steps}",
        "--fused",
        "--exact-steps",
    ]


def round_commands(
    i: int, args: argparse.Namespace, cfg: DictConfig, work: Path, vocab_size: int
) -> list[tuple[str, str, list[str]]]:
    """Round i's (name, module, arguments), in the order they run: both seeded with their default seed + i, and
    the order alternating between rounds."""
    run_dir, plain_dir = work / f"round{i}" / "genlab", work / f"round{i}" / "plain"
    settings = cfg if args.reference == "same" else None
    commands = [
        (
            "genlab",
            "src.train",
            [f"experiment={args.experiment}", f"hydra.run.dir={run_dir}", *args.overrides, f"seed={cfg.seed + i}"],
        ),
        (
            "plain",
            "benchmarks.nanogpt_loop",
            plain_arguments(settings, work / "nanogpt_data", plain_dir, vocab_size, seed=1337 + i),
        ),
    ]
    return commands if i % 2 == 0 else commands[::-1]


def timed(module: str, arguments: list[str], log: Path) -> float:
    """Wall seconds of `python -m <module> <arguments>` from start to exit; its output goes to `log`."""
    start = time.perf_counter()
    run_logged(module, arguments, log)
    return time.perf_counter() - start


def best_checkpoint(run_dir: Path) -> Path:
    """The best checkpoint of a genlab run, as its ModelCheckpoint recorded it in last.ckpt (last.ckpt itself where
    nothing was monitored)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    states = read_checkpoint(last).get("callbacks") or {}
    best = next((s.get("best_model_path") for name, s in states.items() if name.startswith("ModelCheckpoint")), None)
    return Path(best) if best else last


def plain_network(out_dir: Path) -> Transformer:
    """The plain loop's checkpointed network, rebuilt from the settings it saved beside it."""
    if not (out_dir / "ckpt.pt").is_file():  # nanoGPT checkpoints at evaluations after iteration 0 only
        raise SystemExit(f"the plain loop wrote no {out_dir / 'ckpt.pt'}: train it past one evaluation interval")
    checkpoint = torch.load(out_dir / "ckpt.pt", weights_only=True)
    a = checkpoint["model_args"]
    net = Transformer(a["vocab_size"], a["block_size"], a["n_layer"], a["n_head"], a["n_embd"], a["dropout"], a["bias"])
    net.load_state_dict(checkpoint["model"])
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="gpt_shakespeare_cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--reference",
        choices=("nanogpt", "same"),
        default="nanogpt",
        help="the plain loop's settings: nanoGPT's CPU ones, or the same as genlab's",
    )
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both (default: torch's, one per core)")
    parser.add_argument("--work", default="outputs/benchmarks/gpt_time_to_quality", help="each run: a new folder in it")
    parser.add_argument("--out", help="write the rounds and the summary to this JSON file")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides for genlab's command (and the plain loop's settings)"
    )
    args = parser.parse_args()

    work = Path(args.work).resolve() / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")  # a rerun starts afresh
    cfg = compose([f"experiment={args.experiment}", *args.overrides])
    if args.reference == "nanogpt" and cfg.data.block_size != NANOGPT_CPU_BLOCK_SIZE:
        parser.error(
            f"--reference nanogpt trains nanoGPT's CPU setting, whose windows are {NANOGPT_CPU_BLOCK_SIZE} "
            f"characters, and both networks are scored on the experiment's, of data.block_size="
            f"{cfg.data.block_size}: use --reference same"
        )
    vocab_size = prepare_token_files(cfg, work / "nanogpt_data")
    if args.threads:  # inherited by both commands
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    print(f"runs and logs: {work}")
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(describe_machine(), f"OMP_NUM_THREADS={threads}, reference: {args.reference}", flush=True)
    if args.reference == "same":
        print(f"the same work, except: {SAME_WORK_EXCEPT}", flush=True)

    rounds = []
    for i in range(args.rounds):
        run_dir, plain_dir = work / f"round{i}" / "genlab", work / f"round{i}" / "plain"
        seconds = {}
        for name, module, arguments in round_commands(i, args, cfg, work, vocab_size):
            seconds[name] = timed(module, arguments, work / f"round{i}" / f"{name}.log")
        scored = {"genlab": best_checkpoint(run_dir), "plain": plain_dir / "ckpt.pt"}
        losses = {
            "genlab": validation_loss(load_model(scored["genlab"]).net, cfg),
            "plain": validation_loss(plain_network(plain_dir), cfg),
        }
        rounds.append(
            {
                "seconds": seconds,
                "val_loss": losses,
                "ratio": seconds["genlab"] / seconds["plain"],
                "scored": {name: str(path) for name, path in scored.items()},
            }
        )
        print(
            f"round {i}: genlab {seconds['genlab']:.1f} s, val loss {losses['genlab']:.4f} | plain "
            f"{seconds['plain']:.1f} s, val loss {losses['plain']:.4f} | time ratio {rounds[-1]['ratio']:.3f}",
            flush=True,
        )

    summary = {
        "command": " ".join(sys.argv),
        "reference": args.reference,
        "differences": SAME_WORK_EXCEPT if args.reference == "same" else "nanoGPT's own settings and loop",
        "scored": "each side's best checkpoint",
        "machine": describe_machine(),
        "median_seconds": {k: statistics.median(r["seconds"][k] for r in rounds) for k in ("genlab", "plain")},
        "median_val_loss": {k: statistics.median(r["val_loss"][k] for r in rounds) for k in ("genlab", "plain")},
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "rounds": rounds,
    }
    print(
        f"median: genlab {summary['median_seconds']['genlab']:.1f} s at {summary['median_val_loss']['genlab']:.4f}"
        f" nats; plain {summary['median_seconds']['plain']:.1f} s at {summary['median_val_loss']['plain']:.4f};"
        f" genlab / plain time {summary['median_ratio']:.3f}"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
