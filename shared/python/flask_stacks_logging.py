"""LOG_FORMAT for the app servers: `text` (the default) leaves logging as the app sets it up;
`json` writes every record of the app and of the server as one JSON object per line on stderr,
with the request id nginx sent (X-Request-ID), so one id finds nginx's line and the app's
traceback.

Imported before the app (uWSGI: shared/uwsgi/base.ini; Gunicorn: gunicorn.conf.py), so the
root handler exists when Flask creates app.logger (Flask then adds no text handler of its
own). The JSON is python-json-logger's: escaping, exceptions and extra fields done by a
maintained library, not here. Mounted at /opt/flask-stacks/lib (on the image's PYTHONPATH).
"""

from __future__ import annotations

import logging
import os
import sys

FORMATS = ("text", "json")
# every record: when, how bad, whose, what, and for which request (None outside one)
FIELDS = ["asctime", "levelname", "name", "message", "request_id"]
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}


def log_format() -> str:
    value = os.environ.get("LOG_FORMAT", "text") or "text"
    if value not in FORMATS:
        raise SystemExit(f"LOG_FORMAT={value!r} must be one of {', '.join(FORMATS)} (default text)")
    return value


class RequestId(logging.Filter):
    """Adds `request_id`: the X-Request-ID of the Flask request being served, else None."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = None
        flask = sys.modules.get("flask")  # an app that is not Flask has no request to ask
        if flask is not None and flask.has_request_context():
            record.request_id = flask.request.headers.get("X-Request-ID")
        return True


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    # ISO 8601 like nginx's $time_iso8601; non-ASCII escaped, so every line is valid anywhere
    return JsonFormatter(FIELDS, rename_fields=RENAMED, datefmt="%Y-%m-%dT%H:%M:%S%z")


def as_json(handler: logging.Handler) -> logging.Handler:
    """The handler, writing JSON records that carry the request id."""
    handler.setFormatter(json_formatter())
    handler.addFilter(RequestId())
    return handler


def configure() -> None:
    """With LOG_FORMAT=json, the root logger writes JSON lines to stderr, from level INFO (the
    app's info records too; Flask's own handler would show warnings and errors only)."""
    if log_format() != "json":
        return
    root = logging.getLogger()
    root.handlers[:] = [as_json(logging.StreamHandler(sys.stderr))]
    root.setLevel(logging.INFO)


def gunicorn_logger_class():
    """Gunicorn's logger with JSON error lines; its access log stays off (nginx writes one
    line per request; a logconfig_dict would turn Gunicorn's on, and its cost per request)."""
    from gunicorn.glogging import Logger

    class JsonLogger(Logger):
        def setup(self, cfg) -> None:
            super().setup(cfg)
            for handler in self.error_log.handlers:
                as_json(handler)

    return JsonLogger


configure()
