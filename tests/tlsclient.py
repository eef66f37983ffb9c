"""HTTPS helpers for the TLS tests: local certificates, a free port, the certificate a server
presents, and which stacks have a TLS overlay."""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import subprocess
from pathlib import Path

from conftest import ROOT, STACKS


def tls_overlay(name: str) -> Path | None:
    """The compose file that turns HTTPS on for a stack; None for a stack without nginx."""
    own = ROOT / "stacks" / name / "compose.tls.yaml"
    if own.exists():
        return own
    compose = (ROOT / "stacks" / name / "compose.yaml").read_text()
    return ROOT / "shared/compose/tls.yaml" if re.search(r"^  nginx:", compose, re.M) else None


TLS_STACKS = {name: overlay for name in STACKS if (overlay := tls_overlay(name))}


def make_certs(folder: Path, *names: str) -> None:
    subprocess.run(
        [ROOT / "scripts/certs.sh", folder, *names], check=True, capture_output=True, text=True
    )


def free_port() -> int:
    """A port free right now: HTTPS_PORT must be known before `up`, as redirects name it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
