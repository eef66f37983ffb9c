"""HTTPS on every nginx stack: the stack plus its TLS overlay (shared/compose/tls.yaml, or the
stack's own compose.tls.yaml), with a certificate from a local CA made by scripts/certs.sh.
What a client sees, what it must not be able to do, and a renewal under traffic."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest
import requests
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import InvalidStatus

from harness.compose import NGINX_STACKS, Stack, app_server_of, stop_stack
from harness.tls import (
    TLS_STACKS,
    make_certs,
    served_certificate,
    start_tls_stack,
    swap_under_traffic,
)
from harness.traffic import Stream, wait_for


def handshake(port: int, version: ssl.TLSVersion, ciphers: str | None = None) -> str:
    """A handshake offering only `version` (and `ciphers`); returns the negotiated version.
    SECLEVEL=0 lets this client offer TLS 1.0/1.1 at all, so a refusal is the server's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # offering TLS 1.0/1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    context.set_ciphers(ciphers or "DEFAULT:@SECLEVEL=0")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.version()


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory) -> Path:
    """certs/ as `make certs` writes it: ca.pem plus a localhost pair (fresh per test run)."""
    folder = tmp_path_factory.mktemp("certs")
    folder.chmod(0o755)  # pytest makes it 0700; nginx (uid 101) opens it through the mount
    make_certs(folder)
    return folder


@pytest.fixture(scope="module", params=sorted(TLS_STACKS))
def stack(request, images, local_ca) -> Stack:
    """Each nginx stack with HTTPS on, up once for the module, always taken down."""
    started = start_tls_stack(
        request.param, (TLS_STACKS[request.param],), {"TLS_CERTS_DIR": str(local_ca)}
    )
    try:
        yield started
    finally:
        stop_stack(started)


@pytest.fixture(scope="module")
def https_url(stack) -> str:
    return f"https://localhost:{stack.https_port}"


@pytest.fixture(scope="module")
def http_url(stack) -> str:
    return stack.published()[stack.front, 8080]


def test_every_nginx_stack_has_tls():
    assert set(TLS_STACKS) == set(NGINX_STACKS), TLS_STACKS


def test_https_serves_the_app_with_a_verified_certificate(stack, https_url, local_ca):
    response = requests.get(f"{https_url}/whoami", verify=local_ca / "ca.pem", timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scheme"] == "https", f"ProxyFix did not see HTTPS: {body}"
    assert body["host"] == f"localhost:{stack.https_port}", body


def test_certificate_names_this_host(stack, local_ca):
    cert = served_certificate(stack.https_port, local_ca / "ca.pem")
    names = {value for _, value in cert["subjectAltName"]}
    assert {"localhost", "127.0.0.1"} <= names, names


def test_http2_is_negotiated(https_url, local_ca):
    with httpx.Client(
        http2=True, verify=ssl.create_default_context(cafile=local_ca / "ca.pem")
    ) as c:
        response = c.get(f"{https_url}/whoami", timeout=10)
    assert response.status_code == 200
    assert response.http_version == "HTTP/2", response.http_version


def test_http_redirects_to_https(stack, http_url):
    response = requests.get(f"{http_url}/whoami?x=1", allow_redirects=False, timeout=10)
    assert response.status_code == 301, response.text
    assert response.headers["Location"] == f"https://127.0.0.1:{stack.https_port}/whoami?x=1"


def test_acme_challenges_stay_on_http(http_url):
    response = requests.get(
        f"{http_url}/.well-known/acme-challenge/no-such-token", allow_redirects=False, timeout=10
    )
    assert response.status_code == 404, f"{response.status_code}: challenges must not redirect"


def test_no_hsts_with_a_local_certificate(https_url, local_ca):
    response = requests.get(f"{https_url}/whoami", verify=local_ca / "ca.pem", timeout=10)
    assert "Strict-Transport-Security" not in response.headers, response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # the shared headers stay


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls_1_2_and_1_3_accepted(stack, version):
    assert handshake(stack.https_port, ssl.TLSVersion[version]) == version.replace("_", ".")


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_1_0_and_1_1_refused(stack, version):
    with pytest.raises(ssl.SSLError) as refused:
        handshake(stack.https_port, ssl.TLSVersion[version])
    # the server's alert, not this client declining to offer the version
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value


def test_cbc_cipher_refused(stack):
    with pytest.raises(ssl.SSLError) as refused:
        handshake(stack.https_port, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0")
    assert refused.value.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE", refused.value


# one stack per TLS overlay: what sslyze tests is nginx's TLS (shared/nginx/tls.conf
# and the image's OpenSSL), which the stacks of one overlay share; the checks above hold each
SCANNED: dict[Path, str] = {}
for _name, _overlay in sorted(TLS_STACKS.items()):
    SCANNED.setdefault(_overlay, _name)


@pytest.mark.load  # sslyze's hundreds of handshakes
@pytest.mark.parametrize("stack", sorted(SCANNED.values()), indirect=True, scope="module")
def test_scan_finds_nothing_against_mozilla_intermediate(stack, local_ca):
    """sslyze: protocols, ciphers, curves, certificate and known TLS vulnerabilities
    (Heartbleed, ROBOT, CCS injection, insecure renegotiation, compression)."""
    scan = subprocess.run(
        [
            *(sys.executable, "-m", "sslyze", "--mozilla_config=intermediate"),
            *("--certinfo_ca_file", str(local_ca / "ca.pem")),
            f"localhost:{stack.https_port}{{127.0.0.1}}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = scan.stdout[scan.stdout.find("COMPLIANCE") :]
    assert scan.returncode == 0 and "OK - Compliant" in report, scan.stdout[-3000:] + scan.stderr


@pytest.mark.timed  # tls.sh's watcher: one stack per TLS overlay, as the scan
@pytest.mark.parametrize("stack", sorted(SCANNED.values()), indirect=True, scope="module")
def test_replaced_certificate_is_served_without_a_failed_request(stack, https_url, local_ca):
    """What a renewal does (certbot's deploy hook, or you): new files in the mounted folder.
    nginx notices (CERT_RECHECK_SECONDS=1 here) and reloads gracefully."""
    stream = Stream(f"{https_url}/whoami", clients=4, limit=60, verify=local_ca / "ca.pem")
    swap_under_traffic(stack, stack.front, stream, lambda: make_certs(local_ca))


# one stack: tls.sh is the same file in every stack
@pytest.mark.parametrize("stack", ["nginx-uwsgi-socket"], indirect=True)
def test_bad_tls_settings_stop_nginx_with_the_fix(stack, tmp_path):
    """tls.sh refuses to start on a value it cannot use, naming it: nginx exits (restarted by
    its policy), and its log names the fix."""
    cases = {
        "HSTS_MAX_AGE='forever' is not a number of seconds": {"HSTS_MAX_AGE": "forever"},
        "run 'make certs'": {"TLS_CERTS_DIR": str(tmp_path)},
    }
    try:
        for message, env in cases.items():
            since = time.time()
            result = stack.recreate("nginx", env)
            assert result.returncode != 0, f"nginx started with {env}"
            stack.wait_refused("nginx")
            wait_for(
                lambda m=message, t=since: m in stack.logs("nginx", since=t),
                timeout=10,
                what=f"nginx's log naming the fix ({message})",
            )
    finally:
        assert stack.recreate("nginx", {}).returncode == 0, "nginx did not come back"


def test_websockets_over_tls(stack, https_url, local_ca):
    """wss:// through nginx's TLS: an echo on the gevent stack, 501 naming it elsewhere.
    websockets' asyncio client: its sync client reads the TLS socket in a thread while the
    caller writes to it, which Python's ssl does not support; about one opening handshake in
    200-1,000 hung for 10 s with nginx holding no connection (the asyncio client: 0 in 1,162)."""
    context = ssl.create_default_context(cafile=local_ca / "ca.pem")
    url = https_url.replace("https://", "wss://", 1) + "/ws/echo"

    async def echo() -> str:
        async with connect_async(url, ssl=context, open_timeout=10) as ws:
            await ws.send("over TLS")
            return await asyncio.wait_for(ws.recv(), timeout=10)

    if app_server_of(stack.name) == "gunicorn":
        assert asyncio.run(echo()) == "over TLS"
        return
    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(echo())
    assert refused.value.response.status_code == 501, refused.value.response
