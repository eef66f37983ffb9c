"""The one Flask app that every stack in this repository serves.

Its endpoints exist to prove a deployment: which server and container answered, what
client address and scheme survived the proxy, how uploads and slow requests behave.
"""

import hashlib
import math
import os
import socket
import sys
import time

from flask import Flask, request
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError
from werkzeug.middleware.proxy_fix import ProxyFix

MAX_SLOW_SECONDS = 30.0
MAX_HANG_SECONDS = 120.0
MAX_GROW_MIB = 1024
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024  # same limit as nginx's client_max_body_size 10m


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


def create_app() -> Flask:
    """Build the app. Settings come from the environment:

    PROXY_COUNT     proxies in front of the app whose X-Forwarded-* headers are trusted
                    (1 behind nginx, 0 when clients connect directly)
    MAX_BODY_BYTES  largest accepted request body (413 above it)
    FAULT_ROUTES    1: also serve /fault/hang, /fault/grow and /fault/error, which the tests
                    use to make a worker stuck, leaking or fail; never in production (default 0)
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = _env_int("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1)
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
            return {"hung": seconds, "pid": os.getpid()}

        @app.get("/fault/grow")
        def grow():
            """A leak: this worker keeps `mib` MiB more, written so that it is resident."""
            mib = _number("mib", 0, MAX_GROW_MIB)
            _GROWN.append(b"\x01" * int(mib * 1024 * 1024))
            kept = sum(map(len, _GROWN)) / 1024 / 1024
            return {"kept_mib": kept, "pid": os.getpid(), "hostname": socket.gethostname()}

        @app.get("/fault/error")
        def error():
            """A bug: an unhandled exception, so the app logs its traceback and answers 500."""
            raise RuntimeError("fault route: an error on purpose")

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

    return app
