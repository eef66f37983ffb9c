"""Production hardening, asserted on every stack: containers, nginx limits and headers, static
files, bad input, the ALLOWED_IPS allow-list, graceful stop.

Tests run in file order per stack; the last ones recreate and stop services.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import requests

from harness.compose import (
    GUNICORN_STACKS,
    NGINX_STACKS,
    UWSGI_ONCE,
    Stack,
    recreate_allow_list,
)
from harness.faults import app_server, in_flight
from harness.traffic import Background, raw_request, summary, wait_for

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
# A worker that died or was killed shows up in its server's log with one of these.
WORKER_DEATH = re.compile(
    r"DAMN ! worker|HARAKIRI|Worker \(pid:\d+\) was sent|WORKER TIMEOUT|Traceback"
)


# the checks of nginx's own limits, headers and static files: every stack with nginx in front
behind_nginx = pytest.mark.stacks(*NGINX_STACKS)


# --- containers ------------------------------------------------------------------------------


def test_every_process_is_unprivileged(stack):
    for service in stack.services():
        for fields in stack.processes(service):
            name = fields["Name"]
            uids = fields["Uid"].split()
            assert "0" not in uids, f"{stack.name}/{service}: {name} runs as root ({uids})"
            assert int(fields["CapEff"], 16) == 0, (
                f"{stack.name}/{service}: {name} has capabilities"
            )
            assert int(fields["CapPrm"], 16) == 0, (
                f"{stack.name}/{service}: {name} may gain capabilities"
            )
            assert fields["NoNewPrivs"] == "1", (
                f"{stack.name}/{service}: {name} may gain privileges"
            )


def test_root_filesystems_are_read_only(stack):
    for service in stack.services():
        config = stack.inspect(service)["HostConfig"]
        assert config["ReadonlyRootfs"], f"{stack.name}/{service}: root filesystem is writable"
        assert config["CapDrop"] == ["ALL"], f"{stack.name}/{service}: {config['CapDrop']}"
        assert not config.get("CapAdd"), f"{stack.name}/{service}: adds {config['CapAdd']}"
        if not stack.has_shell(service):  # nothing to try a write with (the NGINX exporter)
            continue
        probe = stack.run_in(service, "touch", "/etc/probe", check=False)
        assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe


# --- nginx: headers and limits ---------------------------------------------------------------


@behind_nginx
def test_security_headers_on_every_response(stack, base_url):
    responses = {
        "app page": requests.get(base_url + "/", timeout=10),
        "static file": requests.get(base_url + "/static/hello.txt", timeout=10),
        "app 404": requests.get(base_url + "/no/such/page", timeout=10),
        "nginx 404": requests.get(base_url + "/static/missing.txt", timeout=10),
        "nginx 413": requests.post(base_url + "/echo", data=b"x" * (11 * 1024 * 1024), timeout=30),
    }
    for what, response in responses.items():
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get(header) == value, f"{stack.name} {what}: {header}"
        assert response.headers["Server"] == "nginx", f"{stack.name} {what}: version leaked"
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"]), what
    assert b"nginx/" not in responses["nginx 404"].content


@behind_nginx
@pytest.mark.any_app
def test_limits_against_slow_clients_are_set(stack):
    config = stack.exec(stack.front, "nginx", "-T")
    for directive in (
        "client_header_timeout 10s;",
        "client_body_timeout   10s;",
        "send_timeout          10s;",
        "keepalive_timeout     15s;",
        "keepalive_requests    1000;",
        "client_max_body_size  10m;",
        "large_client_header_buffers 4 16k;",
    ):
        assert directive in config, f"{stack.name}: `nginx -T` lacks {directive!r}"


@behind_nginx
@pytest.mark.any_app
def test_body_over_limit_never_reaches_the_app(stack, base_url, probe):
    target = base_url + ("/echo" if probe == "/" else probe)  # a POST route, or any: never read
    response = requests.post(target, data=b"x" * (11 * 1024 * 1024), timeout=30)
    assert response.status_code == 413
    line = stack.access_log(response.headers["X-Request-ID"])
    assert line["upstream"] is None, f"{stack.name}: nginx passed the body upstream: {line}"


@pytest.mark.any_app
def test_an_8kb_cookie_works(stack, base_url, probe):
    cookie = "session=" + "a" * 8192
    response = requests.get(base_url + probe, headers={"Cookie": cookie}, timeout=10)
    assert 200 <= response.status_code < 300, f"{stack.name}: 8 KB cookie -> {response.status_code}"


@behind_nginx
@pytest.mark.any_app
def test_access_log_has_request_id_and_upstream_time(stack, base_url, probe):
    response = requests.get(base_url + probe, timeout=10)
    line = stack.access_log(response.headers["X-Request-ID"])
    assert line["status"] == str(response.status_code) and line["uri"] == probe, line
    assert re.fullmatch(r"\d+\.\d{3}", line["upstream_response_time"]), line
    assert re.fullmatch(r"unix:/\S+|[\d.]+:\d+", line["upstream"] or ""), line


# --- nginx: static files ---------------------------------------------------------------------


@behind_nginx
def test_static_directory_is_not_listed(stack, base_url):
    for path in ("/static/", "/static"):
        response = requests.get(base_url + path, timeout=10, allow_redirects=False)
        assert response.status_code in (301, 404), f"{stack.name}: {path} -> {response.status_code}"
        assert "hello.txt" not in response.text


@behind_nginx
@pytest.mark.parametrize(
    "path",
    [
        "/static/../wsgi.py",
        "/static/../../../etc/passwd",
        "/static/..%2f..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/....//....//etc/passwd",
        "/static//etc/passwd",
        "/static/%252e%252e/wsgi.py",
    ],
)
def test_no_escape_from_the_static_root(stack, base_url, path):
    answer = raw_request(
        base_url, f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    )
    assert answer.status in (400, 404), f"{stack.name}: {path} -> {answer.status}"
    assert b"root:" not in answer.raw and b"create_app" not in answer.raw, f"{path} leaked a file"


@behind_nginx
def test_text_static_files_are_gzipped(stack, base_url):
    response = requests.get(
        base_url + "/static/style.css", headers={"Accept-Encoding": "gzip"}, timeout=10
    )
    assert response.headers.get("Content-Encoding") == "gzip", response.headers
    assert "Accept-Encoding" in response.headers.get("Vary", "")
    assert response.text.startswith("/* The app's stylesheet")  # requests decompressed it


# --- bad input -------------------------------------------------------------------------------

BAD_REQUESTS = {
    "malformed request line": (b"GARBAGE\r\n\r\n", {400}),
    "oversized header": (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
        {400, 494},
    ),
    "too many large headers": (
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 15000) for i in range(6))
        + b"\r\n",
        {400, 494},
    ),
    "Content-Length with Transfer-Encoding": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        {400},
    ),
    "two Content-Length": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        {400},
    ),
    "NUL byte in path": (b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "invalid percent-encoding": (b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    "no Host in HTTP/1.1": (b"GET / HTTP/1.1\r\n\r\n", {400}),
    "unknown method": (b"FOO / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", {405}),
    "oversized body": (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\nConnection: close\r\n\r\n",
        {413},
    ),
}


@behind_nginx
@pytest.mark.any_app
def test_bad_input_gets_a_clear_status_and_harms_nothing(stack, base_url, probe):
    since = time.time()
    workers = {s: [w["pid"] for w in app_server(stack, s).workers] for s in stack.app_services()}
    for what, (data, statuses) in BAD_REQUESTS.items():
        if what == "unknown method" and probe != "/":
            # nginx passes any method on: your app answers it, with a refusal of its own (4xx,
            # or 501), never a 5xx of a failure
            statuses = {*range(400, 500), 501}
        answer = raw_request(base_url, data)
        assert answer.status in statuses, f"{stack.name}, {what}: {answer.status} (want {statuses})"
        if what == "unknown method" and probe == "/":  # the demo's JSON error shape
            body = json.loads(answer.body)
            assert body["status"] == 405, body
    if probe == "/":  # the demo's own bad input: its JSON 400
        bad_slow = requests.get(base_url + "/slow?seconds=x", timeout=10)
        assert bad_slow.status_code == 400 and bad_slow.json()["status"] == 400
    health = requests.get(base_url + (probe if probe != "/" else "/healthz"), timeout=10)
    assert 200 <= health.status_code < 300, health.status_code
    # the same workers serve (an empty log would also pass the log check below)
    assert {s: [w["pid"] for w in app_server(stack, s).workers] for s in workers} == workers
    after = stack.logs(*stack.app_services(), since=since)
    assert not WORKER_DEATH.search(after), f"{stack.name}: a worker died:\n{after[-3000:]}"


# --- ALLOWED_IPS -----------------------------------------------------------------------------


# the allow-list overlay, one nginx snippet switched on where nginx runs: in a service of its own
# (every split stack: the same overlay file) and inside single-container's one container
allow_list_stacks = pytest.mark.stacks("nginx-uwsgi-socket", "single-container")


@allow_list_stacks
def test_allow_list_admits_listed_clients_only(stack, base_url):
    client = requests.get(base_url + "/whoami", timeout=10).json()["client"]  # as nginx sees us
    # a list without us: 403, while the container's own healthcheck still passes (--wait); a
    # trailing ; is fine
    assert recreate_allow_list(stack, "192.0.2.1;2001:db8::/32;").returncode == 0
    denied = requests.get(stack.base_url() + "/", timeout=10)
    assert denied.status_code == 403, f"{stack.name}: unlisted client -> {denied.status_code}"
    assert denied.headers["X-Frame-Options"] == "DENY"
    # a list with us, as a prefix and as a bare address: 200
    for listed in (f"192.0.2.1;{client}/32", f"192.0.2.1;{client}"):
        assert recreate_allow_list(stack, listed).returncode == 0
        allowed = requests.get(stack.base_url() + "/", timeout=10)
        assert allowed.status_code == 200, f"{stack.name}: {listed} -> {allowed.status_code}"


@allow_list_stacks
def test_allow_list_injection_refuses_to_start(stack):
    bad = "1.2.3.4; } server { listen 81;"
    recreate_allow_list(stack, bad, wait=False)
    stack.wait_refused(stack.front)
    stack.wait_for_log(stack.front, "ALLOWED_IPS entry '} server { listen 81'", timeout=20)
    # back to open, for the tests that follow
    assert recreate_allow_list(stack, None).returncode == 0


# --- secrets ---------------------------------------------------------------------------------


# one stack per way the app server is started: services.yaml's entrypoint, the image's own
@pytest.mark.stacks("nginx-uwsgi-tcp", "single-container")
def test_a_missing_secret_stops_the_start_naming_the_file(stack):
    """A secret SECRETS_AS_ENV names but secrets/ lacks: the app server does not start (exit
    78, EX_CONFIG) and its log says which file to create."""
    service = stack.app_services()[0]
    stack.recreate(service, {"SECRETS_AS_ENV": "secret_key api_token"}, wait=False)
    try:
        stack.wait_refused(service)
        wait_for(  # between its restarts it is running, exit code 0 again
            lambda: stack.inspect(service)["State"]["ExitCode"] == 78,
            20,
            f"{stack.name}/{service} exits 78 (EX_CONFIG)",
        )
        line = stack.wait_for_log(service, "secret 'api_token' is missing", timeout=20)
        assert "/run/secrets/api_token" in line and "secrets/api_token" in line, line
        assert "Traceback" not in stack.logs(service), stack.logs(service)[-2000:]
    finally:  # as the files describe, for the tests that follow
        assert stack.recreate(service, {}).returncode == 0


# --- graceful stop (last: they stop services) ------------------------------------------------


# how long each drained request takes: all of them must be seen inside the workers before the
# first ends, and each look is two `docker exec`s (seconds apiece with both cores busy: 5 s
# requests were not all seen within 4.5 s in a busy-core run of f80c001)
DRAINED = 10


def _assert_stop_drains(stack: Stack, services: list[str], record) -> None:
    """DRAINED-second requests fill the app server's slots (at most 6) when `docker compose
    stop` hits `services`: each must answer 200, and the services must exit by themselves,
    well inside their stop_grace_period. (Requests still queued past the slots are not in
    flight.)"""
    server = app_server(stack, stack.app_services()[0])
    count = min(6, len(server.workers) * server.slots_per_worker)
    requests_ = [Background(stack.base_url() + f"/slow?seconds={DRAINED}") for _ in range(count)]
    wait_for(  # all in flight before the first ends
        lambda: in_flight(stack, stack.app_services()) >= count,
        DRAINED - 0.5,
        f"{stack.name}: {count} requests inside the workers",
    )
    started = time.monotonic()
    stack.compose("stop", *services, timeout=90)
    took = time.monotonic() - started
    results = [request.wait() for request in requests_]
    record(stack, f"graceful stop of {'+'.join(services)} under load", summary(results))
    assert all(r.status == 200 for r in results), (
        f"{stack.name}: in-flight requests while stopping {services}: {summary(results)}"
    )
    assert took < 15, f"{stack.name}: stopping {services} took {took:.1f} s"
    for service in services:
        state = stack.compose("ps", "--all", "--format", "{{.State}} {{.ExitCode}}", service).stdout
        assert state.split() == ["exited", "0"], f"{stack.name}/{service}: {state!r}"


# nginx's graceful quit (services.yaml's SIGQUIT and grace, the same on every split stack; in
# single-container nginx stops with the app server: next), in front of uwsgi_pass and proxy_pass
@pytest.mark.stacks(UWSGI_ONCE, *GUNICORN_STACKS)
@pytest.mark.timed
def test_nginx_stop_drains_in_flight_requests(stack, record, timed_part_over):
    _assert_stop_drains(stack, ["nginx"], record)
    timed_part_over()  # putting nginx back has no bound
    stack.compose("start", "nginx", timeout=60)
    # healthy again; --no-deps: without it `up` runs the release step again and restarts the app
    # servers behind it, and the next test's requests met an nginx with both marked down (502)
    stack.compose("up", "--detach", "--wait", "--no-deps", "nginx", timeout=120)


# each way an app server stops: base.ini's (every uWSGI stack loads it), Gunicorn's, and
# single-container's entrypoint with nginx beside uWSGI
@pytest.mark.stacks(UWSGI_ONCE, *GUNICORN_STACKS, "single-container")
@pytest.mark.timed
def test_app_server_stop_drains_in_flight_requests(stack, record):
    _assert_stop_drains(stack, stack.app_services(), record)
