"""harness.machine_load across processes: a load excludes everything, timed checks share, a
waiting load is not starved, a nested hold proceeds."""

import os
import subprocess
import sys
import time

import pytest

from harness import machine_load

CHILD = """
import sys, time
from harness import machine_load
with getattr(machine_load, sys.argv[1])("child"):
    print(time.monotonic(), flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    """The lock files in a folder of this test's, where its child processes look too."""
    for name in ("LOCK", "TURNSTILE"):
        monkeypatch.setattr(machine_load, name, tmp_path / getattr(machine_load, name).name)
    return tmp_path


def child(lock_dir, mode: str, hold: float = 0.0, inherit: bool = False) -> subprocess.Popen:
    """Another process taking the lock: an independent one, or (`inherit`) a child of a holder."""
    env = {**os.environ, "FLASK_STACKS_LOCK_DIR": str(lock_dir)}
    if not inherit:
        env.pop(machine_load.HELD, None)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(hold)], env=env, stdout=subprocess.PIPE, text=True
    )


def entered(process: subprocess.Popen) -> float:
    out, _ = process.communicate(timeout=20)
    assert process.returncode == 0
    return float(out.split()[0])


@pytest.mark.parametrize(("held", "wanted"), [("exclusive", "timed"), ("timed", "exclusive")])
def test_a_load_and_a_timed_check_wait_for_each_other(lock_dir, held, wanted):
    with getattr(machine_load, held)("parent"):
        waiting = child(lock_dir, wanted)
        time.sleep(1)
        released = time.monotonic()
    assert entered(waiting) >= released


def test_timed_checks_share(lock_dir):
    with machine_load.timed("parent"):
        started = time.monotonic()
        assert entered(child(lock_dir, "timed")) - started < 5


def test_a_waiting_load_goes_before_later_timed_checks(lock_dir):
    with machine_load.timed("parent"):
        load = child(lock_dir, "exclusive", hold=2)
        time.sleep(1)  # the load now waits, holding the turnstile
        later = child(lock_dir, "timed")
        time.sleep(1)
    load_in, later_in = entered(load), entered(later)
    assert later_in >= load_in + 2, "a timed check overtook the waiting load"


def test_a_nested_hold_proceeds(lock_dir):
    with machine_load.exclusive("outer"), machine_load.timed("inner") as waited:
        assert waited == 0.0


def test_a_child_of_a_holder_runs_under_its_hold(lock_dir):
    """A `load` test's child process (a tool it runs) taking the lock: no deadlock."""
    with machine_load.exclusive("parent"):
        started = time.monotonic()
        assert entered(child(lock_dir, "exclusive", inherit=True)) - started < 5


def test_a_load_inside_a_timed_check_is_refused(lock_dir):
    refused = pytest.raises(RuntimeError, match="mark the test `load`")
    with machine_load.timed("check"), refused, machine_load.exclusive("wrk"):
        pass


def test_a_command_run_under_the_lock_excludes_timed_checks(lock_dir):
    """`python -m harness.machine_load COMMAND` (.ci/run's lint): a timed check waits for the
    command's end; the command's exit code is the module's."""
    env = {**os.environ, "FLASK_STACKS_LOCK_DIR": str(lock_dir)}
    env.pop(machine_load.HELD, None)
    command = subprocess.Popen(
        [sys.executable, "-m", "harness.machine_load", "sh", "-c", "sleep 2; exit 3"], env=env
    )
    time.sleep(1)
    waiting = child(lock_dir, "timed")
    assert command.wait(timeout=20) == 3
    ended = time.monotonic()
    assert entered(waiting) >= ended - 0.5


def test_a_released_hold_lets_a_waiting_load_in_before_its_block_ends(lock_dir):
    """A timed check whose bound is behind it (tests' `timed_part_over`): the load waiting for
    it starts then, not at the end of the check's block; the block's own end is then a no-op."""
    with machine_load.timed("check"):
        load = child(lock_dir, "exclusive")
        time.sleep(1)  # the load now waits
        machine_load.release()
        released = time.monotonic()
        assert entered(load) - released < 5
        assert machine_load.HELD not in os.environ  # a tool started now is not under a hold
    with pytest.raises(RuntimeError, match="no load lock of its own"):
        machine_load.release()


def test_only_an_outermost_hold_is_released(lock_dir):
    refused = pytest.raises(RuntimeError, match="no load lock of its own")
    with machine_load.timed("outer"), machine_load.timed("inner"), refused:
        machine_load.release()
