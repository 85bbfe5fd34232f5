"""The one way benchmarks and tests start a genlab command: `python -m <module> <arguments>` from the repository root,
with this interpreter and this environment (plus what the caller adds), as users run it. Standard library only: the GPU
suite imports it on a lent machine too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command_line(module: str, *arguments: str) -> list[str]:
    """`python -m <module> <arguments>` with this interpreter (the one whose packages the caller has)."""
    return [sys.executable, "-m", module, *arguments]


def start(
    module: str,
    arguments: Iterable[str] = (),
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    new_session: bool = False,
) -> subprocess.Popen:
    """The command, started from the repository root. Its output goes to the file `log` (stderr into it too), or,
    with none, to text pipes the caller reads; `env` adds to this process's variables; `new_session` puts it in a
    process group of its own, the one a terminal's Ctrl-C signals."""
    options = dict(cwd=ROOT, env={**os.environ, **(env or {})}, start_new_session=new_session)
    if log is None:
        return subprocess.Popen(
            command_line(module, *arguments), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options
        )
    log.parent.mkdir(parents=True, exist_ok=True)
    # a file, not a pipe, for a long run that nobody reads while it runs (a full pipe would block it); the child
    # keeps its own copy of the descriptor
    with log.open("w") as file:
        return subprocess.Popen(command_line(module, *arguments), stdout=file, stderr=subprocess.STDOUT, **options)


def run(
    module: str,
    arguments: Iterable[str] = (),
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """`start`, then wait for its end; past `timeout` seconds it is killed and TimeoutExpired raised, as with
    subprocess.run. stdout and stderr are None when the output went to `log`."""
    with start(module, arguments, log=log, env=env) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:  # past its time, or this process interrupted: no command left running behind it
            process.kill()
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


class CommandFailed(RuntimeError):
    """A command that exited non-zero or ran past its time; `output` is everything it printed."""

    def __init__(self, reason: str, output: str) -> None:
        super().__init__(reason)
        self.output = output


def run_logged(module: str, arguments: Iterable[str], log: Path, timeout: float | None = None) -> str:
    """`run` with its output in `log`: the output, or CommandFailed naming the line that says why."""
    try:
        result = run(module, arguments, log=log, timeout=timeout)
        failure = f"exit code {result.returncode}" if result.returncode else ""
    except subprocess.TimeoutExpired:
        failure = f"killed after its {timeout:.0f} s budget"
    output = log.read_text(errors="replace")
    if failure:
        raise CommandFailed(f"python -m {module}: {failure}: {error_line(output)} (log: {log})", output)
    return output


def error_line(output: str) -> str:
    """The line of a failed command's output that names its error (a Python exception, or genlab's `error: ...`)."""
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"(error: |[\w.]+(Error|Exception)\b)", line)]
    # else its last line: a command killed from outside (past its budget, out of memory) prints no error
    return (errors or lines or ["no output"])[-1].strip()[:300]
