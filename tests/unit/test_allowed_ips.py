"""shared/nginx/allowed-ips.sh: ALLOWED_IPS becomes allow lines, or the start stops."""

import subprocess

import pytest

from harness.compose import ROOT

SCRIPT = ROOT / "shared/nginx/allowed-ips.sh"


def render(tmp_path, value):
    """Run the script as the nginx entrypoint would (POSIX sh); return (exit code, conf, stderr)."""
    out = tmp_path / "allowed-ips.conf"
    env = {"PATH": "/usr/bin:/bin", "ALLOWED_IPS_CONF": str(out)}
    if value is not None:
        env["ALLOWED_IPS"] = value
    result = subprocess.run(
        ["sh", str(SCRIPT)], env=env, capture_output=True, text=True, check=False
    )
    return result.returncode, out.read_text() if out.exists() else None, result.stderr


@pytest.mark.parametrize("value", [None, ""])
def test_an_empty_list_stops_the_start(tmp_path, value):
    """The overlay mounts the script only to restrict: no entry is a mistake, never "open"."""
    code, conf, err = render(tmp_path, value)
    assert code == 1 and conf is None, conf
    assert "leave the allow-list overlay out" in err and "will not start" in err, err


def test_entries_become_allow_lines_then_deny_all(tmp_path):
    code, conf, _ = render(tmp_path, "172.18.0.0/16; 10.0.0.3;2001:db8::/32;::1;")
    assert code == 0
    lines = [line.split("#")[0].strip() for line in conf.splitlines() if line.strip()]
    lines = [line for line in lines if line]
    assert lines == [
        "allow 127.0.0.1;",
        "allow ::1;",
        "allow 172.18.0.0/16;",
        "allow 10.0.0.3;",
        "allow 2001:db8::/32;",
        "allow ::1;",
        "deny all;",
    ]


@pytest.mark.parametrize(
    "good",
    [
        "0.0.0.0/0",
        "255.255.255.255",
        "192.0.2.7/32",
        "::/0",
        "fe80::1",
        "2001:db8:0:0:0:0:0:1",
        "2001:DB8::ff00:42:8329/128",
        "1::",
    ],
)
def test_valid_addresses(tmp_path, good):
    code, conf, err = render(tmp_path, good)
    assert code == 0, err
    assert f"allow {good};" in conf


@pytest.mark.parametrize(
    "bad",
    [
        "1.2.3.4; } server { listen 81;",  # config injection
        "1.2.3.4 } server {",
        "all",
        "unix:",
        "localhost",
        "256.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "1.2.3.4/33",
        "1.2.3.4/",
        "1.2.3.4/8/8",
        "10.0.0.0/-1",
        "2001:db8::/129",
        "2001:db8:::1",
        "1::2::3",
        "12345::1",
        "1:2:3:4:5:6:7",
        ":1:2:3:4:5:6:7",
        "*",
        "$(reboot)",
        "1.2.3.4\nallow all",
    ],
)
def test_invalid_entry_stops_the_start_naming_it(tmp_path, bad):
    code, conf, err = render(tmp_path, f"10.0.0.1;{bad}")
    assert code == 1
    assert conf is None, "nothing may be written when an entry is invalid"
    assert "ALLOWED_IPS entry" in err and "Fix ALLOWED_IPS" in err


def test_only_separators_is_an_error(tmp_path):
    code, conf, err = render(tmp_path, " ; ;")
    assert code == 1 and conf is None
    assert "lists no address" in err
