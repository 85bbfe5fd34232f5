"""Self-contained HTML reports: `python -m src.report run_dir=<a run's folder, or a folder of runs>`.

A run (outputs/<task>/runs/<run>): <run>/report.html holds its overrides, final metrics, curves (from the
CSV log, else from TensorBoard's event files), the latest picture of each kind with its caption or the latest
text samples, and the resolved config.
A folder of runs (a sweep's, or outputs/<task>): <folder>/report.html compares them, offline, as W&B's run
comparison does: a table with one row per run (its overrides and final metrics) and every curve of every run
overlaid, one colour per run.
Images are embedded, so the file can be mailed or archived alone.

A page that can be opened safely whatever the run folder holds (names are the user's, and a run folder may come
from anyone): every text is escaped, links go only to relative paths below the reported folder, plot labels are
drawn as plain text (genlab/curve_plots.py), and the page's Content-Security-Policy runs no script and loads
nothing from anywhere, whatever escaping might miss.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import logging
import os
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path

import hydra
import yaml
from omegaconf import DictConfig
from PIL import Image

from genlab.curve_plots import Panel, comparison_panels, identical_series, label, plot_png, run_colors, run_panels
from genlab.errors import ConfigError, FileRefusedError, one_line
from genlab.models.previews import CAPTION_KEY
from genlab.run_logs import PICTURE, PartlyRead, files_below, read_curves, read_text
from genlab.utils.config import CONF_DIR
from genlab.utils.failed_runs import exit_on_user_error
from genlab.utils.files import read_bytes, write_text_atomically
from genlab.utils.run_folder import (
    CONFIG,
    CONFIG_FILE,
    ERROR,
    SMALL_FILE,
    as_params,
    find_runs,
    is_run,
    read_metrics,
    read_overrides,
    varying,
)
from genlab.utils.signals import signals_end_the_command

log = logging.getLogger(__name__)

STYLE = (
    "body{font-family:sans-serif;max-width:1160px;margin:2em auto;padding:0 1em}"
    "p{overflow-wrap:anywhere}figure{display:inline-block;vertical-align:top;margin:.5em}figcaption{font-size:90%;color:#333}"
    "img{border:1px solid #ccc}img.picture{image-rendering:pixelated;max-width:100%}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    "code{background:#f0f0f0;padding:1px 4px;margin:1px;display:inline-block}"
    # text samples are a few hundred characters on few lines: wrapped, not scrolled sideways
    "pre{background:#f6f6f6;padding:1em;white-space:pre-wrap;overflow-wrap:anywhere}"
    "#warnings{background:#fff3cd;border:1px solid #d4a000;padding:.5em 1em}"
    ".swatch{display:inline-block;width:1.2em;height:1.2em;vertical-align:middle}"
)
# pictures written before their tiles were enlarged (28 px tiles, a grid 242 px wide) are shown at a whole
# multiple of their size, about this wide at least, pixels kept sharp (image-rendering: pixelated); none wider
# than the other limit (the VAE's 20x20 manifold is 1,120 px wide), so that two fit side by side where they can
MIN_PICTURE_WIDTH, MAX_PICTURE_WIDTH = 480, 720
# no script, nothing fetched: pictures are data: URLs, styles inline (links still open what they name)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)


def png_tag(png: bytes, alt: str, **attributes: object) -> str:
    extra = "".join(f' {name}="{html.escape(str(value))}"' for name, value in attributes.items())
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{html.escape(alt)}"{extra}>'


def page(title: str, sections: list[str]) -> str:
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )


def relative_link(path: str) -> str:
    """The href of a file below the report's folder, named by its relative `path`: each character that could make
    it anything else percent-encoded (a `:` that would start a `javascript:` scheme, a `?`, a `#`), after `./`."""
    return "./" + urllib.parse.quote(path)


def overrides_html(overrides: list[str] | None, what: str = "Overrides") -> str:
    if overrides is None:  # a run composed in Python (as the tests compose theirs) has no .hydra folder
        return f'<p id="overrides">{what}: not recorded (no .hydra/overrides.yaml)</p>'
    chips = " ".join(f"<code>{html.escape(override)}</code>" for override in overrides)
    return f'<p id="overrides">{what}: {chips or "none (the defaults of conf/train.yaml)"}</p>'


@contextlib.contextmanager
def partly_read() -> Iterator[list[str]]:
    """Collect the PartlyRead warnings of the files read inside the block (and log each to the console)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PartlyRead)
        notes: list[str] = []
        yield notes
    for warning in caught:
        if issubclass(warning.category, PartlyRead):
            log.warning(str(warning.message))
            notes.append(str(warning.message))
        else:  # anyone else's warning, shown as it would have been
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def warnings_html(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    return f'<div id="warnings"><b>Files read in part</b><ul>{items}</ul></div>'


def curves_html(panels: list[Panel], source: str) -> str:
    if not panels:
        return "<p>No curves: the run has no CSV log (csv/) and no TensorBoard events (tensorboard/)</p>"
    figures = "".join(f"<figure>{png_tag(plot_png(panel), panel.title)}</figure>" for panel in panels)
    return f"<p>From {html.escape(source)}</p>{figures}"


def latest_pictures(run_dir: Path) -> list[Path]:
    """The last image of each kind in <run>/images (their names end in _epochNNN.png)."""
    latest: dict[str, Path] = {}
    try:
        found = files_below(run_dir / "images", "*.png")
    except FileRefusedError as err:
        warnings.warn(PartlyRead(f"{err}; its pictures are left out"), stacklevel=2)
        found = []
    for path in found:
        latest[path.stem.rsplit("_epoch", 1)[0]] = path  # sorted: the last epoch wins
    return list(latest.values())


def picture_html(path: Path) -> str:
    """The picture at a legible size, with the caption its callback wrote into the file ("" for a damaged file)."""
    try:
        png = read_bytes(path, PICTURE)  # a regular file within the limit, not a link or a FIFO
        with Image.open(io.BytesIO(png)) as image:
            width, caption = image.width, image.info.get(CAPTION_KEY, "")
            image.verify()  # every chunk's checksum: a file cut short (a callback still writing it) fails here
    except Exception as err:  # PIL raises OSError, SyntaxError or struct.error, by where the file is damaged
        warnings.warn(PartlyRead(f"{path}: not a PNG that can be read ({one_line(err)}); left out"), stacklevel=2)
        return ""
    shown = min(width * max(1, round(MIN_PICTURE_WIDTH / width)), MAX_PICTURE_WIDTH)
    kind = path.stem.rsplit("_epoch", 1)[0]
    img = png_tag(png, f"{kind} ({path.name})", width=shown, **{"class": "picture"})
    text = f"<b>{html.escape(kind)}</b> ({html.escape(path.name)}). {html.escape(caption)}"
    return f'<figure style="max-width:{shown}px">{img}<figcaption>{text}</figcaption></figure>'


def latest_texts(run_dir: Path, count: int = 3) -> list[tuple[str, str]]:
    """The last `count` text samples in <run>/samples (those that can be read: the others are warned of)."""
    try:
        found = files_below(run_dir / "samples", "*.txt")
    except FileRefusedError as err:
        warnings.warn(PartlyRead(f"{err}; its text samples are left out"), stacklevel=2)
        return []
    texts = [(path.name, read_text(path)) for path in found[-count:]]
    return [(name, text) for name, text in texts if text is not None]


def render_run(run_dir: Path) -> str:
    """The report of one run."""
    with partly_read() as notes:
        sections = _run_sections(run_dir)
    sections.insert(1, warnings_html(notes))  # below the title
    return page(run_dir.name, sections)


def task_name(config_file: Path, config: str) -> str | None:
    """The task_name in the run's config.yaml (None, with a warning, where that is not YAML)."""
    try:
        loaded = yaml.safe_load(config)
    except yaml.YAMLError as err:
        warnings.warn(PartlyRead(f"{config_file}: not YAML ({one_line(err)}); shown as text"), stacklevel=2)
        return None
    return loaded.get("task_name") if isinstance(loaded, dict) else None


def _run_sections(run_dir: Path) -> list[str]:
    metrics = read_metrics(run_dir)
    config_file = run_dir / CONFIG
    config = read_text(config_file, CONFIG_FILE) if os.path.lexists(config_file) else None
    task = (task_name(config_file, config) if config is not None else None) or run_dir.parent.parent.name
    config = "(no config.yaml)" if config is None else config
    # a metric equal to another (test/loss and test/nelbo of a VAE whose beta is 1) is shown once
    same = identical_series(metrics)
    rows = "".join(f"<tr><td>{html.escape(label(k, same[k]))}</td><td>{metrics[k]:.6g}</td></tr>" for k in same)
    table = f'<table id="metrics"><tr><th>metric</th><th>value</th></tr>{rows}</table>' if rows else ""
    curves, source = read_curves(run_dir)
    sections = [
        f"<h1>{html.escape(str(task))}: {html.escape(run_dir.name)}</h1>",
        overrides_html(read_overrides(run_dir)),
        "<h2>Final metrics</h2>",
        table or "<p>No metrics.json</p>",
        "<h2>Curves</h2>",
        curves_html(run_panels(curves), source),
    ]
    if pictures := latest_pictures(run_dir):
        sections += ["<h2>Pictures</h2>", *map(picture_html, pictures)]
    if texts := latest_texts(run_dir):
        sections.append("<h2>Text samples</h2>")
        sections += [f"<h3>{html.escape(name)}</h3><pre>{html.escape(text)}</pre>" for name, text in texts]
    sections += ["<h2>Config</h2>", f"<pre>{html.escape(config)}</pre>"]
    return sections


def run_labels(names: list[str], differing: list[dict[str, str]]) -> list[str]:
    """Each run's legend: the overrides that set it apart, else its folder; both when two runs share overrides.
    Numbers are shortened to 4 significant digits (Optuna's model.lr=0.0003574712922600243: 0.0003575)."""

    def short(value: str) -> str:
        try:
            return value if value.lstrip("-").isdigit() else f"{float(value):.4g}"
        except ValueError:
            return value

    labels = [
        ", ".join(f"{k}={short(v)}" for k, v in p.items()) or name for p, name in zip(differing, names, strict=True)
    ]
    if len(set(labels)) < len(labels):  # the same command run twice: the folder tells them apart
        labels = [name if lab == name else f"{name}: {lab}" for lab, name in zip(labels, names, strict=True)]
    return labels


def runs_table(runs: list[Path], names: list[str], differing: list[dict[str, str]], colors: list[str]) -> str:
    """One row per run: its colour in the plots, its folder, the overrides that set it apart, its final metrics."""
    metrics = [read_metrics(run) for run in runs]
    keys = sorted({key for m in metrics for key in m})
    # a column equal to another in every run (test/loss and test/nelbo of a VAE) is shown once; test/ first, then
    # val/, train/, the rest (a learning rate)
    same = identical_series({key: tuple(m.get(key) for m in metrics) for key in keys})
    rank = {"test": 0, "val": 1, "train": 2}
    columns = {key: same[key] for key in sorted(same, key=lambda key: (rank.get(key.partition("/")[0], 3), key))}
    header = "".join(f"<th>{html.escape(label(key, others))}</th>" for key, others in columns.items())
    notes = [run_note(run) if not m else "" for run, m in zip(runs, metrics, strict=True)]
    rows = []
    for run, name, params, color, m, note in zip(runs, names, differing, colors, metrics, notes, strict=True):
        link = f"{name}/report.html" if (run / "report.html").is_file() else name
        chips = " ".join(f"<code>{html.escape(k)}={html.escape(v)}</code>" for k, v in params.items())
        cells = "".join(f"<td>{m[key]:.6g}</td>" if key in m else "<td></td>" for key in columns)
        rows.append(
            f'<tr><td><span class="swatch" style="background:{color}"></span></td>'
            f'<td><a href="{html.escape(relative_link(link))}">{html.escape(name)}</a></td><td>{chips}</td>'
            f"{f'<td>{html.escape(note)}</td>' if any(notes) else ''}{cells}</tr>"
        )
    head = f"<tr><th></th><th>run</th><th>overrides</th>{'<th>note</th>' if any(notes) else ''}{header}</tr>"
    # as wide as it needs (a VAE logs 16 metrics): scrolled sideways inside the page, not the page itself
    return f'<div style="overflow-x:auto"><table id="runs">{head}{"".join(rows)}</table></div>'


def run_note(run: Path) -> str:
    """Why a run has no final metrics: a failed job of a sweep says why in error.txt."""
    error = run / ERROR
    text = read_text(error, SMALL_FILE) if os.path.lexists(error) else None
    return text.strip() if text else "no metrics.json: still running, pruned or stopped"


def render_comparison(folder: Path, runs: list[Path]) -> str:
    """The report comparing several runs: a table of their overrides and final metrics, their curves overlaid."""
    with partly_read() as notes:
        sections = _comparison_sections(folder, runs)
    sections.insert(1, warnings_html(notes))
    return page(f"{len(runs)} runs in {folder.name}", sections)


def _comparison_sections(folder: Path, runs: list[Path]) -> list[str]:
    names = [str(run.relative_to(folder)) for run in runs]
    overrides = [read_overrides(run) for run in runs]
    differing = varying([as_params(o or []) for o in overrides])
    shared = [o for o in (overrides[0] or []) if all(o in (other or []) for other in overrides)]
    colors = run_colors(len(runs))
    curves = [read_curves(run)[0] for run in runs]
    panels = comparison_panels(list(zip(run_labels(names, differing), curves, strict=True)), colors)
    return [
        f"<h1>{len(runs)} runs in {html.escape(str(folder))}</h1>",
        overrides_html(None if all(o is None for o in overrides) else shared, "Overrides all runs share"),
        "<h2>Runs</h2>",
        runs_table(runs, names, differing, colors),
        "<h2>Curves</h2>",
        curves_html(panels, "each run's CSV log, else its TensorBoard events"),
    ]


def write_report(folder: Path) -> Path:
    """Write <folder>/report.html, of the run in `folder` or comparing the runs below it (through a temporary
    file, so a failure leaves no half page)."""
    if not folder.is_dir():
        raise ConfigError(
            f"run_dir={folder}: not a folder (give a run's folder, outputs/<task>/runs/<run>, or a "
            f"folder of runs: a sweep's, or outputs/<task>)"
        )
    if is_run(folder):
        text = render_run(folder)
    elif runs := find_runs(folder):
        text = render_comparison(folder, runs)
    else:
        raise ConfigError(
            f"{folder}: not a run folder (no config.yaml or metrics.json from python -m src.train), "
            f"and no run folders below it"
        )
    path = folder / "report.html"
    write_text_atomically(path, text, "the report")
    log.info(f"Wrote {path}")
    return path


@signals_end_the_command
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="report")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    write_report(Path(cfg.run_dir).resolve())  # the folder named, links and all: what lies inside is never followed


if __name__ == "__main__":
    main()
