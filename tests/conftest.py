"""Fixtures: each stack up once per test session, shared by every module that checks it.

`running_stack` (session) -> `stack` (module: the same project, put back as its files describe
if an earlier module broke it) -> `base_url`. Stacks are discovered from stacks/*/compose.yaml;
a module about some stacks only says so with `pytestmark = pytest.mark.stacks("<stack>", ...)`.
Each stack's checks, from every module, run together (tests/scheduling.py orders them): the
stack starts once and is taken down (with its volumes) as soon as they are done. Also here:
the failure figures tests `record`, the logs a failed test's report carries, and what a run
must leave behind (no swarm, no temporary app image, no unexpected skip).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import metrics
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
from stackctl import apps
from stackctl.stacks import feature_overlays, metrics_overlays

# the order, grouping and load lock of the tests (tests/scheduling.py): how they run, not what
# they use
pytest_plugins = ["scheduling"]


def pytest_configure(config):
    config.addinivalue_line("markers", "stacks(*names): the stacks a module's tests apply to")
    config.addinivalue_line(
        "markers",
        "any_app: needs no knowledge of the app (its stream asks `probe`): `make test APP=...` "
        "runs it on yours too",
    )
    # every stack and overlay the tests start probes its health each 3 s, not each 5 s: a
    # start waits for its services' first probes (Docker 20.10 has no start_interval), so this
    # saves seconds per start. Each probe costs ~0.1 s of CPU (an exec and a Python start):
    # at 1 s they loaded the busy CI machine enough to fail load tests, and at 2 s the ten
    # containers up on average took a fifth of its two cores. Only the probe's frequency
    # differs from what users run.
    os.environ.setdefault("HEALTHCHECK_INTERVAL", "3s")
    # the METRICS stacks' Prometheus scrapes and evaluates every 3 s (harness.metrics)
    folder = Path(tempfile.gettempdir()) / "flask-stacks-prometheus"
    os.environ[metrics.TEST_CONFIG] = str(metrics.write_test_config(folder))


def pytest_generate_tests(metafunc):
    """Parametrize `running_stack` by every stack, or by the module's `stacks` mark."""
    if "running_stack" in metafunc.fixturenames:
        mark = metafunc.definition.get_closest_marker("stacks")
        names = list(mark.args) if mark else STACKS
        metafunc.parametrize("running_stack", names, indirect=True, scope="session")


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
    worker builds while the others wait on a lock, then read what it built (asking the build
    cache again would take the machine's load lock per stack, behind the others' checks)."""
    # this run's folder: under xdist the workers' base folders are inside it; without xdist the
    # base folder's parent holds every run's (an older run's list would skip this run's build)
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    built = shared / "images.json"
    with open(shared / "images.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not built.exists():
            built.write_text(json.dumps(build_images()))
        return json.loads(built.read_text())


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
        overlays = (*metrics_overlays(request.param), ROOT / "tests/overlays/prometheus-fast.yaml")
        # test_metrics places nginx's own healthchecks between two scrapes from Docker's log of
        # the last five: at the tests' 3 s they may not reach back past a window's start
        env["HEALTHCHECK_INTERVAL"] = "5s"
    if log_format == "json":
        overlays += tuple(feature_overlays(request.param, json_logs=True))
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
    funcargs = getattr(item, "funcargs", {})
    target = funcargs.get("target")  # test_your_app's: an app on a stack
    stack = target.stack if target is not None else funcargs.get("stack")
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

# The skips this suite expects (node id -> why). Which stacks a test applies to is decided when
# tests are collected, from the stacks' files (harness.compose.NGINX_STACKS, app_server_of), so
# no skip is expected; any skip fails the run: a check that quietly stopped applying is a
# promise no longer held.
EXPECTED_SKIPS: dict[str, str] = {}
UNEXPECTED_SKIPS: list[str] = []


def pytest_runtest_logreport(report):
    """Collect recorded figures and unexpected skips (in the controller too: xdist sends the
    reports, user_properties included)."""
    if report.when == "call":
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


def remove_temporary_apps(base: Path) -> list[str]:
    """The images and secrets folders of the apps whose folders this run made under `base` (its
    temporary folders: the real apps, their exports' builds, test_app_settings' app): named
    after their folder (apps.app_name), new in every run, so removed at its end. `docker rmi`
    without force: an image a container still uses stays. Returns the images removed."""
    names = {
        apps.app_name(path.resolve())
        for path in base.rglob("*")
        if path.is_dir() and len(path.relative_to(base).parts) <= 4
    }
    for name in names:  # secrets/<name>/, made by make's settings for each (git-ignored)
        shutil.rmtree(apps.SECRETS / name, ignore_errors=True)
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
    images and secrets of its temporary apps, and fail on unexpected skips."""
    if hasattr(session.config, "workerinput"):
        return
    if session.config.stash.get(SWARM_CREATED, False):
        leave_swarm()
    # the run's base folder: the controller's, whose popen-gw* folders the workers use
    remove_temporary_apps(session.config._tmp_path_factory.getbasetemp())
    if UNEXPECTED_SKIPS and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
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
