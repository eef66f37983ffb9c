"""LOG_FORMAT=json for the app servers and the worker: every record of the app and of the server
as one JSON object per line on stderr, with the request id nginx sent (X-Request-ID), so one id
finds nginx's line and the app's traceback. (Text, the default, leaves logging as the app sets
it up: without the overlay this module is in no container.)

The overlay (shared/json-logs/, docs/logs.md) mounts it at /opt/flask-stacks/lib (on the image's
PYTHONPATH), and the servers import it before the app (uWSGI: json-logs/uwsgi.ini's `import`;
Gunicorn: json-logs/gunicorn.conf.py), so the root handler exists when Flask creates app.logger
(Flask then adds no text handler of its own). The JSON is python-json-logger's: escaping,
exceptions and extra fields done by a maintained library, not here.
"""

from __future__ import annotations

import logging
import sys

# every record: when, how bad, whose, what, and for which request (None outside one)
FIELDS = ["asctime", "levelname", "name", "message", "request_id"]
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}


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
    """The root logger writes JSON lines to stderr, from level INFO (the app's info records too;
    Flask's own handler would show warnings and errors only)."""
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
