"""nginx-uwsgi-tcp: uwsgi protocol over TCP, never published; stats for the operator only.
The suite runs it with METRICS=1 (conftest's METRICS_STACKS): its last check stops the app
server and waits for Prometheus' AppServerDown alert."""

import json
import subprocess
import time
import uuid

import pytest
import requests

from harness.compose import ROOT
from harness.metrics import Prometheus, alert_rule, config, seconds

pytestmark = pytest.mark.stacks("nginx-uwsgi-tcp")


def test_only_nginx_and_stats_are_published_and_on_loopback(stack):
    published = stack.published()
    want = {("nginx", 8080), ("app", 9191)} | ({("prometheus", 9090)} if stack.metrics else set())
    assert set(published) == want, published
    assert all(url.startswith("http://127.0.0.1:") for url in published.values()), published


def test_uwsgi_speaks_its_protocol_not_http(stack):
    # port 3031 answers the uwsgi protocol (the healthcheck), and is no HTTP server
    assert "200 OK" in stack.exec("app", "healthcheck", "uwsgi://127.0.0.1:3031")
    probe = stack.exec("app", "healthcheck", "http://127.0.0.1:3031", check=False)
    assert "200" not in probe


def test_stats_show_the_workers(stack):
    stats = requests.get(stack.published()["app", 9191], timeout=10).json()
    cores = int(stack.exec("app", "nproc").strip())
    want = 2 * cores  # base.ini: two single-threaded workers per core
    assert len(stats["workers"]) == want, f"want {want} workers ({cores} cores): {stats['workers']}"
    assert all(len(worker["cores"]) == 1 for worker in stats["workers"]), stats["workers"]
    # reachable on the compose network too
    inside = stack.exec("nginx", "curl", "-fsS", "http://app:9191/")
    assert '"workers"' in inside


def test_an_app_with_a_thread_running_at_fork_still_stops_gracefully(stack):
    """uWSGI forks its workers from the master, which imported the app: a thread the import
    left running (tests/apps/thread_at_fork.py) stayed "running" in every worker, whose graceful
    exit then waited for it until Docker's SIGKILL, exit 137 (seen with ihatemoney: limits'
    in-memory storage). base.ini's py-call-uwsgi-fork-hooks runs CPython's fork protocol."""
    name = f"{stack.project}-thread-at-fork-{uuid.uuid4().hex[:6]}"
    stack.compose(
        "run", "--detach", "--no-deps", "--name", name,
        "--volume", f"{ROOT / 'tests/apps'}:/opt/test-apps:ro",
        "--env", "APP_MODULE=thread_at_fork:application",
        "--env", "PYTHONPATH=/opt/flask-stacks/lib:/opt/test-apps",
        "app",
    )  # fmt: skip
    try:

        def state() -> dict:
            inspected = subprocess.run(
                ["docker", "inspect", "--format", "{{json .State}}", name],
                capture_output=True, text=True, check=True, timeout=30,
            )  # fmt: skip
            return json.loads(inspected.stdout)

        deadline = time.monotonic() + 90
        while (state().get("Health") or {}).get("Status") != "healthy":
            assert time.monotonic() < deadline, f"not healthy in 90 s: {state()}"
            time.sleep(0.5)
        # docker stop: SIGTERM (base.ini's graceful stop), SIGKILL after 20 s
        subprocess.run(["docker", "stop", "--time", "20", name], check=True, timeout=60)
        code = state()["ExitCode"]
        logs = subprocess.run(["docker", "logs", "--tail", "12", name], capture_output=True,
                              text=True, timeout=30)  # fmt: skip
        assert code == 0, f"uWSGI exited {code}; its last lines:\n{logs.stdout}{logs.stderr}"
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, timeout=60)


@pytest.mark.timed
def test_an_app_server_down_fires_its_alert_after_its_for_window(stack, record):
    """Last here: it stops the app (the next module's `stack` starts it again)."""
    assert stack.metrics, "the suite runs nginx-uwsgi-tcp with METRICS=1 (conftest)"
    prometheus = Prometheus(stack.published()["prometheus", 9090])
    hold = seconds(alert_rule("AppServerDown")["for"])
    scrape, evaluate = (
        seconds(config()["global"][k]) for k in ("scrape_interval", "evaluation_interval")
    )
    assert prometheus.alerts("AppServerDown") == [], "firing before anything stopped"
    began = time.monotonic()
    stack.compose("stop", "app")
    stopped = time.monotonic() - began
    # the first failed scrape, the evaluation that sees it (pending), `for:`, the one that fires
    limit = stopped + scrape + hold + 2 * evaluate + 5
    pending = firing = None
    while firing is None:
        elapsed = time.monotonic() - began
        assert elapsed < limit, f"AppServerDown not firing {elapsed:.0f} s after the stop"
        states = {alert["state"] for alert in prometheus.alerts("AppServerDown")}
        pending = elapsed if pending is None and "pending" in states else pending
        firing = elapsed if "firing" in states else None
        time.sleep(0.5)
    assert pending is not None and firing >= hold, (
        f"fired {firing:.1f} s after the stop, pending from {pending}: before its for: {hold} s"
    )
    record(
        stack,
        "app server stopped: AppServerDown",
        f"pending {pending:.0f} s, firing {firing:.0f} s",
    )
