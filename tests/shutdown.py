"""Graceful stop, the same check for every app server: an in-flight request completes."""

from __future__ import annotations

import time

from conftest import Stack
from traffic import Background


def assert_stop_drains(stack: Stack, base_url: str, service: str = "app") -> None:
    """`docker compose stop` the app server while a 3 s request is in flight: it must answer
    200, and the server must exit on its own well before compose's kill (stop_grace_period)."""
    in_flight = Background(base_url + "/slow?seconds=3")
    time.sleep(1)  # the request is now inside a worker
    started = time.monotonic()
    stack.compose("stop", service, timeout=60)
    stopped_after = time.monotonic() - started
    result = in_flight.wait()
    assert result.status == 200, f"{stack.name}: in-flight request during stop -> {result}"
    assert stopped_after < 20, f"{stack.name}: {service} took {stopped_after:.1f} s to stop"
    state = stack.compose("ps", "--all", "--format", "{{.State}} {{.ExitCode}}", service).stdout
    assert state.split() == ["exited", "0"], f"{stack.name}: {service} ended as {state!r}"
