"""LOG_FORMAT (shared/python/flask_stacks_logging.py), in a fresh interpreter each time: it
configures the root logger at import, as the app servers import it before the app."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from harness.compose import ROOT

# the demo app, one request that fails on purpose with a request id, as nginx would send it
SCRIPT = """
import flask_stacks_logging, logging
from flask_stacks import create_app
app = create_app()
app.test_client().get("/fault/error", headers={"X-Request-ID": "rid-unit-1234"})
logging.getLogger("outside").warning("no request here")
"""


# Gunicorn's logger as gunicorn.conf.py sets it for LOG_FORMAT=json
GUNICORN = """
import flask_stacks_logging
from gunicorn.config import Config
cfg = Config()
cfg.set("errorlog", "-")
log = flask_stacks_logging.gunicorn_logger_class()(cfg)
log.error("Worker (pid:%s) was sent SIGKILL!", 7)
print("access log on:", log.access_log_enabled)
"""


def run(log_format: str, script: str = SCRIPT) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "LOG_FORMAT": log_format,
        "FAULT_ROUTES": "1",
        "PYTHONPATH": f"{ROOT / 'shared/python'}:{ROOT / 'shared/app'}",
    }
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )


def test_json_lines_carry_the_request_id_and_the_traceback():
    result = run("json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    error, outside = lines
    assert error["level"] == "ERROR" and error["logger"] == "flask_stacks", error
    assert error["request_id"] == "rid-unit-1234"
    assert "unhandled error on GET /fault/error" in error["message"]
    assert "RuntimeError: fault route: an error on purpose" in error["exc_info"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", error["time"]), error
    assert outside["request_id"] is None and outside["message"] == "no request here"


def test_text_leaves_the_apps_own_logging():
    result = run("text")
    assert result.returncode == 0, result.stderr
    assert "unhandled error on GET /fault/error" in result.stderr
    assert not result.stderr.lstrip().startswith("{"), result.stderr


def test_unknown_format_is_refused_with_the_choices():
    result = run("yaml")
    assert result.returncode != 0
    assert "LOG_FORMAT='yaml' must be one of text, json (default text)" in result.stderr
    assert "Traceback" not in result.stderr


def test_gunicorn_error_log_is_json_and_its_access_log_stays_off():
    result = run("json", GUNICORN)
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    record = json.loads(line)
    assert record["logger"] == "gunicorn.error" and record["level"] == "ERROR", record
    assert record["message"] == "Worker (pid:7) was sent SIGKILL!" and record["request_id"] is None
    assert result.stdout.strip() == "access log on: False"
