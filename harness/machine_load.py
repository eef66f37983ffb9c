"""One load at a time on this machine: a load generator runs alone, a check with a time bound
runs while no load generator does.

Two cores are shared by everything a run does: a 512-connection burst, an httperf replay or an
image build beside a check that holds a latency or a rate to a bound made that check fail on a
correct stack. Every test process on the machine (pytest-xdist's workers, and any other
`make test`) takes the same lock (a file in the system's temporary folder, through
`fcntl.flock`, so a process that dies releases it), by the test's mark (tests/scheduling.py):

- `exclusive(what)`: a load generator (or an image build) waits until nothing else holds the
  lock, then holds it alone;
- `timed(what)`: a check with a latency, rate or wall-clock bound shares it with other such
  checks (their own traffic is bounded and light), never with a load generator.

A waiting `exclusive` goes first: every taker passes a turnstile (a second lock file) that the
waiter holds, so a stream of `timed` checks on other workers cannot starve it. Inside a held
lock, a nested request proceeds under it, in this process or a child it starts (HELD, in the
environment); a load inside a `timed` hold is an error (the test should be marked `load`). A
tool that runs loads between idle steps (scripts/bench.py) holds the lock per load itself; a
check whose bound lies behind it before its block ends lets the lock go there (`release()`).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_DIR = Path(os.environ.get("FLASK_STACKS_LOCK_DIR", tempfile.gettempdir()))
LOCK = LOCK_DIR / "flask-stacks-load.lock"
TURNSTILE = LOCK_DIR / "flask-stacks-load.turnstile"
WAIT_NOTE = 5  # seconds of waiting after which the wait is reported on stderr
NAMES = {fcntl.LOCK_EX: "exclusive", fcntl.LOCK_SH: "timed"}
MODES = {name: mode for mode, name in NAMES.items()}

HELD = "FLASK_STACKS_LOAD_LOCK_HELD"  # set while held, to the mode: children inherit the hold
_held = threading.local()  # how deep this thread is inside a held lock, and in which mode


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _hold(mode: int, what: str) -> Iterator[float]:
    """Hold the machine's load lock in `mode`; yields the seconds spent waiting for it."""
    outer = _held.mode if getattr(_held, "depth", 0) else MODES.get(os.environ.get(HELD, ""))
    if outer is not None:
        if mode == fcntl.LOCK_EX and outer == fcntl.LOCK_SH:
            raise RuntimeError(f"{what}: a load inside a timed check; mark the test `load`")
        _held.depth = getattr(_held, "depth", 0) + 1
        _held.mode = outer
        try:
            yield 0.0
        finally:
            _held.depth -= 1
        return
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(LOCK, "a") as handle:
        with _flock(TURNSTILE, fcntl.LOCK_EX):
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"machine_load: {what} waits for the load lock", file=sys.stderr)
                fcntl.flock(handle, mode)
        waited = time.monotonic() - started
        if waited > WAIT_NOTE:
            print(f"machine_load: {what} waited {waited:.0f} s", file=sys.stderr)
        _held.depth, _held.mode, _held.handle = 1, mode, handle
        os.environ[HELD] = NAMES[mode]
        try:
            yield waited
        finally:
            _let_go(handle)  # a second time after release(): a no-op


def _let_go(handle) -> None:
    """This thread no longer holds the lock (nor do the children it starts from now on)."""
    _held.depth, _held.handle = 0, None
    os.environ.pop(HELD, None)
    fcntl.flock(handle, fcntl.LOCK_UN)


def release() -> None:
    """End this thread's hold before the block that took it ends: a check whose bound lies
    behind it lets a waiting load start while it puts its stack back. Only an outermost hold
    ends so (a nested one belongs to its outer block)."""
    handle = getattr(_held, "handle", None)
    if handle is None or _held.depth != 1:
        raise RuntimeError("release(): this thread holds no load lock of its own to end")
    _let_go(handle)


def exclusive(what: str):
    """A load generator (or a build): runs with nothing else under the lock."""
    return _hold(fcntl.LOCK_EX, what)


def timed(what: str):
    """A check with a time bound: runs beside other such checks, never beside a load."""
    return _hold(fcntl.LOCK_SH, what)


def main(argv: list[str]) -> int:
    """`python -m harness.machine_load COMMAND...`: run a command holding the lock alone, so
    that a CPU-heavy step beside a test run (.ci/run's lint) waits for no timed check to be
    running and none starts until it ends. Returns the command's exit code."""
    if not argv:
        print("usage: python -m harness.machine_load COMMAND [ARG...]", file=sys.stderr)
        return 2
    with exclusive(" ".join(argv)):
        return subprocess.call(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
