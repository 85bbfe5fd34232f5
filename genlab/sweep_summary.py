"""Summarise a sweep: `python -m src.sweep_summary sweep_dir=outputs/<task>/multiruns/<sweep>`.

Reads an Optuna sweep's study (from its storage: `<sweep>/optuna.db`, or the database or journal
file the sweep was given) or, for a grid sweep of Hydra's basic sweeper, each job's overrides and
metrics.json. Prints one row per trial (number, state, value, parameters),
best first, and writes summary.csv and summary.png (value per trial and the best so far) to the
sweep folder; for an Optuna sweep also Optuna's own plots (optimisation history, parameter
importances, slices: optuna_*.png) and the command that opens the study in optuna-dashboard.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import matplotlib
import numpy as np
import optuna
import sqlalchemy.exc
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from genlab.curve_plots import PLAIN_TEXT
from genlab.errors import ConfigError, one_line
from genlab.utils.config import CONF_DIR
from genlab.utils.failed_runs import exit_on_user_error
from genlab.utils.files import write_bytes_atomically, write_text_atomically
from genlab.utils.run_folder import (
    MULTIRUN,
    as_params,
    read_error,
    read_metrics,
    read_multirun,
    read_overrides,
    varying,
)
from genlab.utils.signals import signals_end_the_command
from hydra_plugins.genlab_optuna_sweeper.storage import failure_reason, open_storage, retried_as, shown

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import optuna.visualization.matplotlib as optuna_plots  # noqa: E402  (imports pyplot: after the backend is set)

log = logging.getLogger(__name__)


@dataclass
class Trial:
    number: int
    state: str
    value: float | None
    params: dict[str, str] = field(default_factory=dict)
    error: str = ""  # why a failed trial failed (and the trial that ran it again)


@dataclass
class Sweep:
    name: str  # the study's name (Optuna) or the task's (grid), with the sweep's folder: the plots' titles
    trials: list[Trial]
    metric: str
    direction: str  # "minimize" or "maximize"
    study: optuna.Study | None = None  # an Optuna sweep's, for Optuna's own plots
    storage: str | None = None  # where that study lives, as the sweeper names it


def read_sweep(sweep_dir: Path, metric: str | None) -> Sweep:
    """The sweep's trials, what they were ranked by, and (an Optuna sweep) its study."""
    multirun = sweep_dir / MULTIRUN
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep_dir={sweep_dir}: not a folder (give a sweep's: outputs/<task>/multiruns/<sweep>)")
    if not os.path.lexists(multirun):
        raise ConfigError(f"{sweep_dir}: not a sweep folder (no multirun.yaml; run `python -m src.train -m ...`)")
    config = read_multirun(sweep_dir)
    try:
        metric = metric or config.monitor.metric
        sweeper = config.hydra.sweeper
    except OmegaConfBaseException as err:  # damaged, hand-edited
        raise ConfigError(f"{multirun}: not the record Hydra writes of a sweep ({one_line(err)})") from None
    if "study_name" in sweeper:  # an Optuna sweep: its storage, or that of a sweep from before it was recorded
        storage = sweeper.get("storage") or f"sqlite:///{sweep_dir.resolve() / 'optuna.db'}"
        study = load_study(sweeper.study_name, storage)
        trials = study.get_trials(deepcopy=False)
        retries = retried_as(trials)
        return Sweep(
            f"{sweeper.study_name} ({sweep_dir.name})",
            [optuna_trial(study, t, retries) for t in trials],
            metric,
            sweeper.direction,
            study,
            storage,
        )
    direction = "maximize" if config.monitor.mode == "max" else "minimize"
    return Sweep(f"{config.task_name} ({sweep_dir.name})", _job_trials(sweep_dir, metric), metric, direction)


def load_study(study_name: str, storage: str) -> optuna.Study:
    """The study, read where the sweep stored it; one line if it is not there (nothing is created to read it)."""
    path = storage.removeprefix("sqlite:///") if storage.startswith("sqlite:///") else storage
    if "://" not in path and not os.path.lexists(path):
        raise ConfigError(f"the sweep's study {study_name!r} was stored in {path}, which is not there any more")
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:  # Optuna's "Record does not exist": the sweep was stopped before it made its study
        raise ConfigError(f"no study {study_name!r} in {shown(storage)}") from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:  # a server out of reach, no driver
        raise ConfigError(f"cannot read the sweep's study in {shown(storage)}: {one_line(err)}") from None


def optuna_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, retries: dict[int, int]) -> Trial:
    """A row of the table: a failed trial says why, and which trial ran it again if one did."""
    error = failure_reason(study, trial) if trial.state == optuna.trial.TrialState.FAIL else ""
    if trial.number in retries:
        error = "; ".join(filter(None, [error, f"ran again as trial {retries[trial.number]}"]))
    return Trial(trial.number, trial.state.name, trial.value, {k: str(v) for k, v in trial.params.items()}, error)


def _job_trials(sweep_dir: Path, metric: str) -> list[Trial]:
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    trials = []
    for job_dir in jobs:
        value = read_metrics(job_dir).get(metric)
        error = read_error(job_dir) or ""
        trials.append(Trial(int(job_dir.name), "COMPLETE" if value is not None else "FAIL", value, error=error))
    # keep only the parameters that vary: the others are the sweep's fixed overrides
    params = varying([as_params(read_overrides(job_dir) or []) for job_dir in jobs])
    for trial, job_params in zip(trials, params, strict=True):
        trial.params = job_params
    return trials


def write_summary(sweep: Sweep, sweep_dir: Path) -> tuple[Path, Path]:
    """Print the table, best first; write summary.csv and summary.png; return their paths."""
    trials, metric = sweep.trials, sweep.metric
    sign = 1 if sweep.direction == "minimize" else -1
    ranked = sorted(trials, key=lambda t: (t.value is None, sign * (t.value or 0.0), t.number))
    keys = sorted({key for trial in trials for key in trial.params})
    header = ["trial", "state", metric, *keys, "error"]
    rows = [
        [t.number, t.state, "" if t.value is None else f"{t.value:.6g}", *(t.params.get(k, "") for k in keys), t.error]
        for t in ranked
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))

    table = io.StringIO(newline="")
    csv.writer(table).writerows([header, *rows])
    csv_path = sweep_dir / "summary.csv"
    write_text_atomically(csv_path, table.getvalue(), "the summary")
    png_path = sweep_dir / "summary.png"
    figure = _plot(trials, metric, sign, f"{sweep.name}: {len(trials)} trials")
    write_bytes_atomically(png_path, figure_png(figure), "the summary's plot")
    log.info(f"Wrote {csv_path} and {png_path}")
    return csv_path, png_path


def figure_png(figure: plt.Figure, **savefig: object) -> bytes:
    """The figure as PNG bytes (to be written through the one writer, never in place), and closed."""
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100, **savefig)
    plt.close(figure)
    return png.getvalue()


def _plot(trials: list[Trial], metric: str, sign: int, title: str) -> plt.Figure:
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
    axes.set(xlabel="trial", ylabel=metric, title=title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers: no tick at trial 2.5
    axes.legend()
    figure.tight_layout()
    return figure


# Optuna's own plots (optuna.visualization.matplotlib: the plotly versions need plotly, not installed here), and
# the completed trials each needs: importances compare trials with each other, and a slice of a single trial has no
# range to draw (matplotlib warns); with fewer, Optuna draws an empty or degenerate chart
OPTUNA_PLOTS = {
    "optuna_history.png": ("optimisation history", optuna_plots.plot_optimization_history, 1),
    "optuna_importances.png": ("parameter importances", optuna_plots.plot_param_importances, 2),
    "optuna_slice.png": ("slices: the metric against each parameter", optuna_plots.plot_slice, 2),
}


@matplotlib.rc_context(PLAIN_TEXT)
def write_optuna_plots(sweep: Sweep, sweep_dir: Path) -> list[str]:
    """Write Optuna's plots of the study to the sweep folder; return a note for each plot not drawn, and why."""
    completed = sum(t.state == "COMPLETE" for t in sweep.trials)
    # matplotlib logs, at INFO, each categorical parameter (choice(64, 128)) whose values look like numbers
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
    notes = []
    for file_name, (what, plot, needed) in OPTUNA_PLOTS.items():
        if completed < needed:
            notes.append(f"{file_name} ({what}) not drawn: {completed} completed trial(s), it needs {needed}")
            continue
        with warnings.catch_warnings():  # Optuna calls its matplotlib plots experimental, and warns at each call
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                axes = plot(sweep.study, target_name=sweep.metric)
            except (ImportError, RuntimeError, ValueError) as err:  # an evaluator's missing package, a degenerate study
                notes.append(f"{file_name} ({what}) not drawn: {one_line(err)}")
                continue
        figure = np.ravel(axes)[0].figure  # plot_slice returns an array of axes, one per parameter
        for each in figure.axes:
            for axis in (each.xaxis, each.yaxis):
                if axis.get_label_text() == "Trial":  # the history's x axis, the slices' colour bar: whole numbers
                    axis.set_major_locator(MaxNLocator(integer=True))
                if axis is each.xaxis and axis.get_scale() == "log":  # a learning rate's labels run into each other
                    each.tick_params(axis="x", which="both", labelrotation=60, labelsize="small")
        figure.suptitle(f"{sweep.name}: {what}")
        write_bytes_atomically(sweep_dir / file_name, figure_png(figure, bbox_inches="tight"), f"Optuna's {what}")
    return notes


@signals_end_the_command
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="sweep_summary")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    sweep_dir = Path(cfg.sweep_dir).resolve()  # the folder named, links and all: what lies inside is never followed
    sweep = read_sweep(sweep_dir, cfg.metric)
    if not sweep.trials:
        raise ConfigError(f"{sweep_dir}: the sweep has no trials yet")
    write_summary(sweep, sweep_dir)
    if sweep.study is not None:
        for note in write_optuna_plots(sweep, sweep_dir):
            print(note)
        print(f"Optuna's plots: {sweep_dir}/optuna_*.png; the study in a browser (pip install optuna-dashboard):")
        print(f"  optuna-dashboard {shown(sweep.storage)}")


if __name__ == "__main__":
    main()
