"""HTTPS helpers for the TLS tests: local certificates, a free port, the certificate a server
presents, and which stacks have a TLS overlay."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from harness.compose import ROOT, STACKS, Stack, start_stack
from harness.traffic import Stream, summary, wait_for
from stackctl.stacks import tls_overlay

TLS_STACKS = {name: overlay for name in STACKS if (overlay := tls_overlay(name))}


def make_certs(folder: Path, *names: str) -> None:
    subprocess.run(
        [ROOT / "scripts/certs.sh", folder, *names], check=True, capture_output=True, text=True
    )


def free_port(below_ephemeral: bool = False) -> int:
    """A port free right now: HTTPS_PORT must be known before `up`, as redirects name it.
    `below_ephemeral`: one under the kernel's range for outgoing connections (18000-18999),
    which the test's own clients and docker-proxy's connections cannot be holding."""
    candidates = range(18000, 19000) if below_ephemeral else [0]
    for candidate in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", candidate))  # noqa: S104  (Swarm binds every interface)
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError("no free port in 18000-18999")


def served_certificate(port: int, ca: Path | None = None, name: str = "localhost") -> dict:
    """The certificate nginx presents on 127.0.0.1:port for SNI `name`: its fields, verified
    against `ca`; without `ca`, unverified, only its SHA-256 fingerprint."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if not ca:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        if ca:
            return tls.getpeercert()
        return {"sha256": hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()}


def start_tls_stack(name: str, overlays: tuple[Path, ...], env: dict[str, str]) -> Stack:
    """A stack with HTTPS on a free port (`stack.https_port`), certificates checked each second."""
    port = free_port()
    env = {**env, "HTTPS_PORT": str(port), "CERT_RECHECK_SECONDS": "1"}
    stack = start_stack(name, overlays=overlays, env=env)
    stack.https_port = port
    return stack


def swap_under_traffic(stack: Stack, service: str, stream: Stream, swap: Callable[[], None]):
    """Runs `swap` (new certificate files) while `stream` sends HTTPS requests: nginx in
    `service` serves the new certificate within 20 s, no request fails, nginx is not restarted."""
    before = served_certificate(stack.https_port)["sha256"]
    started = stack.inspect(service)["State"]["StartedAt"]
    with stream:
        time.sleep(1)
        swap()
        wait_for(
            lambda: served_certificate(stack.https_port)["sha256"] != before,
            timeout=20,
            what="nginx serving the new certificate",
        )
        swapped = time.monotonic()
        time.sleep(1)
    results = stream.stop()
    assert [r for r in results if r.status != 200] == [], summary(results)
    assert stream.since(swapped), "no request after the swap"
    assert stack.inspect(service)["State"]["StartedAt"] == started, "nginx was restarted"
