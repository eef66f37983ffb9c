"""nginx-gunicorn-gevent: gevent patched in time, slow requests overlap, upstream keepalive."""

import re
import time

from conftest import only
from traffic import fetch_many, summary

pytestmark = only("nginx-gunicorn-gevent")


def test_gevent_workers_and_no_late_patching(stack, base_url):
    assert fetch_many(base_url + "/", 5)[0].status == 200  # the workers have handled requests
    logs = stack.logs("app")
    assert "Using worker: gevent" in logs
    for warning in ("MonkeyPatchWarning", "monkey-patch", "patched too late", "WORKER TIMEOUT"):
        assert warning not in logs, f"{warning!r} in the app's log:\n{logs[-3000:]}"


def test_concurrent_slow_requests_overlap(stack, base_url):
    workers = len(re.findall(r"Booting worker with pid", stack.logs("app")))
    concurrent = 10 * workers
    started = time.monotonic()
    results = fetch_many(base_url + "/slow?seconds=1", concurrent, concurrency=concurrent)
    elapsed = time.monotonic() - started
    print(f"{stack.name}: {concurrent} x /slow?seconds=1 on {workers} workers: {summary(results)}")
    assert all(r.status == 200 for r in results), summary(results)
    # sync workers would need concurrent / workers = 10 s; gevent overlaps the sleeps
    assert elapsed < 3, f"{concurrent} concurrent 1 s requests took {elapsed:.1f} s"


def time_wait_sockets(stack) -> int:
    """TCP sockets in TIME_WAIT in nginx's network namespace (one per connection nginx closed)."""
    sockstat = stack.exec("nginx", "cat", "/proc/net/sockstat")
    return int(re.search(r"^TCP:.* tw (\d+)", sockstat, flags=re.MULTILINE)[1])


def test_nginx_reuses_its_connections_to_gunicorn(stack, base_url):
    # Without upstream keepalive nginx closes one connection per request: each leaves a
    # TIME_WAIT for 60 s holding a local port, and past ~470 req/s for a minute the ports run
    # out (make bench saw it: throughput fell to a sixth, then timeouts).
    before = time_wait_sockets(stack)
    results = fetch_many(base_url + "/", 1000, concurrency=8)
    assert all(r.status == 200 for r in results), summary(results)
    assert time_wait_sockets(stack) - before < 100, "nginx opened a connection per request"


def test_no_per_request_app_log(stack, base_url):
    response = fetch_many(base_url + "/whoami", 1)[0]
    request_id = response.body["request_id"]
    stack.wait_for_log("nginx", f"rid={request_id}")  # nginx logs every request, with its id
    assert f"rid={request_id}" not in stack.logs("app"), "Gunicorn's access log is on again"
