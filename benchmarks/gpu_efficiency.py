"""Every family's training speed as genlab trains it, against a plain PyTorch loop of the same nets and work.

    python -m benchmarks.gpu_efficiency --out DIR [--families gan-bce diffusion ...] [--rounds 2]
    python -m benchmarks.gpu_efficiency --smoke --out DIR     # on the CPU, tiny: does every pair run?
    python -m benchmarks.gpu_efficiency --cpu --out DIR       # on the CPU, the recipes' nets at their batch sizes
    python -m benchmarks.gpu_efficiency --out DIR --families diffusion --genlab-overrides model.compile=reduce-overhead

genlab's side is its real training command: `src.train.train(cfg)` on the recipe's config (the entry point
`python -m src.train` calls, with its always-on callbacks, progress bar and logger), timed by a callback over
the batches after a warm-up. The plain side is a loop written here over the same networks (built by the same
LightningModule from the same config, so the same initial weights) doing the same work per batch: the same
optimizer (fused where genlab fuses it), learning-rate schedule, gradient clipping, EMA of the weights,
autocast precision and losses, on batches cut from the dataset held on the device. Each (family, batch size)
runs the two in turn, `--rounds` times, alternating which goes first; reported are the median speeds, the
median of the rounds' genlab / plain ratios, and the peak memory, reset before each side builds its data and model
(CUDA's max_memory_allocated on a GPU; on a CPU the process's peak RSS, whose high-water mark Linux resets). Both
sides are timed from the end of their last warm-up batch, each timed batch's loading counted. genlab's data is held
on the device where the plain loop's is (data.on_device=auto: a CUDA GPU), images and the GPT's token ids alike.
Batch sizes: the recipe's and 1024 (the GPT: the recipe's and 4x it).

Writes DIR/gpu_efficiency.json and DIR/gpu_efficiency.md after every pair, so a run cut off still reports.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from benchmarks.families import FAMILIES, Family
from benchmarks.gpt_throughput import plain_gpt
from benchmarks.machine import describe_machine
from genlab.models.fused import fused_optimizer_available
from genlab.models.gan import discriminator_loss, generator_loss, gradient_penalty
from genlab.utils.config import compose

StepFn = Callable[[torch.Tensor, torch.Tensor, int], None]  # (inputs, targets or labels, batch index)


@dataclass(frozen=True)
class Settings:
    accelerator: str
    precision: str
    warmup: int  # batches not timed: first allocations, cuDNN's choices, compiling
    batches: int  # batches timed
    rounds: int
    large_batch: int  # the images' second batch size (the GPT's is 4x its recipe's)
    smoke_batch: int | None = None  # the smoke run's first batch size (its second: twice that)

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if self.accelerator == "gpu" else "cpu")


# on an H200: 9 families x 2 batch sizes x 2 rounds x 2 sides = 72 runs of 60 batches, about 6 minutes in all
GPU = Settings("gpu", "bf16-mixed", warmup=10, batches=50, rounds=2, large_batch=1024)
SMOKE = Settings("cpu", "32", warmup=1, batches=2, rounds=1, large_batch=16, smoke_batch=8)
# the recipes' nets at their own batch sizes on the CPU (no second size: a CPU user trains at the recipe's)
CPU = Settings("cpu", "32", warmup=5, batches=20, rounds=2, large_batch=0)


# --- timing ----------------------------------------------------------------------------------------------
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> int | None:
    """CUDA's peak allocation on a GPU; on a CPU the process's peak resident set (Linux's VmHWM; None where it cannot
    be read or reset): both since the last _reset_peak_memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        peak = re.search(r"^VmHWM:\s+(\d+) kB$", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(peak[1]) * 1024 if peak and _cpu_peak_resets else None


_cpu_peak_resets = True  # False once Linux refused to reset the high-water mark: the peak would be the lifetime's


def _reset_peak_memory(device: torch.device) -> None:
    """Before a side builds anything: its peak starts again from what is held now. On a CPU, the resident set's
    high-water mark is reset to the current resident set (Linux: `5` to /proc/self/clear_refs), so that a side's
    peak is neither the earlier side's nor the process's lifetime one; what the earlier side left resident (the
    allocator's cached memory, the libraries) still counts, for both sides alike."""
    global _cpu_peak_resets
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not allowed
        _cpu_peak_resets = False


class TimedBatches(Callback):
    """Times training batches `warmup` + 1 .. `warmup + batches`, from the end of the last warm-up batch to the end of
    the last timed one, so that each timed batch's loading counts as in the plain loop (validations in between do
    not), then stops the run; writes {"seconds", "batches", "peak_memory_bytes"} to <run>/timed_batches.json."""

    def __init__(self, warmup: int, batches: int) -> None:
        self.warmup, self.batches = warmup, batches
        self.start = self.paused = self.seconds = 0.0
        self.ended = 0  # training batches ended

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.warmup == 0:
            self._start(pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if self.paused:  # a validation ran since the last batch
            _synchronize(pl_module.device)
            self.start += time.perf_counter() - self.paused
            self.paused = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.ended += 1
        if self.ended == self.warmup:
            self._start(pl_module)
        elif self.ended == self.warmup + self.batches:
            _synchronize(pl_module.device)
            self.seconds = time.perf_counter() - self.start
            trainer.should_stop = True
            result = {
                "seconds": self.seconds,
                "batches": self.batches,
                "peak_memory_bytes": _peak_memory(pl_module.device),
            }
            (Path(trainer.default_root_dir) / "timed_batches.json").write_text(json.dumps(result) + "\n")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start and not self.seconds:
            _synchronize(pl_module.device)
            self.paused = time.perf_counter()

    def _start(self, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module.device)
        self.start = time.perf_counter()


# --- genlab: the real command ------------------------------------------------------------------------------
def genlab_config(
    family: Family, settings: Settings, batch_size: int, run_dir: Path, smoke: bool, overrides: tuple[str, ...] = ()
) -> DictConfig:
    """The recipe's config as `python -m src.train` composes it, at this batch size, stopped by TimedBatches;
    `overrides` (e.g. model.compile=reduce-overhead) apply to genlab's side only."""
    total = settings.warmup + settings.batches
    return compose(
        [
            *family.recipe,
            *(family.tiny if smoke else []),
            f"data.batch_size={batch_size}",
            f"trainer.accelerator={settings.accelerator}",
            f"trainer.precision={settings.precision}",
            # TimedBatches stops the run; max_steps only sizes the schedules that read it (an upper bound: the GAN
            # steps twice per batch), and no validation comes between (its time is not counted in any case)
            "trainer.max_epochs=-1",
            f"trainer.max_steps={4 * total}",
            "trainer.min_epochs=0",
            "trainer.limit_val_batches=0",
            "+trainer.num_sanity_val_steps=0",
            "test=false",
            "monitor.metric=null",
            "extras.print_config=false",  # the progress bar stays: users train with it
            f"paths.output_dir={run_dir}",
            f"paths.log_dir={run_dir.parent}",
            "+callbacks.timed._target_=benchmarks.gpu_efficiency.TimedBatches",
            f"+callbacks.timed.warmup={settings.warmup}",
            f"+callbacks.timed.batches={settings.batches}",
            *overrides,
        ]
    )


def genlab_run(cfg: DictConfig, device: torch.device) -> dict[str, float]:
    from genlab.train import train  # registers the config resolvers; only genlab's side needs it

    _reset_peak_memory(device)  # where the plain side resets it: before the data and the model are built
    train(cfg)
    return json.loads((Path(cfg.paths.output_dir) / "timed_batches.json").read_text())


# --- the plain loop ----------------------------------------------------------------------------------------
def plain_run(cfg: DictConfig, family: Family, settings: Settings) -> dict[str, float]:
    """The same nets and per-batch work in a loop of plain PyTorch, on data held on the device."""
    L.seed_everything(cfg.seed, verbose=False)
    device = settings.device
    _reset_peak_memory(device)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16-mixed")
    if family.unit == "tokens":
        step, next_batch = _gpt_plain(cfg, datamodule, device)
    else:
        model = hydra.utils.instantiate(cfg.model, _convert_="all").to(device).train()
        step = PLAIN_STEPS[family.name.split("-")[0]](model, cfg, device)
        next_batch = _image_batches(datamodule.data_train, cfg.data.batch_size, device)
    start = 0.0
    for index in range(settings.warmup + settings.batches):
        if index == settings.warmup:
            _synchronize(device)
            start = time.perf_counter()
        with autocast:
            step(*next_batch(), index)
    _synchronize(device)
    return {
        "seconds": time.perf_counter() - start,
        "batches": settings.batches,
        "peak_memory_bytes": _peak_memory(device),
    }


def _image_batches(dataset, batch_size: int, device: torch.device) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled batches gathered on the device from the uint8 images held there, as float images in [0, 1]."""
    images, labels = dataset.images.to(device), dataset.labels.to(device)
    order, position = torch.randperm(len(images), device=device), 0

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal order, position
        if position + batch_size > len(order):  # a new epoch
            order, position = torch.randperm(len(images), device=device), 0
        index = order[position : position + batch_size]
        position += batch_size
        return images[index].float().div_(255), labels[index]

    return next_batch


def _optimize(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    clip: float | None = None,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], clip)
    optimizer.step()
    if schedule is not None:
        schedule.step()


def _ema(average: torch.nn.Module, network: torch.nn.Module, decay: float) -> Callable[[], None]:
    """A plain EMA update: one fused lerp over the floating-point weights and buffers, a copy of the others."""
    averaged = [*average.parameters(), *average.buffers()]
    current = [*network.parameters(), *network.buffers()]
    floating = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
    others = [(a, c) for a, c in zip(averaged, current, strict=True) if not a.is_floating_point()]
    float_averaged, float_current = [a for a, _ in floating], [c for _, c in floating]

    @torch.no_grad()
    def update() -> None:
        torch._foreach_lerp_(float_averaged, float_current, 1 - decay)
        for a, c in others:
            a.copy_(c)

    return update


def _ae_plain(model, cfg: DictConfig, device: torch.device) -> StepFn:
    hp = model.hparams
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused_optimizer_available(model.encoder)
    )

    def step(images: torch.Tensor, labels: torch.Tensor, index: int) -> None:
        inputs = images
        if hp.noise == "masking":
            inputs = images * (torch.rand_like(images) >= hp.noise_level)
        elif hp.noise == "gaussian":
            inputs = (images + hp.noise_level * torch.randn_like(images)).clamp(0, 1)
        logits = model.decoder(model.encoder(inputs))
        loss = (
            F.binary_cross_entropy_with_logits(logits, images)
            if hp.loss == "bce"
            else F.mse_loss(torch.sigmoid(logits), images)
        )
        _optimize(optimizer, loss, cfg.trainer.gradient_clip_val)

    return step


def _vae_plain(model, cfg: DictConfig, device: torch.device) -> StepFn:
    hp = model.hparams
    optimizer = torch.optim.Adam(
        model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused_optimizer_available(model.encoder)
    )

    def step(images: torch.Tensor, labels: torch.Tensor, index: int) -> None:
        mu, logvar = model.encoder(images).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = model.decoder(z)
        recon = F.binary_cross_entropy_with_logits(logits, images, reduction="sum") / len(images)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(images)
        _optimize(optimizer, recon + hp.beta * kl, cfg.trainer.gradient_clip_val)

    return step


def _gan_plain(model, cfg: DictConfig, device: torch.device) -> StepFn:
    hp = model.hparams
    generator, discriminator = model.generator, model.discriminator
    fused = fused_optimizer_available(generator)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=hp.lr_generator, betas=tuple(hp.betas), fused=fused)
    d_optimizer = torch.optim.Adam(
        discriminator.parameters(), lr=hp.lr_discriminator, betas=tuple(hp.betas), fused=fused
    )
    ema = _ema(model.ema_generator.module, generator, hp.ema_decay) if hp.ema_decay is not None else None

    def step(images: torch.Tensor, labels: torch.Tensor, index: int) -> None:
        real = images * 2 - 1
        fake = generator(torch.randn(len(real), hp.latent_dim, device=device), None)
        detached = fake.detach()
        d_loss = discriminator_loss(
            hp.loss, discriminator(real, None), discriminator(detached, None), 1.0 - hp.label_smoothing
        )
        if hp.loss == "wgan-gp":
            d_loss = d_loss + hp.gp_weight * gradient_penalty(discriminator, real, detached, None)
        _optimize(d_optimizer, d_loss, hp.gradient_clip_val)
        if (index + 1) % hp.n_critic == 0:
            discriminator.requires_grad_(False)  # G's update computes no gradients of D's weights
            _optimize(g_optimizer, generator_loss(hp.loss, discriminator(fake, None)), hp.gradient_clip_val)
            discriminator.requires_grad_(True)
            if ema is not None:
                ema()

    return step


def _diffusion_plain(model, cfg: DictConfig, device: torch.device) -> StepFn:
    hp = model.hparams
    unet = model.unet
    optimizer = torch.optim.AdamW(
        unet.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused_optimizer_available(unet)
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (hp.warmup_steps + 1)))
    ema = _ema(model.ema_unet.module, unet, hp.ema_decay) if hp.ema_decay is not None else None
    alphas_cumprod = model.alphas_cumprod

    def step(images: torch.Tensor, labels: torch.Tensor, index: int) -> None:
        if hp.conditional:  # classifier-free guidance's dropped labels
            labels = torch.where(torch.rand(len(labels), device=device) < hp.label_dropout, hp.num_classes, labels)
        data = images * 2 - 1
        noise = torch.randn_like(data)
        if hp.objective == "ddpm":
            timestep = torch.randint(hp.num_timesteps, (len(data),), device=device)
            alpha = alphas_cumprod[timestep][:, None, None, None]
            noisy, target = alpha.sqrt() * data + (1 - alpha).sqrt() * noise, noise
            time_ = timestep / hp.num_timesteps
        else:
            time_ = torch.rand(len(data), device=device)
            t = time_[:, None, None, None]
            noisy, target = (1 - t) * noise + t * data, data - noise
        loss = F.mse_loss(unet(noisy, time_, labels if hp.conditional else None).float(), target)
        _optimize(optimizer, loss, cfg.trainer.gradient_clip_val, schedule)
        if ema is not None:
            ema()

    return step


def _classifier_plain(model, cfg: DictConfig, device: torch.device) -> StepFn:
    hp = model.hparams
    optimizer = torch.optim.AdamW(
        model.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused_optimizer_available(model.net)
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr, total_steps=cfg.trainer.max_steps)
    correct = torch.zeros((), dtype=torch.long, device=device)  # the epoch's accuracy, counted on the device

    def step(images: torch.Tensor, labels: torch.Tensor, index: int) -> None:
        logits = model.net(images)
        correct.add_((logits.argmax(1) == labels).sum())
        _optimize(optimizer, F.cross_entropy(logits, labels), cfg.trainer.gradient_clip_val, schedule)

    return step


def _normalizing_flow_plain(model, cfg: DictConfig, device: torch.device) -> StepFn:
    hp = model.hparams
    optimizer = torch.optim.Adam(
        model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, fused=fused_optimizer_available(model.flow)
    )

    def step(images: torch.Tensor, labels: torch.Tensor, index: int) -> None:
        # the exact negative log-likelihood, as genlab's training step computes it (dequantized, in logit space)
        _optimize(optimizer, model.bits_per_dim(images).mean(), cfg.trainer.gradient_clip_val)

    return step


def _gpt_plain(cfg: DictConfig, datamodule, device: torch.device) -> tuple[StepFn, Callable]:
    """nanoGPT's loop (benchmarks/gpt_throughput.py's): random windows cut on the device by one gather."""
    m, t = cfg.model, cfg.trainer
    net, optimizer, schedule = plain_gpt(cfg, datamodule.vocab_size, device)
    tokens = torch.tensor(datamodule.data_train.tokens, dtype=torch.long, device=device)  # from the memory-mapped ids
    offsets = torch.arange(m.block_size + 1, device=device)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(tokens) - m.block_size, (cfg.data.batch_size,), device=device)
        chunks = tokens[starts[:, None] + offsets]  # (B, T + 1)
        return chunks[:, :-1], chunks[:, 1:]

    def step(inputs: torch.Tensor, targets: torch.Tensor, index: int) -> None:
        loss = F.cross_entropy(net(inputs).flatten(0, 1), targets.flatten())
        _optimize(optimizer, loss, t.gradient_clip_val, schedule)

    return step, next_batch


PLAIN_STEPS: dict[str, Callable[[Any, DictConfig, torch.device], StepFn]] = {
    "ae": _ae_plain,
    "vae": _vae_plain,
    "gan": _gan_plain,
    "diffusion": _diffusion_plain,
    "flow": _diffusion_plain,
    "normalizing_flow": _normalizing_flow_plain,
    "classifier": _classifier_plain,
}


# --- pairs, results ----------------------------------------------------------------------------------------
def batch_sizes(family: Family, settings: Settings, recipe_batch: int) -> list[int]:
    if settings.smoke_batch is not None:
        return [settings.smoke_batch, 2 * settings.smoke_batch]
    if not settings.large_batch:
        return [recipe_batch]
    return [recipe_batch, 4 * recipe_batch if family.unit == "tokens" else settings.large_batch]


def measure_pair(
    family: Family, settings: Settings, batch_size: int, work: Path, smoke: bool, overrides: tuple[str, ...] = ()
) -> dict[str, Any]:
    """`settings.rounds` rounds of genlab and the plain loop, alternating which goes first."""
    runs: dict[str, list[dict[str, float]]] = {"genlab": [], "plain": []}
    for round_ in range(settings.rounds):
        run_dir = work / family.name / f"b{batch_size}_r{round_}"
        cfg = genlab_config(family, settings, batch_size, run_dir, smoke, overrides)
        sides = [
            ("genlab", lambda cfg=cfg: genlab_run(cfg, settings.device)),
            ("plain", lambda cfg=cfg: plain_run(cfg, family, settings)),
        ]
        for side, run in sides if round_ % 2 == 0 else reversed(sides):
            runs[side].append(run())
    items_per_batch = batch_size * (cfg.data.block_size if family.unit == "tokens" else 1)
    speeds = {
        side: [r["batches"] * items_per_batch / r["seconds"] for r in side_runs] for side, side_runs in runs.items()
    }
    ratios = [g / p for g, p in zip(speeds["genlab"], speeds["plain"], strict=True)]
    return {
        "family": family.name,
        "unit": family.unit,
        "batch_size": batch_size,
        "genlab_per_s": statistics.median(speeds["genlab"]),
        "plain_per_s": statistics.median(speeds["plain"]),
        "ratio": statistics.median(ratios),
        "round_ratios": ratios,
        "genlab_peak_memory_bytes": _largest(r["peak_memory_bytes"] for r in runs["genlab"]),
        "plain_peak_memory_bytes": _largest(r["peak_memory_bytes"] for r in runs["plain"]),
    }


def _largest(values) -> int | None:
    """The largest of the rounds' peaks; None where one was not measured."""
    values = list(values)
    return None if None in values else max(values)


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f} MiB"


def markdown(header: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    memory = (
        "CUDA max_memory_allocated"
        if header["device"] == "cuda"
        else "the process's peak RSS during the side's run (reset before each side; the libraries count for both)"
    )
    lines = [
        "# genlab against a plain PyTorch loop of the same nets",
        "",
        header["machine"],
        "",
        f"{header['precision']}; {header['batches']} batches timed after {header['warmup']}, "
        f"{header['rounds']} round(s) alternating the order; peak memory: {memory}"
        f"{'; genlab with ' + ' '.join(header['genlab_overrides']) if header['genlab_overrides'] else ''}.",
        "",
        "| family | batch | genlab /s | plain /s | genlab / plain | genlab peak | plain peak |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if "ratio" not in row:
            reason = f"skipped: {row['skipped']}" if "skipped" in row else f"failed: {row['error']}"
            lines.append(f"| {row['family']} | {row['batch_size']} | {reason} | | | | |")
            continue
        lines.append(
            f"| {row['family']} | {row['batch_size']} | {row['genlab_per_s']:,.0f} {row['unit']} | "
            f"{row['plain_per_s']:,.0f} {row['unit']} | {row['ratio']:.2f} | "
            f"{_mib(row['genlab_peak_memory_bytes'])} | {_mib(row['plain_peak_memory_bytes'])} |"
        )
    return "\n".join(lines) + "\n"


def run(
    families: list[Family],
    settings: Settings,
    out: Path,
    work: Path,
    smoke: bool,
    budget_s: float = math.inf,
    overrides: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Every family's pairs at both batch sizes, results rewritten after each; the pairs that would start after
    `budget_s` seconds are skipped and say so. Returns the rows."""
    begun = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if settings.accelerator == "gpu" else "cpu"
    header = {
        "machine": describe_machine(),
        "device": device,
        "precision": settings.precision,
        "warmup": settings.warmup,
        "batches": settings.batches,
        "rounds": settings.rounds,
        "smoke": smoke,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "genlab_overrides": list(overrides),
    }
    rows: list[dict[str, Any]] = []
    for family in families:
        recipe_batch = compose([*family.recipe]).data.batch_size
        for batch_size in batch_sizes(family, settings, recipe_batch):
            started = time.perf_counter()
            try:
                if started - begun > budget_s:
                    row = {
                        "family": family.name,
                        "batch_size": batch_size,
                        "skipped": f"the {budget_s:.0f} s budget was spent",
                    }
                else:
                    row = measure_pair(family, settings, batch_size, work, smoke, overrides)
            except Exception as err:  # noqa: BLE001 (one broken pair must not hide the others)
                row = {"family": family.name, "batch_size": batch_size, "error": " ".join(str(err).split())[:300]}
            row["seconds"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            (out / "gpu_efficiency.json").write_text(json.dumps({**header, "rows": rows}, indent=1) + "\n")
            (out / "gpu_efficiency.md").write_text(markdown(header, rows))
            ratio = f"{row['ratio']:.2f}" if "ratio" in row else row.get("skipped") or f"failed: {row['error']}"
            print(
                f"[gpu_efficiency] {family.name} batch {batch_size}: genlab / plain {ratio} ({row['seconds']} s)",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where gpu_efficiency.json and .md go")
    parser.add_argument("--work", type=Path, help="run folders (default: OUT/runs)")
    parser.add_argument("--smoke", action="store_true", help="on the CPU, tiny nets and step counts")
    parser.add_argument("--cpu", action="store_true", help="on the CPU, the recipes' nets at their batch sizes")
    parser.add_argument("--families", nargs="+", choices=[family.name for family in FAMILIES])
    parser.add_argument("--rounds", type=int, help=f"pairs per (family, batch size); default {GPU.rounds}")
    parser.add_argument("--batches", type=int, help=f"batches timed; default {GPU.batches}")
    parser.add_argument("--budget-s", type=float, default=math.inf, help="pairs that would start later are skipped")
    parser.add_argument(
        "--genlab-overrides",
        nargs="+",
        default=[],
        metavar="OVERRIDE",
        help="Hydra overrides for genlab's side only, e.g. model.compile=reduce-overhead",
    )
    args = parser.parse_args()
    if not (args.smoke or args.cpu) and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU here; `--cpu` (or `--smoke`, in a minute) runs the benchmark on the CPU")
    settings = SMOKE if args.smoke else CPU if args.cpu else GPU
    if args.rounds or args.batches:
        settings = Settings(
            **{
                **settings.__dict__,
                "rounds": args.rounds or settings.rounds,
                "batches": args.batches or settings.batches,
            }
        )
    families = [family for family in FAMILIES if args.families is None or family.name in args.families]
    work = (args.work or args.out / "runs").resolve()
    rows = run(families, settings, args.out.resolve(), work, args.smoke, args.budget_s, tuple(args.genlab_overrides))
    failed = [row for row in rows if "error" in row]
    measured = [row for row in rows if "ratio" in row]
    print(
        f"[gpu_efficiency] {len(measured)} of {len(rows)} pairs measured, {len(failed)} failed: "
        f"{args.out / 'gpu_efficiency.md'}"
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
