"""`python -m benchmarks.gpu_suite`: every part runs (on the CPU, tiny, with --smoke) and the results are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.families import FAMILIES
from benchmarks.gpu_suite import PARTS
from tests.helpers import run_module


def run_suite(*arguments: str) -> dict:
    out = Path(arguments[arguments.index("--out") + 1])
    result = run_module("benchmarks.gpu_suite", *arguments, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "results.md").is_file()
    return json.loads((out / "results.json").read_text())


def test_parts_past_the_budget_are_skipped_and_say_why(tmp_path: Path) -> None:
    results = run_suite("--smoke", "--budget-s", "1", "--out", str(tmp_path))
    assert [part["part"] for part in results["parts"]] == [part.name for part in PARTS]
    for part in results["parts"]:
        assert part["status"] == "skipped"
        assert "would end past --budget-s 1" in part["reason"]
    assert "| gpt | skipped |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow  # about 2 minutes on 2 CPU cores: a dozen small trainings, 36 tiny ones, seven `python -m` commands
def test_smoke_run_has_every_part_ok_or_skipped_with_a_reason(
    tmp_path: Path, fashion_mnist_dir: Path, shakespeare_dir: Path
) -> None:
    results = run_suite("--smoke", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "runs"))
    assert [part["part"] for part in results["parts"]] == [part.name for part in PARTS]
    rows = [row for part in results["parts"] for row in part.get("rows", [])]  # the runs inside families, eval_sample
    for entry in [*results["parts"], *rows]:
        name = entry.get("part") or entry["run"]
        assert entry["status"] in ("ok", "skipped"), f"{name}: {entry['status']}: {entry.get('reason')}"
        assert entry["status"] == "ok" or entry["reason"], name
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert all(f"| {part.name} |" in markdown for part in PARTS)
    families = next(part for part in results["parts"] if part["part"] == "families")
    assert {row["run"] for row in families["rows"] if row["status"] == "ok"} >= {"ae / bf16-mixed", "gan-bce / 32"}
    assert (tmp_path / "runs" / "gpt" / "checkpoints" / "last.ckpt").is_file()
    # its efficiency part: `python -m benchmarks.gpu_efficiency --smoke` measures every family against its plain loop
    rows = json.loads((tmp_path / "out" / "efficiency" / "gpu_efficiency.json").read_text())["rows"]
    assert [(row["family"], row["batch_size"]) for row in rows] == [(f.name, b) for f in FAMILIES for b in (8, 16)]
    for row in rows:
        assert row["genlab_per_s"] > 0 and row["plain_per_s"] > 0 and row["ratio"] > 0
        assert row["genlab_peak_memory_bytes"] > 0 and row["plain_peak_memory_bytes"] > 0
    table = (tmp_path / "out" / "efficiency" / "gpu_efficiency.md").read_text()
    assert all(f"| {family.name} | 16 |" in table for family in FAMILIES)
