"""single-container: one image, one process tree (tini -> entrypoint.sh -> uWSGI master ->
workers + nginx); ALLOWED refused; a dead process never leaves a half-alive container; a new
connection per request at a fixed rate gets no 5xx. Graceful stop and ALLOWED_IPS are checked
by test_hardening.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from harness import faults
from harness.compose import docker_time
from harness.traffic import wait_for
from harness.wrk import wrk

pytestmark = pytest.mark.stacks("single-container")


def processes(stack) -> list[dict]:
    return faults.processes(stack, "app")


def find(procs: list[dict], pattern: str) -> dict:
    matches = [p for p in procs if re.search(pattern, p["cmd"])]
    assert matches, f"no process matches {pattern!r}: {[p['cmd'] for p in procs]}"
    return matches[0]


def restarts(stack) -> int:
    return stack.inspect("app")["RestartCount"]


def wait_until_serving(stack, timeout: float) -> float:
    """Seconds until the container is healthy and answers / with 200 again."""
    started = time.monotonic()

    def serving() -> bool:
        if stack.health("app") != "healthy":
            return False
        try:  # its published port moves with each restart: read it again
            return requests.get(stack.base_url() + "/", timeout=2).status_code == 200
        except (requests.RequestException, AssertionError):
            return False

    wait_for(serving, timeout, "the container healthy and serving / again")
    return time.monotonic() - started


def test_one_container_one_process_tree(stack, base_url):
    assert stack.services() == ["app"]
    procs = processes(stack)
    init = find(procs, r"^tini ")
    assert init["pid"] == 1
    entrypoint = find(procs, r"/usr/local/bin/entrypoint uwsgi ")
    assert entrypoint["ppid"] == 1, "entrypoint.sh (it orders the stop) must be tini's child"
    master = find(procs, r"^uwsgi --ini")
    assert master["ppid"] == entrypoint["pid"], "the uWSGI master must be entrypoint.sh's child"
    nginx = find(procs, r"^nginx: master")
    assert nginx["ppid"] == master["pid"], "nginx must be a daemon of the uWSGI master"
    assert requests.get(base_url + "/whoami", timeout=10).json()["server"].startswith("uWSGI/")


def test_plain_docker_run_works(stack):
    """The plain one-liner: docker run -p 127.0.0.1:PORT:8080 IMAGE, nothing else."""
    name = f"{stack.project}-plain"
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "-p",
            "127.0.0.1::8080",
            "flask-stacks/single-container",
        ],
        check=True,
        capture_output=True,
    )
    try:
        port = (
            subprocess.run(
                ["docker", "port", name, "8080"], check=True, capture_output=True, text=True
            )
            .stdout.split(":")[-1]
            .strip()
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
                if response.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "plain docker run did not answer in 30 s"
            time.sleep(0.5)
        assert response.text == "Hello from flask-stacks!\n"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_allowed_its_older_name_stops_the_container_rather_than_open_it(stack):
    """`docker run -e ALLOWED=...` (the list's older name) is refused with the name to use, not
    ignored: ignored, the container would start open to everyone. (Compose passes only
    ALLOWED_IPS, and `make` refuses ALLOWED itself: tests/unit/test_your_app_settings.py.)"""
    image = stack.inspect("app")["Config"]["Image"]
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-e", "ALLOWED=192.0.2.1", image],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0, result.stdout[-2000:]
    assert "ALLOWED is not read; name the allow-list ALLOWED_IPS" in result.stderr, result.stderr


@pytest.mark.timed
def test_dead_worker_is_respawned_in_place(stack, record):
    before = restarts(stack)
    server = faults.app_server(stack, "app")
    killed = faults.kill_worker(stack, "app")
    started = time.monotonic()

    def respawned() -> bool:
        now = faults.app_server(stack, "app")
        pids = {w["pid"] for w in now.workers}
        return len(pids) == len(server.workers) and killed["pid"] not in pids

    wait_for(respawned, 10, "the master respawns the worker")
    took = wait_until_serving(stack, 15)
    after = faults.app_server(stack, "app")
    record(stack, "worker kill -9 (one container)", f"respawned, serving after {took:.1f} s")
    assert after.master["pid"] == server.master["pid"], "the uWSGI master itself was replaced"
    assert restarts(stack) == before, "a dead worker must not restart the container"
    assert time.monotonic() - started < 15


# A dead master or nginx ends the container by itself: the entrypoint exits with the uWSGI
# master (tini's exit then ends the rest), and control=1 ends the master when nginx dies.
# Seen on the busy test machine: 0.2-1.6 s; a half-alive container would never end.
ENDED_WITHIN = 10  # s from the kill to the container's end (Docker's State.FinishedAt)
# Docker's restart policy starts a container that had run 10 s or more again after 100 ms (the
# delay doubles, up to a minute, only while it keeps failing at once); the engine's own start
# of it (network, runc) took up to 2.2 s on the busy test machine.
RESTARTED_WITHIN = 10  # s from the container's end to its new start (State.StartedAt)


@pytest.mark.parametrize("victim", [r"^nginx: master", r"^uwsgi --ini"])
@pytest.mark.timed
def test_dead_nginx_or_master_restarts_the_container(stack, victim, record):
    """A dead nginx or uWSGI master ends the container at once (no half-alive container), and
    Docker's restart policy starts it again at once, without backoff: both read from Docker's
    own timestamps, so a busy machine's slower start does not blur them. The new container then
    serves as after any start."""
    wait_until_serving(stack, 60)  # the previous case's restart has settled
    before = restarts(stack)
    target = find(processes(stack), victim)
    killed = time.time()
    stack.exec("app", "sh", "-c", f"kill -9 {target['pid']}", check=False)
    restarted_state: list[dict] = []

    def started_again() -> bool:  # while Docker waits to restart it, Running is true as well
        found = stack.inspect("app")
        state = found["State"]
        if found["RestartCount"] > before and state["Running"] and not state["Restarting"]:
            restarted_state.append(state)
        return bool(restarted_state)

    wait_for(started_again, 20, f"killing {victim} ends the container and it starts again")
    state = restarted_state[0]
    ended = docker_time(state["FinishedAt"]) - killed
    restarted = docker_time(state["StartedAt"]) - docker_time(state["FinishedAt"])
    wait_until_serving(stack, 60)
    record(
        stack,
        f"{victim.strip('^')} kill -9 (one container)",
        f"ended after {ended:.1f} s, started again {restarted:.1f} s later, serving after "
        f"{time.time() - killed:.1f} s",
    )
    assert 0 <= ended < ENDED_WITHIN, f"the container ended {ended:.1f} s after the kill"
    assert 0 <= restarted < RESTARTED_WITHIN, (
        f"Docker started the container again {restarted:.1f} s after it ended (backoff?)"
    )


# 1,000 new connections/s, at most a quarter of the kept-connection rate measured just before: a
# new connection per request costs more, and an open loop above what the machine serves at that
# moment only queues (both cores busy: 3,400 req/s kept, and 1,000 new/s timed out 1-2.5%)
NEW_CONNECTION_RATE = 1000
NEW_PER_KEPT = 4
MIN_RATE = 200
# the other workers' unmarked steps (a stack's start, an app's image build) still share the
# cores with a load: measured again, 10 s apart, before the machine is called too slow (s53c:
# 470 req/s kept for a moment, both cores busy with other work)
KEPT_TRIES = 4
# 10 s, not 15: one client address's connect() slows down once its TIME_WAITs (60 s) to one
# destination fill the even half of the ephemeral range that Linux gives connect() first
# (14,116 ports of 32768-60999). By hand, quiet: 15,000 in 15 s took httperf 12.7 s of kernel
# CPU, connects up to 1.5 s; with one core busy, up to 5.3 s and time-outs (CI). 10,000 in
# 10 s: 7.8 s, connects at most 19 ms, also with one core busy. The client's limit, not the
# stack's: a server's 1,000 new connections a second come from many addresses.
NEW_CONNECTION_SECONDS = 10
PORTS_USED = 0.75  # of that even half, at most, in TIME_WAIT to the stack during the replay


def connect_ports() -> int:
    """The ports Linux's connect() tries first: the even half of ip_local_port_range."""
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return (high - low + 1) // 2


def time_waits(host: str, port: str) -> int:
    """This host's connections to host:port in TIME_WAIT (they hold a local port for 60 s)."""
    out = subprocess.run(
        ["ss", "-Htan", "state", "time-wait", "dst", f"{host}:{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len(out.splitlines())


@pytest.mark.load
def test_a_new_connection_per_request_at_a_fixed_rate_gets_no_5xx(stack, record):
    """httperf's open loop (--rate, --num-conns, --num-calls=1: the load the project's first
    single-container setup answered with 5xx), scaled to this machine, sent to the container's
    address. Not through 127.0.0.1: Docker's userland proxy there (not
    on a production host's path) answered SYNs late once earlier tests' 11k TIME_WAITs held its
    loopback ports (quiet machine, 1,000/s: connection time max 4.1 s, 5,227 never opened; the
    same replay to the container: max 31 ms). Without httperf's --hog: it makes httperf take
    client ports below the ephemeral range, and their TIME_WAITs then block docker from
    publishing ports such as 8085 for a minute."""
    if not shutil.which("httperf"):
        pytest.fail("httperf is missing: run `make setup` (Debian: apt-get install httperf)")
    url = stack.container_url()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    for tries in range(1, KEPT_TRIES + 1):
        baseline = wrk(url + "/", connections=16, duration=2)  # this machine, now
        assert baseline["non2xx"] == baseline["errors"] == 0, baseline
        kept = baseline["rps"]
        if kept >= MIN_RATE * NEW_PER_KEPT or tries == KEPT_TRIES:
            break
        time.sleep(10)
    rate, seconds = (
        min(NEW_CONNECTION_RATE, int(kept / NEW_PER_KEPT) // 50 * 50),
        NEW_CONNECTION_SECONDS,
    )
    # a floor, so that a slow stack cannot shrink the replay to nothing (kept: 5,400 req/s
    # quiet, 1,900 with both cores busy)
    assert rate >= MIN_RATE, (
        f"{kept:.0f} req/s on kept connections (try {tries} of {KEPT_TRIES}, 10 s apart): too "
        "slow to mean much"
    )
    budget = int(connect_ports() * PORTS_USED)
    assert rate * seconds <= budget, (
        f"{rate * seconds} connections in a minute from one address need a wider "
        "net.ipv4.ip_local_port_range on this host"
    )
    wait_for(
        lambda: time_waits(host, port) <= budget - rate * seconds,
        65,  # TIME_WAIT lasts 60 s
        f"earlier tests' TIME_WAITs to {host}:{port} leaving ports for the replay",
        every=1,
    )
    result = subprocess.run(
        [
            "httperf",
            "--server",
            host,
            f"--port={port}",
            "--uri=/",
            f"--rate={rate}",
            f"--num-conns={rate * seconds}",
            "--num-calls=1",
            "--timeout=5",
        ],
        capture_output=True,
        text=True,
        timeout=seconds * 4,
        check=False,
    )
    status = re.search(
        r"Reply status: 1xx=(\d+) 2xx=(\d+) 3xx=(\d+) 4xx=(\d+) 5xx=(\d+)", result.stdout
    )
    errors = re.search(r"Errors: total (\d+)", result.stdout)
    # fd-unavail: httperf (select(), at most ~1022 sockets) had no socket left to open the
    # connection; it never reached the stack. Seen when the other xdist worker's load slowed
    # every reply: the client's limit, not the server's.
    unopened = re.search(r"fd-unavail (\d+)", result.stdout)
    assert status and errors and unopened, result.stdout + result.stderr
    ok, server_errors, total_errors = int(status[2]), int(status[5]), int(errors[1])
    opened = rate * seconds - int(unopened[1])
    record(
        stack,
        f"httperf, a new connection per request for {seconds} s",
        f"--rate={rate}: 2xx={ok} 5xx={server_errors} errors={total_errors} (not opened by "
        f"httperf: {unopened[1]}; {kept:.0f} req/s on kept connections just before)",
    )
    assert server_errors == 0
    assert total_errors == int(unopened[1]), f"the stack failed connections: {result.stdout}"
    assert opened >= 0.8 * rate * seconds, f"httperf opened too few to mean much: {result.stdout}"
    assert ok >= 0.99 * opened, result.stdout
