"""Summarise a sweep: `python -m src.sweep_summary sweep_dir=outputs/<task>/multiruns/<sweep>`.

Reads an Optuna sweep's study (`optuna.db`) or, for a grid sweep of Hydra's basic sweeper, each
job's overrides and metrics.json. Prints one row per trial (number, state, value, parameters),
best first, and writes summary.csv and summary.png (value per trial and the best so far) to the
sweep folder.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import matplotlib
import optuna
from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError, exit_on_user_error

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)


@dataclass
class Trial:
    number: int
    state: str
    value: float | None
    params: dict[str, str] = field(default_factory=dict)
    error: str = ""  # why a failed trial failed


def read_sweep(sweep_dir: Path, metric: str | None) -> tuple[list[Trial], str, str]:
    """The sweep's trials, the metric's name and the direction ("minimize" or "maximize")."""
    multirun = sweep_dir / "multirun.yaml"
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep_dir={sweep_dir}: not a folder (give a sweep's: outputs/<task>/multiruns/<sweep>)")
    if not multirun.is_file():
        raise ConfigError(f"{sweep_dir}: not a sweep folder (no multirun.yaml; run `python -m src.train -m ...`)")
    config = OmegaConf.load(multirun)
    metric = metric or config.monitor.metric
    direction = "maximize" if config.monitor.mode == "max" else "minimize"
    if (sweep_dir / "optuna.db").is_file():
        return _optuna_trials(sweep_dir, config), metric, config.hydra.sweeper.direction
    return _job_trials(sweep_dir, metric), metric, direction


def _optuna_trials(sweep_dir: Path, config: DictConfig) -> list[Trial]:
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    study = optuna.load_study(study_name=config.hydra.sweeper.study_name, storage=storage)
    return [
        Trial(t.number, t.state.name, t.value, {k: str(v) for k, v in t.params.items()}, t.user_attrs.get("error", ""))
        for t in study.get_trials(deepcopy=False)
    ]


def _job_trials(sweep_dir: Path, metric: str) -> list[Trial]:
    trials = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        overrides = OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")
        params = dict(override.split("=", 1) for override in overrides)
        metrics_file = job_dir / "metrics.json"
        value = json.loads(metrics_file.read_text()).get(metric) if metrics_file.is_file() else None
        error_file = job_dir / "error.txt"
        error = error_file.read_text().strip() if error_file.is_file() else ""
        trials.append(Trial(int(job_dir.name), "COMPLETE" if value is not None else "FAIL", value, params, error))
    # keep only the parameters that vary: the others are the sweep's fixed overrides
    varying = {key for key in {k for t in trials for k in t.params} if len({t.params.get(key) for t in trials}) > 1}
    for trial in trials:
        trial.params = {k: v for k, v in trial.params.items() if k in varying}
    return trials


def write_summary(trials: list[Trial], metric: str, direction: str, sweep_dir: Path) -> tuple[Path, Path]:
    """Print the table, best first; write summary.csv and summary.png; return their paths."""
    sign = 1 if direction == "minimize" else -1
    ranked = sorted(trials, key=lambda t: (t.value is None, sign * (t.value or 0.0), t.number))
    keys = sorted({key for trial in trials for key in trial.params})
    header = ["trial", "state", metric, *keys, "error"]
    rows = [[t.number, t.state, "" if t.value is None else f"{t.value:.6g}", *(t.params.get(k, "") for k in keys),
             t.error] for t in ranked]  # fmt: skip
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))

    csv_path = sweep_dir / "summary.csv"
    with csv_path.open("w", newline="") as file:
        csv.writer(file).writerows([header, *rows])
    png_path = sweep_dir / "summary.png"
    _plot(trials, metric, sign, png_path)
    log.info(f"Wrote {csv_path} and {png_path}")
    return csv_path, png_path


def _plot(trials: list[Trial], metric: str, sign: int, path: Path) -> None:
    done = sorted((t for t in trials if t.value is not None and math.isfinite(t.value)), key=lambda t: t.number)
    figure, axes = plt.subplots(figsize=(7, 4))
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
        points = [(t.number, t.value) for t in done if t.state == state]
        if points:
            axes.scatter(*zip(*points, strict=True), marker=marker, label=state.lower())
    best, best_so_far = math.inf, []
    for trial in done:
        best = min(best, sign * trial.value)
        best_so_far.append((trial.number, sign * best))
    if best_so_far:
        axes.step(*zip(*best_so_far, strict=True), where="post", color="black", linewidth=1, label="best so far")
    axes.set(xlabel="trial", ylabel=metric, title=f"{path.parent.name}: {len(trials)} trials")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@hydra.main(version_base="1.3", config_path="../conf", config_name="sweep_summary")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    sweep_dir = Path(cfg.sweep_dir)
    trials, metric, direction = read_sweep(sweep_dir, cfg.metric)
    if not trials:
        raise ConfigError(f"{sweep_dir}: the sweep has no trials yet")
    write_summary(trials, metric, direction, sweep_dir)


if __name__ == "__main__":
    main()
