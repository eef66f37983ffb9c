"""The shared Flask app on its own, through Flask's test client: no Docker, no server."""

import gc
import hashlib
import time

import pytest
from werkzeug.exceptions import InternalServerError

from flask_stacks import create_app


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setenv("PROXY_COUNT", "1")
    monkeypatch.delenv("MAX_BODY_BYTES", raising=False)
    monkeypatch.delenv("FAULT_ROUTES", raising=False)
    return create_app().test_client()


def test_greeting(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.text == "Hello from flask-stacks!\n"


def test_admin(client):
    assert client.get("/admin/").text == "Hello from the admin page!\n"


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_whoami_trusts_one_proxy_hop(client):
    headers = {
        "X-Forwarded-For": "203.0.113.7, 198.51.100.9",
        "X-Forwarded-Proto": "https",
        "X-Request-ID": "abc123def456",
    }
    body = client.get("/whoami", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.2"}).json
    assert body["client"] == "198.51.100.9"  # the hop our one proxy added, not the forged one
    assert body["scheme"] == "https"
    assert body["request_id"] == "abc123def456"
    assert body["server"] is None  # the test client is no server
    assert set(body) == {"hostname", "pid", "server", "client", "scheme", "host", "request_id"}


def test_no_proxy_trusts_no_header(monkeypatch):
    monkeypatch.setenv("PROXY_COUNT", "0")
    client = create_app().test_client()
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    body = client.get("/whoami", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.2"}).json
    assert body["client"] == "10.0.0.2"
    assert body["scheme"] == "http"


def test_whoami_names_uwsgi(client):
    body = client.get("/whoami", environ_base={"uwsgi.version": b"2.0.31"}).json
    assert body["server"] == "uWSGI/2.0.31"


def test_debug_mode_is_announced(monkeypatch, caplog):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    assert create_app().debug
    assert "DEVELOPMENT ONLY" in caplog.text


def test_debug_is_off_by_default(monkeypatch):
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    assert not create_app().debug


@pytest.mark.parametrize("value", ["two", "-1", "1.5", ""])
def test_bad_proxy_count_stops_the_start(monkeypatch, value):
    monkeypatch.setenv("PROXY_COUNT", value)
    with pytest.raises(RuntimeError, match=r"PROXY_COUNT must be a whole number >= 0"):
        create_app()


@pytest.mark.parametrize("seconds", ["0.01", "0.2"])
def test_slow_sleeps(client, seconds):
    response = client.get(f"/slow?seconds={seconds}")
    assert response.status_code == 200
    assert response.json == {"slept": float(seconds)}


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?seconds=",
        "?seconds=x",
        "?seconds=0",
        "?seconds=-2",
        "?seconds=30.01",
        "?seconds=nan",
        "?seconds=inf",
    ],
)
def test_slow_rejects_bad_seconds(client, query):
    response = client.get("/slow" + query)
    assert response.status_code == 400
    assert response.json["status"] == 400
    assert "parameter 'seconds'" in response.json["detail"]


def test_echo(client):
    body = b"flask-stacks" * 1000
    response = client.post("/echo", data=body)
    assert response.json == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_echo_empty(client):
    assert client.post("/echo").json == {"length": 0, "sha256": hashlib.sha256(b"").hexdigest()}


def test_echo_over_limit_is_413(monkeypatch):
    monkeypatch.setenv("MAX_BODY_BYTES", "100")
    response = create_app().test_client().post("/echo", data=b"x" * 101)
    assert response.status_code == 413
    assert response.json["status"] == 413


def test_static_file(client):
    response = client.get("/static/hello.txt")
    assert response.status_code == 200
    assert response.text == "Static file from flask-stacks.\n"
    response.close()


def test_errors_are_json(client):
    not_found = client.get("/nope")
    assert not_found.status_code == 404
    assert not_found.json == {
        "error": "Not Found",
        "status": 404,
        "detail": not_found.json["detail"],
    }
    not_allowed = client.delete("/")
    assert not_allowed.status_code == 405
    assert "GET" in not_allowed.headers["Allow"]
    assert not_allowed.is_json


def test_unhandled_error_is_json_500_without_traceback(client):
    app = client.application

    @app.get("/boom")
    def boom():
        raise ValueError("secret internals")

    response = client.get("/boom")
    assert response.status_code == 500
    assert response.json["status"] == 500
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text


def test_fault_routes_are_off_by_default(client):
    assert client.get("/fault/hang?seconds=0.01").status_code == 404
    assert client.get("/fault/grow?mib=1").status_code == 404
    assert client.get("/fault/collect").status_code == 404
    assert client.get("/fault/error").status_code == 404


@pytest.fixture
def faulty(monkeypatch):
    monkeypatch.setenv("FAULT_ROUTES", "1")
    return create_app().test_client()


def test_fault_hang_waits_and_names_its_worker(faulty):
    for query in ("seconds=0.05", "seconds=0.05&cooperative=1"):
        response = faulty.get("/fault/hang?" + query)
        assert response.status_code == 200, query
        assert response.json["hung"] == 0.05 and response.json["pid"] > 0


def test_fault_error_logs_its_traceback_and_answers_json_500(faulty, caplog):
    response = faulty.get("/fault/error")
    assert response.status_code == 500
    assert response.json == {
        "error": "Internal Server Error",
        "status": 500,
        "detail": InternalServerError.description,
    }
    (record,) = [r for r in caplog.records if r.exc_info]
    assert "fault route: an error on purpose" in str(record.exc_info[1])


def test_fault_grow_keeps_the_memory(faulty):
    first = faulty.get("/fault/grow?mib=1").json
    second = faulty.get("/fault/grow?mib=2").json
    assert second["kept_mib"] - first["kept_mib"] == 2


def test_fault_collect_reports_the_frozen_objects(faulty):
    gc.freeze()
    try:
        answer = faulty.get("/fault/collect").json
    finally:
        gc.unfreeze()
    assert answer["frozen"] > 0 and answer["collected"] >= 0 and answer["pid"] > 0
    assert faulty.get("/fault/collect").json["frozen"] == 0
    started = time.monotonic()
    assert faulty.get("/fault/collect?hold=0.2").status_code == 200  # keeps its worker busy
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    "path",
    ["/fault/hang?seconds=121", "/fault/grow?mib=0", "/fault/grow", "/fault/collect?hold=x"],
)
def test_fault_routes_reject_bad_numbers(faulty, path):
    response = faulty.get(path)
    assert response.status_code == 400 and "must be a number" in response.json["detail"]


@pytest.mark.parametrize("value", ["2", "yes", "-1"])
def test_bad_fault_routes_setting_stops_the_start(monkeypatch, value):
    monkeypatch.setenv("FAULT_ROUTES", value)
    with pytest.raises(RuntimeError, match=r"FAULT_ROUTES must be a whole number from 0 to 1"):
        create_app()


# --- long-lived connections: /ws/echo and /events -------------------------------------------


@pytest.mark.parametrize("path", ["/ws/echo", "/events"])
def test_long_lived_routes_name_the_gevent_stack_on_one_request_per_worker_servers(client, path):
    response = client.get(path, headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert response.status_code == 501, response.data
    assert "nginx-gunicorn-gevent" in response.json["detail"]


@pytest.fixture
def cheap(monkeypatch):
    """The app as a server that holds long-lived connections cheaply (gevent) runs it."""
    import flask_stacks

    monkeypatch.setattr(flask_stacks, "_holds_long_connections", lambda: True)
    monkeypatch.setenv("WS_ALLOWED_ORIGINS", "https://app.example.com")
    return create_app().test_client()


def test_a_plain_get_of_the_websocket_gets_426(cheap):
    response = cheap.get("/ws/echo")
    assert response.status_code == 426 and "WebSocket client" in response.json["detail"]


@pytest.mark.parametrize("origin", ["https://evil.example.com", "http://app.example.com", "null"])
def test_a_foreign_origin_is_refused_at_the_handshake(cheap, origin):
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Origin": origin}
    response = cheap.get("/ws/echo", headers=headers)
    assert response.status_code == 403 and "WS_ALLOWED_ORIGINS" in response.json["detail"]


def test_events_are_numbered_and_resume_after_last_event_id(cheap, monkeypatch):
    import flask_stacks

    monkeypatch.setattr(flask_stacks, "EVENT_SECONDS", 0.01)
    response = cheap.get("/events", headers={"Last-Event-ID": "41"})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    chunks = response.response  # the stream, read as a client would
    assert next(chunks) == b"retry: 10\n\n"
    assert next(chunks).startswith(b'id: 42\nevent: tick\ndata: {"n": 42')
    assert next(chunks).startswith(b"id: 43\n")
    response.close()


def test_the_server_stopping_ends_the_event_streams(cheap):
    import flask_stacks

    response = cheap.get("/events")
    chunks = response.response
    assert next(chunks).startswith(b"retry:") and next(chunks).startswith(b"id: 1\n")
    flask_stacks.SERVER_STOPPING.send("a test")  # what gunicorn.conf.py sends on SIGTERM
    started = time.monotonic()
    assert next(chunks, None) is None, "the stream went on after the server said it stops"
    assert time.monotonic() - started < 0.5  # not after the next event's second
    response.close()


@pytest.mark.parametrize("value", ["x", "-1", "1" * 19])
def test_a_bad_last_event_id_gets_400(cheap, value):
    response = cheap.get("/events", headers={"Last-Event-ID": value})
    assert response.status_code == 400 and "Last-Event-ID" in response.json["detail"]


@pytest.mark.parametrize("value", ["app.example.com", "https://app.example.com/path", "ftp://x"])
def test_a_bad_allowed_origin_stops_the_start(monkeypatch, value):
    monkeypatch.setenv("WS_ALLOWED_ORIGINS", value)
    with pytest.raises(RuntimeError, match="WS_ALLOWED_ORIGINS entry"):
        create_app()
