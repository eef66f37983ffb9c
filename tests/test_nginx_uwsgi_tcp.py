"""nginx-uwsgi-tcp: uwsgi protocol over TCP, never published; stats for the operator only.
The suite runs it with METRICS=1 (conftest's METRICS_STACKS): its last check stops the app
server and waits for Prometheus' AppServerDown alert."""

import time

import pytest
import requests

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
    # reachable on the compose network too, as the seeds use it
    inside = stack.exec("nginx", "curl", "-fsS", "http://app:9191/")
    assert '"workers"' in inside


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
