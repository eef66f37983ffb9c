"""Failure behaviour, measured, for every nginx stack: a worker or the master dies, the backend
is recreated or killed, a request is stuck, a worker leaks, slow clients, a burst far above the
worker count, memory over 20k requests.

Each scenario is bounded in requests and time, sends traffic only to the stack's 127.0.0.1
port, records a one-line figure (sent / failed / max latency / recovery) for the summary table
at the end of `make test`, and asserts on it. Bounds come from the shipped configs (harakiri,
timeouts, UPSTREAM_RECHECK_SECONDS), read where they are set. A stack with more than one app
server (the pair) must lose nothing. A check of an app server's own settings runs on one stack
of that server (UWSGI_ONCE): the others load the same file. The pair's stopped backend and the
graceful stop under load live in test_load_balanced_pair.py and test_hardening.py.
"""

from __future__ import annotations

import re
import selectors
import socket
import subprocess
import time
from urllib.parse import urlsplit

import pytest
import requests

from harness.compose import GUNICORN_STACKS, NGINX_STACKS, ROOT, SPLIT_STACKS, UWSGI_ONCE, Stack
from harness.faults import app_server, kill_master, kill_worker, memory_mib, nginx_seconds, setting
from harness.traffic import (
    RATE,
    Background,
    Stream,
    failed,
    fetch,
    fetch_many,
    outage,
    p99_seconds,
    summary,
    wait_for,
)
from harness.wrk import wrk
from stackctl import apps

CLIENTS = 4  # concurrent clients of the steady stream
# requests answered after a recovery, every one of which must succeed: 4 s of the stream; a
# count, not a window, so that a loaded machine makes the watch longer, never emptier
WATCHED = 4 * RATE

pytestmark = [
    pytest.mark.stacks(*NGINX_STACKS),  # the failure scenarios are about nginx
    pytest.mark.timed,  # recoveries and latencies, bounded: never beside a load test
]
split_only = pytest.mark.stacks(*SPLIT_STACKS)  # nginx and the app server in separate services


def shared_files_on(*stacks: str):
    """The stacks a check runs on whose subject several stacks load unchanged (nginx.conf,
    base.ini, services.yaml: docs/tests.md, one proof per distinct file); with your app
    (`make test APP=...`), every nginx stack, so that the one you chose runs it."""
    return pytest.mark.stacks(*(stacks if apps.from_settings().is_demo else NGINX_STACKS))


# nginx's read timeout for the app server (the same in both snippets)
READ_TIMEOUT = nginx_seconds("uwsgi-params.conf", "uwsgi_read_timeout")


def redundant(stack: Stack) -> bool:
    """More than one app server: nginx retries on another one, so nothing may fail."""
    return len(stack.app_services()) > 1


def figure(results, fault: float) -> str:
    """sent / failed / max latency / recovery (the fault to the end of the last failure)."""
    return f"{summary(results)} / recovery {outage(results, fault):.1f} s"


def assert_nginx_error(body, status: int) -> None:
    """nginx's own 502/504 answer (snippets/server-defaults.conf): the app's JSON error shape
    plus the request id."""
    assert isinstance(body, dict), f"nginx's {status} is not JSON: {body!r}"
    assert body.keys() == {"error", "status", "detail", "request_id"}, body
    assert body["status"] == status and re.fullmatch(r"[0-9a-f]{32}", body["request_id"]), body


def watch_after_recovery(stack: Stack, stream: Stream, recovered: float) -> None:
    """Keep the stream going until WATCHED requests sent after `recovered` have their answer,
    and require that every one of them succeeded."""
    wait_for(
        lambda: len(stream.since(recovered)) >= WATCHED,
        60,
        f"{stack.name}: {WATCHED} requests answered after the recovery (the stream's limit?)",
    )
    after = stream.since(recovered)
    assert not failed(after), f"{stack.name}: failures after recovery: {failed(after)[:5]}"


def client_timeout(stack: Stack) -> float:
    """How long a stream's client waits. On a redundant stack, as nginx does: uWSGI listens
    before it loads the app, so a request nginx sends a (re)starting server waits in its backlog
    for the load (5 s and more on a busy machine), latency and not a failure (the pair's README).
    Elsewhere 3 s: nginx's failure, seen sooner."""
    return READ_TIMEOUT + 5 if redundant(stack) else 3


def recheck_seconds(stack: Stack) -> int:
    """nginx's UPSTREAM_RECHECK_SECONDS, as the running container has it; 0 where nginx has no
    upstream name to follow (the socket stack's upstream is a path, connected per request)."""
    env = dict(e.split("=", 1) for e in stack.inspect("nginx")["Config"]["Env"])
    return int(env.get("UPSTREAM_RECHECK_SECONDS", 0))


@pytest.mark.any_app
# each kind of app server, and the pair (nginx retries on the other): the tcp stack and
# single-container run the socket stack's base.ini
@shared_files_on(UWSGI_ONCE, *GUNICORN_STACKS, "load-balanced-pair")
def test_worker_killed_only_its_requests_fail(stack, base_url, probe, record):
    service = stack.app_services()[0]
    server = app_server(stack, service)
    with Stream(base_url + probe, clients=CLIENTS, limit=60) as stream:
        stream.wait_for_successes(50, after=0, timeout=10)
        fault = time.monotonic()
        killed = kill_worker(stack, service)
        killed_by = time.monotonic()
        wait_for(
            lambda: len(app_server(stack, service).workers) == len(server.workers),
            10,
            "the master respawns the worker",
        )
        recovered = stream.wait_for_successes(50, after=time.monotonic(), timeout=15)
        watch_after_recovery(stack, stream, recovered)
    results = stream.stop()
    lost = failed(results)
    record(stack, "worker kill -9", figure(results, fault))
    if redundant(stack):  # nginx retries what the dead worker dropped on the other server
        assert not lost, f"{stack.name}: {len(lost)} failed: {lost[:5]}"
    else:
        # only what was inside that worker when it died (counted while it was stopped, just
        # before the kill), all sent before the kill
        bound = killed["held"]
        assert len(lost) <= bound, f"{len(lost)} failed; the worker held {bound}: {lost[:5]}"
        assert all(r.at < killed_by for r in lost), f"failures sent after the kill: {lost}"
    after = app_server(stack, service)
    assert len(after.workers) == len(server.workers), "the master did not respawn the worker"
    assert killed["pid"] not in {w["pid"] for w in after.workers}
    assert after.master["pid"] == server.master["pid"], "the master itself restarted"


# nginx's part of a recovery: from the app server's first passing healthcheck (its own probe:
# it serves again) to nginx's last failed request. The app server's own start is not nginx's
# to bound (it took 10.5 s on a loaded machine); nginx keeps the address or socket and only
# has to connect again. Its probe runs every HEALTHCHECK_INTERVAL, so nginx usually recovers
# before it.
NGINX_PART = 1.0


def failures_after_probe(results, passed: float) -> float | None:
    """Seconds from `passed` (time.time(): the service's first passing healthcheck, read with
    Stack.first_passing_probe as soon as nginx recovers, while Docker's log of five probes
    still holds it) to the end of the stream's last failure (negative: nginx recovered before
    the probe passed); None if nothing failed."""
    offset = time.time() - time.monotonic()  # the stream's times are time.monotonic()
    last_failure = max((r.at + r.seconds for r in failed(results)), default=None)
    return None if last_failure is None else last_failure + offset - passed


@split_only  # single-container: its restart moves its test port; test_single_container.py
@pytest.mark.any_app
def test_master_killed_container_restarts_and_nginx_recovers(stack, base_url, probe, record):
    service = stack.app_services()[0]
    restarts = stack.inspect(service)["RestartCount"]
    with Stream(
        base_url + probe, clients=CLIENTS, limit=80, timeout=client_timeout(stack)
    ) as stream:
        stream.wait_for_successes(50, after=0, timeout=10)
        kill_master(stack, service)
        # after the call, not before: it first reads the processes (a docker exec, ~0.4 s), and
        # a probe begun then passed against the old master (read as "failed 1.2 s after it")
        fault, killed_at = time.monotonic(), time.time()
        # nginx's healthcheck, run now, while its app server is down, and Docker's runs of it
        nginx_check = stack.inspect("nginx")["Config"]["Healthcheck"]["Test"][1:]  # after "CMD"
        checked = stack.run_in("nginx", *nginx_check, check=False)
        nginx_probes: dict[float, int] = {}  # start -> exit code

        def read_nginx_probes() -> None:  # Docker keeps the last five: read them as they come
            nginx_probes.update({c["start"]: c["code"] for c in stack.healthchecks("nginx")})

        def restarted() -> bool:
            read_nginx_probes()
            return stack.inspect(service)["RestartCount"] == restarts + 1

        wait_for(restarted, 20, "the container is restarted")
        recovered = stream.wait_for_successes(50, after=time.monotonic(), timeout=30)
        passed = stack.first_passing_probe(service, killed_at)
        read_nginx_probes()
        watch_after_recovery(stack, stream, recovered)
    results = stream.stop()
    # nginx's healthcheck asks nginx alone: the app server's restart leaves it healthy (under
    # Swarm or Kubernetes, an unhealthy nginx would be replaced: an outage of its own)
    assert checked.returncode == 0, f"nginx's healthcheck with its app server down: {checked}"
    during = {start: code for start, code in nginx_probes.items() if killed_at < start < passed}
    # curl's own failure (refused, an HTTP error) is what a probe through to the app gave; -1 is
    # Docker's: the probe ran past its 3 s timeout, which s53e's busiest minute made a nginx
    # answering from memory do twice in six probes (the run above, in the same seconds, passed)
    failing = {start: code for start, code in during.items() if code > 0}
    assert not failing, f"nginx's healthchecks while its app restarted: {during}"
    late = failures_after_probe(results, passed)
    record(
        stack,
        "app server master kill -9",
        figure(results, fault)
        + ("" if late is None else f" / last failure {late:+.1f} s from its first passing probe"),
    )
    if redundant(stack):
        assert not failed(results), f"{stack.name}: {summary(results)}"
    assert late is None or late < NGINX_PART, (
        f"{stack.name}: nginx failed requests {late:.1f} s after the restarted app server's "
        f"healthcheck passed (bound {NGINX_PART} s)"
    )


@split_only  # single-container: nginx and the app server are one container
def test_backend_recreated_on_a_new_address_nginx_follows(stack, base_url, record):
    service = stack.app_services()[0]
    old, nginx_before = stack.inspect(service), stack.inspect("nginx")["State"]
    network = next(iter(old["NetworkSettings"]["Networks"]))
    placeholder = f"{stack.project}-placeholder"
    # from the new server's passing probe: the watcher's period, then nginx's graceful reload
    bound = recheck_seconds(stack) + NGINX_PART
    try:
        with Stream(
            base_url + "/whoami", clients=CLIENTS, limit=90, timeout=client_timeout(stack)
        ) as stream:
            stream.wait_for_successes(50, after=0, timeout=10)
            fault = time.monotonic()
            # what `up --force-recreate` does, but onto a new address for sure: Docker hands a
            # freed address to the next container, so a placeholder takes the old one first
            stack.compose("rm", "--stop", "--force", service, timeout=90)
            subprocess.run(
                ["docker", "run", "--detach", "--rm", "--name", placeholder, "--network",
                 network, "--entrypoint", "sleep", "flask-stacks/app:latest", "300"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            created = time.time()
            stack.compose("up", "--detach", "--no-deps", service, timeout=90)
            new = stack.inspect(service)
            hostname = new["Config"]["Hostname"]
            wait_for(
                lambda: stream.served_by(hostname, after=fault),
                30,
                f"nginx sends requests to the new container {hostname}",
            )
            recovered = stream.wait_for_successes(20, after=time.monotonic(), timeout=30)
            passed = stack.first_passing_probe(service, created)
            watch_after_recovery(stack, stream, recovered)
        results = stream.stop()
    finally:
        subprocess.run(["docker", "rm", "--force", placeholder], capture_output=True, check=False)
    addresses = [c["NetworkSettings"]["Networks"][network]["IPAddress"] for c in (old, new)]
    late = failures_after_probe(results, passed)
    record(
        stack,
        "backend recreated on a new address",
        figure(results, fault)
        + (
            ""
            if late is None
            else f" / last failure {late:+.1f} s from the new container's first passing probe"
        )
        + f" / {addresses[0]} -> {addresses[1]}",
    )
    assert addresses[0] != addresses[1], addresses
    if redundant(stack):
        assert not failed(results), f"{stack.name}: {summary(results)}"
    assert late is None or late < bound, (
        f"{stack.name}: failures until {late:.1f} s after the new container's healthcheck "
        f"passed (bound {bound} s: UPSTREAM_RECHECK_SECONDS + {NGINX_PART})"
    )
    nginx_after = stack.inspect("nginx")["State"]
    assert nginx_after["StartedAt"] == nginx_before["StartedAt"], "nginx was restarted"


@pytest.mark.stacks("load-balanced-pair")
@pytest.mark.any_app
def test_pair_member_killed_whole_nothing_fails(stack, base_url, probe, record):
    """A pair member's container SIGKILLed (a crashed host, not a stop): nginx's retry on the
    other server hides it."""
    # the starting point: nginx sends to both (an earlier scenario may have taken one out), as
    # its access log's upstream addresses show (any app: no /whoami needed)
    try:
        wait_for(
            lambda: stack.app_services_serving(base_url, probe) == set(stack.app_services()),
            30,
            f"nginx sends {probe} to both app servers",
        )
    except AssertionError as error:  # say what nginx's watcher sees against what runs
        seen = stack.exec("nginx", "getent", "ahosts", "app", check=False)
        running = {s: stack.inspect(s)["NetworkSettings"]["Networks"] for s in ("app1", "app2")}
        raise AssertionError(
            f"{error}\n`app` resolves to:\n{seen}\ncontainers: {running}"
        ) from None
    # nginx holds a failure against a server for fail_timeout (max_fails=1): one an earlier
    # scenario left, or one retried away unseen, would make this a double fault. Start when no
    # worker has disabled a server within fail_timeout.
    fail_timeout = int(
        re.search(
            r"fail_timeout=(\d+)s", (ROOT / "stacks" / stack.name / "default.conf").read_text()
        )[1]
    )
    wait_for(
        lambda: "temporarily disabled" not in stack.logs("nginx", since=time.time() - fail_timeout),
        fail_timeout + 10,
        f"no server disabled by nginx in the last {fail_timeout} s",
    )
    try:
        with Stream(base_url + probe, clients=CLIENTS, limit=60, timeout=5) as stream:
            stream.wait_for_successes(50, after=0, timeout=10)
            fault, since = time.monotonic(), time.time() - fail_timeout  # the log from before too
            stack.compose("kill", "--signal", "SIGKILL", "app2", timeout=60)
            watch_after_recovery(stack, stream, fault)  # every request from the kill on
        results = stream.stop()
        nginx_log = stack.logs("nginx", since=since).splitlines()
        errors = [line for line in nginx_log if re.search(r"\[(warn|error|crit)\]", line)]
    finally:
        stack.up(timeout=120)  # app2 back, healthy, for the tests that follow
    record(stack, "one backend's container SIGKILLed", figure(results, fault))
    assert not failed(results), f"{stack.name}: {summary(results)}; nginx said:\n" + "\n".join(
        errors[-30:]
    )


HANG = 60  # seconds a stuck request would take: past every timeout of every stack


def worker_pids(stack: Stack) -> dict[str, set[int]]:
    return {s: {w["pid"] for w in app_server(stack, s).workers} for s in stack.app_services()}


def stuck_request(stack: Stack, base_url: str, path: str, until: str, within: float):
    """A request to `path` while a stream runs; waits (up to `within` s after sending it) for a
    log line of the app servers matching `until`, then for every worker count to be back and
    WATCHED successes. Returns the stuck request's result, the seconds until that line, the
    stream's results and the workers before."""
    before = worker_pids(stack)
    with Stream(base_url + "/", clients=CLIENTS, limit=HANG + 30, timeout=5) as stream:
        stream.wait_for_successes(50, after=0, timeout=10)
        since, sent = time.time(), time.monotonic()
        stuck = Background(base_url + path, timeout=HANG + 10)
        wait_for(
            lambda: re.search(until, stack.logs(*stack.app_services(), since=since)),
            within,
            f"{stack.name}: an app server log line matching {until!r}",
        )
        seen = time.monotonic() - sent
        result = stuck.wait(HANG)
        wait_for(
            lambda: (
                {s: len(p) for s, p in worker_pids(stack).items()}
                == {s: len(p) for s, p in before.items()}
            ),
            10,
            "every worker back",
        )
        watch_after_recovery(stack, stream, time.monotonic())
    return result, seen, stream.stop(), before


# base.ini's harakiri, and nginx's read timeout on a single server and on the pair (which must
# not retry a stuck request on the other server: uwsgi_next_upstream_timeout)
@pytest.mark.stacks(UWSGI_ONCE, "load-balanced-pair")
def test_stuck_request_gets_504_and_harakiri_frees_its_worker(stack, base_url, record):
    """A request that never returns: nginx answers 504 at its read timeout, uWSGI's harakiri
    kills the worker after `harakiri` s and the master respawns it; the other workers serve
    the stream all along."""
    harakiri = setting("uwsgi", "harakiri")
    result, seen, results, before = stuck_request(
        stack, base_url, f"/fault/hang?seconds={HANG}", r"HARAKIRI ON WORKER", harakiri + 5
    )
    record(
        stack,
        "a stuck request (never returns)",
        f"{result.status} after {result.seconds:.1f} s / harakiri after {seen:.1f} s / "
        f"stream {summary(results)}",
    )
    assert result.status == 504, f"{stack.name}: stuck request -> {result}"
    assert_nginx_error(result.body, 504)
    assert READ_TIMEOUT <= result.seconds < READ_TIMEOUT + 2, result.seconds
    # uWSGI's deadline has a resolution of one second
    assert harakiri - 1 <= seen < harakiri + 5, f"harakiri after {seen:.1f} s ({harakiri = })"
    assert not failed(results), f"{stack.name}: {summary(results)}"
    after = worker_pids(stack)
    assert any(after[s] != before[s] for s in before), f"no worker was replaced: {after}"


@pytest.mark.stacks(*GUNICORN_STACKS)
def test_blocked_gevent_worker_is_killed_at_its_timeout(stack, base_url, record):
    """A request that blocks its gevent worker (no yield): the worker stops heartbeating and
    Gunicorn kills it at `timeout` (30 s, before nginx's 35 s: the client gets 502) and boots
    another. Only what that worker held fails; the other workers serve the stream all along."""
    timeout = setting("gunicorn", "timeout")
    result, seen, results, before = stuck_request(
        stack, base_url, f"/fault/hang?seconds={HANG}", r"WORKER TIMEOUT", timeout + 5
    )
    lost = failed(results)
    record(
        stack,
        "a request blocking its worker",
        f"{result.status} after {result.seconds:.1f} s / WORKER TIMEOUT after {seen:.1f} s / "
        f"stream {summary(results)}",
    )
    assert result.status == 502, f"{stack.name}: blocking request -> {result}"
    assert_nginx_error(result.body, 502)
    # Gunicorn measures from the worker's last heartbeat, up to a second before the request
    assert timeout - 1 <= result.seconds < READ_TIMEOUT, result.seconds
    assert timeout - 1 <= seen < timeout + 5, f"killed after {seen:.1f} s ({timeout = })"
    # requests the blocked worker had accepted just before it blocked wait with it (one per
    # stream client at most)
    assert len(lost) <= CLIENTS, f"{stack.name}: {summary(results)}"
    after = worker_pids(stack)["app"]
    assert after != before["app"], f"no worker was replaced: {after}"


@pytest.mark.stacks(*GUNICORN_STACKS)
def test_waiting_gevent_request_gets_504_and_its_worker_serves_on(stack, base_url, record):
    """A request that waits cooperatively past nginx's read timeout: 504 at the timeout; gevent
    has no per-request limit, so the greenlet runs to its end while its worker serves others:
    every worker answers the stream while the request waits."""
    before = worker_pids(stack)
    with Stream(base_url + "/whoami", clients=CLIENTS, limit=60, timeout=5) as stream:
        stream.wait_for_successes(50, after=0, timeout=10)
        sent = time.monotonic()
        result = fetch(base_url + f"/fault/hang?seconds={READ_TIMEOUT + 5}&cooperative=1", 60)
        # from a second after it was sent: it is inside a worker by then
        waited = [r for r in stream.since(sent + 1) if r.at < sent + result.seconds]
        meanwhile = {r.body["pid"] for r in waited if r.status == 200}
    results = stream.stop()
    record(
        stack,
        "a request waiting past nginx's timeout",
        f"{result.status} after {result.seconds:.1f} s / stream {summary(results)}",
    )
    assert result.status == 504, f"{stack.name}: waiting request -> {result}"
    assert_nginx_error(result.body, 504)
    assert READ_TIMEOUT <= result.seconds < READ_TIMEOUT + 2, result.seconds
    assert not failed(results), f"{stack.name}: {summary(results)}"
    assert meanwhile == before["app"], f"workers serving while it waited: {meanwhile}, of {before}"
    assert worker_pids(stack) == before, "a worker was replaced"


@pytest.mark.stacks(UWSGI_ONCE)  # base.ini's reload-on-rss
def test_leaking_worker_is_recycled_gracefully(stack, base_url, record):
    """A worker that grows past `reload-on-rss` finishes its request, then the master replaces
    it (uWSGI checks after each request); no request fails."""
    limit = setting("uwsgi", "reload-on-rss")
    before = worker_pids(stack)
    with Stream(base_url + "/", clients=CLIENTS, limit=60, timeout=5) as stream:
        stream.wait_for_successes(50, after=0, timeout=10)
        since = time.time()
        grown = fetch(base_url + f"/fault/grow?mib={limit + 44}", timeout=30)
        assert grown.status == 200, grown
        leaker = grown.body["pid"]
        service = next(
            s
            for s in stack.app_services()
            if stack.exec(s, "hostname").strip() == grown.body["hostname"]
        )
        wait_for(
            lambda: (
                "Respawned uWSGI worker" in stack.logs(service, since=since)
                and len(worker_pids(stack)[service]) == len(before[service])
            ),
            10,
            f"the leaking worker (pid {leaker}) replaced",
        )
        logs = stack.logs(service, since=since)
        watch_after_recovery(stack, stream, time.monotonic())
    results = stream.stop()
    record(stack, f"a worker grown past reload-on-rss ({limit} MiB)", summary(results))
    assert f"The work of process {leaker} is done" in logs, logs[-2000:]  # a graceful reload
    assert leaker not in worker_pids(stack)[service]
    assert not failed(results), f"{stack.name}: {summary(results)}"
    assert not re.search(r"DAMN ! worker|HARAKIRI", logs), logs[-2000:]


UPLOAD = b"x" * 2048  # a slow client's body


def slow_clients(
    host: str, port: int, loris: int, uploads: int, seconds: float, upload_to: str
) -> dict:
    """`loris` connections sending a request header a byte every 0.5 s, and `uploads` POSTs of
    2 KB to `upload_to` trickled over ~4 s, for at most `seconds`. Returns when nginx closed
    each loris and the uploads' statuses."""
    selector = selectors.DefaultSelector()
    header = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 4000
    body = UPLOAD
    upload_head = (
        f"POST {upload_to} HTTP/1.1\r\nHost: slow\r\nContent-Type: application/octet-stream\r\n"
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


# what slow clients may add to the normal requests' p99 over their own baseline, measured in
# the same stream just before: a worker held by a slow client would add its whole wait (the
# uploads take ~4 s, the loris 10 s)
SLOW_CLIENTS_MARGIN = 0.5
BASELINE = 2  # seconds of the stream before the slow clients connect


# timed (the module's mark), not `load`: 110 connections sending a byte or 256 every 0.5 s and
# the usual stream are light traffic; what it bounds is the stream's p99 beside them
@pytest.mark.any_app
@shared_files_on(UWSGI_ONCE, *GUNICORN_STACKS)  # nginx.conf's timeouts, before uwsgi_/proxy_pass
def test_slow_clients_hold_no_worker_and_are_cut_off(stack, base_url, probe, record):
    url = urlsplit(base_url)
    # the demo echoes a POST; any app answers one to its probe somehow (a 405 is fine): the
    # slow uploads must get what the same POST sent at once gets, from the app
    upload_to = "/echo" if probe == "/" else probe
    quick = requests.post(base_url + upload_to, data=UPLOAD, timeout=10)
    assert stack.access_log(quick.headers["X-Request-ID"])["upstream"], "nginx answered it"
    assert probe != "/" or quick.status_code == 200, f"the demo's /echo: {quick.status_code}"
    with Stream(base_url + probe, clients=CLIENTS, limit=40, timeout=5) as stream:
        stream.wait_for_successes(20, after=0, timeout=10)
        began = time.monotonic()
        time.sleep(BASELINE)
        slow_from = time.monotonic()
        # client_header_timeout 10s (nginx.conf) closes the loris; the uploads finish in ~4 s
        slow = slow_clients(url.hostname, url.port, 100, 10, seconds=20, upload_to=upload_to)
        time.sleep(0.5)
    results = stream.stop()
    baseline = p99_seconds([r for r in results if began <= r.at < slow_from])
    p99 = p99_seconds([r for r in results if r.at >= slow_from])
    closed = [t for t in slow["loris_closed_at"] if t is not None]
    record(
        stack,
        "100 slow headers + 10 slow uploads",
        f"{summary(results)} / p99 {p99 * 1000:.0f} ms (before: {baseline * 1000:.0f} ms) / "
        f"loris closed by nginx after {min(closed, default=0):.1f}-{max(closed, default=0):.1f} s",
    )
    assert all(r.status == 200 for r in results), summary(results)
    assert p99 < baseline + SLOW_CLIENTS_MARGIN, (
        f"normal requests' p99 {p99:.2f} s while slow clients were connected, against "
        f"{baseline:.2f} s just before (margin {SLOW_CLIENTS_MARGIN} s)"
    )
    assert len(closed) == 100, f"nginx left {100 - len(closed)} slow-header connections open"
    assert min(closed) >= 9 and max(closed) <= 15, f"closed after {min(closed)}-{max(closed)} s"
    # nginx read the slow uploads in full before passing them on, then the app answered them
    expected = str(quick.status_code).encode()
    assert slow["upload_status"] == [expected] * 10, (slow["upload_status"], expected)


# connections at once: more than a listen backlog of 1,024 holds (uWSGI's `listen` was 1024
# until the HTTP/2 and 2,000-connection runs overflowed it: base.ini), within what one nginx
# worker can proxy alone (worker_connections 4096, two per request: accepts are uneven)
BURST = 1800


@pytest.mark.load
@pytest.mark.any_app
# the backlogs: services.yaml's uWSGI server (base.ini's `listen`, somaxconn), Gunicorn's, and
# single-container's own sysctl
@shared_files_on(UWSGI_ONCE, *GUNICORN_STACKS, "single-container")
def test_burst_far_above_the_workers_gets_no_error(stack, base_url, probe, record):
    started = time.time()
    report = wrk(base_url + probe, connections=BURST, duration=4, timeout=10)
    record(
        stack,
        f"burst of {BURST} connections for 4 s",
        f"sent {report['requests']} / non-2xx {report['non2xx']} / socket errors "
        f"{report['socket_errors']} / p99 {report['p99']:.0f} ms",
    )
    assert report["non2xx"] == 0, report
    assert report["errors"] == 0, report
    logs = stack.logs(since=started)  # the burst's lines: earlier scenarios broke things on purpose
    assert stack.served(logs, probe, 200), f"{stack.name}: the burst is not in the logs read"
    for sign in ("listen queue", "Resource temporarily unavailable", "no live upstreams"):
        assert sign not in logs, f"{sign!r} in the logs: {logs[-2000:]}"


@pytest.mark.load
@pytest.mark.stacks(UWSGI_ONCE, *GUNICORN_STACKS)  # a worker's memory: each server's settings
def test_memory_over_20k_requests_stays_flat(stack, base_url, record):
    service = stack.app_services()[0]
    fetch_many(base_url + "/", 200, concurrency=4)  # every worker has served
    # to nginx's container: Docker's userland proxy would take half the CPU and the run's time
    url = stack.container_url() + "/"
    wrk(url, connections=16, duration=1)
    workers = worker_pids(stack)
    before = memory_mib(stack, service)
    served = 0
    while served < 20_000:
        report = wrk(url, connections=16, duration=3)
        assert report["non2xx"] == report["errors"] == 0, report
        served += report["requests"]
    after = memory_mib(stack, service)
    record(
        stack,
        "memory over 20k requests",
        f"sent {served} / app server anonymous PSS {before:.1f} -> {after:.1f} MiB",
    )
    assert after - before < 8, f"{service} grew {after - before:.1f} MiB over {served} requests"
    # and a healthy worker is never recycled (reload-on-rss is far above its size)
    assert worker_pids(stack) == workers, f"{stack.name}: workers replaced under steady load"


ROUNDS = 10


def answers_from_every_worker(stack: Stack, url: str, workers: int) -> dict[tuple, dict]:
    """Until each of the `workers` app server processes has answered `url` (a route that keeps
    its worker busy for a second), rounds of `workers` requests at once: a busy worker accepts
    nothing, so each of a round's requests finds a worker of its own, unless one was so slow to
    wake that another finished first (sequential requests left a worker out on a busy
    machine: the accept lock picks the worker). Their answers by (hostname, pid)."""
    answers: dict[tuple[str, int], dict] = {}
    for _ in range(ROUNDS):
        for result in fetch_many(url, workers, concurrency=workers):
            assert result.status == 200, result
            answers[result.body["hostname"], result.body["pid"]] = result.body
        if len(answers) == workers:
            return answers
    raise AssertionError(
        f"{stack.name}: {len(answers)} of {workers} workers answered {url} in {ROUNDS} rounds"
    )


@pytest.mark.stacks(UWSGI_ONCE)  # base.ini's preforking and the demo's wsgi.py
def test_a_full_collection_leaves_the_masters_objects_shared(stack, base_url):
    """uWSGI loads the app in its master and forks the workers from it: wsgi.py's gc.freeze()
    keeps every object the master loaded out of the collector's reach, so a worker's full
    collection writes none of their pages and they stay shared (without it: +4.5 MiB per
    worker at its first one). Every worker is made to collect, through nginx."""
    workers = sum(len(p) for p in worker_pids(stack).values())
    # each worker serves a request first: its first one allocates what it keeps (+3 MiB, with
    # or without gc.freeze), which was all this test measured when it ran first on its stack
    answers_from_every_worker(stack, base_url + "/fault/hang?seconds=1", workers)
    before = sum(memory_mib(stack, s) for s in stack.app_services())
    answers = answers_from_every_worker(stack, base_url + "/fault/collect?hold=1", workers)
    after = sum(memory_mib(stack, s) for s in stack.app_services())
    unfrozen = {k: a["frozen"] for k, a in answers.items() if a["frozen"] == 0}
    assert not unfrozen, f"{stack.name}: workers with nothing frozen (gc.freeze?): {unfrozen}"
    assert after - before < workers, f"{stack.name}: {before:.1f} -> {after:.1f} MiB"
