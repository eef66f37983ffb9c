"""How the tests run, beside what they use (conftest.py's fixtures): the order of the work
groups, which tests share an xdist worker, the machine's load lock, the selection by `--stack`
and by `APP`, and the time each group took. A pytest plugin: conftest.py loads it.

Each stack's checks, from every module, run together in one work group, so the stack starts
once; under pytest-xdist (`-n`, `--dist loadgroup`) a group goes to one worker and stacks run
side by side (docs/tests.md).
"""

from __future__ import annotations

import os
import time

import pytest

from harness import machine_load
from harness.compose import STACKS


def pytest_addoption(parser):
    parser.addoption(
        "--stack",
        default="",
        help="run the unit tests and this stack's checks only (make test STACK=...)",
    )


# The order of the work groups (each stack's checks, each module with a project of its own):
# the longest first, so that under xdist (`--no-loadscope-reorder` keeps this order) no long
# group starts when the other workers are nearly done (the services' faults on one stack take
# 5-9 min: after the real apps' fourteen short groups, they ran alone at the end of a run).
GROUP_ORDER = (
    "test_swarm",
    "<stack>",
    "test_services",
    "test_your_app",
    "test_app_settings",
    "test_acme",
    "test_bench",
    "test_kube_play",
    "test_tls",
    "test_families",
)
# Within a stack's group: the contract first, what breaks the stack on purpose last.
MODULE_ORDER = {"test_stacks": 0, "test_hardening": 2, "test_failures": 3}  # others: 1


class GroupsInOrder:
    """Sorts the tests into their work groups, each group's tests together (so that a stack
    starts once, also without xdist), the groups by GROUP_ORDER and the modules within a
    group by MODULE_ORDER, unit tests last."""

    @staticmethod
    def rank(item: pytest.Item) -> int:
        if item.path.parent.name == "unit":
            return len(GROUP_ORDER)
        if "running_stack" in getattr(getattr(item, "callspec", None), "params", {}):
            return GROUP_ORDER.index("<stack>")
        module = item.module.__name__
        return GROUP_ORDER.index(module) if module in GROUP_ORDER else len(GROUP_ORDER)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        first_seen: dict[str | None, int] = {}
        for index, item in enumerate(items):
            first_seen.setdefault(work_group(item), index)
        items.sort(
            key=lambda item: (
                self.rank(item),
                first_seen[work_group(item)],
                MODULE_ORDER.get(item.module.__name__, 1),
                item.module.__name__,
                item.location[1],  # as written: pytest regroups tests whose stacks marks differ
            )
        )


def pytest_configure(config):
    config.pluginmanager.register(GroupsInOrder(), "flask-stacks-group-order")
    config.addinivalue_line("markers", "xdist_group(name): one xdist worker runs the group")
    config.addinivalue_line(
        "markers", "load: a load generator: runs alone on the machine (harness.machine_load)"
    )
    config.addinivalue_line(
        "markers", "timed: a latency, rate or wall-clock bound: runs while no `load` test runs"
    )
    chosen = config.getoption("--stack")
    if chosen and chosen not in STACKS:
        raise pytest.UsageError(f"--stack={chosen} is not a stack. Use one of: {' '.join(STACKS)}")


def stack_of(item: pytest.Item) -> str | None:
    """The stack a test checks: its `running_stack`, `stack` or `target` parameter, or the
    module's STACK (a module about one stack with a fixture of its own, e.g. test_acme.py)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    for name in ("running_stack", "stack", "target"):
        if name in params:  # test_your_app's targets: "<app>@<stack>", "<app>@export:<stack>"
            return params[name].rsplit("@", 1)[-1].rsplit(":", 1)[-1]
    return getattr(item.module, "STACK", None)


def work_group(item: pytest.Item) -> str | None:
    """What must run in one xdist worker: a stack's shared project, or one module's own
    project (TLS, ACME, Swarm, families, bench). Unit tests go anywhere."""
    if item.path.parent.name == "unit":
        return None
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "running_stack" in params:
        return params["running_stack"]
    for name in ("stack", "target"):  # a module's own project per parameter
        if name in params:  # xdist reads a group after its last "@": test_your_app's go without
            return f"{item.module.__name__}-{params[name].replace('@', '-on-')}"
    return item.module.__name__


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """`--stack`: keep the unit tests and that stack's checks. APP set (`make test APP=...`):
    keep the unit tests, test_your_app's checks and the `any_app` ones (the others check the
    demo app's own routes), all on your app. Every test gets the xdist group of the project it
    needs (before xdist reads the groups; GroupsInOrder sorts by them)."""
    chosen = config.getoption("--stack")
    yours = bool(os.environ.get("APP"))
    kept, dropped = [], []
    for item in items:
        unit = item.path.parent.name == "unit"
        if (chosen and not unit and stack_of(item) != chosen) or (
            yours
            and not unit
            and item.module.__name__ != "test_your_app"
            and not item.get_closest_marker("any_app")
        ):
            dropped.append(item)
            continue
        kept.append(item)
        group = work_group(item)
        item.user_properties.append(("work_group", group or "unit tests"))
        if group:
            if "@" in group:  # xdist would split it there and run the test in another group
                raise pytest.UsageError(f"{item.nodeid}: work group {group!r} contains '@'")
            item.add_marker(pytest.mark.xdist_group(group))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A `load` test runs with the machine's load lock held alone, a `timed` one shares it with
    other timed tests (harness.machine_load): across xdist workers, no load generator runs
    beside another or beside a check whose bound a loaded machine would break."""
    if item.get_closest_marker("load"):
        hold = machine_load.exclusive(item.nodeid)
    elif item.get_closest_marker("timed"):
        hold = machine_load.timed(item.nodeid)
    else:
        return (yield)
    with hold as waited:
        if waited:
            item.user_properties.append(("load_lock_wait", waited))
        held = time.monotonic()
        try:
            return (yield)
        finally:
            mode = "load" if item.get_closest_marker("load") else "timed"
            ended = dict(item.user_properties).get("load_lock_released") or time.monotonic()
            item.user_properties.append(("load_lock_held", (mode, ended - held)))


@pytest.fixture
def timed_part_over(request):
    """For a `timed` test whose bound lies behind it before it ends: call it there, and the
    load lock is let go (harness.machine_load.release) while the test puts its stack back and
    checks what needs no bound, so that a waiting load does not wait for that too."""

    def over() -> None:
        machine_load.release()
        request.node.user_properties.append(("load_lock_released", time.monotonic()))

    return over


# per work group: tests, seconds (setup, call and teardown) and seconds waited for the load lock
GROUP_TIMES: dict[str, list[float]] = {}
# per mode of the load lock (load: held alone, timed: shared): tests and seconds held. Held
# alone, nothing but unmarked checks runs beside: that sum is the run's floor, whatever -n
LOCK_HELD: dict[str, list[float]] = {}


def pytest_runtest_logreport(report):
    """Add up each work group's time and the load lock's (in the controller too: xdist sends
    the reports, user_properties included)."""
    properties = dict(report.user_properties)
    totals = GROUP_TIMES.setdefault(properties.get("work_group", "other"), [0, 0.0, 0.0])
    totals[1] += report.duration
    if report.when == "call":
        totals[0] += 1
        totals[2] += properties.get("load_lock_wait", 0.0)
        if "load_lock_held" in properties:
            mode, seconds = properties["load_lock_held"]
            held = LOCK_HELD.setdefault(mode, [0, 0.0])
            held[0] += 1
            held[1] += seconds


def pytest_terminal_summary(terminalreporter) -> None:
    if GROUP_TIMES:
        terminalreporter.section("time per work group (setup + call + teardown)")
        terminalreporter.write_line("| group | tests | seconds | waiting for the load lock |")
        terminalreporter.write_line("|---|---|---|---|")
        for group, (tests, seconds, waited) in sorted(GROUP_TIMES.items(), key=lambda g: -g[1][1]):
            terminalreporter.write_line(f"| {group} | {tests} | {seconds:.0f} | {waited:.0f} |")
        for mode, (tests, seconds) in sorted(LOCK_HELD.items()):
            how = "alone" if mode == "load" else "shared"
            terminalreporter.write_line(
                f"load lock held {how} ({tests} `{mode}` tests): {seconds:.0f} s"
            )
