"""What a run logged, read back for src.report: the curves of its CSV log (or TensorBoard's event files), and its
text samples. Every file is read through genlab/utils/files.py's `read_bytes` (a regular file, not a link, bounded)."""

from __future__ import annotations

import csv
import io
import logging
import os
import warnings
from collections import defaultdict
from pathlib import Path

from genlab.errors import ConfigError, FileRefusedError, one_line
from genlab.utils.files import MiB, kind_of, read_bytes

# (step, value) points of each logged metric, by the name it was logged under ("train/loss", "lr-Adam")
Curves = dict[str, list[tuple[int, float]]]

# what loggers record beside the metrics: not curves worth a plot
NOT_METRICS = {"step", "epoch", "hp_metric"}

# the most read of a CSV log (a million rows of a dozen metrics is about 100 MiB), of a TensorBoard event file (it
# holds the pictures too), of a text sample (a few hundred characters are written) and of a picture
CSV_LOG, EVENT_FILE, TEXT_SAMPLE, PICTURE = 256 * MiB, 1024 * MiB, 1 * MiB, 64 * MiB


class PartlyRead(UserWarning):
    """A run's file read in part, or left out: a line cut short (the run still writing it), bytes that are not UTF-8,
    a file that cannot be read. What was read is used; src.report shows the warning at the top of its page."""


# the final metrics, logged once more for TensorBoard's HParams tab (genlab/utils/loggers.py: log_final_metrics)
FINAL_PREFIX = "final/"


def files_below(folder: Path, matches: str) -> list[Path]:
    """The files named `matches` (a glob pattern of the name) at any depth below `folder`, sorted; links to
    folders are not followed (pathlib's `**` follows them)."""
    if (kind := kind_of(folder)) is not None:
        raise FileRefusedError(f"refused to read {folder}: it is {kind}, and genlab never reads through a link")
    found = []
    for parent, _, names in os.walk(folder):
        found += [Path(parent) / name for name in names if Path(name).match(matches)]
    return sorted(found)


def read_curves(run_dir: Path) -> tuple[Curves, str]:
    """Each logged metric's points, sorted by step, and which log they came from.

    The CSV log (csv/**/metrics.csv) when the run has one, else TensorBoard's event files (tensorboard/**):
    with `logger=many` both hold the same values, and the CSV is read faster and exactly as written.
    """
    csv_files = files_below(run_dir / "csv", "metrics.csv")
    event_folders = sorted({path.parent for path in files_below(run_dir / "tensorboard", "events.out.tfevents.*")})
    if csv_files:
        curves, source = _csv_curves(csv_files), ", ".join(str(p.relative_to(run_dir)) for p in csv_files)
    elif event_folders:
        curves = _tensorboard_curves(event_folders)
        source = "TensorBoard events in " + ", ".join(str(p.relative_to(run_dir)) for p in event_folders)
    else:
        return {}, ""
    # sorted by step; a point logged twice (the same step and value) counted once
    return {name: sorted(set(points)) for name, points in curves.items()}, source


def read_text(path: Path, limit: int = TEXT_SAMPLE) -> str | None:
    """The file's text; bytes that are not UTF-8 (a file cut inside a character) shown as U+FFFD, with a warning.
    None, with a warning, for a file that cannot be read (a link, a FIFO, larger than `limit`)."""
    try:
        data = read_bytes(path, limit)
    except OSError as err:  # FileRefusedError among them
        warnings.warn(PartlyRead(f"{one_line(err)}; left out"), stacklevel=2)
        return None
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
            text = read_bytes(path, CSV_LOG).decode()
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
        for path in folder.iterdir():  # TensorBoard opens by name each file whose name holds "tfevents": checked first
            if "tfevents" in path.name:
                _check_event_file(path)
        events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: every point, not a sample
        try:
            events.Reload()
        except Exception as err:  # tensorboard raises its own DataLossError and plain OSErrors alike
            raise ConfigError(f"{folder}: TensorBoard event files that cannot be read ({one_line(err)})") from None
        for tag in events.Tags()[SCALARS]:
            if tag not in NOT_METRICS and not tag.startswith(FINAL_PREFIX):
                curves[tag].extend((event.step, event.value) for event in events.Scalars(tag))
    return curves


def _check_event_file(path: Path) -> None:
    """A regular file within the limit, not a link (a FIFO would block TensorBoard's reader, /dev/zero never end)."""
    if (kind := kind_of(path)) is not None or not path.is_file():
        raise FileRefusedError(f"refused to read {path}: it is {kind or 'a folder'}, not a regular file")
    if path.stat().st_size > EVENT_FILE:
        raise FileRefusedError(f"refused to read {path}: more than the {EVENT_FILE // MiB:,} MiB read")
