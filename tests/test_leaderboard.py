"""`python -m benchmarks.leaderboard`: trains, scores and tabulates the families it is given, end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.leaderboard import COLUMNS, table_cells
from tests.helpers import run_module


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
    rows = [
        {"family": "vae", "fid": 9.0, "nll_bpd": 4.21, "nll_is_bound": True},
        {"family": "normalizing_flow", "fid": 30.0, "nll_bpd": 3.456, "nll_is_bound": False},
        {"family": "gan-bce", "fid": 12.0},
    ]
    column = [heading for heading, _, _ in COLUMNS].index("NLL (bits/dim)")
    assert [cells[column] for cells in table_cells(rows)] == ["≤ 4.210", "—", "3.456"]  # best FID first


def leaderboard(out: Path, budget_min: float, families: str) -> subprocess.CompletedProcess:
    return run_module(
        "benchmarks.leaderboard",
        "--budget",
        str(budget_min),
        "--families",
        families,
        "--num-samples",
        "500",
        "--curve-points",
        "2",
        "--likelihood-images",  # the VAE's bound: 5,000 decoder passes an image
        "10",
        "--accelerator",
        "cpu",
        "--out",
        str(out),
        timeout=900,
    )


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--budget", "nan"], "--budget"),
        (["--budget", "inf"], "--budget"),
        (["--budget", "-1"], "--budget"),
        (["--budget", "0"], "--budget"),
        (["--budget", "ten"], "--budget"),
        (["--num-samples", "nan"], "--num-samples"),
        (["--num-samples", "0"], "--num-samples"),
        (["--num-samples", "-5"], "--num-samples"),
        (["--num-samples", "1e3"], "--num-samples"),
        (["--curve-points", "0"], "--curve-points"),
        (["--curve-points", "inf"], "--curve-points"),
        (["--families", "vae,nope"], "--families"),
    ],
)
def test_a_bad_argument_is_refused_in_one_line_naming_it(
    arguments: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from benchmarks.leaderboard import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args([*arguments, "--out", str(tmp_path / "board")])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    expected = "error: --families: unknown nope" if named == "--families" else f"error: argument {named}: expected"
    assert len(lines) == 1 and lines[0].startswith(expected), captured.err
    assert captured.out == "" and not (tmp_path / "board").exists()


def test_the_defaults_write_under_outputs_and_size_the_sample_count_to_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.leaderboard import parse_args

    monkeypatch.chdir(tmp_path)
    args = parse_args([])
    assert args.out.parent == tmp_path / "outputs" / "leaderboard" and args.work == args.out
    assert args.num_samples == 10_000  # 10 minutes: FID's usual count
    assert [parse_args(["--budget", budget]).num_samples for budget in ("0.1", "2.5", "60")] == [1_000, 2_500, 10_000]
    assert parse_args(["--budget", "0.1", "--num-samples", "300"]).num_samples == 300  # a count given is kept
    assert not (tmp_path / "outputs").exists()  # made when the board starts, not when the arguments are read


def fake_family(name: str, entry, args) -> Path:
    """train(): a run folder, as if trained."""
    return args.work / "runs" / name


def fake_row(name: str, entry, run_dir: Path, metrics: dict, args) -> dict:
    from PIL import Image

    Image.new("L", (8, 8)).save(args.out / f"{name}.png")
    return {
        "family": name,
        "what": "samples",
        "fid": 12.5,
        "kid": 0.01,
        "is": 2.0,
        "parameters": 10,
        "curve": [(1.0, 20.0)],
        "picture": f"{name}.png",
    }


def test_progress_is_said_per_family_and_ctrl_c_stops_with_one_line_keeping_the_board(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import benchmarks.leaderboard as leaderboard

    def evaluate(name: str, run_dir: Path, args) -> dict:
        if name == "gan-bce":  # Ctrl-C while the second family is scored
            raise KeyboardInterrupt
        return {}

    monkeypatch.setattr(leaderboard, "train", fake_family)
    monkeypatch.setattr(leaderboard, "evaluate", evaluate)
    monkeypatch.setattr(leaderboard, "row", fake_row)
    out = tmp_path / "board"
    monkeypatch.setattr(
        sys,
        "argv",
        ["leaderboard", "--families", "vae,gan-bce,flow", "--budget", "0.5", "--out", str(out), "--accelerator", "cpu"],
    )
    with pytest.raises(SystemExit) as exit_info:
        leaderboard.main()
    assert exit_info.value.code == 130
    captured = capsys.readouterr()
    assert captured.err == f"interrupted: at gan-bce; the board of the 1 done is {out / 'leaderboard.md'}\n"
    progress = [line for line in captured.out.splitlines() if line.startswith("[")]
    assert progress == [
        f"[1/3] vae: training for 0.5 min (log: {out / 'logs' / 'vae-train.log'})",
        f"[1/3] vae: scoring 1,000 images (log: {out / 'logs' / 'vae-eval.log'})",
        progress[2],
        f"[2/3] gan-bce: training for 0.5 min (log: {out / 'logs' / 'gan-bce-train.log'})",
        f"[2/3] gan-bce: scoring 1,000 images (log: {out / 'logs' / 'gan-bce-eval.log'})",
    ]
    assert progress[2].startswith("[1/3] vae: FID 12.50 (")
    board = json.loads((out / "leaderboard.json").read_text())
    assert [row["family"] for row in board["rows"]] == ["vae"] and board["num_samples"] == 1_000
    assert "at 0.5 training minutes" in (out / "leaderboard.md").read_text()
