"""shared/nginx/tls.sh (mounted by the TLS overlay only): the HTTPS include with the
redirect port and HSTS; bad values and missing certificates stop the start with the fix; the
watcher reloads nginx when the certificate changes, only once the new pair loads. Run on the
host with stand-ins for `nginx` and `sleep`."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from harness.compose import ROOT

SCRIPT = ROOT / "shared/nginx/tls.sh"


def tool(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run(tmp_path: Path, checks: int = 0, loads: str = "yes", **env: str):
    """tls.sh with a certificate pair in tmp_path/certs; the watcher's `sleep` replaces the
    certificate at the first check and ends the watch after `checks`; `nginx -t` succeeds
    when tmp_path/loads says yes."""
    certs, bin_dir = tmp_path / "certs", tmp_path / "bin"
    certs.mkdir(exist_ok=True)
    bin_dir.mkdir(exist_ok=True)
    (certs / "fullchain.pem").write_text("chain 1\n")
    (certs / "privkey.pem").write_text("key 1\n")
    (tmp_path / "loads").write_text(loads)
    tool(
        bin_dir,
        "nginx",
        f'case "$1" in -t) grep -q yes {tmp_path}/loads ;; -s) echo "nginx -s $2" ;; esac\n',
    )
    tool(
        bin_dir,
        "sleep",
        f"n=$(cat {tmp_path}/check 2>/dev/null || echo 0)\n"
        f'[ "$n" -lt {checks} ] || exit 1\n'
        f"echo $((n + 1)) > {tmp_path}/check\n"
        f'[ "$n" -eq 0 ] && echo "chain 2" > {certs}/fullchain.pem\n'
        f'[ "$n" -eq 1 ] && echo yes > {tmp_path}/loads\n'
        "exit 0\n",
    )
    conf = tmp_path / "tls.conf"
    result = subprocess.run(
        ["sh", str(SCRIPT)],
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "TLS_CONF": str(conf),
            "TLS_CERTS_DIR": str(certs),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result, conf.read_text() if conf.exists() else ""


def test_writes_the_https_include(tmp_path):
    result, conf = run(tmp_path, HTTPS_PORT="8443", HSTS_MAX_AGE="63072000")
    assert result.returncode == 0, result.stderr
    assert 'set $https_port ":8443";' in conf
    assert 'set $hsts "max-age=63072000";' in conf
    assert conf.rstrip().endswith("include /etc/nginx/tls.conf;")


def test_port_443_and_no_hsts(tmp_path):
    _, conf = run(tmp_path, HTTPS_PORT="443")
    assert 'set $https_port "";' in conf  # https://example.com/, no :443
    assert 'set $hsts "";' in conf  # an empty add_header value sends no header


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HTTPS_PORT": "https"}, "HTTPS_PORT='https' is not a port number"),
        ({"HTTPS_PORT": "70000"}, "HTTPS_PORT='70000' is not a port number"),
        ({"HSTS_MAX_AGE": "2y"}, "HSTS_MAX_AGE='2y' is not a number of seconds"),
        ({"CERT_RECHECK_SECONDS": "0"}, "CERT_RECHECK_SECONDS='0' is not a whole"),
        ({"TLS_CERTS_DIR": "/nonexistent"}, "run 'make certs'"),
    ],
)
def test_bad_values_stop_the_start_with_the_fix(tmp_path, env, message):
    result, _ = run(tmp_path, **env)
    assert result.returncode == 1
    assert message in result.stderr, result.stderr


def test_reloads_once_when_the_certificate_changes(tmp_path):
    result, _ = run(tmp_path, checks=3)
    assert result.stdout.count("nginx -s reload") == 1, result.stdout


def test_waits_for_a_pair_that_loads(tmp_path):
    # changed at check 1 but `nginx -t` fails until check 2: no reload before, one after
    result, _ = run(tmp_path, checks=3, loads="no")
    assert "does not load yet" in result.stderr, result.stderr
    assert result.stdout.count("nginx -s reload") == 1, result.stdout
