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


def closed_by_nginx(stack, low: int, high: int) -> int:
    """Connections nginx closed first that still hold, or held, a local port of its range:
    those in TIME_WAIT now (/proc/net/tcp: local address ip:port in hex, state 06) plus those
    whose TIME_WAIT tcp_tw_reuse handed to a new connection (TcpExt TWRecycled, counted since
    the container started). Within 60 s of the first, none has expired."""
    tables = stack.exec("nginx", "cat", "/proc/net/tcp", "/proc/net/tcp6", check=False)  # no v6: ok
    fields = [row.split() for row in tables.splitlines() if not row.lstrip().startswith("sl")]
    waiting = sum(
        1 for f in fields if f[3] == "06" and low <= int(f[1].rsplit(":", 1)[1], 16) <= high
    )
    names, values = stack.exec("nginx", "grep", "^TcpExt:", "/proc/net/netstat").splitlines()
    return waiting + int(dict(zip(names.split(), values.split(), strict=True))["TWRecycled"])


@pytest.mark.load
def test_sustained_load_does_not_run_nginx_out_of_ports(stack, record):
    """A connection to Gunicorn that nginx closes first (about a quarter of them here; Gunicorn
    closes the others) holds one of nginx's local ports in TIME_WAIT for 60 s. The tests narrow
    nginx's port range (tests/overlays/narrow-local-ports.yaml) and send until nginx has closed
    more connections first, within one TIME_WAIT span, than the range has ports (counted, not
    inferred from a rate): without tcp_tw_reuse (compose.yaml) the last of them would have found
    no port. None may fail."""
    assert stack.exec("nginx", "cat", "/proc/sys/net/ipv4/tcp_tw_reuse").strip() == "1"
    low, high = map(
        int, stack.exec("nginx", "cat", "/proc/sys/net/ipv4/ip_local_port_range").split()
    )
    ports = high - low + 1
    assert ports <= 10_000, f"nginx has {ports} local ports: the tests' narrow range is missing"
    since, started = time.time(), time.monotonic()
    first = closed_by_nginx(stack, low, high)
    runs, closed = [], 0
    url = stack.container_url() + "/"  # not through Docker's proxy: its CPU, not nginx's ports
    while closed < 1.2 * ports and time.monotonic() - started < TIME_WAIT - 5:
        runs.append(wrk(url, connections=64, duration=2))
        closed = closed_by_nginx(stack, low, high) - first
    took = time.monotonic() - started
    served = sum(r["requests"] for r in runs)
    record(
        stack,
        f"{ports} local ports, a new upstream connection per request",
        f"{served} requests in {took:.0f} s; nginx closed {closed} first (TIME_WAITs)",
    )
    assert all(r["non2xx"] == r["errors"] == 0 for r in runs), runs
    assert closed >= 1.2 * ports, (
        f"nginx closed only {closed} connections first in {took:.0f} s: its {ports} ports "
        f"were never all needed ({served} requests)"
    )
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
