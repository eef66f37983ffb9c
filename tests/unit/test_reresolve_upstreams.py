"""shared/nginx/reresolve-upstreams.sh: finds the upstream host names in nginx's config, reloads
nginx when their addresses change, keeps nginx's addresses while a name does not resolve, and
refuses a bad interval. Run on the host with stand-ins for `nginx`, `getent` and `sleep`."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from harness.compose import ROOT

SCRIPT = ROOT / "shared/nginx/reresolve-upstreams.sh"

CONFIG = """\
upstream app {
    server app1:3031 max_fails=1 fail_timeout=5s;
    server app2:3031;
    server 10.0.0.7:3031;
}
server {
    listen 8080;
    server_name example.org;
    location / { uwsgi_pass app; }
    location /tcp { uwsgi_pass backend.internal:3031; }
    location /http { proxy_pass http://gunicorn-app:8000; }
    # uwsgi_pass retired-backend:3031;
    location /sock { uwsgi_pass unix:/run/uwsgi/uwsgi.sock; }
}
"""


def tool(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run(tmp_path: Path, config: str, answers: list[str], **env: str) -> subprocess.CompletedProcess:
    """Run the script with `answers[i]` as the address of every host in check i (empty: the
    name does not resolve); `sleep` ends the watch after the last check."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "config").write_text(config)
    (tmp_path / "answers").write_text("\n".join(answers) + "\n")
    tool(
        bin_dir,
        "nginx",
        f'case "$1" in -T) cat {tmp_path}/config ;; -s) echo "nginx -s $2" ;;\n'
        # -t fails once when told to (a name nginx itself could not resolve)
        f"-t) [ ! -e {tmp_path}/t-fails ] || "
        f"{{ rm {tmp_path}/t-fails; echo emerg >&2; exit 1; }} ;;\n"
        "esac\n",
    )
    # getent ahosts <host>: the current answer, from the line the check counter points at
    tool(
        bin_dir,
        "getent",
        f"n=$(cat {tmp_path}/check 2>/dev/null || echo 1)\n"
        f'addr=$(sed -n "${{n}}p" {tmp_path}/answers)\n'
        '[ -n "$addr" ] && echo "$addr STREAM $2"\n'
        '[ -n "$addr" ]\n',
    )
    tool(
        bin_dir,
        "sleep",
        f"n=$(cat {tmp_path}/check 2>/dev/null || echo 1)\n"
        f'[ "$n" -lt {len(answers)} ] || exit 1\n'
        f"echo $((n + 1)) > {tmp_path}/check\n",
    )
    return subprocess.run(
        ["sh", str(SCRIPT)],
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_watches_the_host_names_only(tmp_path):
    result = run(tmp_path, CONFIG, ["172.18.0.2"])
    assert result.returncode == 0, result.stderr
    assert "watching app1 app2 backend.internal gunicorn-app every 2 s" in result.stderr


def test_reloads_when_an_address_changes_and_not_otherwise(tmp_path):
    result = run(tmp_path, CONFIG, ["172.18.0.2", "172.18.0.2", "172.18.0.9", "172.18.0.9"])
    assert result.stdout.count("nginx -s reload") == 1, result.stdout
    assert "addresses changed" in result.stderr


def test_a_config_that_fails_to_load_is_reloaded_next_round(tmp_path):
    # nginx -t fails at the first change (a name nginx could not resolve then): no reload; the
    # next round, with the same new address, reloads
    (tmp_path / "t-fails").touch()
    result = run(tmp_path, CONFIG, ["172.18.0.2", "172.18.0.9", "172.18.0.9"])
    assert result.stdout.count("nginx -s reload") == 1, result.stdout
    assert result.stderr.count("addresses changed") == 2 and "emerg" in result.stderr


def test_keeps_nginx_addresses_while_a_name_does_not_resolve(tmp_path):
    # the container is stopped (no answer), then back on its old address: nothing to reload
    result = run(tmp_path, CONFIG, ["172.18.0.2", "", "", "172.18.0.2"])
    assert "nginx -s reload" not in result.stdout, result.stdout


def test_unix_sockets_and_addresses_only_nothing_to_watch(tmp_path):
    config = "server { location / { uwsgi_pass unix:/run/uwsgi/uwsgi.sock; } }\n"
    result = run(tmp_path, config, ["172.18.0.2"])
    assert result.returncode == 0
    assert "watching" not in result.stderr


@pytest.mark.parametrize("interval", ["0", "abc", "-1", "2s", "05"])
def test_a_bad_interval_stops_the_start_with_the_fix(tmp_path, interval):
    result = run(tmp_path, CONFIG, ["172.18.0.2"], UPSTREAM_RECHECK_SECONDS=interval)
    assert result.returncode == 1
    assert f"UPSTREAM_RECHECK_SECONDS='{interval}' is not a whole number" in result.stderr
