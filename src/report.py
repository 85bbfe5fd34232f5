"""A self-contained HTML report of a run: `python -m src.report run_dir=outputs/<task>/runs/<run>`.

Writes <run>/report.html with the run's final metrics, loss and metric curves (matplotlib, from the
CSV log), the latest picture of each kind (reconstructions, samples, ...) or the latest text
samples, and the resolved config. Images are embedded, so the file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
from collections import defaultdict
from pathlib import Path

import hydra
import matplotlib
from omegaconf import DictConfig

from src.errors import ConfigError, exit_on_user_error, one_line

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)

STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto}figure{display:inline-block;margin:.5em}"
    "img{max-width:520px;border:1px solid #ccc}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}pre{background:#f6f6f6;padding:1em}"
)


def read_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Each logged metric's (step, value) points, from the run's CSV log (csv/metrics.csv)."""
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in sorted(run_dir.glob("csv/**/metrics.csv")):
        with path.open(newline="") as file:
            for line, row in enumerate(csv.DictReader(file), start=2):
                try:
                    for name, value in row.items():
                        if name not in ("step", "epoch") and value not in ("", None):
                            curves[name].append((int(row["step"]), float(value)))
                except (KeyError, TypeError, ValueError) as err:
                    raise ConfigError(f"{path}, line {line}: not a CSV log of Lightning's ({one_line(err)})") from None
    return dict(curves)


def plot_curves(curves: dict[str, list[tuple[int, float]]]) -> list[tuple[str, bytes]]:
    """One PNG per metric: train/loss and val/loss share the 'loss' plot, lr-AdamW/pg1 and /pg2 'lr-AdamW'."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for key in sorted(curves):
        stage, _, name = key.partition("/")
        by_name[name if stage in ("train", "val", "test") else stage].append(key)
    figures = []
    for name, keys in by_name.items():
        figure, axes = plt.subplots(figsize=(6, 3.2))
        for key in keys:
            steps, values = zip(*curves[key], strict=True)
            axes.plot(steps, values, marker="." if len(steps) < 30 else None, label=key)
        axes.set(xlabel="step", title=name)
        axes.legend()
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
        plt.close(figure)
        figures.append((name, buffer.getvalue()))
    return figures


def latest_pictures(run_dir: Path) -> list[tuple[str, bytes]]:
    """The last image of each kind in <run>/images (their names end in _epochNNN.png)."""
    latest: dict[str, Path] = {}
    for path in sorted((run_dir / "images").glob("*.png")):
        latest[path.stem.rsplit("_epoch", 1)[0]] = path  # sorted: the last epoch wins
    return [(f"{kind} ({path.name})", path.read_bytes()) for kind, path in latest.items()]


def latest_texts(run_dir: Path, count: int = 3) -> list[tuple[str, str]]:
    """The last `count` text samples in <run>/samples."""
    return [(path.name, path.read_text()) for path in sorted((run_dir / "samples").glob("*.txt"))[-count:]]


def render(run_dir: Path) -> str:
    """The report's HTML."""
    metrics = read_metrics(run_dir / "metrics.json")
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else "(no config.yaml)"

    def image(title: str, png: bytes) -> str:
        data = base64.b64encode(png).decode()
        return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(title)}">' \
               f"<figcaption>{html.escape(title)}</figcaption></figure>"  # fmt: skip

    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.6g}</td></tr>" for k, v in sorted(metrics.items()))
    table = f'<table id="metrics"><tr><th>metric</th><th>value</th></tr>{rows}</table>'
    sections = [
        f"<h1>{html.escape(run_dir.parent.parent.name)}: {html.escape(run_dir.name)}</h1>",
        "<h2>Final metrics</h2>",
        table if rows else "<p>No metrics.json</p>",
        "<h2>Curves</h2>",
        "".join(image(name, png) for name, png in plot_curves(read_curves(run_dir))) or "<p>No CSV log</p>",
    ]
    pictures, texts = latest_pictures(run_dir), latest_texts(run_dir)
    if pictures:
        sections += ["<h2>Pictures</h2>", "".join(image(title, png) for title, png in pictures)]
    if texts:
        sections.append("<h2>Text samples</h2>")
        sections += [f"<h3>{html.escape(name)}</h3><pre>{html.escape(text)}</pre>" for name, text in texts]
    sections += ["<h2>Config</h2>", f"<pre>{html.escape(config)}</pre>"]
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(run_dir.name)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")  # fmt: skip


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


def write_report(run_dir: Path) -> Path:
    """Write <run_dir>/report.html (through a temporary file, so a failure leaves no half page)."""
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir={run_dir}: not a folder (give the folder of a run: outputs/<task>/runs/<run>)")
    if not (run_dir / "config.yaml").is_file() and not (run_dir / "metrics.json").is_file():
        raise ConfigError(f"{run_dir}: not a run folder (no config.yaml or metrics.json from python -m src.train)")
    page = render(run_dir)
    path = run_dir / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    log.info(f"Wrote {path}")
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    write_report(Path(cfg.run_dir))


if __name__ == "__main__":
    main()
