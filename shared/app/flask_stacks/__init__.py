"""The one Flask app that every stack in this repository serves.

Its endpoints exist to prove a deployment: which server and container answered, what
client address and scheme survived the proxy, how uploads and slow requests behave.
"""

import gc
import hashlib
import json
import math
import os
import socket
import sys
import threading
import time
import weakref
from contextlib import suppress
from urllib.parse import urlsplit

import blinker
from flask import Flask, Response, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, InternalServerError
from werkzeug.middleware.proxy_fix import ProxyFix

MAX_SLOW_SECONDS = 30.0
MAX_HANG_SECONDS = 120.0
MAX_GROW_MIB = 1024
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024  # same limit as nginx's client_max_body_size 10m
DEFAULT_WS_MAX_MESSAGE_BYTES = 64 * 1024
WS_PING_SECONDS = 25  # a ping on every idle WebSocket, inside nginx's 35 s proxy_read_timeout
EVENT_SECONDS = 1.0  # /events: one event a second
# the routes that hold their connection open: only a server that holds them cheaply serves them
LONG_LIVED = ("/ws/echo", "/events")
# Sent (a named blinker signal, so the server's config needs no import of the app) when the
# server stops this process: gunicorn.conf.py sends it as soon as SIGTERM reaches a worker
SERVER_STOPPING = blinker.signal("flask-stacks.server-stopping")
GOING_AWAY = 1001  # the WebSocket close code for "the server is going away"


def _env_int(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    """Read a whole-number setting, failing at start with a message that says what to fix."""
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise RuntimeError(f"{name} must be a whole number {allowed}, got {raw!r}")
    return value


def _number(name: str, low: float, high: float) -> float:
    """A query parameter in (low, high], or 400 with what is allowed."""
    raw = request.args.get(name, "")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low < value <= high:  # also rejects nan and inf
        raise BadRequest(f"parameter {name!r} must be a number in ({low:g}, {high:g}], got {raw!r}")
    return value


def _blocking_sleep(seconds: float) -> None:
    """Sleep without yielding: under gevent, the unpatched time.sleep (the whole worker waits)."""
    if "gevent" in sys.modules:
        from gevent import monkey

        monkey.get_original("time", "sleep")(seconds)
    else:
        time.sleep(seconds)


_GROWN: list[bytes] = []  # what /fault/grow keeps alive in this worker


class NotImplementedHere(HTTPException):
    code = 501
    description = (
        "This server holds one request per worker: a WebSocket or an event stream would keep a "
        "worker for as long as it is open. Serve them from the nginx-gunicorn-gevent stack."
    )


class UpgradeRequired(HTTPException):
    code = 426
    description = "A WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)."


def _holds_long_connections() -> bool:
    """Whether this server holds a long-lived connection for the price of a greenlet or a
    thread, not a worker: Gunicorn's gevent worker (the socket module patched) or Werkzeug's
    threaded development server; not uWSGI's single-threaded workers (nor sync Gunicorn)."""
    if "werkzeug.socket" in request.environ:
        return True
    if "gevent" in sys.modules:
        from gevent import monkey

        return monkey.is_module_patched("socket")
    return False


def _allowed_origins() -> set[str]:
    """WS_ALLOWED_ORIGINS: the browser origins allowed to open WebSockets, comma-separated
    ("https://app.example.com,https://admin.example.com"); the page's own origin always is."""
    raw = os.environ.get("WS_ALLOWED_ORIGINS", "")
    origins = {entry.strip().rstrip("/") for entry in raw.split(",") if entry.strip()}
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise RuntimeError(
                f"WS_ALLOWED_ORIGINS entry {origin!r} is not an origin: scheme://host[:port], "
                "e.g. WS_ALLOWED_ORIGINS=https://app.example.com"
            )
    return origins


def create_app() -> Flask:
    """Build the app. Settings come from the environment:

    PROXY_COUNT     proxies in front of the app whose X-Forwarded-* headers are trusted
                    (1 behind nginx, 0 when clients connect directly)
    MAX_BODY_BYTES  largest accepted request body (413 above it)
    WS_ALLOWED_ORIGINS   browser origins, besides the page's own, that may open /ws/echo
    WS_MAX_MESSAGE_BYTES largest WebSocket message (a bigger one closes it with 1009)
    DATABASE_URL, REDIS_URL   set by the DB=postgres and QUEUE=redis overlays: /notes and
                    /jobs (flask_stacks/services.py)
    FAULT_ROUTES    1: also serve /fault/hang, /fault/grow, /fault/collect and /fault/error,
                    which the tests use to make a worker stuck, leak, collect its garbage or
                    fail; never in production (default 0)
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = _env_int("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1)
    # flask-sock (simple-websocket): a message above the limit closes the socket with 1009
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": WS_PING_SECONDS,
        "max_message_size": _env_int("WS_MAX_MESSAGE_BYTES", DEFAULT_WS_MAX_MESSAGE_BYTES, 1),
    }
    origins = _allowed_origins()
    sock = Sock(app)
    stopping = threading.Event()  # gevent's, where gevent has patched threading
    open_sockets = weakref.WeakSet()

    def going_away(_sender, **_):
        """The server stops: end the event streams, close each WebSocket with 1001 now rather
        than have the server cut it (1006) at its graceful timeout; clients reconnect."""
        stopping.set()
        for ws in list(open_sockets):
            with suppress(ConnectionClosed):  # the client closed it meanwhile
                ws.close(GOING_AWAY, "server going away")

    SERVER_STOPPING.connect(going_away)  # held weakly: it lives as long as the app
    app.extensions["flask_stacks.going_away"] = going_away
    app.json.sort_keys = False
    if app.debug:  # FLASK_DEBUG=1, as `flask run --debug` sets: say so where operators look
        app.logger.warning(
            "DEVELOPMENT ONLY: debug mode is on (interactive debugger, reloader). "
            "Never serve this to a network; use an nginx stack."
        )

    proxies = _env_int("PROXY_COUNT", 1, 0)
    if proxies:
        # trust exactly the proxies we run: more would let a client spoof its address
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)

    @app.get("/")
    def index():
        return "Hello from flask-stacks!\n", {"Content-Type": "text/plain; charset=utf-8"}

    @app.get("/admin/")
    def admin():
        return "Hello from the admin page!\n", {"Content-Type": "text/plain; charset=utf-8"}

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/whoami")
    def whoami():
        environ = request.environ
        server = environ.get("SERVER_SOFTWARE")
        if not server and "uwsgi.version" in environ:  # uWSGI does not set SERVER_SOFTWARE
            server = "uWSGI/" + environ["uwsgi.version"].decode()
        return {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "server": server,
            "client": request.remote_addr,
            "scheme": request.scheme,
            "host": request.host,
            "request_id": request.headers.get("X-Request-ID"),
        }

    @app.get("/slow")
    def slow():
        seconds = _number("seconds", 0, MAX_SLOW_SECONDS)
        time.sleep(seconds)  # cooperative under gevent: its worker patches time.sleep
        return {"slept": seconds}

    if _env_int("FAULT_ROUTES", 0, 0, 1):

        @app.get("/fault/hang")
        def hang():
            """A stuck request: `seconds` past every timeout; `cooperative=1` waits the way
            gevent can switch away from, otherwise the worker itself is blocked."""
            seconds = _number("seconds", 0, MAX_HANG_SECONDS)
            if request.args.get("cooperative") == "1":
                time.sleep(seconds)
            else:
                _blocking_sleep(seconds)
            return {"hung": seconds, "pid": os.getpid(), "hostname": socket.gethostname()}

        @app.get("/fault/grow")
        def grow():
            """A leak: this worker keeps `mib` MiB more, written so that it is resident."""
            mib = _number("mib", 0, MAX_GROW_MIB)
            _GROWN.append(b"\x01" * int(mib * 1024 * 1024))
            kept = sum(map(len, _GROWN)) / 1024 / 1024
            return {"kept_mib": kept, "pid": os.getpid(), "hostname": socket.gethostname()}

        @app.get("/fault/collect")
        def collect():
            """A full garbage collection in this worker now; how many objects are frozen (out
            of the collector's reach: wsgi.py's gc.freeze() keeps the master's pages shared).
            `hold` seconds after it the worker stays busy, so that as many requests at once as
            there are workers reach every one of them."""
            frozen, collected = gc.get_freeze_count(), gc.collect()
            if "hold" in request.args:
                _blocking_sleep(_number("hold", 0, MAX_SLOW_SECONDS))
            return {"frozen": frozen, "collected": collected, "pid": os.getpid(),
                    "hostname": socket.gethostname()}  # fmt: skip

        @app.get("/fault/error")
        def error():
            """A bug: an unhandled exception, so the app logs its traceback and answers 500."""
            raise RuntimeError("fault route: an error on purpose")

    @app.before_request
    def long_lived_only_where_cheap():
        """/ws/echo and /events: 501 naming the gevent stack on servers that would give each a
        worker; then, for the WebSocket, the handshake's checks (a browser page of a foreign
        origin gets 403, a plain GET 426) before anything is upgraded."""
        if request.path not in LONG_LIVED:
            return
        if not _holds_long_connections():
            raise NotImplementedHere()
        if request.path != "/ws/echo":
            return
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise UpgradeRequired()
        origin = request.headers.get("Origin")  # browsers send it; other clients need not
        own = request.host_url.rstrip("/")
        if origin is not None and origin.rstrip("/") not in origins | {own}:
            raise Forbidden(f"Origin {origin!r} may not open WebSockets here (WS_ALLOWED_ORIGINS).")

    @sock.route("/ws/echo")
    def ws_echo(ws):
        """Every message back as it came: text as text, binary as binary."""
        open_sockets.add(ws)
        try:
            while True:
                ws.send(ws.receive())
        finally:
            open_sockets.discard(ws)

    @app.get("/events")
    def events():
        """Server-sent events: one a second, numbered; a client that reconnects with
        Last-Event-ID goes on from the next number."""
        last = request.headers.get("Last-Event-ID", "0")
        if not last.isdigit() or len(last) > 18:
            raise BadRequest(f"Last-Event-ID must be a whole number, got {last!r}")

        def stream(number: int):
            yield f"retry: {int(EVENT_SECONDS * 1000)}\n\n"
            while not stopping.is_set():
                number += 1
                data = json.dumps({"n": number, "sent": round(time.time(), 3), "pid": os.getpid()})
                yield f"id: {number}\nevent: tick\ndata: {data}\n\n"
                stopping.wait(EVENT_SECONDS)  # cooperative under gevent; ends when the server stops

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: pass on at once
        return Response(stream(int(last)), mimetype="text/event-stream", headers=headers)

    @app.post("/echo")
    def echo():
        digest = hashlib.sha256()
        length = 0
        # MAX_CONTENT_LENGTH caps the stream: 413 instead of reading an endless body
        for chunk in iter(lambda: request.stream.read(64 * 1024), b""):
            digest.update(chunk)
            length += len(chunk)
        return {"length": length, "sha256": digest.hexdigest()}

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        response = error.get_response()  # keeps headers such as Allow on 405
        response.data = app.json.dumps(
            {"error": error.name, "status": error.code, "detail": error.description}
        )
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return http_error(InternalServerError())

    # DB=postgres, QUEUE=redis (docs/services.md): their routes, only when they are on
    if os.environ.get("DATABASE_URL") or os.environ.get("REDIS_URL"):
        from flask_stacks import services

        services.register(app)

    return app
