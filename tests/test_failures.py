"""Failure behaviour, measured, for every nginx stack: a worker or the master dies, the backend
is recreated, slow clients, a burst far above the worker count, memory over 20k requests.

Each scenario is bounded in requests and time, sends traffic only to the stack's 127.0.0.1
port, records a one-line figure (sent / failed / max latency / recovery) for the summary table
at the end of `make test`, and asserts on it. The pair's lost backend and the graceful stop
under load live in test_load_balanced_pair.py and test_hardening.py.
"""

from __future__ import annotations

import selectors
import socket
import subprocess
import time
from urllib.parse import urlsplit

import pytest

from harness.compose import STACKS, Stack
from harness.faults import app_server, kill_master, kill_worker, memory_mib
from harness.traffic import Stream, fetch_many, outage, summary, wait_for
from harness.wrk import wrk

CLIENTS = 4  # concurrent clients of the steady stream

pytestmark = pytest.mark.stacks(
    *(name for name in STACKS if name != "flask-dev")
)  # flask-dev has no nginx


@pytest.fixture(scope="module", autouse=True)
def needs_nginx(stack: Stack) -> None:
    if not stack.behind_nginx:
        pytest.skip(f"{stack.name}: no nginx in front (the failure scenarios are about nginx)")


def figure(results, fault: float) -> str:
    """sent / failed / max latency / recovery (the fault to the end of the last failure)."""
    return f"{summary(results)} / recovery {outage(results, fault):.1f} s"


def test_worker_killed_only_its_requests_fail(stack, base_url, record):
    service = stack.app_services()[0]
    server = app_server(stack, service)
    with Stream(base_url + "/", clients=CLIENTS, limit=20) as stream:
        time.sleep(2)
        fault = time.monotonic()
        killed = kill_worker(stack, service)
        wait_for(
            lambda: len(app_server(stack, service).workers) == len(server.workers),
            10,
            "the master respawns the worker",
        )
        stream.wait_for_successes(50, after=time.monotonic(), timeout=15)
    results = stream.stop()
    failed = [r for r in results if r.status != 200]
    record(stack, "worker kill -9", figure(results, fault))
    # at most what was in flight on that worker: its slots, and never more than our clients
    bound = min(server.slots_per_worker, CLIENTS)
    assert len(failed) <= bound, f"{len(failed)} failed (bound {bound}): {failed[:5]}"
    after = app_server(stack, service)
    assert len(after.workers) == len(server.workers), "the master did not respawn the worker"
    assert killed["pid"] not in {w["pid"] for w in after.workers}
    assert after.master["pid"] == server.master["pid"], "the master itself restarted"


def test_master_killed_container_restarts_and_nginx_recovers(stack, base_url, record):
    if "nginx" not in stack.services():
        pytest.skip(
            f"{stack.name}: one container, whose restart moves its ephemeral test port; "
            "test_single_container.py kills its master and its nginx"
        )
    service = stack.app_services()[0]
    restarts = stack.inspect(service)["RestartCount"]
    with Stream(base_url + "/", clients=CLIENTS, limit=40, timeout=3) as stream:
        time.sleep(1)
        fault = time.monotonic()
        kill_master(stack, service)
        # the restart policy, then the app server's start; nginx is not touched
        wait_for(
            lambda: stack.inspect(service)["RestartCount"] == restarts + 1,
            20,
            "the container is restarted",
        )
        recovered = stream.wait_for_successes(50, after=time.monotonic(), timeout=30)
    results = stream.stop()
    record(stack, "app server master kill -9", figure(results, fault))
    assert outage(results, fault) < 20, f"failures for {outage(results, fault):.1f} s"
    late = [r for r in results if r.at > recovered and r.status != 200]
    assert not late, f"failures after serving again: {late[:5]}"


def test_backend_recreated_on_a_new_address_nginx_follows(stack, base_url, record):
    if "nginx" not in stack.services():
        pytest.skip(f"{stack.name}: nginx and the app server are one container")
    service = stack.app_services()[0]
    old, nginx_before = stack.inspect(service), stack.inspect("nginx")["State"]
    network = next(iter(old["NetworkSettings"]["Networks"]))
    placeholder = f"{stack.project}-placeholder"
    try:
        with Stream(base_url + "/whoami", clients=CLIENTS, limit=45, timeout=3) as stream:
            time.sleep(1)
            fault = time.monotonic()
            # what `up --force-recreate` does, but onto a new address for sure: Docker hands a
            # freed address to the next container, so a placeholder takes the old one first
            stack.compose("rm", "--stop", "--force", service, timeout=90)
            subprocess.run(
                ["docker", "run", "--detach", "--rm", "--name", placeholder, "--network",
                 network, "--entrypoint", "sleep", "flask-stacks/app:latest", "300"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            stack.compose("up", "--detach", "--no-deps", service, timeout=90)
            new = stack.inspect(service)
            hostname = new["Config"]["Hostname"]
            wait_for(
                lambda: stream.served_by(hostname, after=fault),
                30,
                f"nginx sends requests to the new container {hostname}",
            )
            recovered = stream.wait_for_successes(20, after=time.monotonic(), timeout=30)
        results = stream.stop()
    finally:
        subprocess.run(["docker", "rm", "--force", placeholder], capture_output=True, check=False)
    addresses = [c["NetworkSettings"]["Networks"][network]["IPAddress"] for c in (old, new)]
    record(
        stack,
        "backend recreated on a new address",
        figure(results, fault) + f" / {addresses[0]} -> {addresses[1]}",
    )
    assert addresses[0] != addresses[1], addresses
    assert outage(results, fault) < 20, f"failures for {outage(results, fault):.1f} s"
    late = [r for r in results if r.at > recovered and r.status != 200]
    assert not late, f"failures after recovery: {late[:5]}"
    nginx_after = stack.inspect("nginx")["State"]
    assert nginx_after["StartedAt"] == nginx_before["StartedAt"], "nginx was restarted"


def slow_clients(host: str, port: int, loris: int, uploads: int, seconds: float) -> dict:
    """`loris` connections sending a request header a byte every 0.5 s, and `uploads` POSTs of
    2 KB trickled over ~4 s, for at most `seconds`. Returns when nginx closed each loris and
    the uploads' statuses."""
    selector = selectors.DefaultSelector()
    header = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 4000
    body = b"x" * 2048
    upload_head = (
        f"POST /echo HTTP/1.1\r\nHost: slow\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    conns = []
    for index in range(loris + uploads):
        sock = socket.create_connection((host, port), timeout=5)
        sock.setblocking(False)
        kind = "loris" if index < loris else "upload"
        conn = {"sock": sock, "kind": kind, "sent": 0, "closed_at": None, "reply": b""}
        if kind == "upload":
            sock.sendall(upload_head)
        conns.append(conn)
        selector.register(sock, selectors.EVENT_READ, conn)
    started = time.monotonic()
    next_tick = started
    while time.monotonic() - started < seconds and any(c["closed_at"] is None for c in conns):
        now = time.monotonic()
        if now >= next_tick:
            next_tick = now + 0.5
            for conn in conns:
                if conn["closed_at"] is not None:
                    continue
                data, step = (header, 1) if conn["kind"] == "loris" else (body, 256)
                chunk = data[conn["sent"] : conn["sent"] + step]
                if chunk:
                    try:
                        conn["sock"].send(chunk)
                        conn["sent"] += len(chunk)
                    except OSError:
                        conn["closed_at"] = now - started
        for key, _ in selector.select(timeout=0.1):
            conn = key.data
            try:
                data = conn["sock"].recv(65536)
            except OSError:
                data = b""
            if data:
                conn["reply"] += data
            else:
                conn["closed_at"] = time.monotonic() - started
                selector.unregister(conn["sock"])
    for conn in conns:
        conn["sock"].close()
    return {
        "loris_closed_at": [c["closed_at"] for c in conns if c["kind"] == "loris"],
        "loris_replies": [c["reply"][:12] for c in conns if c["kind"] == "loris"],
        "upload_status": [c["reply"][9:12] for c in conns if c["kind"] == "upload"],
    }


def test_slow_clients_hold_no_worker_and_are_cut_off(stack, base_url, record):
    url = urlsplit(base_url)
    with Stream(base_url + "/", clients=CLIENTS, limit=40, timeout=5) as stream:
        time.sleep(0.5)
        # client_header_timeout 10s (nginx.conf) closes the loris; the uploads finish in ~4 s
        slow = slow_clients(url.hostname, url.port, loris=100, uploads=10, seconds=20)
        time.sleep(0.5)
    results = stream.stop()
    latencies = sorted(r.seconds for r in results)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    closed = [t for t in slow["loris_closed_at"] if t is not None]
    record(
        stack,
        "100 slow headers + 10 slow uploads",
        f"{summary(results)} / p99 {p99 * 1000:.0f} ms / loris closed by nginx after "
        f"{min(closed, default=0):.1f}-{max(closed, default=0):.1f} s",
    )
    assert all(r.status == 200 for r in results), summary(results)
    assert p99 < 1.0, f"normal requests' p99 {p99:.2f} s while slow clients were connected"
    assert len(closed) == 100, f"nginx left {100 - len(closed)} slow-header connections open"
    assert min(closed) >= 9 and max(closed) <= 15, f"closed after {min(closed)}-{max(closed)} s"
    # nginx read the slow uploads in full before passing them on, then the app answered them
    assert slow["upload_status"] == [b"200"] * 10, slow["upload_status"]


def test_burst_far_above_the_workers_gets_no_error(stack, base_url, record):
    started = time.time()
    report = wrk(base_url + "/", connections=512, duration=4, timeout=10)
    record(
        stack,
        "burst of 512 connections for 4 s",
        f"sent {report['requests']} / non-2xx {report['non2xx']} / socket errors "
        f"{report['socket_errors']} / p99 {report['p99']:.0f} ms",
    )
    assert report["non2xx"] == 0, report
    assert report["errors"] == 0, report
    logs = stack.logs(since=started)  # the burst's lines: earlier scenarios broke things on purpose
    for sign in ("listen queue", "Resource temporarily unavailable", "no live upstreams"):
        assert sign not in logs, f"{sign!r} in the logs: {logs[-2000:]}"


def test_memory_over_20k_requests_stays_flat(stack, base_url, record):
    service = stack.app_services()[0]
    fetch_many(base_url + "/", 200, concurrency=4)  # every worker has served
    wrk(base_url + "/", connections=16, duration=1)
    before = memory_mib(stack, service)
    served = 0
    while served < 20_000:
        report = wrk(base_url + "/", connections=16, duration=3)
        assert report["non2xx"] == report["errors"] == 0, report
        served += report["requests"]
    after = memory_mib(stack, service)
    record(
        stack,
        "memory over 20k requests",
        f"sent {served} / app server PSS {before:.1f} -> {after:.1f} MiB",
    )
    assert after - before < 8, f"{service} grew {after - before:.1f} MiB over {served} requests"
