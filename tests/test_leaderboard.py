"""`python -m benchmarks.leaderboard`: trains, scores and tabulates the families it is given, end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.leaderboard import COLUMNS, table_cells
from tests.conftest import ROOT


@pytest.mark.slow  # about a minute on 2 CPU cores: two trainings of seconds, and src.eval of each
def test_board_of_two_families_is_written_with_curves_and_pictures(tmp_path: Path, fashion_mnist_dir: Path) -> None:
    out = tmp_path / "board"
    budget_min = 0.1  # 6 s of training each
    result = leaderboard(out, budget_min, "autoencoder,vae")
    assert result.returncode == 0, result.stderr[-3000:]
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["failures"] == {} and [row["family"] for row in board["rows"]] == ["autoencoder", "vae"]
    for row in board["rows"]:
        assert math.isfinite(row["fid"]) and row["fid"] >= 0 and row["parameters"] > 0
        assert (out / row["picture"]).is_file()
    autoencoder, vae = board["rows"]
    assert autoencoder["what"] == "reconstructions" and autoencoder["sample_images_per_s"] is None
    assert vae["what"] == "samples" and vae["nll_bpd"] > 0 and vae["nll_is_bound"] and vae["sample_images_per_s"] > 0
    # FID during training, against training seconds that grow and stop at the budget (a batch's worth past it)
    seconds = [point[0] for point in vae["curve"]]
    assert len(seconds) >= 2 and seconds == sorted(seconds) and seconds[-1] < budget_min * 60 + 2
    table = (out / "leaderboard.md").read_text()
    assert "| family | scored | FID ↓ |" in table and "| vae | samples |" in table
    page = (out / "leaderboard.html").read_text()
    assert page.count('class="picture"') == 2 and "FID during training" in page
    assert (out / "fid_curves.png").is_file()
    # a second board into the same folder scores its own runs, beside the first board's
    result = leaderboard(out, budget_min, "autoencoder")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((out / "runs" / "autoencoder" / "runs").iterdir())) == 2


def test_nll_column_marks_a_bound_and_leaves_an_exact_nll_plain() -> None:
    rows = [{"family": "vae", "fid": 9.0, "nll_bpd": 4.21, "nll_is_bound": True},
            {"family": "normalizing_flow", "fid": 30.0, "nll_bpd": 3.456, "nll_is_bound": False},
            {"family": "gan-bce", "fid": 12.0}]  # fmt: skip
    column = [heading for heading, _, _ in COLUMNS].index("NLL (bits/dim)")
    assert [cells[column] for cells in table_cells(rows)] == ["≤ 4.210", "—", "3.456"]  # best FID first


def leaderboard(out: Path, budget_min: float, families: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.leaderboard", "--budget", str(budget_min), "--families", families,
         "--num-samples", "500", "--curve-points", "2", "--accelerator", "cpu", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
