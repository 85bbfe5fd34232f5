"""`python -m src.report`: a self-contained HTML page of a run, checked in a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from src.train import train
from tests.conftest import TEST_OVERRIDES, compose_config
from tests.test_eval_sample import run_module


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import write_mnist_raw

    root = tmp_path_factory.mktemp("report")
    write_mnist_raw(root / "data" / "MNIST" / "raw")
    # a short run whose curves the report draws: every step logged
    overrides = [*TEST_OVERRIDES, "trainer.log_every_n_steps=1", "model=vae", "data=mnist", "data.val_size=100",
                 "data.batch_size=50",
                 f"paths.data_dir={root / 'data'}", "trainer.max_epochs=2"]  # fmt: skip
    train(compose_config(overrides, root / "run"))
    return root / "run"


def test_report_holds_metrics_curves_pictures_and_config(vae_run: Path) -> None:
    result = run_module("src.report", f"run_dir={vae_run}")
    assert result.returncode == 0, result.stderr[-3000:]
    page = (vae_run / "report.html").read_text()
    assert re.search(r"<tr><td>test/nelbo</td><td>[\d.]+</td></tr>", page)
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="([^"]+)"', page)
    # curves: loss, nelbo, recon, kl, bpd, lr-Adam; pictures: the latest of each grid the VAE draws
    assert {"nelbo", "kl", "lr-Adam"} <= set(images)
    assert {"reconstructions (reconstructions_epoch001.png)", "samples (samples_epoch001.png)"} <= set(images)
    assert "_target_: src.models.vae.VAE" in page  # the resolved config
    assert not list(vae_run.glob("*.tmp"))


def test_report_of_a_folder_that_is_no_run(tmp_path: Path) -> None:
    result = run_module("src.report", f"run_dir={tmp_path}")
    assert result.returncode == 1
    assert "not a run folder" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "report.html").exists()


def test_report_renders_in_headless_chromium(vae_run: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run installs it)")
    if not (vae_run / "report.html").is_file():
        assert run_module("src.report", f"run_dir={vae_run}").returncode == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    url = (vae_run / "report.html").as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    # the browser parsed the page: the metrics table and every embedded image are in its DOM
    assert '<table id="metrics">' in dom and "test/nelbo" in dom
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) >= 8
    screenshot = tmp_path / "page.png"
    subprocess.run([browser, *flags, f"--screenshot={screenshot}", "--window-size=1200,2400", url],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000
