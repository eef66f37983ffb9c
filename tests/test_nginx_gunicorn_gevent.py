"""nginx-gunicorn-gevent: gevent patched in time, slow requests overlap, nginx keeps its ports."""

import time

import pytest

from harness.faults import app_server
from harness.traffic import fetch_many, summary
from harness.wrk import wrk

pytestmark = pytest.mark.stacks("nginx-gunicorn-gevent")


def test_gevent_workers_and_no_late_patching(stack, base_url):
    assert fetch_many(base_url + "/", 5)[0].status == 200  # the workers have handled requests
    logs = stack.logs("app")
    assert "Using worker: gevent" in logs
    for warning in ("MonkeyPatchWarning", "monkey-patch", "patched too late", "WORKER TIMEOUT"):
        assert warning not in logs, f"{warning!r} in the app's log:\n{logs[-3000:]}"


@pytest.mark.timed
def test_concurrent_slow_requests_overlap(stack, base_url, record):
    workers = len(app_server(stack, "app").workers)  # running now (the log has every one booted)
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
    # sync workers would need concurrent / workers = 10 s, one after another in each worker;
    # under half of that, at least 5 run at once in each (gevent runs all 10: ~1 s)
    serial = concurrent / workers
    assert elapsed < serial / 2, f"{concurrent} concurrent 1 s requests took {elapsed:.1f} s"


TIME_WAIT = 60  # seconds Linux keeps a closed connection's local port (fixed in the kernel)


@pytest.mark.load
def test_sustained_load_does_not_run_nginx_out_of_ports(stack, base_url, record):
    """nginx closes each connection to Gunicorn first, leaving a TIME_WAIT on a local port for
    60 s. The tests narrow nginx's port range (tests/overlays/narrow-local-ports.yaml): twice as
    many requests as ports, sent within one TIME_WAIT span, run out of ports at any rate unless
    tcp_tw_reuse (compose.yaml) lets nginx reuse them."""
    assert stack.exec("nginx", "cat", "/proc/sys/net/ipv4/tcp_tw_reuse").strip() == "1"
    low, high = map(
        int, stack.exec("nginx", "cat", "/proc/sys/net/ipv4/ip_local_port_range").split()
    )
    ports = high - low + 1
    assert ports <= 10_000, f"nginx has {ports} local ports: the tests' narrow range is missing"
    need = 2 * ports
    since, started = time.time(), time.monotonic()
    runs = []
    while sum(r["requests"] for r in runs) < need and time.monotonic() - started < TIME_WAIT - 3:
        runs.append(wrk(base_url + "/", connections=64, duration=2))
    took = time.monotonic() - started
    served = sum(r["requests"] for r in runs)
    rates = [round(r["rps"]) for r in runs]
    record(
        stack,
        f"{need} requests on {ports} local ports, new upstream connection each",
        f"{served} in {took:.0f} s, req/s {rates}",
    )
    assert all(r["non2xx"] == r["errors"] == 0 for r in runs), runs
    # fewer within one TIME_WAIT span would leave ports free whether or not they are reused
    assert served >= need, f"only {served} requests in {took:.0f} s (< {TIME_WAIT} s): {rates}"
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
