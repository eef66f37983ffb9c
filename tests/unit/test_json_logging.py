"""LOG_FORMAT=json (shared/json-logs/flask_stacks_logging.py), in a fresh interpreter each time:
it configures the root logger at import, as the app servers import it before the app; and the
value make checks (stackctl/apps.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from harness.compose import ROOT
from stackctl import apps

# the demo app, one request that fails on purpose with a request id, as nginx would send it
SCRIPT = """
import flask_stacks_logging, logging
from flask_stacks import create_app
app = create_app()
app.test_client().get("/fault/error", headers={"X-Request-ID": "rid-unit-1234"})
logging.getLogger("outside").warning("no request here")
"""


# Gunicorn's logger as json-logs/gunicorn.conf.py sets it
GUNICORN = """
import flask_stacks_logging
from gunicorn.config import Config
cfg = Config()
cfg.set("errorlog", "-")
log = flask_stacks_logging.gunicorn_logger_class()(cfg)
log.error("Worker (pid:%s) was sent SIGKILL!", 7)
print("access log on:", log.access_log_enabled)
"""


def run(script: str = SCRIPT) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "FAULT_ROUTES": "1",
        "PYTHONPATH": f"{ROOT / 'shared/json-logs'}:{ROOT / 'shared/app'}",
    }
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )


def test_json_lines_carry_the_request_id_and_the_traceback():
    result = run()
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
    """Without the overlay's module the app logs as it sets up (here Flask's own text handler)."""
    result = run(SCRIPT.replace("import flask_stacks_logging, logging", "import logging"))
    assert result.returncode == 0, result.stderr
    assert "unhandled error on GET /fault/error" in result.stderr
    assert not result.stderr.lstrip().startswith("{"), result.stderr


@pytest.mark.parametrize(("value", "expected"), [("", "text"), ("text", "text"), ("json", "json")])
def test_log_format_is_text_or_json(value, expected):
    assert apps.log_format({"LOG_FORMAT": value}) == expected


def test_an_unknown_format_is_refused_with_the_choices():
    with pytest.raises(apps.AppError, match="LOG_FORMAT='yaml' must be text .the default. or json"):
        apps.log_format({"LOG_FORMAT": "yaml"})


def test_gunicorn_error_log_is_json_and_its_access_log_stays_off():
    result = run(GUNICORN)
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    record = json.loads(line)
    assert record["logger"] == "gunicorn.error" and record["level"] == "ERROR", record
    assert record["message"] == "Worker (pid:7) was sent SIGKILL!" and record["request_id"] is None
    assert result.stdout.strip() == "access log on: False"
