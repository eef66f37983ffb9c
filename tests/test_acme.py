"""The ACME path for real, once: nginx-uwsgi-socket + tls.yaml + acme.yaml, with Let's Encrypt's
test server pebble in the project (tests/acme/compose.pebble.yaml). certbot gets a certificate
through nginx's challenge location, nginx serves it, and a forced renewal swaps it under
traffic without a failed request."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from harness.compose import ROOT, Stack, stop_stack
from harness.tls import (
    TLS_STACKS,
    make_certs,
    served_certificate,
    start_tls_stack,
    swap_under_traffic,
)
from harness.traffic import Stream, get, wait_for

DOMAIN = "acme.flask-stacks.test"  # nginx's alias on the project network, which pebble resolves
STACK = "nginx-uwsgi-socket"


@pytest.fixture(scope="module")
def pebble_certs(tmp_path_factory) -> Path:
    """pebble's own HTTPS pair (its ACME API), from a local CA that certbot is told to trust."""
    folder = tmp_path_factory.mktemp("pebble-certs")
    folder.chmod(0o755)
    make_certs(folder, "pebble")
    return folder


@pytest.fixture(scope="module")
def stack(images, pebble_certs) -> Stack:
    overlays = (
        "shared/compose/tls.yaml",
        "shared/compose/acme.yaml",
        "tests/acme/compose.pebble.yaml",
    )
    started = start_tls_stack(
        STACK, tuple(ROOT / path for path in overlays), {"PEBBLE_CERTS_DIR": str(pebble_certs)}
    )
    try:
        yield started
    finally:
        stop_stack(started)


@pytest.fixture(scope="module")
def pebble_root(stack, pebble_certs, tmp_path_factory) -> Path:
    """The root pebble signs with (new on every pebble start), from its management API."""
    api = stack.published()["pebble", 15000].replace("http://", "https://")
    response = get(f"{api}/roots/0", verify=str(pebble_certs / "ca.pem"), host="pebble")
    assert response.status_code == 200, response.text
    path = tmp_path_factory.mktemp("pebble-root") / "root.pem"
    path.write_text(response.text)
    return path


def test_certificate_from_the_acme_server_is_served(stack, pebble_root):
    served: list[dict] = []

    def issued() -> bool:
        try:
            served.append(served_certificate(stack.https_port, pebble_root, DOMAIN))
        except ssl.SSLCertVerificationError:
            return False  # still the placeholder
        return True

    wait_for(issued, timeout=90, what="nginx serving a certificate that pebble issued")
    # the certificate of the handshake that passed: a second one may still reach a worker of the
    # old generation, which nginx's reload lets accept for a moment (seen in CI: self-signed)
    cert = served[-1]
    assert ("DNS", DOMAIN) in cert["subjectAltName"], cert
    issuer = dict(pair[0] for pair in cert["issuer"])
    assert issuer["commonName"].startswith("Pebble Intermediate CA"), issuer
    assert "acme: installed" in stack.logs("certbot")


def test_https_with_hsts_through_the_acme_certificate(stack, pebble_root):
    response = get(
        f"https://127.0.0.1:{stack.https_port}/whoami", verify=str(pebble_root), host=DOMAIN
    )
    assert response.status_code == 200, response.text
    assert response.json()["scheme"] == "https"
    assert response.headers["Strict-Transport-Security"] == "max-age=63072000"


def test_only_nginx_can_read_the_key(stack):
    mode = stack.exec("nginx", "stat", "-c", "%a %g", "/etc/nginx/certs/privkey.pem").split()
    assert mode == ["640", "101"], f"privkey.pem is {mode}, want 640 and group 101 (nginx)"


@pytest.mark.timed
def test_forced_renewal_swaps_the_certificate_without_a_failed_request(stack, pebble_root):
    url = f"https://127.0.0.1:{stack.https_port}/whoami"
    stream = Stream(url, clients=4, limit=120, verify=str(pebble_root), host=DOMAIN)

    def renew() -> None:
        result = stack.compose(
            *("exec", "-T", "certbot", "certbot", "renew", "--force-renewal"),
            "--no-random-sleep-on-renew",  # certbot otherwise waits up to 8 min when not on a TTY
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    swap_under_traffic(stack, "nginx", stream, renew)
    served_certificate(stack.https_port, pebble_root, DOMAIN)  # and it verifies


def test_certbot_without_domains_stops_with_the_fix(stack):
    result = stack.compose(
        *("run", "--rm", "--no-deps", "-T", "-e", "ACME_DOMAINS=", "certbot"),
        check=False,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ACME_DOMAINS is empty" in result.stdout + result.stderr, result.stderr


def test_acme_overlay_renders_for_every_nginx_stack():
    """acme.yaml adds to the `nginx` service: every stack that has one accepts it."""
    for name, overlay in TLS_STACKS.items():
        if overlay.name != "tls.yaml":
            continue
        files = ["-f", f"stacks/{name}/compose.yaml", "-f", str(overlay)]
        files += ["-f", "shared/compose/acme.yaml"]
        result = subprocess.run(
            ["docker", "compose", *files, "config", "--quiet"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"
