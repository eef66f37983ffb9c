"""nginx-gunicorn-gevent: gevent patched in time, slow requests overlap, nginx keeps its ports."""

import re
import statistics
import time

import pytest

from harness.traffic import fetch_many, summary
from harness.wrk import wrk

pytestmark = pytest.mark.stacks("nginx-gunicorn-gevent")


def test_gevent_workers_and_no_late_patching(stack, base_url):
    assert fetch_many(base_url + "/", 5)[0].status == 200  # the workers have handled requests
    logs = stack.logs("app")
    assert "Using worker: gevent" in logs
    for warning in ("MonkeyPatchWarning", "monkey-patch", "patched too late", "WORKER TIMEOUT"):
        assert warning not in logs, f"{warning!r} in the app's log:\n{logs[-3000:]}"


def test_concurrent_slow_requests_overlap(stack, base_url, record):
    workers = len(re.findall(r"Booting worker with pid", stack.logs("app")))
    concurrent = 10 * workers
    started = time.monotonic()
    results = fetch_many(base_url + "/slow?seconds=1", concurrent, concurrency=concurrent)
    elapsed = time.monotonic() - started
    record(
        stack,
        f"{concurrent} x /slow?seconds=1 at once on {workers} workers",
        f"{summary(results)} / all done after {elapsed:.1f} s",
    )
    assert all(r.status == 200 for r in results), summary(results)
    # sync workers would need concurrent / workers = 10 s; gevent overlaps the sleeps
    assert elapsed < 3, f"{concurrent} concurrent 1 s requests took {elapsed:.1f} s"


def test_sustained_load_does_not_run_nginx_out_of_ports(stack, base_url, record):
    # nginx closes each connection to Gunicorn first, leaving a TIME_WAIT on a local port for
    # 60 s. Without tcp_tw_reuse (compose.yaml) the ~28k ports ran out well inside 30k requests:
    # throughput fell to a sixth, then requests timed out.
    assert stack.exec("nginx", "cat", "/proc/sys/net/ipv4/tcp_tw_reuse").strip() == "1"
    since = time.time()
    runs = []
    # up to 54 s: 30k connections inside one 60 s TIME_WAIT span need more than the ~28k ports
    # whatever the other xdist worker's load does to the rate
    while sum(r["requests"] for r in runs) < 30_000 and len(runs) < 18:
        runs.append(wrk(base_url + "/", connections=64, duration=3))
    served = sum(r["requests"] for r in runs)
    rates = [round(r["rps"]) for r in runs]
    record(
        stack,
        "30k requests, new upstream connection each",
        f"{served} in {len(runs)} runs of 3 s, req/s {rates}",
    )
    assert served >= 30_000, f"only {served} requests in {3 * len(runs)} s: {rates}"
    assert all(r["non2xx"] == r["errors"] == 0 for r in runs), runs
    # running out of ports left every later run at a sixth; the other xdist worker's load dips
    # single runs (to under a quarter, once) and passes: the last runs must have recovered
    assert statistics.median(rates[-3:]) > 0.25 * max(rates), f"throughput collapsed: {rates}"
    logs = stack.logs("nginx", since=since)
    assert stack.served(logs, "/", 200), "the run is not in nginx's log read"
    assert "Cannot assign requested address" not in logs, "nginx ran out of local ports"


def test_no_per_request_app_log(stack, base_url):
    response = fetch_many(base_url + "/whoami", 1)[0]
    request_id = response.body["request_id"]
    stack.access_log(request_id)  # nginx logs every request, with its id
    logs = stack.logs("app")
    assert "Booting worker" in logs, logs  # the log read is Gunicorn's
    assert "/whoami" not in logs, "Gunicorn's access log is on again"
