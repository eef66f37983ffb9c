"""METRICS (shared/metrics/flask_stacks_metrics.py), in a fresh interpreter each time: it hooks
Flask's signals at import, as the app servers import it before the app, and its exporter adds
up the files of forked workers (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.compose import ROOT

# the demo app in two "workers" (this process and a forked child), as uWSGI and Gunicorn fork
# them: the child answers some requests, then dies inside one (a worker killed mid-request);
# then the exporter's output, as Prometheus would scrape it
SCRIPT = """
import os, flask_stacks_metrics
from flask_stacks import create_app
from prometheus_client import generate_latest
app = create_app()
@app.get("/die")
def die():
    os._exit(0)
client = app.test_client()
for _ in range(3):
    client.get("/")
client.get("/fault/error")
client.get("/no/such/page")
child = os.fork()
if child == 0:
    client.get("/")
    client.get("/fault/error")
    client.get("/die")
os.waitpid(child, 0)
print(generate_latest(flask_stacks_metrics.registry()).decode())
"""


def run(env: dict[str, str], script: str = SCRIPT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script],
        env={
            **os.environ,
            "FAULT_ROUTES": "1",
            "PYTHONPATH": f"{ROOT / 'shared/metrics'}:{ROOT / 'shared/app'}",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def samples(text: str, name: str) -> dict[tuple, float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_requests_are_counted_per_route_and_status_across_forked_workers(tmp_path):
    result = run({"METRICS": "1", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    counts = samples(result.stdout, "flask_http_requests_total")
    assert counts == {
        (("method", "GET"), ("route", "/"), ("status", "200")): 4,
        (("method", "GET"), ("route", "/fault/error"), ("status", "500")): 2,
        (("method", "GET"), ("route", "<unmatched>"), ("status", "404")): 1,
    }, "every answered request once, the dead child's too; /die never answered"
    timed = samples(result.stdout, "flask_http_request_duration_seconds_count")
    assert timed[(("method", "GET"), ("route", "/"), ("status", "200"))] == 4
    in_flight = samples(result.stdout, "flask_http_requests_in_flight")
    assert set(in_flight.values()) == {0}, (
        f"a killed worker's request is not in flight: {in_flight}"
    )


def test_a_websocket_is_counted_but_its_lifetime_is_no_latency(tmp_path):
    script = """
import flask_stacks_metrics
from flask import Flask
from prometheus_client import generate_latest
app = Flask(__name__)
app.add_url_rule("/ws", "ws", lambda: "its whole life", websocket=True)  # as flask-sock does
app.add_url_rule("/", "index", lambda: "a request")
client = app.test_client()
upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
assert client.get("/ws", headers=upgrade).status_code == 200
client.get("/")
print(generate_latest(flask_stacks_metrics.registry()).decode())
"""
    result = run({"METRICS": "1", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}, script)
    assert result.returncode == 0, result.stderr
    socket, plain = ((("method", "GET"), ("route", r), ("status", "200")) for r in ("/ws", "/"))
    assert samples(result.stdout, "flask_http_requests_total") == {socket: 1, plain: 1}
    assert samples(result.stdout, "flask_http_request_duration_seconds_count") == {plain: 1}


def test_off_by_default_and_nothing_written(tmp_path):
    result = run({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}, "import flask_stacks_metrics")
    assert result.returncode == 0, result.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"METRICS": "yes"}, "METRICS='yes' must be 0 or 1"),
        ({"METRICS": "1", "PROMETHEUS_MULTIPROC_DIR": ""}, "needs PROMETHEUS_MULTIPROC_DIR"),
    ],
)
def test_a_wrong_setting_stops_with_what_to_fix(env, message):
    result = run(env, "import flask_stacks_metrics")
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
