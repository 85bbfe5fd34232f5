"""`hydra.sweeper.n_workers=N`: N sweep processes on this machine share one study, exactly as N machines do.

Each worker is the user's own command again (same overrides), pointed at the parent's sweep folder and
storage, with its share of the CPU threads and, on a machine with GPUs, one GPU (round-robin, so that
several trials share a GPU when there are more workers than GPUs). Processes, not threads: a trial that
crashes or is killed takes only its worker with it, and the others fail and retry its trial through
the study's heartbeats.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence

WORKER_ENV = "GENLAB_SWEEP_WORKER"  # "<i>/<N>" in a worker's environment: the parent holds the folder and writes
# the results


def worker_environment(index: int, n_workers: int, total_threads: int, gpus: Sequence[str]) -> dict[str, str]:
    """What worker `index` (from 0) adds to its environment: its share of the torch threads, and its GPU."""
    threads = str(max(1, total_threads // n_workers))
    environment = {WORKER_ENV: f"{index + 1}/{n_workers}", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if gpus:
        environment["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    return environment


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (all of them when it is not set)."""
    import torch  # here, not at the top: Hydra imports every plugin module at start-up, also for src.sweep_summary

    count = torch.cuda.device_count()  # asks the driver without creating a CUDA context
    listed = [name.strip() for name in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if name.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def worker_command(argv: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """The sweep's own command line (`sys.orig_argv`), with `overrides` in place of any it gave for the same keys."""
    keys = {override.partition("=")[0] for override in overrides}
    return [*(arg for arg in argv if arg.lstrip("+~").partition("=")[0] not in keys), *overrides]


def run_workers(command: Sequence[str], environments: Sequence[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Start one worker per environment and wait for all; return their exit codes and the signals forwarded.

    Each worker has its own session, so that a Ctrl-C in the terminal reaches only this process, which
    forwards it once to each worker (twice would abort the checkpoint a worker writes on the first);
    SIGTERM is forwarded the same way.
    """
    workers: list[subprocess.Popen] = []
    forwarded: list[int] = []

    def forward(signum: int, frame: object) -> None:
        forwarded.append(signum)
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        for environment in environments:
            workers.append(subprocess.Popen(command, env={**os.environ, **environment}, start_new_session=True))
            if forwarded:  # a signal that came while the workers were starting reaches the late ones too
                workers[-1].send_signal(forwarded[0])
        return [worker.wait() for worker in workers], forwarded
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def describe_exit(code: int) -> str:
    """`exit code 1`, or `SIGKILL` for a process ended by a signal (a negative code from subprocess)."""
    if code < 0 and -code in signal.valid_signals():
        return signal.Signals(-code).name
    return f"exit code {code}"
