"""`make bench` and `make tune` in smoke mode, end to end, so their harness cannot rot: every
target and workload the bench knows, 1 s each, parsed, counted, written as JSON, Markdown and a
chart; a few of the search's variants, each kind of change checked in its containers."""

import json
import subprocess
import sys

import pytest

from harness.compose import ROOT


def smoke_run(script: str, out, *args: str) -> None:
    """scripts/<script> in smoke mode, its results into `out`; it must exit 0."""
    result = subprocess.run(
        [sys.executable, f"scripts/{script}", "--smoke", "--allow-dirty", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


# `load`, held for the whole smoke run: the bench takes the lock itself for each measurement
# (nested here: a no-op), and each of its ~30 holds made every timed check of the other workers
# end first, so the run took twice its own time and the others waited on each
@pytest.mark.load
def test_bench_smoke_run_writes_a_report_without_errors(images, tmp_path):
    stacks = "nginx-uwsgi-socket,nginx-gunicorn-gevent"  # one of each server family
    smoke_run("bench.py", tmp_path, "--stacks", stacks)
    data = json.loads((tmp_path / "latest.json").read_text())
    measured = {(w["name"], w["via"], label) for w in data["workloads"] for label in w["runs"]}
    get = {"ceiling (nginx return 200)", *stacks.split(","), "uWSGI direct (HTTP/1.1 socket)"}
    get.add("Gunicorn gevent direct")
    assert measured == {
        *(("GET /", via, label) for via in ("container", "docker-proxy") for label in get),
        *(("GET / (error run)", "container", stack) for stack in stacks.split(",")),
        ("static file", "container", "nginx-uwsgi-socket"),
        ("GET /slow 50 ms", "container", "nginx-gunicorn-gevent"),
        ("GET /slow 50 ms", "container", "nginx-gunicorn-gevent, sync workers"),
    }
    for w in data["workloads"]:
        for label, (run,) in w["runs"].items():
            assert run["requests"] > 0 and run["rps"] > 0, (w["name"], label, run)
            assert run["non2xx"] == 0, (w["name"], label, run)
            assert all(cpu >= 0 for cpu in run["cpu_us"].values()), run
            proxy = run["cpu_us"].get("docker-proxy", 0)
            if w["via"] == "container":  # not through the proxy: one 10 ms tick of its own at most
                assert proxy * run["requests"] <= 10_000, (w["name"], label, run)
            elif run["requests"] >= 1000:  # the proxy's CPU is read in 10 ms ticks
                assert proxy > 0, (w["name"], label, run)
    nginx_cpu = data["workloads"][0]["runs"]["nginx-uwsgi-socket"][0]["cpu_us"]
    assert nginx_cpu["app"] > 0 and nginx_cpu["nginx"] > 0, nginx_cpu  # cgroups were read
    assert data["in_process"][0]["rps_per_core"] > 0
    (h2,) = data["http2"]  # HTTP/2 over TLS to the socket stack: kept and new connections
    for kind in ("reused", "new"):
        run = h2[kind]
        assert run["protocol"] == "h2" and run["requests"] > 0, h2
        assert run["failed"] == run["non2xx"] == 0 and run["cpu_us"]["nginx"] > 0, h2
    assert h2["new"]["cpu_us"]["nginx"] > h2["reused"]["cpu_us"]["nginx"], "a handshake each"
    (ws,) = data["websockets"]  # the gevent stack's WebSockets: echoed, and memory per socket
    assert ws["messages"] > 0 and ws["errors"] == 0 and ws["cpu_us"]["app"] > 0, ws
    assert ws["held"] == 50 and ws["kib_per_socket_deflate"] > ws["kib_per_socket_plain"], ws
    assert data["failures"] == 0
    report = (tmp_path / "latest.md").read_text()
    assert "| GET / | container | nginx-uwsgi-socket | 16 |" in report
    assert "| GET / | docker-proxy | nginx-uwsgi-socket | 16 |" in report
    assert "docker-proxy's cost, GET / through 127.0.0.1" in report
    assert "HTTP/2 over TLS (h2load, h2) to nginx-uwsgi-socket's container" in report
    assert "WebSockets on nginx-gunicorn-gevent (`/ws/echo`, 16 sockets" in report
    assert (tmp_path / "latest.png").read_bytes().startswith(b"\x89PNG")
    # it cleaned up: no bench project left running
    left = subprocess.run(
        [
            "docker",
            "ps",
            "--filter",
            "label=com.docker.compose.project",
            "--format",
            '{{.Label "com.docker.compose.project"}}',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not [p for p in left if p.startswith("fs-bench-")], left


@pytest.mark.load  # as the bench's: tune measures through the bench's measurements
def test_tune_smoke_run_applies_each_kind_of_change(images, tmp_path):
    """`make tune` in smoke mode: a uWSGI option, a Gunicorn setting and an nginx file edit
    each reach their containers (the worker counts show it), and the report is written."""
    smoke_run("tune.py", tmp_path)
    data = json.loads((tmp_path / "tune-latest.json").read_text())
    searches = {s["stack"]: s for s in data["searches"]}
    assert set(searches) == {"nginx-uwsgi-socket", "nginx-gunicorn-gevent"}
    cores = data["machine"]["cores"]
    uwsgi = searches["nginx-uwsgi-socket"]["processes"]
    assert uwsgi["shipped"]["app (uwsgi)"] == 2 * cores + 1, uwsgi  # base.ini's workers + master
    assert uwsgi["uWSGI processes = 2 (one per core)"]["app (uwsgi)"] == 3, uwsgi
    assert uwsgi["shipped"]["nginx (nginx)"] == cores + 1, uwsgi  # worker_processes auto
    gunicorn = searches["nginx-gunicorn-gevent"]["processes"]
    assert gunicorn["shipped"]["app (gunicorn)"] == cores + 1, gunicorn
    assert gunicorn["Gunicorn workers = 1"]["app (gunicorn)"] == 2, gunicorn
    for search in data["searches"]:
        (w,) = search["workloads"]
        assert set(w["runs"]) == {"ceiling (nginx return 200)"} | set(search["processes"]), w
        for label, (run,) in w["runs"].items():
            assert run["requests"] > 0 and run["non2xx"] == run["errors"] == 0, (label, run)
    report = (tmp_path / "tune-latest.md").read_text()
    assert "| nginx access log off | 16 |" in report
    assert "| Gunicorn workers = 1 | 16 |" in report
