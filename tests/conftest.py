"""Fixtures that bring a stack's compose project up for a test module and always take it down.

`stack` (module scope) -> a running compose project under a unique name, on a host port the
OS picked -> `base_url`. Stacks are discovered from stacks/*/compose.yaml: a new stack
directory is tested without editing a list.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STACKS = sorted(p.parent.name for p in ROOT.glob("stacks/*/compose.yaml"))
UP_TIMEOUT = 300  # seconds; the first run builds the app image


def images_env() -> dict[str, str]:
    """Base images chosen by scripts/setup.sh (.images.env), unless the caller set them."""
    env = {}
    path = ROOT / ".images.env"
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key not in os.environ:
                env[key] = value
    return env


def publish_var(stack: str) -> str:
    """The env var that sets a stack's published address, e.g. NGINX_UWSGI_SOCKET_PUBLISH."""
    return stack.upper().replace("-", "_") + "_PUBLISH"


@dataclass
class Stack:
    """A compose project of one stack, under a unique project name."""

    name: str
    project: str
    env: dict[str, str]
    failed: bool = field(default=False)

    @property
    def compose_file(self) -> Path:
        return ROOT / "stacks" / self.name / "compose.yaml"

    @property
    def behind_nginx(self) -> bool:
        return "nginx" in self.services()

    def compose(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = ["docker", "compose", "-f", str(self.compose_file), "-p", self.project, *args]
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, check=check, timeout=timeout
        )

    def services(self) -> list[str]:
        return self.compose("config", "--services").stdout.split()

    def exec(self, service: str, *cmd: str, check: bool = True) -> str:
        return self.compose("exec", "-T", service, *cmd, check=check).stdout

    def logs(self, service: str = "") -> str:
        args = ["logs", "--no-color", "--no-log-prefix"] + ([service] if service else [])
        return self.compose(*args, check=False).stdout

    def base_url(self) -> str:
        """URL of the stack's front door: nginx if it has one, else its only published port."""
        rows = [json.loads(line) for line in self.compose("ps", "--format", "json").stdout.splitlines() if line]
        published = {
            row["Service"]: f"http://{p['URL']}:{p['PublishedPort']}"
            for row in rows
            for p in row.get("Publishers") or []
            if p.get("PublishedPort")
        }
        if "nginx" in published:
            return published["nginx"]
        assert len(published) == 1, f"{self.name}: expected one published port, got {published}"
        return next(iter(published.values()))


def docker_available() -> str | None:
    """None if a Docker engine and Compose v2 answer, else what is missing and how to fix it."""
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
        compose = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired) as error:
        return f"the docker CLI is missing or hangs ({error})"
    if info.returncode:
        return f"no Docker engine answers: {info.stderr.strip()[:300]}"
    if compose.returncode:
        return "Docker Compose v2 is missing (`docker compose version` failed)"
    return None


@pytest.fixture(scope="session")
def docker() -> None:
    """Fail, loudly and with the fix, when there is no Docker engine: never skip silently."""
    problem = docker_available()
    if problem:
        pytest.fail(
            f"{problem}.\nThe stack tests need Docker: run `make setup` (as root on Debian it "
            "installs and starts the engine), or start your own engine; `make test-unit` runs "
            "the tests that need none.",
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Mark the module's stack as failed, so its teardown prints the containers' logs."""
    report = yield
    stack = item.funcargs.get("stack") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(stack, Stack):
        stack.failed = True
    return report


def start_stack(name: str, **env: str) -> Stack:
    stack = Stack(
        name=name,
        project=f"fs-test-{name}-{uuid.uuid4().hex[:6]}",
        env={**os.environ, **images_env(), publish_var(name): "127.0.0.1:0", **env},
    )
    result = stack.compose(
        "up", "--build", "--detach", "--wait", "--wait-timeout", str(UP_TIMEOUT),
        check=False, timeout=UP_TIMEOUT + 60,
    )
    if result.returncode:
        logs = stack.logs()
        stop_stack(stack)
        pytest.fail(
            f"{name}: `docker compose up --wait` failed:\n{result.stderr[-3000:]}\n"
            f"--- logs ---\n{logs[-5000:]}",
            pytrace=False,
        )
    return stack


def stop_stack(stack: Stack) -> None:
    if stack.failed:
        print(f"\n--- {stack.name}: logs (a test failed) ---\n{stack.logs()[-20000:]}")
    stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "40", check=False, timeout=120)


@pytest.fixture(scope="module", params=STACKS)
def stack(request, docker) -> Stack:
    """Each stack, up once for the module, always taken down (with its volumes) afterwards."""
    started = start_stack(request.param)
    try:
        yield started
    finally:
        stop_stack(started)


@pytest.fixture(scope="module")
def base_url(stack: Stack) -> str:
    """The stack's front door on 127.0.0.1 (nginx, or the dev server's own port)."""
    return stack.base_url()
