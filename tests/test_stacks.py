"""The contract every stack keeps, checked through its front door (nginx, or flask-dev's own port).

Runs once per directory under stacks/: a new stack is held to the same contract automatically.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid

import pytest
import requests

from harness.compose import ROOT, Stack
from harness.traffic import CLOSE, NGINX_REFUSALS, raw_request

STATIC_FILE = ROOT / "shared/app/flask_stacks/static/hello.txt"

# What each stack's name promises: the app server in /whoami, the upstream line in `nginx -T`.
IDENTITY = [
    ("flask-dev", "Werkzeug/", None),
    ("uwsgi-socket", "uWSGI/", r"uwsgi_pass\s+unix:/run/uwsgi/uwsgi\.sock;"),
    ("uwsgi-tcp", "uWSGI/", r"uwsgi_pass\s+app:3031;"),
    ("gunicorn", "gunicorn/", r"proxy_pass\s+http://app:8000;"),
    ("single-container", "uWSGI/", r"uwsgi_pass\s+unix:/run/uwsgi/uwsgi\.sock;"),
    ("load-balanced-pair", "uWSGI/", r"server\s+app:3031\s[^;]*max_fails=1[^;]*;"),
]


def identity(stack: Stack) -> tuple[str, str | None]:
    for marker, server, upstream in IDENTITY:
        if marker in stack.name:
            return server, upstream
    pytest.fail(f"{stack.name}: its name matches no entry of IDENTITY in {__file__}: add one")


@pytest.fixture(scope="module", autouse=True)
def contract_started(stack) -> float:
    """When this module began checking the stack: the logs test reads what was written since."""
    return time.time()


def get(base_url: str, path: str, **kwargs) -> requests.Response:
    return requests.get(base_url + path, timeout=10, **kwargs)


def test_greeting(stack, base_url):
    response = get(base_url, "/")
    assert response.status_code == 200, f"{stack.name}: GET / -> {response.status_code}"
    assert response.text == "Hello from flask-stacks!\n"
    assert response.headers["Content-Type"].startswith("text/plain")


def test_admin_route_agrees_with_nginx(stack, base_url):
    response = get(base_url, "/admin/")
    assert response.status_code == 200, f"{stack.name}: GET /admin/ -> {response.status_code}"
    assert response.text == "Hello from the admin page!\n"
    # without the slash Flask redirects; the Location must stay on the front door, not the app
    redirect = get(base_url, "/admin", allow_redirects=False)
    assert redirect.status_code == 308
    assert redirect.headers["Location"] in ("/admin/", base_url + "/admin/")


def test_healthz(stack, base_url):
    response = get(base_url, "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_whoami_names_the_server(stack, base_url):
    server, _ = identity(stack)
    body = get(base_url, "/whoami").json()
    assert body["server"].startswith(server), f"{stack.name}: served by {body['server']!r}"
    assert body["hostname"] and body["pid"] > 1, body


def test_nginx_config_is_what_the_name_says(stack):
    _, upstream = identity(stack)
    if not stack.behind_nginx:
        assert "nginx" not in stack.services(), f"{stack.name} should have no nginx"
        return
    config = stack.exec(stack.front, "nginx", "-T")
    assert re.search(upstream, config), f"{stack.name}: `nginx -T` lacks {upstream!r}"
    assert "server_tokens off;" in config


# the app servers' start, in every log of theirs: a check that a line is absent reads a real log
SERVER_STARTED = re.compile(r"spawned uWSGI worker|Booting worker with pid|Running on http")


def app_logs(stack: Stack) -> str:
    logs = stack.logs(*stack.app_services())
    assert SERVER_STARTED.search(logs), f"{stack.name}: no server start in the app's log: {logs!r}"
    return logs


def test_debug_mode_only_in_flask_dev(stack):
    logs = app_logs(stack)
    if stack.name == "flask-dev":
        assert "DEVELOPMENT ONLY" in logs and "This is a development server" in logs
    else:
        assert "DEVELOPMENT ONLY" not in logs, f"{stack.name} runs Flask in debug mode"


def test_client_address_and_scheme_survive_the_proxy(stack, base_url):
    # a client forging its address and scheme: ProxyFix must trust only nginx's own hop
    forged = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    response = get(base_url, "/whoami", headers=forged)
    body = response.json()
    assert body["scheme"] == "http", f"{stack.name}: forged X-Forwarded-Proto was trusted"
    assert body["client"] != "203.0.113.7", f"{stack.name}: forged X-Forwarded-For was trusted"
    if stack.behind_nginx:
        # the address Flask reports is the one nginx logged as $remote_addr for this request
        line = stack.access_log(response.headers["X-Request-ID"])
        assert line["client"] == body["client"], f"{stack.name}: nginx saw {line}, Flask {body}"


def test_request_id_round_trip(stack, base_url):
    response = get(base_url, "/whoami")
    body = response.json()
    if not stack.behind_nginx:
        assert body["request_id"] is None  # nobody in front to make one
        return
    request_id = response.headers.get("X-Request-ID")
    assert request_id and re.fullmatch(r"[0-9a-f]{32}", request_id), response.headers
    assert body["request_id"] == request_id
    # a well-formed id from a proxy in front is kept; a malformed one is replaced
    kept = get(base_url, "/whoami", headers={"X-Request-ID": "lb-1234-abcd"})
    assert kept.headers["X-Request-ID"] == "lb-1234-abcd" == kept.json()["request_id"]
    replaced = get(base_url, "/whoami", headers={"X-Request-ID": 'bad id"<script>'})
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["X-Request-ID"])


def test_static_file_served(stack, base_url):
    response = get(base_url, "/static/hello.txt")
    assert response.status_code == 200
    assert response.content == STATIC_FILE.read_bytes()
    if stack.behind_nginx:
        # nginx's `expires 1h`; Flask would answer `no-cache`
        assert response.headers.get("Cache-Control") == "max-age=3600", response.headers
        marker = f"/static/hello.txt?probe={time.time_ns()}"
        assert get(base_url, marker).status_code == 200
        line = stack.access_log(marker)
        assert line["upstream"] is None, (
            f"{stack.name}: nginx passed a static file upstream: {line}"
        )
        if stack.front not in stack.app_services():  # else nginx logs into the app's log too
            assert marker not in app_logs(stack), f"{stack.name}: the app saw it"
    else:
        assert response.headers.get("Cache-Control") == "no-cache"


def test_unknown_path_is_json_404(stack, base_url):
    response = get(base_url, "/no/such/page")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["status"] == 404


def test_wrong_method_is_json_405(stack, base_url):
    response = requests.delete(base_url + "/healthz", timeout=10)
    assert response.status_code == 405
    assert response.json()["status"] == 405
    assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize("seconds", ["", "abc", "0", "-1", "31", "nan", "inf"])
def test_slow_rejects_bad_seconds(stack, base_url, seconds):
    response = get(base_url, "/slow", params={"seconds": seconds})
    assert response.status_code == 400, f"{stack.name}: /slow?seconds={seconds!r}"
    assert "seconds" in response.json()["detail"]


def test_slow_sleeps(stack, base_url):
    started = time.monotonic()
    response = get(base_url, "/slow", params={"seconds": "0.5"})
    assert response.status_code == 200
    assert response.json() == {"slept": 0.5}
    assert time.monotonic() - started >= 0.5


def test_echo_hashes_the_body(stack, base_url):
    body = bytes(range(256)) * 4096  # 1 MiB, above nginx's default 1m client_max_body_size
    response = requests.post(base_url + "/echo", data=body, timeout=30)
    assert response.status_code == 200, f"{stack.name}: POST 1 MiB -> {response.status_code}"
    assert response.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_nginx_errors_are_json_with_the_request_id(stack, base_url):
    """nginx's own refusals answer the app's JSON shape, with the id also in X-Request-ID (the
    502 and 504 bodies: test_failures.py)."""
    if not stack.behind_nginx:
        assert "nginx" not in stack.services(), f"{stack.name} should have no nginx"
        return
    for case, (status, data) in NGINX_REFUSALS.items():
        answer = raw_request(base_url, data.replace(b"\r\n\r\n", CLOSE, 1))
        assert answer.status == status, f"{stack.name}: {case} -> {answer.raw[:300]!r}"
        headers = answer.headers
        assert headers.get("content-type") == "application/json", f"{case}: {headers}"
        body = json.loads(answer.body)
        assert body.pop("request_id") == headers["x-request-id"], f"{case}: {body}"
        assert body.keys() == {"error", "status", "detail"} and body["status"] == status
        assert body["error"] and body["detail"], f"{case}: {body}"


def test_body_over_limit_is_413(stack, base_url):
    response = requests.post(base_url + "/echo", data=b"x" * (10 * 1024 * 1024 + 1), timeout=30)
    assert response.status_code == 413, f"{stack.name}: 10 MiB + 1 byte -> {response.status_code}"


# --- last: what the run above wrote ------------------------------------------------------------


def not_json_objects(text: str) -> list[str]:
    bad = []
    for line in text.splitlines():
        try:
            if not isinstance(json.loads(line), dict):
                bad.append(line)
        except json.JSONDecodeError:
            bad.append(line)
    return bad


def test_logs_keep_the_stacks_format_and_join_on_the_request_id(stack, base_url, contract_started):
    """A request that makes the app log an error is found by its id in nginx's access log and,
    with its traceback, in the app's. With LOG_FORMAT=json (conftest's JSON_LOG_STACKS) every
    line nginx wrote to stdout and every line of the app server during this module's checks is
    one JSON object, the app's error carrying nginx's request id."""
    request_id = f"contract-{uuid.uuid4().hex[:12]}"
    response = get(base_url, "/fault/error", headers={"X-Request-ID": request_id})
    assert response.status_code == 500 and response.json()["status"] == 500
    deadline = time.monotonic() + 10
    while "fault route: an error on purpose" not in (
        app_log := stack.logs(*stack.app_services(), since=contract_started)
    ):
        assert time.monotonic() < deadline, f"{stack.name}: no traceback in the app's log"
        time.sleep(0.3)
    if stack.behind_nginx:
        line = stack.access_log(request_id)
        assert line["status"] == "500" and line["uri"] == "/fault/error", line
    if stack.log_format != "json":
        assert "unhandled error on GET /fault/error" in app_log
        return
    assert not not_json_objects(app_log), f"{stack.name}: app lines not JSON: {app_log[-3000:]}"
    nginx_out = stack.logs(stack.front, since=contract_started, stderr=False)
    assert not not_json_objects(nginx_out), (
        f"{stack.name}: nginx stdout not JSON: {nginx_out[-3000:]}"
    )
    records = [json.loads(line) for line in app_log.splitlines()]
    (error,) = [
        r for r in records if r.get("request_id") == request_id and r.get("level") == "ERROR"
    ]
    assert "RuntimeError: fault route: an error on purpose" in error["exc_info"], error
    assert error["message"] == "unhandled error on GET /fault/error", error
