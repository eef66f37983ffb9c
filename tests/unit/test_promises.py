"""Promises the docs make that need no engine to prove: every published port defaults to the
host's loopback, the healthcheck takes a redirect for unhealthy, a wrong STACK is refused with
the names before anything is installed."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading

import pytest
from ruamel.yaml import YAML

from harness.compose import ROOT, STACKS

# Swarm's `mode: host` ports bind every address (Swarm has no host_ip): docs/swarm.md says so
COMPOSE_FILES = sorted(
    str(p.relative_to(ROOT))
    for pattern in ("stacks/*/compose*.yaml", "shared/compose/*.yaml", "docker-compose.*.yml")
    for p in ROOT.glob(pattern)
    if p.name != "compose.swarm.yaml"
)
DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")  # ${NAME:-default}


def published(path: str) -> list[tuple[str, str]]:
    """(service, host side as it is with no variable set) of every published port."""
    data = YAML(typ="rt").load((ROOT / path).read_text()) or {}
    found = []
    for name, service in (data.get("services") or {}).items():
        for port in (service or {}).get("ports") or []:
            if isinstance(port, dict):  # the long syntax: Swarm's `mode: host` ports
                host = str(port.get("host_ip", "")) + ":" + str(port.get("published", ""))
            else:
                host = DEFAULT.sub(lambda m: m[2], str(port)).rsplit(":", 1)[0]
            found.append((name, host))
    return found


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_published_ports_default_to_loopback(path):
    """With no *_PUBLISH (or HTTPS_BIND) set, nothing listens beyond 127.0.0.1: a user's
    `make up` on a server exposes nothing by accident."""
    ports = published(path)
    for service, host in ports:
        assert host.startswith("127.0.0.1:"), f"{path}: {service} publishes on {host!r}"


class Redirecting(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/healthz":
            self.send_response(302)
            self.send_header("Location", "/ok")
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_healthcheck_does_not_follow_a_redirect():
    """A HEALTH_PATH that redirects (to a login page, say) is unhealthy: its target may well
    answer 200, but that is not the app saying it serves."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        check = [sys.executable, str(ROOT / "shared/docker/healthcheck.py"), base]
        env = {**os.environ}
        redirected = subprocess.run(
            check, env={**env, "HEALTH_PATH": "/healthz"}, capture_output=True, text=True
        )
        direct = subprocess.run(check, env={**env, "HEALTH_PATH": "/ok"}, capture_output=True)
    finally:
        server.shutdown()
    assert redirected.returncode == 1, redirected
    assert "answered 'HTTP/1.0 302" in redirected.stderr, redirected.stderr
    assert direct.returncode == 0, direct  # the same server is healthy where it answers 200


def test_a_wrong_stack_is_refused_with_the_names():
    """`make up STACK=<typo>`: exit 2, the stacks listed, before set-up installs anything."""
    result = subprocess.run(
        ["make", "--no-print-directory", "up", "STACK=nginx-uwsgi-sockets"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result
    assert "STACK='nginx-uwsgi-sockets' is not a stack" in result.stderr, result.stderr
    assert all(name in result.stderr for name in STACKS), result.stderr
    assert "setup:" not in result.stdout + result.stderr, "set-up ran before the check"
