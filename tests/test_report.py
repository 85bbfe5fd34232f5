"""`python -m src.report`: HTML pages of a run and of several runs, checked in a real headless browser."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from genlab.curve_plots import comparison_panels, run_colors, run_panels
from genlab.report import write_report
from tests.helpers import run_module, run_train, write_mnist_raw

IMAGE_ALT = re.compile(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="([^"]+)"')


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grid sweep of two short VAE runs, started as a user starts one (so Hydra records their overrides): job 0
    logs to CSV, job 1 to TensorBoard only; every step logged, so that there are curves to draw."""
    root = tmp_path_factory.mktemp("report")
    write_mnist_raw(root / "data" / "MNIST" / "raw")
    result = run_train(
        "-m",
        "logger=csv,tensorboard",
        "model=vae",
        "data=mnist",
        "data.val_size=100",
        "data.batch_size=50",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.log_every_n_steps=1",
        "extras.print_config=false",
        f"paths.data_dir={root / 'data'}",
        f"paths.log_dir={root}",
        f"hydra.sweep.dir={root / 'sweep'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "sweep"


@pytest.mark.integration
def test_report_of_a_run(sweep: Path) -> None:
    result = run_module("src.report", f"run_dir={sweep / '0'}")
    assert result.returncode == 0, result.stderr[-3000:]
    page = (sweep / "0" / "report.html").read_text()
    overrides = re.search(r'<p id="overrides">(.*?)</p>', page).group(1)  # at the top, before the metrics
    assert "<code>logger=csv</code>" in overrides and "<code>model=vae</code>" in overrides
    assert page.index('id="overrides"') < page.index('id="metrics"')
    # the VAE's loss equals its negative ELBO (beta = 1): one row, one panel, named both ways
    assert re.search(r"<tr><td>test/loss \(= test/nelbo\)</td><td>[\d.]+</td></tr>", page)
    images = IMAGE_ALT.findall(page)
    assert {"loss (= nelbo)", "kl", "recon", "learning rate"} <= set(images) and "nelbo" not in images
    assert {"reconstructions (reconstructions_epoch001.png)", "samples (samples_epoch001.png)"} <= set(images)
    # each picture with the caption its callback wrote into the file
    assert "Each band between grey lines: top row: validation images; below: their reconstructions." in page
    assert "generated from the same fixed noise at every epoch" in page
    assert "_target_: genlab.models.vae.VAE" in page  # the resolved config
    assert not list((sweep / "0").glob("*.tmp"))


def test_report_reads_tensorboard_when_a_run_has_no_csv_log(sweep: Path) -> None:
    assert not (sweep / "1" / "csv").exists()
    page = write_report(sweep / "1").read_text()
    assert "From TensorBoard events in tensorboard/" in page
    assert {"loss (= nelbo)", "kl", "learning rate"} <= set(IMAGE_ALT.findall(page))


def test_report_of_a_sweep_compares_its_runs(sweep: Path) -> None:
    page = write_report(sweep).read_text()
    assert "<h1>2 runs in " in page
    shared = re.search(r'<p id="overrides">(.*?)</p>', page).group(1)
    assert "<code>model=vae</code>" in shared and "logger" not in shared
    table = re.search(r'<table id="runs">(.*?)</table>', page).group(1)
    rows = re.findall(r"<tr><td><span class=\"swatch\".*?</tr>", table)
    assert len(rows) == 2  # one per run, with what sets it apart and its final metrics
    assert "<code>logger=csv</code>" in rows[0] and "<code>logger=tensorboard</code>" in rows[1]
    assert all(len(re.findall(r"<td>\d[\d.e+-]*</td>", row)) >= 5 for row in rows)
    assert "<th>test/loss (= test/nelbo)</th>" in table
    images = set(IMAGE_ALT.findall(page))
    assert {"val/loss (= val/nelbo)", "train/kl", "lr-Adam"} <= images and not any("test/" in i for i in images)


def test_comparison_gives_each_run_one_colour_and_its_own_legend() -> None:
    first = {"val/loss": [(9, 2.0), (19, 1.5)], "lr-AdamW/pg1": [(0, 1e-3)], "lr-AdamW/pg2": [(0, 0.0)]}
    second = {"val/loss": [(9, 2.5), (19, 1.0)], "lr-AdamW/pg1": [(0, 3e-3)], "lr-AdamW/pg2": [(0, 0.0)]}
    colors = run_colors(2)
    panels = {panel.title: panel for panel in comparison_panels([("lr=1e-3", first), ("lr=3e-3", second)], colors)}
    assert list(panels) == ["val/loss", "lr-AdamW/pg1", "lr-AdamW/pg2"]
    for panel in panels.values():
        assert [(line.label, line.color) for line in panel.lines] == [("lr=1e-3", colors[0]), ("lr=3e-3", colors[1])]
    assert len(set(colors)) == 2


def test_learning_rate_groups_share_a_panel_and_identical_series_are_drawn_once() -> None:
    curves = {
        "train/loss": [(0, 3.0), (1, 2.0)],
        "train/nelbo": [(0, 3.0), (1, 2.0)],
        "train/kl": [(0, 1.0), (1, 0.5)],
        "lr-AdamW/pg1": [(0, 1e-3), (1, 5e-4)],
        "lr-AdamW/pg2": [(0, 2e-3), (1, 1e-3)],
        "lr-Adam-1": [(0, 1e-3)],
    }
    panels = {panel.title: [line.label for line in panel.lines] for panel in run_panels(curves)}
    assert panels == {
        "loss (= nelbo)": ["train/loss (= train/nelbo)"],
        "kl": ["train/kl"],
        "learning rate": ["lr-Adam-1", "lr-AdamW/pg1", "lr-AdamW/pg2"],  # one panel, each group its own line
    }


def test_long_text_is_kept_whole_and_small_pictures_are_enlarged(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("task_name: gpt\n")
    (tmp_path / "samples").mkdir()
    text = "ROMEO: " + "thou " * 600  # 3,000 characters on one line
    (tmp_path / "samples" / "step_000100.txt").write_text(text)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (242, 122)).save(tmp_path / "images" / "samples_epoch000.png")  # 28 px tiles, no caption
    page = write_report(tmp_path).read_text()
    assert f"<pre>{text}</pre>" in page and "white-space:pre-wrap" in page  # wrapped by the browser, not cut
    assert 'width="484" class="picture"' in page and "image-rendering:pixelated" in page
    assert "No curves: the run has no CSV log" in page and "Overrides: not recorded" in page


@pytest.mark.integration
def test_report_of_a_folder_that_is_no_run(tmp_path: Path) -> None:
    result = run_module("src.report", f"run_dir={tmp_path}")
    assert result.returncode == 1
    assert "not a run folder" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "report.html").exists()


@pytest.mark.integration
@pytest.mark.parametrize("folder", ["0", "."], ids=["run", "comparison"])
def test_report_renders_in_headless_chromium(sweep: Path, tmp_path: Path, folder: str) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run installs it)")
    report = (sweep / folder / "report.html").resolve()
    if not report.is_file():  # when this test runs alone
        write_report(report.parent)
    # a copy that writes, once laid out, the page's width into the DOM: nothing may push it wider than the window
    probe = tmp_path / "probe.html"
    script = "<script>document.body.dataset.width = document.documentElement.scrollWidth</script>"
    without_policy = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", report.read_text())  # runs none
    probe.write_text(without_policy.replace("</body>", f"{script}</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    size = "--window-size=1200,2400"
    dump = [browser, *flags, size, "--dump-dom", probe.as_uri()]
    dom = subprocess.run(dump, capture_output=True, text=True, timeout=120).stdout
    # the browser parsed the page: the tables and every embedded image are in its DOM
    assert ('<table id="metrics">' if folder == "0" else '<table id="runs">') in dom and "test/loss" in dom
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) >= 8
    assert int(re.search(r'data-width="(\d+)"', dom).group(1)) <= 1200, "the page is wider than the window"
    screenshot = tmp_path / "page.png"
    subprocess.run(
        [browser, *flags, size, f"--screenshot={screenshot}", report.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000


def a_run(folder: Path) -> Path:
    """A run folder with one file of each kind that src.report reads, all whole."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("- model=vae\n- seed=1\n")
    (folder / "config.yaml").write_text("task_name: vae\nseed: 1\n")
    (folder / "metrics.json").write_text('{"test/loss": 1.25}\n')
    (folder / "csv").mkdir()
    (folder / "csv" / "metrics.csv").write_text("epoch,step,val/loss\n0,9,1.5\n0,19,1.2345\n")
    (folder / "samples").mkdir()
    (folder / "samples" / "step_000100.txt").write_text("ROMEO: thou art\n")
    (folder / "images").mkdir()
    Image.new("RGB", (242, 122)).save(folder / "images" / "samples_epoch000.png")
    return folder


def cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


NOT_UTF8 = b"\xff\xfe\x80 not UTF-8"
# (file, how it is damaged): the report refuses the run with one line naming the file
REFUSED = {
    "metrics.json cut": ("metrics.json", lambda p: cut(p, 10)),
    "metrics.json not UTF-8": ("metrics.json", lambda p: p.write_bytes(NOT_UTF8)),
    "overrides.yaml malformed": (".hydra/overrides.yaml", lambda p: p.write_text("- model=vae\n- [seed: 1\n")),
    "overrides.yaml not a list": (".hydra/overrides.yaml", lambda p: p.write_text("model: vae\n")),
    "overrides.yaml not UTF-8": (".hydra/overrides.yaml", lambda p: p.write_bytes(NOT_UTF8)),
    "metrics.csv not UTF-8": ("csv/metrics.csv", lambda p: p.write_bytes(b"epoch,step,val/loss\n0,9,\xff\n")),
    "metrics.csv not numbers": ("csv/metrics.csv", lambda p: p.write_text("epoch,step,val/loss\n0,9,abc\n")),
}
# the report is written, with a warning at its top naming the file
WARNED = {
    "metrics.csv cut inside a number": ("csv/metrics.csv", lambda p: cut(p, len(p.read_bytes()) - 3)),
    "sample text not UTF-8": ("samples/step_000100.txt", lambda p: p.write_bytes(b"ROMEO: \xe2\x80")),
    "picture cut": ("images/samples_epoch000.png", lambda p: cut(p, 60)),
    "picture not a PNG": ("images/samples_epoch000.png", lambda p: p.write_text("<html>")),
    "config.yaml malformed": ("config.yaml", lambda p: p.write_text("task_name: [vae\n")),
    "config.yaml not UTF-8": ("config.yaml", lambda p: p.write_bytes(NOT_UTF8)),
}


def run_report_main(run_dir: Path) -> None:
    """src.report's main as the command line runs it, less Hydra's start (its callback is tested elsewhere)."""
    from omegaconf import OmegaConf

    from genlab.report import main

    main.__wrapped__(OmegaConf.create({"run_dir": str(run_dir)}))


@pytest.mark.parametrize("case", REFUSED)
def test_a_damaged_file_that_the_report_needs_is_refused_in_one_line(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture
) -> None:
    run_dir = a_run(tmp_path / "run")
    name, damage = REFUSED[case]
    damage(run_dir / name)
    with pytest.raises(SystemExit) as exit_info:
        run_report_main(run_dir)
    line = exit_info.value.code
    assert isinstance(line, str) and "\n" not in line and line.startswith(f"error: {run_dir / name}"), line
    assert capsys.readouterr().err == ""
    assert not (run_dir / "report.html").exists() and not list(run_dir.glob("*.tmp"))


@pytest.mark.parametrize("case", WARNED)
def test_a_damaged_file_that_the_report_can_do_without_is_shown_as_a_warning(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = a_run(tmp_path / "run")
    name, damage = WARNED[case]
    damage(run_dir / name)
    run_report_main(run_dir)
    page = (run_dir / "report.html").read_text()
    warning = re.search(r'<div id="warnings"><b>Files read in part</b><ul><li>(.*?)</li></ul></div>', page)
    assert warning and warning.group(1).startswith(str(run_dir / name)), page[:2000]
    assert page.index('id="warnings"') < page.index('id="overrides"')  # at the top, under the title
    said = [html.escape(r.getMessage()) for r in caplog.records if r.levelname == "WARNING"]
    assert said == [warning.group(1)]  # and said on the console


def test_a_csv_cut_inside_a_number_drops_that_row_instead_of_reading_a_shorter_number(tmp_path: Path) -> None:
    from genlab.run_logs import PartlyRead, read_curves

    run_dir = a_run(tmp_path / "run")
    cut(run_dir / "csv" / "metrics.csv", len((run_dir / "csv" / "metrics.csv").read_bytes()) - 3)  # "...,1.23"
    with pytest.warns(PartlyRead, match="its last line is cut short"):
        curves, _ = read_curves(run_dir)
    assert curves == {"val/loss": [(9, 1.5)]}  # not (19, 1.23)


# a run folder's names are whoever made it's: runs named to run a script, metrics named to break matplotlib's mathtext
HOSTILE_RUNS = ["javascript:alert(1)", "<img src=x onerror=alert(2)>", 'a&b "c" #d?e']
HOSTILE_METRIC = "train/$\\undefinedcmd{$"


def hostile_folder(folder: Path) -> Path:
    """A folder of runs with hostile names, each logging a metric whose name matplotlib would read as mathtext."""
    for name in HOSTILE_RUNS:
        run = a_run(folder / name)
        (run / "metrics.json").write_text(f'{{"test/loss": 1.25, "{HOSTILE_METRIC.replace(chr(92), chr(92) * 2)}": 2}}')
        (run / "csv" / "metrics.csv").write_text(f'step,val/loss,"{HOSTILE_METRIC}"\n9,1.5,2.0\n19,1.25,1.5\n')
        write_report(run)  # the comparison links to each run's own report
    return folder


def start_tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    """(tag, attributes) of each element of an HTML page, as a browser's parser finds them."""
    from html.parser import HTMLParser

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list) -> None:
            found.append((tag, dict(attrs)))

    found: list[tuple[str, dict[str, str | None]]] = []
    Tags().feed(page)
    return found


def test_a_hostile_folder_makes_a_page_of_plain_text_and_links_below_it_only(tmp_path: Path) -> None:
    from urllib.parse import unquote, urlsplit

    folder = hostile_folder(tmp_path / "runs")
    page = write_report(folder).read_text()

    tags = start_tags(page)
    hrefs = [attrs["href"] for tag, attrs in tags if tag == "a"]
    assert len(hrefs) == len(HOSTILE_RUNS)
    for href in hrefs:  # no scheme, no host: a path below the folder, to a run's own report
        parts = urlsplit(href)
        assert (parts.scheme, parts.netloc, parts.query, parts.fragment) == ("", "", "", ""), href
        target = (folder / unquote(parts.path)).resolve()
        assert target.is_relative_to(folder.resolve()) and target.name == "report.html" and target.is_file(), href
    assert all(attrs["src"].startswith("data:image/png;base64,") for tag, attrs in tags if tag == "img")
    page_tags = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "div", "table", "tr", "th", "td"}
    assert {tag for tag, _ in tags} <= page_tags | {"span", "a", "code", "figure", "img"}  # none of the names'
    assert html.escape(HOSTILE_METRIC) in page and html.escape(HOSTILE_RUNS[1]) in page
    # the metric's curve was drawn, in the comparison and in each run's own page: its name as written, not mathtext
    assert HOSTILE_METRIC in IMAGE_ALT.findall(page)
    assert HOSTILE_METRIC.partition("/")[2] in IMAGE_ALT.findall((folder / HOSTILE_RUNS[0] / "report.html").read_text())


def chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run installs it)")
    return browser


def dom_of(page: Path, profile: Path) -> str:
    """The page's DOM once headless Chromium has loaded it (and run what scripts it allows)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", "--dump-dom"]
    return subprocess.run([chromium(), *flags, page.as_uri()], capture_output=True, text=True, timeout=120).stdout


@pytest.mark.integration
def test_a_hostile_folder_is_safe_to_open_in_headless_chromium(tmp_path: Path) -> None:
    folder = hostile_folder(tmp_path / "runs")
    report = write_report(folder)
    dom = dom_of(report, tmp_path / "profile")
    assert '<table id="runs">' in dom and HOSTILE_METRIC in dom  # the page as the browser built it
    assert not any("onerror" in attrs for _, attrs in start_tags(dom)), "a name became an element"
    # every link as the browser resolves it: a file below the folder. Read by a script in a copy of the page without
    # its Content-Security-Policy (which runs none)
    probe = tmp_path / "runs" / "probe.html"
    script = "<script>document.body.dataset.links = JSON.stringify([...document.links].map(a => a.href))</script>"
    without_policy = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", report.read_text())
    probe.write_text(without_policy.replace("</body>", f"{script}</body>"))
    links = re.search(r'data-links="([^"]*)"', dom_of(probe, tmp_path / "profile"))
    resolved = json.loads(html.unescape(links.group(1)))
    assert len(resolved) == len(HOSTILE_RUNS)
    assert all(link.startswith(folder.resolve().as_uri() + "/") and link.endswith("/report.html") for link in resolved)
    # and the policy holds: a script that escaping had let through does not run
    probe.write_text(report.read_text().replace("</body>", "<script>document.body.dataset.ran = 'yes'</script></body>"))
    assert "data-ran" not in dom_of(probe, tmp_path / "profile")
