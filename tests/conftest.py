"""Fixtures: each stack up once per test session, shared by every module that checks it.

`running_stack` (session) -> `stack` (module: the same project, put back as its files describe
if an earlier module broke it) -> `base_url`. Stacks are discovered from stacks/*/compose.yaml;
a module about some stacks only says so with `pytestmark = pytest.mark.stacks("<stack>", ...)`.
pytest orders the tests so that each stack's checks, from every module, run together: the
stack starts once and is taken down (with its volumes) as soon as they are done.

`make test STACK=<name>` (`--stack`) runs the unit tests and that stack's checks only. Under
pytest-xdist (`-n`), each stack's checks go to one worker (`--dist loadgroup`), so a stack
still starts once; stacks run side by side.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import apps, machine_load, metrics
from harness.compose import (
    ROOT,
    STACKS,
    Stack,
    StackError,
    build_images,
    docker_available,
    leave_swarm,
    start_stack,
    stop_stack,
)


def pytest_addoption(parser):
    parser.addoption(
        "--stack",
        default="",
        help="run the unit tests and this stack's checks only (make test STACK=...)",
    )


# The order of the work groups (each stack's checks, each module with a project of its own):
# the longest first, so that under xdist (`--no-loadscope-reorder` keeps this order) no long
# group starts when the other workers are nearly done.
GROUP_ORDER = (
    "test_swarm",
    "<stack>",
    "test_your_app",
    "test_services",
    "test_app_settings",
    "test_acme",
    "test_bench",
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
    config.addinivalue_line("markers", "stacks(*names): the stacks a module's tests apply to")
    config.addinivalue_line("markers", "xdist_group(name): one xdist worker runs the group")
    config.addinivalue_line(
        "markers", "load: a load generator: runs alone on the machine (harness.machine_load)"
    )
    config.addinivalue_line(
        "markers", "timed: a latency, rate or wall-clock bound: runs while no `load` test runs"
    )
    config.addinivalue_line(
        "markers",
        "any_app: needs no knowledge of the app (its stream asks `probe`): `make test APP=...` "
        "runs it on yours too",
    )
    # every stack and overlay the tests start probes its health each 2 s, not each 5 s: a
    # start waits for its services' first probes (Docker 20.10 has no start_interval), so this
    # saves ~6 s per start (1 s probes loaded the busy CI machine enough to fail load tests).
    # Only the probe's frequency differs from what users run.
    os.environ.setdefault("HEALTHCHECK_INTERVAL", "2s")
    # the METRICS stacks' Prometheus scrapes and evaluates every 3 s (harness.metrics)
    folder = Path(tempfile.gettempdir()) / "flask-stacks-prometheus"
    os.environ[metrics.TEST_CONFIG] = str(metrics.write_test_config(folder))
    chosen = config.getoption("--stack")
    if chosen and chosen not in STACKS:
        raise pytest.UsageError(f"--stack={chosen} is not a stack. Use one of: {' '.join(STACKS)}")


def pytest_generate_tests(metafunc):
    """Parametrize `running_stack` by every stack, or by the module's `stacks` mark."""
    if "running_stack" in metafunc.fixturenames:
        mark = metafunc.definition.get_closest_marker("stacks")
        names = list(mark.args) if mark else STACKS
        metafunc.parametrize("running_stack", names, indirect=True, scope="session")


def stack_of(item: pytest.Item) -> str | None:
    """The stack a test checks: its `running_stack` or `stack` parameter, or the module's
    STACK (a module about one stack with a fixture of its own, e.g. test_acme.py)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    for name in ("running_stack", "stack"):
        if name in params:  # test_your_app's are "<app>@<stack>" or "<app>@export:<stack>"
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
    if "stack" in params:  # xdist reads a group after its last "@": test_your_app's go without
        return f"{item.module.__name__}-{params['stack'].replace('@', '-on-')}"
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
            item.user_properties.append(("load_lock_held", (mode, time.monotonic() - held)))


@pytest.fixture(scope="session")
def docker() -> None:
    """Fail, loudly and with the fix, when there is no Docker engine: never skip silently."""
    problem = docker_available()
    if problem:
        pytest.fail(
            f"{problem}.\nThe stack tests need Docker: run `make setup` (as root on Debian it "
            "installs and starts the engine), or start your own engine; `make test-unit` runs "
            "the tests that need none.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def images(docker, tmp_path_factory) -> list[str]:
    """The stacks' images, built once per run before any stack starts: under xdist the first
    worker builds while the others wait on a lock, then find them in Docker's build cache."""
    shared = tmp_path_factory.getbasetemp().parent  # one folder for every worker of the run
    with open(shared / "images.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build_images()


# the app's /fault/* routes (a stuck or leaking worker, for test_failures.py): tests only
TEST_ENV = {"FAULT_ROUTES": "1"}
# the stacks that run every check with LOG_FORMAT=json (uWSGI split from nginx, and in one
# container with it); the others keep the default text logs, so both are held to the contract
JSON_LOG_STACKS = ("nginx-uwsgi-tcp", "single-container")
# the stacks that run every check with METRICS=1 (Prometheus and the NGINX exporter beside them):
# one uWSGI and one Gunicorn stack, whose forked workers the counts must add up across
METRICS_STACKS = ("nginx-uwsgi-tcp", "nginx-gunicorn-gevent")
# compose files the tests add to a stack: narrow nginx's local ports, so that the port test
# proves tcp_tw_reuse in a few thousand requests (tests/overlays/narrow-local-ports.yaml)
TEST_OVERLAYS = {"nginx-gunicorn-gevent": (ROOT / "tests/overlays/narrow-local-ports.yaml",)}
FRESH: set[str] = set()  # projects no module has used yet: nothing to restore
DOWN: set[str] = set()  # projects taken down after their last check


@pytest.fixture(scope="session")
def running_stack(request, images) -> Stack:
    """A stack (the parameter), up once for every test that checks it, always taken down."""
    log_format = "json" if request.param in JSON_LOG_STACKS else "text"
    env = {**TEST_ENV, "LOG_FORMAT": log_format}
    overlays: tuple = ()
    # yours (APP set): the stack serves your app; its metrics are not the demo's (no METRICS)
    if request.param in METRICS_STACKS and apps.from_settings().is_demo:
        env["METRICS"] = "1"
        overlays = (*metrics.overlays(request.param), ROOT / "tests/overlays/prometheus-fast.yaml")
        # test_metrics places nginx's own healthchecks between two scrapes from Docker's log of
        # the last five: at the tests' 2 s they may not reach back past a window's start
        env["HEALTHCHECK_INTERVAL"] = "5s"
    overlays += TEST_OVERLAYS.get(request.param, ())
    stack = start_stack(request.param, overlays=overlays, env=env)
    FRESH.add(stack.project)
    try:
        yield stack
    finally:
        if stack.project not in DOWN:
            stop_stack(stack)


def pytest_runtest_teardown(item, nextitem):
    """Take a stack down after its last check, not when the session ends: a worker's next
    group may be another project, and an idle stack's healthchecks would load the machine."""
    stack = getattr(item, "funcargs", {}).get("running_stack")
    following = getattr(getattr(nextitem, "callspec", None), "params", {}).get("running_stack")
    if isinstance(stack, Stack) and following != stack.name and stack.project not in DOWN:
        DOWN.add(stack.project)
        stop_stack(stack)


@pytest.fixture(scope="module")
def stack(running_stack: Stack) -> Stack:
    """The running stack for this module's tests: as its files describe, serving /healthz
    (an earlier module may have stopped, killed or recreated services on purpose)."""
    if running_stack.project in FRESH:
        FRESH.discard(running_stack.project)
    else:
        DOWN.discard(running_stack.project)  # up again, if it was taken down too early
        running_stack.restore()
    return running_stack


@pytest.fixture(scope="module")
def base_url(stack: Stack) -> str:
    """The stack's front door on 127.0.0.1 (nginx, or the dev server's own port)."""
    return stack.base_url()


@pytest.fixture(scope="session")
def probe() -> str:
    """What the `any_app` scenarios ask: the demo app's `/`, or your app's HEALTH_PATH (the one
    route of yours known to answer 2xx, cheaply)."""
    app = apps.from_settings()
    return "/" if app.is_demo else app.health_path


@pytest.fixture
def record(request):
    """`record(stack, scenario, figure)`: keep a scenario's one-line figure (sent / failed /
    max latency / recovery ...) for the table printed at the end of the run."""

    def keep(stack: Stack | str, scenario: str, figure: str) -> None:
        name = stack if isinstance(stack, str) else stack.name
        request.node.user_properties.append(("figure", (scenario, name, figure)))

    return keep


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A stack that could not come up (or back) is reported by its message: compose's error
    and the logs, no traceback. A failed test's report carries its stack's recent logs."""
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(StackError):
        report.longrepr = str(call.excinfo.value)
    stack = item.funcargs.get("stack") if hasattr(item, "funcargs") else None
    stack = getattr(stack, "stack", stack)  # test_your_app's Target holds its Stack
    if report.failed and isinstance(stack, Stack):
        try:
            logs = stack.logs()
        except Exception as error:  # noqa: BLE001 - the logs are a help, the failure is the news
            logs = f"(could not read the logs: {error!r})"
        # what went wrong is seldom in the tail: a failed wrk run is followed by 20k good lines
        trouble = [line for line in logs.splitlines() if TROUBLE.search(line)]
        if len(trouble) > 80:
            trouble = [*trouble[:40], "[...]", *trouble[-40:]]
        if trouble:
            title = f"{stack.name}: log lines of errors and 4xx/5xx answers (first and last 40)"
            report.sections.append((title, "\n".join(trouble)))
        report.sections.append((f"{stack.name}: logs", logs[-20000:]))
    return report


# nginx's error log levels, a 4xx or 5xx status in an access log line (text or JSON), tracebacks and
# the app servers' own alarms
TROUBLE = re.compile(
    r"\[(?:warn|error|crit|alert|emerg)\]|\" [45]\d\d |\"status\": ?\"?[45]\d\d|Traceback"
    r"|HARAKIRI|WORKER TIMEOUT|listen queue|level=(?:WARN|ERROR)"
)


FIGURES: list[tuple[str, str, str]] = []
# per work group: tests, seconds (setup, call and teardown) and seconds waited for the load lock
GROUP_TIMES: dict[str, list[float]] = {}
# per mode of the load lock (load: held alone, timed: shared): tests and seconds held. Held
# alone, nothing but unmarked checks runs beside: that sum is the run's floor, whatever -n
LOCK_HELD: dict[str, list[float]] = {}

# The skips this suite expects (node id -> why). Which stacks a test applies to is decided when
# tests are collected, from the stacks' files (harness.compose.NGINX_STACKS, app_server_of), so
# no skip is expected; any skip fails the run: a check that quietly stopped applying is a
# promise no longer held.
EXPECTED_SKIPS: dict[str, str] = {}
UNEXPECTED_SKIPS: list[str] = []


def pytest_runtest_logreport(report):
    """Collect recorded figures and unexpected skips (in the controller too: xdist sends the
    reports, user_properties included)."""
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
        FIGURES.extend(tuple(value) for key, value in report.user_properties if key == "figure")
    if report.skipped and report.nodeid not in EXPECTED_SKIPS:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        UNEXPECTED_SKIPS.append(f"{report.nodeid}: {reason}")


SWARM_CREATED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def leave_swarm_at_end(request):
    """`leave_swarm_at_end()`: this run made a swarm; it is left once the whole run is done,
    every worker's stacks down (leaving drops the DNS records of running stacks)."""

    def mark() -> None:
        request.config.stash[SWARM_CREATED] = True
        if hasattr(request.config, "workeroutput"):  # an xdist worker: tell the controller
            request.config.workeroutput["swarm_created"] = True

    return mark


def pytest_testnodedown(node, error):
    """xdist: a worker finished; remember whether it made a swarm."""
    if getattr(node, "workeroutput", {}).get("swarm_created"):
        node.config.stash[SWARM_CREATED] = True


def remove_temporary_app_images(base: Path) -> list[str]:
    """The images of the apps whose folders this run made under `base` (its temporary folders:
    the real apps, their exports' builds, test_app_settings' app): named after their folder
    (apps.app_name), new in every run, so removed at its end. `docker rmi` without force: an
    image a container still uses stays. Returns the images removed."""
    names = {
        apps.app_name(path.resolve())
        for path in base.rglob("*")
        if path.is_dir() and len(path.relative_to(base).parts) <= 4
    }
    listed = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}",
         "--filter", f"reference={apps.IMAGE_REPOSITORY}/*"],
        capture_output=True, text=True, check=False, timeout=60,
    ).stdout.split()  # fmt: skip
    ours = [image for image in listed if image.split(":")[0].split("/", 1)[1] in names]
    if ours:
        subprocess.run(["docker", "rmi", *ours], capture_output=True, check=False, timeout=300)
    return ours


def pytest_sessionfinish(session, exitstatus):
    """In the controller, once every worker is done: leave a swarm the run made, remove the
    images of its temporary apps, and fail on unexpected skips."""
    if hasattr(session.config, "workerinput"):
        return
    if session.config.stash.get(SWARM_CREATED, False):
        leave_swarm()
    # the run's base folder: the controller's, whose popen-gw* folders the workers use
    remove_temporary_app_images(session.config._tmp_path_factory.getbasetemp())
    if UNEXPECTED_SKIPS and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
    if UNEXPECTED_SKIPS:
        terminalreporter.section("unexpected skips (the run fails: see EXPECTED_SKIPS)")
        for line in UNEXPECTED_SKIPS:
            terminalreporter.write_line(line)
    if FIGURES:
        terminalreporter.section("failure behaviour (figures asserted by the tests)")
        terminalreporter.write_line("| scenario | stack | figure |")
        terminalreporter.write_line("|---|---|---|")
        for scenario, name, figure in sorted(FIGURES):
            terminalreporter.write_line(f"| {scenario} | {name} | {figure} |")
