"""genlab on one GPU, from fp32 to mixed precision, in one command of at most 8 minutes.

    python -m benchmarks.gpu_suite --out DIR [--budget-s 480] [--work DIR] [--parts gpt families ...]
    python -m benchmarks.gpu_suite --smoke --out DIR      # every part on the CPU, tiny: does it run?

Parts, in order of value (each with its own time budget; a part that would end past --budget-s is
skipped, and says so):
  gpt           `python -m src.train experiment=gpt_shakespeare` as users run it (bf16-mixed): final
                validation loss, wall time to val/loss <= 1.47 (nanoGPT: about 3 minutes on an A100),
                tokens/s, peak GPU memory
  overhead      the same GPT trained by benchmarks.gpt_throughput's plain loop and by genlab, paired rounds
  families      every image family of benchmarks/families.py (the GAN with each of its losses) on Fashion-MNIST in
                fp32 and bf16-mixed, the GAN (manual optimization: its own loss scaling) also in 16-mixed;
                images/s, final losses, all finite; one sample_fid validation on the GPU
  ddp           `trainer=ddp trainer.devices=1` for the GAN: the NCCL path in one process
  fsdp          `experiment=gpt_shakespeare trainer=fsdp trainer.devices=1` (FSDP2): trained, resumed half way (compared
                with the unbroken run weight for weight), its checkpoint scored by src.eval
  eval_sample   `python -m src.eval` and `python -m src.sample` on the checkpoints of gpt and families
  gpt_compile   the gpt part with model.compile=true, when the budget leaves room for it
  efficiency    benchmarks.gpu_efficiency: every family's training command against a plain PyTorch loop of the
                same nets and work, at the recipe's batch size and at 1024 (`--parts efficiency`: about 7 minutes)

Results are written after every part (and every run of `families`) to DIR/results.md and DIR/results.json,
so a run cut off still reports what it did; run folders (checkpoints, logs) go to --work (default DIR/runs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from benchmarks.commands import CommandFailed, run_logged
from benchmarks.families import image_families
from benchmarks.gpt_throughput import paired_rounds, throughput_config
from benchmarks.machine import describe_machine
from genlab.utils.config import compose

TARGET_VAL_LOSS = 1.47  # nanoGPT's Shakespeare character model: 1.4697 after 5,000 iterations
NANOGPT_SECONDS = 180  # "about 3 minutes" on one A100 (nanoGPT's README)
MAX_OVERHEAD = 0.05  # genlab may be at most 5% slower than the plain loop
# the experiment's model and data, shrunk to seconds on a CPU: the smoke run checks plumbing, not numbers
TINY_GPT = [
    "trainer.accelerator=cpu",
    "trainer.max_steps=12",
    "trainer.val_check_interval=6",
    "trainer.log_every_n_steps=1",
    "data.block_size=32",
    "data.batch_size=8",
    "data.num_val_windows=16",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.warmup_steps=2",
    "model.sample_length=16",
]


class PartFailed(Exception):
    """A part (or one run of it) that did not do what it should; `log_tail` is the end of its output."""

    def __init__(self, reason: str, log_tail: str = "") -> None:
        super().__init__(reason)
        self.log_tail = log_tail


class PartSkipped(Exception):
    """A part (or run) that cannot run here: on the CPU, or with too little of the budget left."""


@dataclass
class Suite:
    """Where results go, what has been done, and how much of the time budget is left."""

    out: Path
    work: Path
    smoke: bool
    budget_s: float
    started: float = field(default_factory=time.perf_counter)
    records: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: dict[str, Path] = field(default_factory=dict)  # run name -> last.ckpt, for eval_sample

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def accelerator(self) -> str:
        return "cpu" if self.smoke else "gpu"

    def run_module(self, module: str, overrides: list[str], name: str, timeout: float) -> str:
        """`python -m <module> <overrides>` from the repository root, as users run it; its output, or PartFailed."""
        try:
            return run_logged(module, overrides, self.work / "logs" / f"{name}.log", timeout=max(1.0, timeout))
        except CommandFailed as failed:
            raise PartFailed(str(failed), failed.output[-3000:]) from None

    def write(self) -> None:
        """Rewrite results.json and results.md with everything so far."""
        self.out.mkdir(parents=True, exist_ok=True)
        header = {
            "machine": describe_machine(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "versions": {"torch": torch.__version__, "lightning": L.__version__},
            "smoke": self.smoke,
            "budget_s": self.budget_s,
            "elapsed_s": round(self.elapsed, 1),
        }
        (self.out / "results.json").write_text(json.dumps({**header, "parts": self.records}, indent=1) + "\n")
        (self.out / "results.md").write_text(markdown(header, self.records))


# --- the parts -------------------------------------------------------------------------------------------
# Each takes the suite, its record (to add rows to as it goes) and the perf_counter time by which it must end;
# it returns its one-line summary, or raises PartFailed / PartSkipped.


def gpt_part(suite: Suite, record: dict, deadline: float, compile: bool = False) -> str:
    """experiment=gpt_shakespeare through the real command line; numbers from RunStats and config.yaml."""
    if compile and suite.smoke:
        raise PartSkipped("model.compile=true compiles for minutes on a small CPU: GPU runs only")
    name = "gpt_compile" if compile else "gpt"
    run_dir = suite.work / name
    overrides = [
        "experiment=gpt_shakespeare",
        f"paths.log_dir={suite.work}",
        f"hydra.run.dir={run_dir}",
        "+callbacks.run_stats._target_=benchmarks.timed_fit.RunStats",
        f"+callbacks.run_stats.skip={2 if suite.smoke else 50}",  # steps not timed: warm-up, compiling
        *(["model.compile=true"] if compile else []),
        *(TINY_GPT if suite.smoke else []),
    ]
    launched = time.time()
    # a run killed at its budget has a last.ckpt of its latest validation: eval_sample can still use it
    suite.checkpoints[name] = run_dir / "checkpoints" / "last.ckpt"
    try:
        suite.run_module("src.train", overrides, name, deadline - time.perf_counter())
    except PartFailed:
        with contextlib.suppress(Exception):  # and it still tells how far it got
            record["results"] = _gpt_results(run_dir, launched)
        raise
    record["results"] = r = _gpt_results(run_dir, launched)
    reached = f"{r['seconds_to_target']:.0f} s" if r["seconds_to_target"] is not None else "not reached"
    return (
        f"val/loss {r['final_val_loss']:.4f} (best {r['best_val_loss']:.4f}) after {r['steps']} steps, "
        f"{r['precision']}; to <= {TARGET_VAL_LOSS}: {reached} (target < {NANOGPT_SECONDS} s: "
        f"{'met' if r['target_met'] else 'missed'}); whole command {r['wall_s']:.0f} s; "
        f"{_rate(r['tokens_per_s'])} tokens/s; peak {_gib(r['peak_memory_bytes'])}"
    )


def _gpt_results(run_dir: Path, launched: float) -> dict[str, Any]:
    stats = json.loads((run_dir / "run_stats.json").read_text())
    if not stats["validations"]:
        raise PartFailed(f"no validation finished in {run_dir}")
    _check_finite(stats["metrics"], run_dir.name)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    val = [v["val/loss"] for v in stats["validations"]]
    # wall time from the command's start (imports, data, compiling included) to the first validation at target
    reached = next((v["time"] - launched for v in stats["validations"] if v["val/loss"] <= TARGET_VAL_LOSS), None)
    tokens = stats["timed_batches"] * cfg.data.batch_size * cfg.data.block_size
    return {
        "final_val_loss": val[-1],
        "best_val_loss": min(val),
        "steps": stats["validations"][-1]["step"],
        "wall_s": time.time() - launched,
        "seconds_to_target": reached,
        "target_met": reached is not None and reached < NANOGPT_SECONDS,
        "tokens_per_s": tokens / stats["training_seconds"] if stats["training_seconds"] else None,
        "peak_memory_bytes": stats["peak_memory_bytes"],
        "precision": stats["precision"],
    }


def overhead_part(suite: Suite, record: dict, deadline: float) -> str:
    """benchmarks.gpt_throughput's paired rounds (plain loop vs LightningModule + Trainer) on the GPU recipe."""
    steps, skip, rounds = (12, 2, 1) if suite.smoke else (200, 50, 3)
    cfg = throughput_config("gpt_shakespeare", steps, str(suite.work / "overhead"), TINY_GPT if suite.smoke else [])
    lightning, plain, _, _ = paired_rounds(cfg, skip, rounds)
    # each round's two runs share the machine's state of the moment: their ratio is steadier than either speed
    slowdown = statistics.median(p / q for p, q in zip(plain, lightning, strict=True)) - 1
    record["results"] = {
        "steps": steps,
        "timed_from_step": skip,
        "lightning_tokens_per_s": lightning,
        "plain_tokens_per_s": plain,
        "lightning_slower_by": slowdown,
        "target_met": slowdown <= MAX_OVERHEAD,
    }
    return (
        f"{rounds} paired rounds of {steps} steps: Lightning {statistics.median(lightning):,.0f} tokens/s, plain loop "
        f"{statistics.median(plain):,.0f}; Lightning slower by {100 * slowdown:.1f}% (target <= "
        f"{100 * MAX_OVERHEAD:.0f}%: {'met' if slowdown <= MAX_OVERHEAD else 'missed'})"
    )


# the GAN steps its optimizers itself, so 16-mixed's loss scaling goes through manual_backward there
PRECISIONS = {"gan": ["32", "bf16-mixed", "16-mixed"]}


def families_part(suite: Suite, record: dict, deadline: float) -> str:
    """Every image family (benchmarks/families.py) on Fashion-MNIST in each precision, through src.train.train(cfg)
    in this process; the smoke run with their tiny nets."""
    record["rows"] = rows = []
    for family in image_families():
        name, overrides = family.name, family.tiny_recipe if suite.smoke else family.recipe
        for precision in PRECISIONS.get(family.option, ["32", "bf16-mixed"]):
            row = {"run": f"{name} / {precision}", "status": "running"}
            rows.append(row)
            suite.write()
            with_fid = name == "gan-bce" and precision == "bf16-mixed"  # one sample_fid validation is enough
            try:
                if time.perf_counter() > deadline:
                    raise PartSkipped("the part's budget is spent")
                row.update(_family_run(suite, f"{name}_{precision}", overrides, precision, family.losses, with_fid))
                row["status"] = "ok"
            except PartSkipped as skip:
                row.update(status="skipped", reason=str(skip))
            except Exception as err:  # noqa: BLE001 (one broken run must not hide the others)
                row.update(status="failed", reason=_one_line(err))
            finally:
                torch.cuda.empty_cache()  # the next run starts from the same free memory
    done = [row for row in rows if row["status"] == "ok"]
    return f"{len(done)} of {len(rows)} runs ok, every loss finite" + _failures(rows)


def _family_run(
    suite: Suite, name: str, overrides: list[str], precision: str, loss_keys: list[str], with_fid: bool
) -> dict[str, Any]:
    from genlab.train import train  # importing src.train registers resolvers; only the families need it

    if precision == "16-mixed" and suite.smoke:
        raise PartSkipped("16-mixed needs a CUDA GPU (Lightning has no float16 autocast on the CPU)")
    # skip: optimizer steps not timed (first allocations, cuDNN's choices); the GAN makes two of each batch
    batches, val_batches, skip = (3, 2, 0) if suite.smoke else (300, 5, 20)
    run_dir = suite.work / "families" / name
    cfg = compose(
        [
            *overrides,
            f"trainer={suite.accelerator}",
            f"trainer.precision={precision}",
            "trainer.max_epochs=1",
            "trainer.max_steps=-1",
            f"trainer.limit_train_batches={batches}",
            f"trainer.limit_val_batches={val_batches}",
            "++trainer.val_check_interval=1.0",  # at the epoch's end: a recipe's every-500-steps is past its batches
            f"trainer.log_every_n_steps={1 if suite.smoke else 50}",
            "test=false",
            "extras.print_config=false",
            "~callbacks.rich_progress_bar",
            "+trainer.enable_progress_bar=false",  # this process's log stays readable
            f"paths.output_dir={run_dir}",
            f"paths.log_dir={suite.work}",
            "+callbacks.run_stats._target_=benchmarks.timed_fit.RunStats",
            f"+callbacks.run_stats.skip={skip}",
            *(_sample_fid(suite) if with_fid else []),
            *(["data.batch_size=32"] if suite.smoke else []),
        ]
    )
    train(cfg)
    stats = json.loads((run_dir / "run_stats.json").read_text())
    _check_finite(stats["metrics"], name)
    suite.checkpoints[name] = run_dir / "checkpoints" / "last.ckpt"
    losses = {key: stats["metrics"][key] for key in loss_keys if key in stats["metrics"]}
    result = {
        "images_per_s": stats["timed_batches"] * cfg.data.batch_size / stats["training_seconds"],
        "loss": ", ".join(f"{key} {value:.4g}" for key, value in losses.items()),
        "peak_memory_bytes": stats["peak_memory_bytes"],
    }
    if with_fid:
        states_on = stats["sample_fid_device"]
        if states_on != stats["device"]:
            raise PartFailed(f"{name}: sample_fid's metric states on {states_on}, the model on {stats['device']}")
        result["note"] = f"sample_fid: val/fid {stats['metrics']['val/fid']:.2f}, metric states on {states_on}"
    return result


def _sample_fid(suite: Suite) -> list[str]:
    """callbacks=[default,sample_fid]: FID, KID and IS of samples at the end of validation."""
    size = ["callbacks.sample_fid.num_samples=100", "callbacks.sample_fid.batch_size=50"] if suite.smoke else []
    return ["callbacks=[default,sample_fid]", *size]


def _check_finite(metrics: dict[str, float], name: str) -> None:
    bad = {key: value for key, value in metrics.items() if not math.isfinite(value)}
    if bad:
        raise PartFailed(f"{name}: non-finite metrics {bad}")


def _failures(rows: list[dict]) -> str:
    failed = [f"{row['run']}: {row['reason']}" for row in rows if row["status"] == "failed"]
    return f"; failed: {'; '.join(failed)}" if failed else ""


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:300]


def _rate(per_s: float | None) -> str:
    return "n/a" if per_s is None else f"{per_s:,.0f}"


def _gib(num_bytes: float | None) -> str:
    return "n/a (CPU)" if num_bytes is None else f"{num_bytes / 2**30:.2f} GiB"


def ddp_part(suite: Suite, record: dict, deadline: float) -> str:
    """`trainer=ddp trainer.devices=1`: Lightning's DDP strategy in one process, over NCCL on a GPU."""
    run_dir = suite.work / "ddp"
    overrides = [
        "experiment=gan_fashion_mnist",
        "trainer=ddp",
        "trainer.devices=1",
        "trainer.max_epochs=1",
        "trainer.max_steps=-1",
        f"trainer.limit_train_batches={3 if suite.smoke else 100}",
        "trainer.limit_val_batches=2",
        "test=false",
        "extras.print_config=false",
        f"paths.log_dir={suite.work}",
        f"hydra.run.dir={run_dir}",
        # gloo on the CPU, where torch's SyncBatchNorm does not run
        *(["trainer.accelerator=cpu", "trainer.sync_batchnorm=false"] if suite.smoke else []),
    ]
    output = suite.run_module("src.train", overrides, "ddp", deadline - time.perf_counter())
    backend = re.search(r"distributed_backend=(\w+)", output)
    if backend is None:
        raise PartFailed("the run never set up a process group (no distributed_backend= in its log)", output[-3000:])
    expected = "gloo" if suite.smoke else "nccl"
    if backend[1] != expected:
        raise PartFailed(f"distributed_backend={backend[1]}, expected {expected}", output[-3000:])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    _check_finite(metrics, "ddp")
    record["results"] = {"backend": backend[1], "metrics": metrics}
    return f"model=gan (manual optimization, SyncBatchNorm) under DDP, backend {backend[1]}; metrics finite"


def fsdp_part(suite: Suite, record: dict, deadline: float) -> str:
    """`experiment=gpt_shakespeare trainer=fsdp trainer.devices=1`: trained, stopped half way and resumed (against the
    unbroken run, weight for weight), and its checkpoint evaluated by `python -m src.eval`."""
    steps = 12 if suite.smoke else 200
    recipe = [entry for entry in TINY_GPT if not entry.startswith(("trainer.max_steps", "trainer.val_check_interval"))]
    overrides = [
        # deterministic kernels; on the GPU where one has none (attention's backward) a warning, not an error
        "experiment=gpt_shakespeare",
        "trainer=fsdp",
        "trainer.devices=1",
        f"trainer.deterministic={'true' if suite.smoke else 'warn'}",
        f"trainer.val_check_interval={steps // 2}",
        f"model.lr_decay_steps={steps}",
        "test=false",
        "extras.print_config=false",
        f"paths.log_dir={suite.work}",
        *(recipe if suite.smoke else ["data.num_val_windows=640"]),
    ]
    unbroken, resumed = suite.work / "fsdp" / "unbroken", suite.work / "fsdp" / "resumed"
    output = suite.run_module(
        "src.train",
        [*overrides, f"trainer.max_steps={steps}", f"hydra.run.dir={unbroken}"],
        "fsdp_unbroken",
        deadline - time.perf_counter(),
    )
    backend = re.search(r"distributed_backend=(\w+)", output)
    suite.run_module(
        "src.train",
        [*overrides, f"trainer.max_steps={steps // 2}", f"hydra.run.dir={resumed}"],
        "fsdp_first_half",
        deadline - time.perf_counter(),
    )
    suite.run_module(
        "src.train",
        [
            *overrides,
            f"trainer.max_steps={steps}",
            f"hydra.run.dir={resumed}_continued",
            f"ckpt_path={resumed / 'checkpoints' / 'last.ckpt'}",
        ],
        "fsdp_resumed",
        deadline - time.perf_counter(),
    )
    expected, got = (torch.load(run / "checkpoints" / "last.ckpt", weights_only=True) for run in (unbroken, resumed))
    if got["global_step"] != expected["global_step"]:
        raise PartFailed(
            f"the resumed run ended at step {got['global_step']}, the unbroken one at {expected['global_step']}"
        )
    differences = [
        (tensor.float() - got["state_dict"][name].float()).abs().max().item()
        for name, tensor in expected["state_dict"].items()
    ]
    exact = max(differences) == 0.0
    if suite.smoke and not exact:  # the CPU is deterministic: a resume that is not exact there is a bug
        raise PartFailed(f"resumed weights differ from the unbroken run's by up to {max(differences):.3g}")
    metrics = json.loads((unbroken / "metrics.json").read_text())
    _check_finite(metrics, "fsdp")
    eval_dir = suite.work / "eval" / "fsdp"
    arguments = [
        f"ckpt_path={unbroken / 'checkpoints' / 'last.ckpt'}",
        f"accelerator={suite.accelerator}",
        f"paths.log_dir={suite.work}",
        f"hydra.run.dir={eval_dir}",
    ]
    suite.run_module("src.eval", arguments, "fsdp_eval", deadline - time.perf_counter())
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    record["results"] = {
        "backend": backend[1] if backend else None,
        "steps": steps,
        "val_loss": metrics["val/loss"],
        "resumed_bit_exact": exact,
        "resumed_max_abs_difference": max(differences),
        "eval_val_loss": evaluated["val/loss"],
    }
    resume = "bit-exact" if exact else f"weights differ by up to {max(differences):.2g}"
    return (
        f"GPT under FSDP2 on one device ({record['results']['backend']}): val/loss {metrics['val/loss']:.4f} after "
        f"{steps} steps; resumed from step {steps // 2}: {resume}; src.eval of its checkpoint: val/loss "
        f"{evaluated['val/loss']:.4f}"
    )


# (entry point, the run whose last.ckpt it reads, overrides, the file it must write); src.eval of an image model
# scores the whole test split (10,000 images through the feature classifier): a minute or more on a small CPU,
# so the smoke run leaves it to the GPU
EVAL_SAMPLE_RUNS = [
    ("src.sample", "gpt", ["max_new_tokens=200"], "samples.txt"),
    ("src.eval", "gpt", [], "metrics.json"),
    ("src.sample", "gan-bce_bf16-mixed", ["num_samples=64"], "samples.png"),
    ("src.eval", "gan-bce_bf16-mixed", ["num_samples=2000"], "metrics.json"),
    ("src.sample", "vae_bf16-mixed", ["num_samples=64"], "samples.png"),
    ("src.eval", "ae_bf16-mixed", [], "metrics.json"),
]


def eval_sample_part(suite: Suite, record: dict, deadline: float) -> str:
    """src.eval and src.sample, as subprocesses, on the GPU checkpoints written by the gpt and families parts."""
    record["rows"] = rows = []
    for module, name, overrides, expected in EVAL_SAMPLE_RUNS:
        row = {"run": f"{module} {name}", "status": "running"}
        rows.append(row)
        suite.write()
        run_dir = suite.work / module.split(".")[1] / name
        try:
            if suite.smoke and module == "src.eval" and name != "gpt":
                raise PartSkipped("scores the whole test split: GPU runs only")
            if name not in suite.checkpoints or not suite.checkpoints[name].is_file():
                raise PartSkipped(f"no checkpoint of {name} (its part did not run or failed)")
            arguments = [
                f"ckpt_path={suite.checkpoints[name]}",
                f"accelerator={suite.accelerator}",
                f"paths.log_dir={suite.work}",
                f"hydra.run.dir={run_dir}",
                *overrides,
            ]
            suite.run_module(module, arguments, f"{module}_{name}", deadline - time.perf_counter())
            if not (run_dir / expected).is_file():
                raise PartFailed(f"exit code 0 but no {expected} in {run_dir}")
            row.update(status="ok", note=f"wrote {expected}")
        except PartSkipped as skip:
            row.update(status="skipped", reason=str(skip))
        except PartFailed as err:
            row.update(status="failed", reason=str(err), log_tail=err.log_tail)
    done = [row for row in rows if row["status"] == "ok"]
    return f"{len(done)} of {len(rows)} commands exited 0 and wrote their files" + _failures(rows)


def efficiency_part(suite: Suite, record: dict, deadline: float) -> str:
    """benchmarks.gpu_efficiency: every family's command against a plain loop of the same nets, both batch sizes."""
    out = suite.out / "efficiency"
    budget = deadline - time.perf_counter()
    arguments = ["--out", str(out), "--work", str(suite.work / "efficiency"), "--budget-s", f"{0.85 * budget:.0f}"]
    try:
        # the smoke run: every family, tiny (tests/test_gpu_suite.py checks the benchmark's table from this run)
        smoke = ["--smoke"] if suite.smoke else []
        suite.run_module("benchmarks.gpu_efficiency", [*arguments, *smoke], "efficiency", budget)
    finally:  # a run cut off at its budget still tells what it measured
        if (out / "gpu_efficiency.json").is_file():
            record["rows"] = [
                _efficiency_row(row) for row in json.loads((out / "gpu_efficiency.json").read_text())["rows"]
            ]
    measured = [row for row in record["rows"] if row["status"] == "ok"]
    worst = min(measured, key=lambda row: row["ratio"]) if measured else None
    return (
        f"{len(measured)} of {len(record['rows'])} pairs measured"
        + (f"; lowest genlab / plain: {worst['ratio']:.2f} ({worst['run']})" if worst else "")
        + f"; table: {out / 'gpu_efficiency.md'}"
    )


def _efficiency_row(row: dict[str, Any]) -> dict[str, Any]:
    """One pair as a row of the suite's tables: genlab's speed, and the ratio to the plain loop in the note."""
    result = {"run": f"{row['family']} / batch {row['batch_size']}"}
    if "ratio" not in row:
        return {
            **result,
            "status": "skipped" if "skipped" in row else "failed",
            "reason": row.get("skipped") or row.get("error"),
        }
    return {
        **result,
        "status": "ok",
        "images_per_s": row["genlab_per_s"],
        "ratio": row["ratio"],
        "peak_memory_bytes": row["genlab_peak_memory_bytes"],
        "note": f"{row['unit']}/s; plain {row['plain_per_s']:,.0f}, genlab / plain {row['ratio']:.2f}",
    }


SMOKE_BUDGET_S = 120


@dataclass(frozen=True)
class Part:
    name: str
    budget_s: float  # on one H100/H200
    run: Callable[[Suite, dict, float], str]
    smoke_budget_s: float = SMOKE_BUDGET_S  # on a small CPU, with --smoke


# in order of value: when the budget runs short, the last ones are skipped
PARTS = [
    Part("gpt", 270, gpt_part),
    Part("overhead", 60, overhead_part),
    Part("families", 180, families_part),  # 9 image families, 21 runs of 300 batches
    Part("ddp", 45, ddp_part),
    # three training commands (two processes' worth of start-up each on the CPU) and one src.eval
    Part("fsdp", 100, fsdp_part, smoke_budget_s=300),
    Part("eval_sample", 150, eval_sample_part),  # six commands, each starting Python, Lightning and CUDA anew
    Part("gpt_compile", 240, lambda suite, record, deadline: gpt_part(suite, record, deadline, compile=True)),
    # issue 23's GPU run: `bash benchmarks/gpu_run.sh efficiency` runs this part alone, with the whole budget
    Part("efficiency", 450, efficiency_part),
]


def run_part(suite: Suite, part: Part) -> None:
    """Run one part within its budget and record what came of it; never raises (later parts still run)."""
    budget = part.smoke_budget_s if suite.smoke else part.budget_s
    record = {"part": part.name, "status": "running", "reason": "cut off while running", "budget_s": budget}
    suite.records.append(record)
    started = time.perf_counter()
    try:
        if suite.elapsed + budget > suite.budget_s:
            raise PartSkipped(
                f"its {budget:.0f} s budget would end past --budget-s {suite.budget_s:.0f} "
                f"({suite.elapsed:.0f} s spent)"
            )
        suite.write()
        record["reason"] = part.run(suite, record, started + budget)
        failed = any(row["status"] == "failed" for row in record.get("rows", []))
        record["status"] = "failed" if failed else "ok"
    except PartSkipped as skip:
        record.update(status="skipped", reason=str(skip))
    except PartFailed as err:
        record.update(status="failed", reason=str(err), log_tail=err.log_tail)
    except Exception as err:  # noqa: BLE001 (a broken part must not stop the ones after it)
        record.update(status="failed", reason=_one_line(err))
    record["seconds"] = round(time.perf_counter() - started, 1)
    suite.write()
    print(f"[gpu_suite] {part.name}: {record['status']} in {record['seconds']} s: {record['reason']}", flush=True)


def markdown(header: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """results.md: the machine, one line per part, then a table per part that has several runs."""
    lines = [
        "# genlab GPU suite",
        "",
        f"{header['machine']}; GPU: {header['gpu'] or 'none'}; lightning {header['versions']['lightning']}; "
        f"{'--smoke; ' if header['smoke'] else ''}budget {header['budget_s']:.0f} s, {header['elapsed_s']:.0f} s spent",
        "",
        "| part | status | seconds | result |",
        "| --- | --- | --- | --- |",
    ]
    for record in records:
        reason = record["reason"].replace("|", "/")
        lines.append(f"| {record['part']} | {record['status']} | {record.get('seconds', '')} | {reason} |")
    for record in records:
        if record.get("rows"):
            lines += [
                "",
                f"## {record['part']}",
                "",
                "| run | status | images/s | loss | peak memory | note |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            lines += [_markdown_row(row) for row in record["rows"]]
    return "\n".join(lines) + "\n"


def _markdown_row(row: dict[str, Any]) -> str:
    speed = f"{row['images_per_s']:,.0f}" if "images_per_s" in row else ""
    memory = _gib(row["peak_memory_bytes"]) if "peak_memory_bytes" in row else ""
    note = (row.get("reason") or row.get("note") or "").replace("|", "/")
    return f"| {row['run']} | {row['status']} | {speed} | {row.get('loss', '')} | {memory} | {note} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where results.md and results.json go")
    parser.add_argument("--work", type=Path, help="run folders: checkpoints, logs (default: OUT/runs)")
    parser.add_argument("--budget-s", type=float, default=480, help="parts that would end past this are skipped")
    parser.add_argument("--smoke", action="store_true", help="every part on the CPU with tiny step counts")
    parser.add_argument("--parts", nargs="+", choices=[part.name for part in PARTS], help="only these parts")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU here; `--smoke` runs the suite on the CPU")
    suite = Suite(args.out.resolve(), (args.work or args.out / "runs").resolve(), args.smoke, args.budget_s)
    for part in PARTS:
        if args.parts is None or part.name in args.parts:
            run_part(suite, part)
    print(f"[gpu_suite] {suite.elapsed:.0f} s; results: {suite.out / 'results.md'}")


if __name__ == "__main__":
    main()
