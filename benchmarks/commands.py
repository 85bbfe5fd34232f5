"""The benchmarks' way to run a genlab command: `python -m <module>` from the repository root, as users run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_module(module: str, overrides: list[str], log_path: Path) -> None:
    """`python -m <module> <overrides>` from the repository root, as users run it; its output goes to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        result = subprocess.run([sys.executable, "-m", module, *overrides], cwd=ROOT, stdout=log, stderr=log)
    if result.returncode:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if not line.startswith("Set the environment")), "")
        raise RuntimeError(f"python -m {module} exited {result.returncode}: {reason.strip()} (log: {log_path})")
