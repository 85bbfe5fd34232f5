"""Signals outside the Trainer's calls: SIGINT and SIGTERM end a command at once, with one `interrupted:` line and
128 + the signal's number, wherever they land (the Trainer's calls: genlab/callbacks/interrupt.py).

Three ways a signal used to be lost or mislabelled, and what closes each:
- a window with no handler of genlab's (Hydra composing the config before the entry point's first phase; between
  two phases): `signals_end_the_command` installs one for the whole command, and every swap of handlers holds the
  signals back until it is done (`handling`), so that one landing meanwhile reaches the handler then in place;
- a stop asked for but checked late: Lightning checks its flag only between two batches, and a slow step (a compile
  on the first test batch) held the stop for its whole length: outside fit nothing waits for a safe point;
- an interruption taken for an error: RunInterrupted is a BaseException, which no `except Exception` turns into
  exit code 1 (genlab/errors.py).
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

from genlab.errors import RunInterrupted

T = TypeVar("T")


@contextlib.contextmanager
def interruptible(phase: str, how_to_go_on: str) -> Iterator[None]:
    """Outside the Trainer (loading, scoring samples, generating, writing): SIGINT and SIGTERM end the block at once
    as RunInterrupted, even in a process started with SIGINT ignored (a shell script's background job)."""

    def interrupt(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        raise RunInterrupted(f"{name} during {phase}; nothing was written. {how_to_go_on}", exit_code=128 + signum)

    with handling({signal.SIGINT: interrupt, signal.SIGTERM: interrupt}):
        yield


def signals_end_the_command(command: Callable[..., T]) -> Callable[..., T]:
    """An entry point's `main`, whole: from before Hydra composes its config to the end, a signal that lands where
    no phase of its own handles it (Hydra's start-up, between two phases) ends the command at once with the one
    `interrupted:` line and 128 + its number, not Python's KeyboardInterrupt traceback (nor nothing at all, in a
    process started with SIGINT ignored). Python's imports before it remain Python's."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs) -> T:
        try:
            start_up = "Hydra's start-up (composing the config, making the run folder)"
            with interruptible(start_up, "Run the same command again"):
                return command(*args, **kwargs)
        except RunInterrupted as err:  # from the block's own handler: the entry point's phases report theirs
            print(f"interrupted: {err}", file=sys.stderr)
            raise SystemExit(err.exit_code) from None

    return wrapper


@contextlib.contextmanager
def handling(handlers: dict[signal.Signals, Callable[[int, object], None]]) -> Iterator[None]:
    """`handlers` in place for the block, and the previous ones again after it.

    Each swap is made with those signals blocked: a signal that lands meanwhile waits, and reaches the handler in
    place once the swap is done (Python runs it as the mask is lifted), never a half-restored pair.
    """
    previous: dict[signal.Signals, object] = {}
    try:
        _swap(handlers, replaced=previous)
        yield
    finally:
        _swap(previous)


def _swap(handlers: dict[signal.Signals, object], replaced: dict | None = None) -> None:
    held = signal.pthread_sigmask(signal.SIG_BLOCK, handlers)
    try:
        for signum, handler in handlers.items():
            before = signal.signal(signum, handler)
            if replaced is not None:  # recorded as it goes: a signal taken by the old handler leaves these to undo
                replaced[signum] = before
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
