"""What `python -m src.train` leaves in a run folder, read back: the final metrics, the command-line overrides,
the logged curves; and the run folders below a folder (a sweep's, or outputs/<task>)."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import warnings
from collections import defaultdict
from pathlib import Path

import yaml

from genlab.errors import ConfigError, one_line

# (step, value) points of each logged metric, by the name it was logged under ("train/loss", "lr-Adam")
Curves = dict[str, list[tuple[int, float]]]

# what loggers record beside the metrics: not curves worth a plot
NOT_METRICS = {"step", "epoch", "hp_metric"}


class PartlyRead(UserWarning):
    """A run's file read in part: a line cut short (the run still writing it), bytes that are not UTF-8. What was
    read is used; src.report shows the warning at the top of its page."""


# the final metrics, logged once more for TensorBoard's HParams tab (genlab/utils/loggers.py: log_final_metrics)
FINAL_PREFIX = "final/"


def is_run(folder: Path) -> bool:
    """Whether `folder` is a run's: src.train writes config.yaml at its start and metrics.json at its end."""
    return (folder / "config.yaml").is_file() or (folder / "metrics.json").is_file()


def find_runs(folder: Path) -> list[Path]:
    """The run folders at any depth below `folder`, in order (a sweep's jobs by number: 2 before 10)."""
    runs = []
    for parent, children, _ in os.walk(folder):
        children[:] = [c for c in children if not c.startswith(".")]  # .hydra and the like: never runs
        path = Path(parent)
        if path != folder and is_run(path):
            runs.append(path)
            children.clear()  # runs do not nest: their csv/, images/, checkpoints/ hold none
    return sorted(runs, key=lambda run: [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in run.parts])


def read_metrics(path: Path) -> dict[str, float]:
    """The run's final metrics, {} when it wrote none; a file that is not a JSON object of numbers is refused."""
    if not path.is_file():
        return {}
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not the JSON that src.train writes ({one_line(err)})") from None
    if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) for v in metrics.values()):
        raise ConfigError(f"{path}: expected an object of metric names and numbers")
    return metrics


def read_overrides(run_dir: Path) -> list[str] | None:
    """The run's command-line overrides, as Hydra recorded them in .hydra/overrides.yaml; None without that file
    (a run composed in Python, as the tests do, has none)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        overrides = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not the YAML that Hydra writes ({one_line(err)})") from None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{path}: expected the list of overrides that Hydra writes (key=value strings)")
    return overrides


def as_params(overrides: list[str]) -> dict[str, str]:
    """{key: value} of overrides; one with no value (`~callbacks.rich_progress_bar`) maps to ""."""
    return {key: value for key, _, value in (override.partition("=") for override in overrides)}


def varying(params: list[dict[str, str]]) -> list[dict[str, str]]:
    """Each run's parameters less those that all runs share (a sweep's fixed overrides): what tells them apart."""
    keys = {key for p in params for key in p}
    differ = {key for key in keys if len({p.get(key) for p in params}) > 1}
    return [{k: v for k, v in p.items() if k in differ} for p in params]


def read_curves(run_dir: Path) -> tuple[Curves, str]:
    """Each logged metric's points, sorted by step, and which log they came from.

    The CSV log (csv/**/metrics.csv) when the run has one, else TensorBoard's event files (tensorboard/**):
    with `logger=many` both hold the same values, and the CSV is read faster and exactly as written.
    """
    csv_files = sorted(run_dir.glob("csv/**/metrics.csv"))
    event_folders = sorted({path.parent for path in run_dir.glob("tensorboard/**/events.out.tfevents.*")})
    if csv_files:
        curves, source = _csv_curves(csv_files), ", ".join(str(p.relative_to(run_dir)) for p in csv_files)
    elif event_folders:
        curves = _tensorboard_curves(event_folders)
        source = "TensorBoard events in " + ", ".join(str(p.relative_to(run_dir)) for p in event_folders)
    else:
        return {}, ""
    # sorted by step; a point logged twice (the same step and value) counted once
    return {name: sorted(set(points)) for name, points in curves.items()}, source


def read_text(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 (a file cut inside a character) shown as U+FFFD, with a warning."""
    data = path.read_bytes()
    try:
        return data.decode()
    except UnicodeDecodeError as err:
        note = f"{path}: not UTF-8 text ({one_line(err)}); such bytes are shown as \ufffd"
        warnings.warn(PartlyRead(note), stacklevel=2)
        return data.decode(errors="replace")


def _csv_curves(paths: list[Path]) -> Curves:
    curves: Curves = defaultdict(list)
    for path in paths:
        try:
            text = path.read_bytes().decode()
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not a CSV log of Lightning's, not UTF-8 ({one_line(err)})") from None
        if text and not text.endswith("\n"):  # Lightning ends every row with a newline: this one was cut
            text = text[: text.rfind("\n") + 1]  # "5,0.12" of "5,0.1234" would read as a shorter number
            cut = f"{path}: its last line is cut short (the run still writing, or the file truncated); left out"
            warnings.warn(PartlyRead(cut), stacklevel=2)
        for line, row in enumerate(csv.DictReader(io.StringIO(text, newline="")), start=2):
            try:
                for name, value in row.items():
                    if name not in NOT_METRICS and value not in ("", None):
                        curves[name].append((int(row["step"]), float(value)))
            except (KeyError, TypeError, ValueError) as err:
                raise ConfigError(f"{path}, line {line}: not a CSV log of Lightning's ({one_line(err)})") from None
    return curves


def _tensorboard_curves(folders: list[Path]) -> Curves:
    # imported here: it takes a second or two, and most runs have a CSV log
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # it logs each event file it reads, at INFO
    curves: Curves = defaultdict(list)
    for folder in folders:
        events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: every point, not a sample
        try:
            events.Reload()
        except Exception as err:  # tensorboard raises its own DataLossError and plain OSErrors alike
            raise ConfigError(f"{folder}: TensorBoard event files that cannot be read ({one_line(err)})") from None
        for tag in events.Tags()[SCALARS]:
            if tag not in NOT_METRICS and not tag.startswith(FINAL_PREFIX):
                curves[tag].extend((event.step, event.value) for event in events.Scalars(tag))
    return curves
