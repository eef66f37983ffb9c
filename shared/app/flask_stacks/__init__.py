"""The one Flask app that every stack in this repository serves.

Its endpoints exist to prove a deployment: which server and container answered, what
client address and scheme survived the proxy, how uploads and slow requests behave.
"""

import hashlib
import math
import os
import socket
import time

from flask import Flask, request
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError
from werkzeug.middleware.proxy_fix import ProxyFix

MAX_SLOW_SECONDS = 30.0
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024  # same limit as nginx's client_max_body_size 10m


def _env_int(name: str, default: int, minimum: int) -> int:
    """Read a whole-number setting, failing at start with a message that says what to fix."""
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise RuntimeError(f"{name} must be a whole number >= {minimum}, got {raw!r}")
    return value


def create_app() -> Flask:
    """Build the app. Settings come from the environment:

    PROXY_COUNT     proxies in front of the app whose X-Forwarded-* headers are trusted
                    (1 behind nginx, 0 when clients connect directly)
    MAX_BODY_BYTES  largest accepted request body (413 above it)
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
        raw = request.args.get("seconds", "")
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not 0 < seconds <= MAX_SLOW_SECONDS:  # also rejects nan and inf
            raise BadRequest(
                f"parameter 'seconds' must be a number in (0, {MAX_SLOW_SECONDS:g}], got {raw!r}"
            )
        time.sleep(seconds)  # cooperative under gevent: its worker patches time.sleep
        return {"slept": seconds}

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
