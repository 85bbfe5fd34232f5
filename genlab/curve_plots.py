"""Plots of logged curves for `src.report`: the panels of one run, or of several runs overlaid, as PNGs."""

from __future__ import annotations

import io
import textwrap
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass

import matplotlib
from matplotlib.ticker import MaxNLocator

from genlab.run_logs import Curves

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

STAGES = ("train", "val", "test")
# LearningRateMonitor logs lr-<Optimizer>, lr-<Optimizer>/pg1, /pg2 (parameter groups), lr-<Optimizer>-1 (a
# second optimizer): all of them go into one panel
LR_PREFIX, LR_TITLE = "lr-", "learning rate"
# legends with a label longer than this go under the plot, wrapped at the second length
LEGEND_INSIDE_MAX, LEGEND_WRAP = 32, 80
# titles and legends are the user's names (metrics, overrides), drawn as they are written: matplotlib would read
# `$...$` in one as mathtext (and fail on a command it does not know), or give it to LaTeX where usetex is on
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


@dataclass
class Line:
    label: str
    points: list[tuple[int, float]]
    color: str | None = None  # None: the next colour of matplotlib's cycle


@dataclass
class Panel:
    title: str
    lines: list[Line]


def metric_name(key: str) -> str:
    """The panel a logged name belongs to: "train/loss" and "val/loss" -> "loss"; every "lr-..." -> LR_TITLE."""
    if key.startswith(LR_PREFIX):
        return LR_TITLE
    stage, _, name = key.partition("/")
    return name if stage in STAGES and name else key


def identical_series(series: dict[str, Hashable]) -> dict[str, list[str]]:
    """{kept key: the other keys whose series equal its own}; of identical series the first key in sorted order
    is kept. The VAE logs `loss` and `nelbo`, equal whenever beta is 1: one line, labelled with both."""
    groups: dict[Hashable, list[str]] = defaultdict(list)
    for key in sorted(series):
        groups[series[key]].append(key)
    return {keys[0]: keys[1:] for keys in groups.values()}


def label(key: str, same: list[str]) -> str:
    """ "train/loss (= train/nelbo)": a key with the keys whose series equal its own."""
    return f"{key} (= {', '.join(same)})" if same else key


def panel_order(key: str) -> tuple:
    """Losses first, then the other metrics by name, learning rates last; within a metric: train, val, test."""
    name, stage = metric_name(key), key.partition("/")[0]
    return name == LR_TITLE, name != "loss", name, STAGES.index(stage) if stage in STAGES else len(STAGES), key


def run_panels(curves: Curves) -> list[Panel]:
    """One run's panels: train/, val/ and test/ values of a metric together, every learning rate in one panel
    (each parameter group and optimizer its own colour), a series identical to another drawn once."""
    same = identical_series({key: tuple(points) for key, points in curves.items()})
    keys_by_name: dict[str, list[str]] = defaultdict(list)
    for key in sorted(same, key=panel_order):
        keys_by_name[metric_name(key)].append(key)
    panels = []
    for name, keys in keys_by_name.items():
        # "loss (= nelbo)" when each of the panel's series equals the same-stage series of `nelbo`
        aliases = set.intersection(*({metric_name(other) for other in same[key]} for key in keys)) - {name}
        panels.append(Panel(label(name, sorted(aliases)), [Line(label(key, same[key]), curves[key]) for key in keys]))
    return panels


def comparison_panels(runs: list[tuple[str, Curves]], colors: list[str]) -> list[Panel]:
    """Several runs' panels: one per logged name (val/loss, train/loss, ...), one line per run in the run's colour.

    test/ values are left out: one point per run, they are in the table of final metrics.
    """
    keys = {key for _, curves in runs for key in curves if not key.startswith("test/")}
    same = identical_series({key: tuple(tuple(curves.get(key, ())) for _, curves in runs) for key in keys})
    return [
        Panel(
            label(key, same[key]),
            [
                Line(name, curves[key], color)
                for (name, curves), color in zip(runs, colors, strict=True)
                if key in curves
            ],
        )
        for key in sorted(same, key=panel_order)
    ]


def run_colors(count: int) -> list[str]:
    """A distinct colour for each of `count` runs (matplotlib's tab10, then tab20, then round again)."""
    palette = matplotlib.colormaps["tab10" if count <= 10 else "tab20"].colors
    return [matplotlib.colors.to_hex(palette[i % len(palette)]) for i in range(count)]


@matplotlib.rc_context(PLAIN_TEXT)
def plot_png(panel: Panel) -> bytes:
    """The panel as a PNG: step on the x axis, a legend naming each line."""
    figure, axes = plt.subplots(figsize=(6, 3.4))
    for line in panel.lines:
        steps, values = zip(*line.points, strict=True)
        axes.plot(steps, values, marker="." if len(steps) < 30 else None, label=line.label, color=line.color)
    axes.set(xlabel="step", title=panel.title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers: no tick at 2.5
    axes.grid(alpha=0.3)
    figure.tight_layout()
    if max(len(line.label) for line in panel.lines) > LEGEND_INSIDE_MAX:  # runs named by their overrides
        # under the plot, one run a line, rather than over the curves: the figure's legend, placed after the layout
        # (which would shrink the plot to make room), and kept by savefig's tight bounding box
        labels = [textwrap.fill(line.label, LEGEND_WRAP, subsequent_indent="  ") for line in panel.lines]
        figure.legend(
            axes.get_lines(), labels, fontsize="small", loc="upper left", bbox_to_anchor=(0, 0), frameon=False
        )
    else:
        axes.legend(fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
