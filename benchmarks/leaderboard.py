"""Every image family on Fashion-MNIST at equal compute: `python -m benchmarks.leaderboard [--budget 10]`.

Each family's recipe trains through the real command line (`python -m src.train`) for the same number of
training seconds: RunStats (benchmarks/timed_fit.py) stops the run when they are spent, the validations and
their FID measurements not counted, so a family whose samples are slow to draw is not charged for being
watched. SampleFID logs val/fid on 500 samples at evenly spaced times, for the FID-versus-time curves.
Then `python -m src.eval` scores --num-samples samples of the last checkpoint (the autoencoder, which does not
sample: its reconstructions of the test split) in the shipped classifier's features against the test split:
by default 1,000 per training minute, between 1,000 and 10,000, the same number for every family (FID depends on
it); with precision and recall, and for the families with a likelihood its bound in bits/dim on --likelihood-images
test images, one scale for all (src.eval's likelihood/bpd). A row that builds on another row's trained model (latent
diffusion on its first stage) trains after it, on its last checkpoint, for the same budget: the first stage's minutes
are its own row's, which scores its reconstructions, the floor of the latent model's FID. Prints each family's
progress; Ctrl-C stops it with one line, the board of the families done kept.

Writes to --out (default outputs/leaderboard/<start time>): leaderboard.md and .json (the table),
leaderboard.html (through src.report's page machinery: the table, a grid of each family's samples, the curves),
the pictures, and each run's folder.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from torchvision.utils import save_image

from benchmarks.commands import run_logged
from benchmarks.machine import describe_machine
from genlab.capabilities import ImageSampler
from genlab.checkpoints import load_model
from genlab.models.previews.image_grid import tile_grid
from genlab.report import page, png_tag

# samples per FID measurement during training: enough for the curve's trend, and 50 U-Net steps for each of a
# diffusion model's costs a CPU about half a minute (the final scoring takes --num-samples)
CURVE_SAMPLES = 500


@dataclass(frozen=True)
class Entry:
    """A row of the board: a recipe; `bound`: its likelihood (src.eval's likelihood/bpd, where it has one) is an
    upper bound on the NLL rather than the NLL itself; `score`: src.eval's metrics.score (reconstructions: a first
    stage's, the floor of the latent model over it); `builds_on`: (argument, row) for each trained model it builds
    on, the last checkpoint of that row, which trains first (its minutes its own row's, not this one's)."""

    overrides: tuple[str, ...]
    bound: bool = False
    score: str | None = None
    builds_on: tuple[tuple[str, str], ...] = ()


# every image family of conf/model/ (tests/test_families.py holds this to it)
ENTRIES = {
    "autoencoder": Entry(("model=ae", "data=fashion_mnist")),
    "vae": Entry(("experiment=vae_fashion_mnist",), bound=True),  # the importance-weighted bound
    "gan-bce": Entry(("experiment=gan_fashion_mnist",)),
    "gan-hinge": Entry(("experiment=gan_hinge_fashion_mnist",)),
    "gan-wgan-gp": Entry(("experiment=gan_wgan_gp_fashion_mnist",)),
    "diffusion": Entry(("experiment=diffusion_fashion_mnist",), bound=True),  # the variational bound
    # latent diffusion at the same budget as diffusion, over the first stage of the row before it (trained first)
    "vae_first_stage": Entry(("experiment=vae_first_stage_fashion_mnist",), bound=True, score="reconstructions"),
    "latent_diffusion": Entry(
        ("experiment=latent_diffusion_fashion_mnist",), builds_on=(("first_stage", "vae_first_stage"),)
    ),
    "flow": Entry(("experiment=flow_fashion_mnist",)),  # flow matching: no likelihood
    "normalizing_flow": Entry(("experiment=normalizing_flow_fashion_mnist",)),  # exact
}
# the families of conf/model/ that are not on the board, and why
NOT_ON_THE_BOARD = {"gpt": "text, not images", "classifier": "the metrics' feature extractor, not a generator"}


# the default number of images scored per family: this many per training minute, within these bounds (10 minutes,
# the default budget: 10,000, FID's usual count); scoring 1,000 diffusion samples costs a CPU about a minute
SAMPLES_PER_MINUTE, MIN_SAMPLES, MAX_SAMPLES = 1_000, 1_000, 10_000


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments end as one line, `error: ...`, exit code 2, as genlab's entry points end theirs."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see python -m benchmarks.leaderboard --help)\n")


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def whole_number(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.strip().lstrip("+").isdecimal() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return int(text)

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=positive_number, default=10.0, help="training minutes per family (10)")
    parser.add_argument("--families", default=",".join(ENTRIES), help=f"a subset of {','.join(ENTRIES)}")
    parser.add_argument(
        "--num-samples",
        type=whole_number(2),
        help="images scored per family (default: 1,000 per training minute, between 1,000 and 10,000)",
    )
    parser.add_argument(
        "--likelihood-images",
        type=whole_number(0),
        default=200,
        help="test images whose likelihood bound is scored, where there is one (200; DDPM's: T U-Net passes each)",
    )
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    parser.add_argument("--work", type=Path, help="where the runs (checkpoints), evaluations and logs go; --out")
    parser.add_argument("--curve-points", type=whole_number(1), default=6, help="validations (FID) per run")
    parser.add_argument("--out", type=Path, help="where the board goes (default outputs/leaderboard/<start time>)")
    args = parser.parse_args(argv)
    unknown = set(args.families.split(",")) - ENTRIES.keys()
    if unknown:
        parser.error(f"--families: unknown {', '.join(sorted(unknown))}; expected some of {', '.join(ENTRIES)}")
    args.families = ",".join(with_what_they_build_on(args.families.split(",")))
    if args.num_samples is None:
        args.num_samples = default_num_samples(args.budget)
    # absolute: the commands run from the repository root, wherever this one was started
    args.out = (args.out or Path("outputs") / "leaderboard" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}").resolve()
    args.work = (args.work or args.out).resolve()
    return args


def with_what_they_build_on(families: list[str]) -> list[str]:
    """The families, each row that one builds on placed before it (added where not given)."""
    ordered: list[str] = []
    for name in families:
        for _, row in ENTRIES[name].builds_on:
            if row not in ordered:
                ordered.append(row)
        if name not in ordered:
            ordered.append(name)
    return ordered


def default_num_samples(budget_min: float) -> int:
    """Images scored per family when --num-samples is not given: the same for every family, grown with the budget."""
    return min(MAX_SAMPLES, max(MIN_SAMPLES, round(SAMPLES_PER_MINUTE * budget_min)))


def train(name: str, entry: Entry, args: argparse.Namespace) -> Path:
    """Train `name` for the budget; its run folder."""
    budget_s = args.budget * 60
    interval_s = max(1, round(budget_s / args.curve_points))
    sampler = name != "autoencoder"
    built_on = [
        f"model.{argument}={newest_run(args.work / 'runs' / row / 'runs') / 'checkpoints' / 'last.ckpt'}"
        for argument, row in entry.builds_on  # trained just before, by this board
    ]
    overrides = [
        *entry.overrides,
        *built_on,
        f"task_name={name}",
        f"paths.log_dir={args.work / 'runs'}",
        f"trainer.accelerator={args.accelerator}",
        # the budget ends the run, nothing else; validation (and FID) every interval_s seconds of training
        "trainer.max_epochs=-1",
        "trainer.max_steps=-1",
        "trainer.min_epochs=0",
        f"++trainer.val_check_interval=00:00:{interval_s // 60:02d}:{interval_s % 60:02d}",
        "+callbacks.run_stats._target_=benchmarks.timed_fit.RunStats",
        f"+callbacks.run_stats.train_budget_s={budget_s}",
        *(["callbacks=[default,sample_fid]", f"callbacks.sample_fid.num_samples={CURVE_SAMPLES}"] if sampler else []),
        "logger=csv",
        "test=false",
        "extras.print_config=false",
        "~callbacks.rich_progress_bar",
    ]
    run_logged("src.train", overrides, args.work / "logs" / f"{name}-train.log")
    return newest_run(args.work / "runs" / name / "runs")


def evaluate(name: str, run_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    """src.eval's metrics of the run's last checkpoint."""
    eval_dir = args.work / "eval"
    score = ENTRIES[name].score
    overrides = [
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        *([f"metrics.score={score}"] if score else []),
        f"num_samples={args.num_samples}",
        f"likelihood.num_images={args.likelihood_images}",
        f"accelerator={args.accelerator}",
        f"task_name={name}",
        f"paths.log_dir={eval_dir}",
    ]
    run_logged("src.eval", overrides, args.work / "logs" / f"{name}-eval.log")
    return json.loads((newest_run(eval_dir / name / "runs") / "metrics.json").read_text())


def newest_run(runs: Path) -> Path:
    """The run folder the last command made: Hydra names them by their start time, to the microsecond, and a
    second leaderboard into the same --work adds a folder beside the first one's."""
    return max(runs.iterdir(), key=lambda folder: folder.name)


@torch.no_grad()
def sampling_rate(model: torch.nn.Module, batch_size: int = 100, batches: int = 2) -> float:
    """Images per second that `model.sample` draws, after a first batch that warms up."""
    model.sample(batch_size)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        model.sample(batch_size)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - start)


def row(name: str, entry: Entry, run_dir: Path, metrics: dict[str, float], args: argparse.Namespace) -> dict:
    """The board's row for one family, and its sample grid written beside the board."""
    stats = json.loads((run_dir / "run_stats.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    device = "cuda" if args.accelerator != "cpu" and torch.cuda.is_available() else "cpu"
    model = load_model(run_dir / "checkpoints" / "last.ckpt").to(device).eval()
    samples = isinstance(model, ImageSampler) and entry.score != "reconstructions"
    prefix = "sample" if samples else "reconstruction"
    images_per_batch = config["data"]["batch_size"]
    picture = args.out / f"{name}.png"
    if samples:
        torch.manual_seed(0)
        save_image(tile_grid(model.sample(64).float().cpu(), nrow=8), picture)
    else:  # the last validation picture of its reconstructions: inputs above them
        picture.write_bytes(max((run_dir / "images").glob("reconstructions_*.png")).read_bytes())
    return {
        "family": name,
        "what": "samples" if prefix == "sample" else "reconstructions",
        "fid": metrics[f"{prefix}/fid"],
        "kid": metrics[f"{prefix}/kid"],
        "is": metrics[f"{prefix}/is"],
        "precision": metrics[f"{prefix}/precision"],
        "recall": metrics[f"{prefix}/recall"],
        "label_entropy": metrics.get(f"{prefix}/label_entropy"),
        "nll_bpd": metrics.get("likelihood/bpd"),
        "nll_is_bound": entry.bound,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_images_per_s": stats["timed_batches"] * images_per_batch / stats["training_seconds"],
        "train_steps": stats["validations"][-1]["step"] if stats["validations"] else None,
        "sample_images_per_s": sampling_rate(model) if samples else None,
        "curve": [(v["train_seconds"], v["val/fid"]) for v in stats["validations"] if "val/fid" in v],
        "picture": picture.name,
    }


COLUMNS = [  # (heading, key, format)
    ("family", "family", "{}"),
    ("scored", "what", "{}"),
    ("FID ↓", "fid", "{:.2f}"),
    ("KID ↓", "kid", "{:.4f}"),
    ("IS ↑", "is", "{:.2f}"),
    ("precision ↑", "precision", "{:.3f}"),
    ("recall ↑", "recall", "{:.3f}"),
    ("label entropy (nats)", "label_entropy", "{:.3f}"),
    ("NLL (bits/dim)", "nll_bpd", "{:.3f}"),
    ("parameters", "parameters", "{:,}"),
    ("train images/s", "train_images_per_s", "{:,.0f}"),
    ("sample images/s", "sample_images_per_s", "{:,.0f}"),
]


def table_cells(rows: list[dict]) -> list[list[str]]:
    """The table's rows as text, best FID first."""
    return [
        [
            ("≤ " if key == "nll_bpd" and r.get("nll_is_bound") else "") + fmt.format(r[key])
            if r.get(key) is not None
            else "—"
            for _, key, fmt in COLUMNS
        ]
        for r in sorted(rows, key=lambda r: r["fid"])
    ]


def title(header: dict[str, Any]) -> str:
    return f"Leaderboard: Fashion-MNIST at {header['budget_min']:g} training minutes per family"


def description(header: dict[str, Any]) -> str:
    device = header["gpu"] or "CPU"
    return (
        f"{header['machine']} ({device}); {header['num_samples']:,} images scored per family against the test "
        f"split in the shipped classifier's features (genlab/metrics/classifiers/fashion_mnist.ckpt)"
    )


def markdown(rows: list[dict], header: dict[str, Any]) -> str:
    lines = [
        f"# {title(header)}",
        "",
        f"`{header['command']}`",
        "",
        description(header) + ".",
        "",
        "| " + " | ".join(heading for heading, _, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_cells(rows)]
    return "\n".join(lines) + "\n"


def html_page(rows: list[dict], header: dict[str, Any], out: Path) -> str:
    """The board as one self-contained page, built with src.report's page machinery."""
    head = "".join(f"<th>{html.escape(heading)}</th>" for heading, _, _ in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in table_cells(rows)
    )
    grids = "".join(
        f"<figure>{png_tag((out / r['picture']).read_bytes(), r['family'], **{'class': 'picture'})}"
        f"<figcaption>{html.escape(r['family'])}: {r['what']}</figcaption></figure>"
        for r in sorted(rows, key=lambda r: r["fid"])
    )
    curves = out / "fid_curves.png"
    sections = [
        f"<h1>{html.escape(title(header))}</h1><p><code>{html.escape(header['command'])}</code></p>",
        f"<p>{html.escape(description(header))}. Training time excludes validations and their FID measurements, and a "
        f"latent model's, its first stage's training (that row's own).</p>",
        f"<table><tr>{head}</tr>{body}</table>",
        f"<h2>FID during training</h2>{png_tag(curves.read_bytes(), 'FID curves') if curves.is_file() else ''}",
        f"<h2>Samples</h2>{grids}",
    ]
    return page(title(header), sections)


def plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r["curve"]:
            seconds, fid = zip(*r["curve"], strict=True)
            ax.plot([s / 60 for s in seconds], fid, marker="o", label=r["family"])
    ax.set(
        xlabel="training minutes (validations not counted)",
        ylabel=f"FID on {CURVE_SAMPLES:,} samples (val)",
        yscale="log",
        title="FID during training, at equal compute",
    )
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_board(rows: list[dict], failures: dict[str, str], header: dict[str, Any], out: Path) -> None:
    (out / "leaderboard.json").write_text(json.dumps({**header, "rows": rows, "failures": failures}, indent=1))
    (out / "leaderboard.md").write_text(markdown(rows, header))
    plot_curves(rows, out / "fid_curves.png")
    (out / "leaderboard.html").write_text(html_page(rows, header, out))


def run_family(name: str, args: argparse.Namespace, say: str) -> dict:
    """Train, score and tabulate one family, saying each step as it starts."""
    started, logs = time.perf_counter(), args.work / "logs"
    print(f"{say}: training for {args.budget:g} min (log: {logs / f'{name}-train.log'})", flush=True)
    run_dir = train(name, ENTRIES[name], args)
    print(f"{say}: scoring {args.num_samples:,} images (log: {logs / f'{name}-eval.log'})", flush=True)
    result = row(name, ENTRIES[name], run_dir, evaluate(name, run_dir, args), args)
    print(f"{say}: FID {result['fid']:.2f} ({time.perf_counter() - started:.0f} s)", flush=True)
    return result


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    header = {
        "command": "python -m benchmarks.leaderboard " + " ".join(sys.argv[1:]),
        "machine": describe_machine(),
        "budget_min": args.budget,
        "num_samples": args.num_samples,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() and args.accelerator != "cpu" else None,
    }
    families = args.families.split(",")
    print(
        f"{header['machine']}: {len(families)} families x {args.budget:g} training minutes, {args.num_samples:,} "
        f"images scored each; the board goes to {args.out}",
        flush=True,
    )
    rows, failures, name = [], {}, families[0]
    try:
        for number, name in enumerate(families, start=1):
            say = f"[{number}/{len(families)}] {name}"
            failed_before = [row for _, row in ENTRIES[name].builds_on if row in failures]
            try:
                if failed_before:  # nothing to build on: said as such, not as a missing checkpoint
                    raise RuntimeError(f"not trained: it builds on {', '.join(failed_before)}, which failed")
                rows.append(run_family(name, args, say))
            except (RuntimeError, OSError, KeyError, ValueError) as err:  # one family's failure leaves the others'
                failures[name] = str(err)
                print(f"{say}: failed: {err}", flush=True)
            write_board(rows, failures, header, args.out)  # after each family: a board cut short still tells
    except KeyboardInterrupt:  # the command running (src.train, src.eval) had the Ctrl-C too, and has stopped
        kept = f"the board of the {len(rows)} done is {args.out / 'leaderboard.md'}" if rows else "none was done"
        print(f"interrupted: at {name}; {kept}", file=sys.stderr)
        raise SystemExit(130) from None
    print(markdown(rows, header))
    if failures:
        raise SystemExit(f"failed: {', '.join(failures)} (see {args.out / 'leaderboard.json'})")


if __name__ == "__main__":
    main()
