"""Long-lived connections (the app's /ws/echo and /events) through nginx, with real clients
(the `websockets` library, httpx streaming): on the gevent stack they work; on the uWSGI
stacks, whose workers hold one request each, they answer 501 naming the gevent stack."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from flask_stacks import DEFAULT_WS_MAX_MESSAGE_BYTES
from harness.compose import NGINX_STACKS, app_server_of

GEVENT = [name for name in NGINX_STACKS if app_server_of(name) == "gunicorn"]
UWSGI = [name for name in NGINX_STACKS if app_server_of(name) == "uwsgi"]
MAX_MESSAGE = DEFAULT_WS_MAX_MESSAGE_BYTES  # WS_MAX_MESSAGE_BYTES, which the stacks leave unset


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1) + "/ws/echo"


@pytest.mark.stacks(*GEVENT)
def test_websocket_echoes_text_and_binary_through_nginx(stack, base_url):
    with connect(ws_url(base_url), open_timeout=10) as ws:
        assert ws.request.headers.get("X-Request-ID") is None  # the client sends none
        assert ws.response.headers["X-Request-ID"], "nginx's headers on the handshake too"
        for message in ("hello", "é" * 1000, b"\x00\x01\xff" * 100, b""):
            ws.send(message)
            assert ws.recv(timeout=10) == message, f"{stack.name}: {message[:20]!r}"


@pytest.mark.stacks(*GEVENT)
def test_a_message_over_the_limit_closes_with_1009(stack, base_url):
    with connect(ws_url(base_url), open_timeout=10, max_size=None) as ws:
        ws.send("x" * MAX_MESSAGE)
        assert len(ws.recv(timeout=10)) == MAX_MESSAGE  # at the limit: still echoed
        ws.send("x" * (MAX_MESSAGE + 1))
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, closed.value


@pytest.mark.stacks(*GEVENT)
def test_a_foreign_origin_is_refused_at_the_handshake(stack, base_url):
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(base_url), origin="https://evil.example.com", open_timeout=10)
    response = refused.value.response
    assert response.status_code == 403, response
    assert "WS_ALLOWED_ORIGINS" in json.loads(response.body)["detail"]
    # the page's own origin is allowed
    with connect(ws_url(base_url), origin=base_url, open_timeout=10) as ws:
        ws.send("same origin")
        assert ws.recv(timeout=10) == "same origin"


def events(url: str, count: int, headers: dict | None = None) -> list[tuple[float, dict]]:
    """The first `count` events of the stream, each with when it arrived (time.time())."""
    got = []
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict = {}
        for line in response.iter_lines():
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
                continue
            if "data" in fields:  # a blank line ends an event
                got.append((time.time(), {"id": fields["id"], **json.loads(fields["data"])}))
                if len(got) == count:
                    break
            fields = {}
    return got


@pytest.mark.stacks(*GEVENT)
def test_events_arrive_one_by_one_and_resume_from_last_event_id(stack, base_url):
    got = events(base_url + "/events", 4)
    assert [event["id"] for _, event in got] == ["1", "2", "3", "4"]
    late = [round(arrived - event["sent"], 3) for arrived, event in got]
    assert max(late) < 1.5, f"{stack.name}: events held back (buffered?): {late} s late"
    gaps = [round(b[0] - a[0], 2) for a, b in zip(got, got[1:], strict=False)]
    assert min(gaps) > 0.5, f"{stack.name}: events arrived together, not one by one: {gaps}"
    resumed = events(base_url + "/events", 1, headers={"Last-Event-ID": "41"})
    assert resumed[0][1]["id"] == "42"


@pytest.mark.stacks(*UWSGI)
def test_long_lived_routes_name_the_gevent_stack(stack, base_url):
    answer = httpx.get(base_url + "/events", timeout=10)
    assert answer.status_code == 501 and "nginx-gunicorn-gevent" in answer.json()["detail"]
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(base_url), open_timeout=10)
    assert refused.value.response.status_code == 501


def shutting_down(stack) -> int:
    """nginx workers of an earlier configuration still finishing their connections."""
    script = 'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " <"$f"; echo; done'
    return stack.exec("nginx", "sh", "-c", script).count("worker process is shutting down")


@pytest.mark.stacks(*GEVENT)
def test_a_reload_cuts_no_open_websocket(stack, base_url):
    """`nginx -s reload` (what the certificate watcher and the upstream re-resolver do): the
    old workers keep relaying the sockets they hold (up to worker_shutdown_timeout), the new
    ones take new sockets."""
    assert "worker_shutdown_timeout 60s;" in stack.exec("nginx", "nginx", "-T")
    with ExitStack() as held:
        sockets = [
            held.enter_context(connect(ws_url(base_url), open_timeout=10)) for _ in range(100)
        ]
        for number, ws in enumerate(sockets):
            ws.send(f"before {number}")
            assert ws.recv(timeout=10) == f"before {number}"
        stack.exec("nginx", "nginx", "-s", "reload")
        deadline = time.monotonic() + 20
        while not shutting_down(stack):
            assert time.monotonic() < deadline, "no nginx worker shutting down after the reload"
            time.sleep(0.2)
        for number, ws in enumerate(sockets):
            ws.send(f"after {number}")
            assert ws.recv(timeout=10) == f"after {number}", f"socket {number} after the reload"
        with connect(ws_url(base_url), open_timeout=10) as fresh:
            fresh.send("new")
            assert fresh.recv(timeout=10) == "new"
    # the sockets closed, the old workers are gone well before their 60 s
    deadline = time.monotonic() + 20
    while shutting_down(stack):
        assert time.monotonic() < deadline, "old nginx workers linger after their sockets closed"
        time.sleep(0.2)
