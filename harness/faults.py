"""Faults injected into a running stack: app-server processes found and killed, memory read.

Written once for every stack: the app server is uWSGI or Gunicorn, its master is the container's
PID 1 (or tini's child in single-container), its workers are the master's children running the
same program (single-container's nginx is a child too, and is left out).
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import time
from dataclasses import dataclass

from harness.compose import ROOT, Stack
from harness.traffic import POLL

# Connections the given processes hold that were accepted on a listening socket of the
# container: TCP ESTABLISHED on a port something listens on, unix sockets connected on a
# listening socket's path, and sockets listed in none of the container's tables (a unix socket
# accepted from another container, e.g. nginx through the shared socket file, belongs to the
# connecting side's network namespace). Each is a request inside a worker: nginx opens one
# connection per request.
HELD_CONNECTIONS = """
import json, os, sys
pids = json.loads(sys.argv[1])
def rows(name):
    try:
        return [line.split() for line in open(f"/proc/net/{name}").read().splitlines()[1:]]
    except OSError:
        return []
tcp = rows("tcp") + rows("tcp6")
ports = {r[1].rsplit(":", 1)[1] for r in tcp if r[3] == "0A"}
held = {r[9] for r in tcp if r[3] == "01" and r[1].rsplit(":", 1)[1] in ports}
unix = [r for r in rows("unix") if len(r) > 6]  # Num RefCount Protocol Flags Type St Inode [Path]
paths = {r[7] for r in unix if len(r) > 7 and r[5] == "01"}
held |= {r[6] for r in unix if len(r) > 7 and r[5] == "03" and r[7] in paths}
known = {r[9] for r in tcp} | {r[6] for r in unix}
for name in ("udp", "udp6", "raw", "raw6", "netlink"):  # their inode is the 10th column too
    known |= {r[9] for r in rows(name) if len(r) > 9}
count = 0
for pid in pids:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        continue
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        inode = link[8:-1]
        if link.startswith("socket:[") and (inode in held or inode not in known):
            count += 1
print(count)
"""


@dataclass
class AppServer:
    program: str  # "uwsgi" or "gunicorn"
    master: dict
    workers: list[dict]

    @property
    def slots_per_worker(self) -> int:
        """Requests one worker serves at once: uWSGI's threads, gevent's worker_connections."""
        return setting(self.program, {"uwsgi": "threads", "gunicorn": "worker_connections"})


CONFIGS = {
    "uwsgi": "shared/uwsgi/base.ini",
    "gunicorn": "stacks/nginx-gunicorn-gevent/gunicorn.conf.py",
}
DEFAULTS = {"threads": 1}  # uWSGI's own, where base.ini leaves it


def setting(program: str, name: str | dict[str, str]) -> int:
    """A whole-number setting of an app server's shipped config (`name = N`), so that a test's
    bound follows the config instead of restating it; `name` may map program -> name."""
    name = name[program] if isinstance(name, dict) else name
    text = (ROOT / CONFIGS[program]).read_text()
    found = re.search(rf"^{name} = (\d+)", text, flags=re.MULTILINE)
    if found:
        return int(found[1])
    assert name in DEFAULTS, f"{CONFIGS[program]} sets no {name}"
    return DEFAULTS[name]


def nginx_seconds(snippet: str, directive: str) -> int:
    """A time in whole seconds (`directive Ns;`) from one of shared/nginx/snippets/, so that a
    test's bound follows the shipped config."""
    text = (ROOT / "shared/nginx/snippets" / snippet).read_text()
    found = re.search(rf"^{directive} (\d+)s;", text, flags=re.MULTILINE)
    assert found, f"shared/nginx/snippets/{snippet} sets no {directive} in seconds"
    return int(found[1])


def processes(stack: Stack, service: str) -> list[dict]:
    """The container's processes (Stack.processes) as pid, parent, command line and own memory
    in KiB (Pss_Anon: Stack.processes says why)."""
    return [
        {
            "pid": int(fields["Pid"]),
            "ppid": int(fields["PPid"]),
            "cmd": fields.get("Cmdline", ""),
            "own_kib": int((fields.get("Pss_Anon") or fields.get("Pss") or "0").split()[0]),
        }
        for fields in stack.processes(service)
    ]


def app_server(stack: Stack, service: str) -> AppServer:
    """The master and its workers; waits (up to 5 s) while a recycled worker is being replaced
    (a master can briefly have none, e.g. both workers recycled at once)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return _app_server(stack, service)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL)


def _app_server(stack: Stack, service: str) -> AppServer:
    procs = processes(stack, service)

    def program(proc: dict) -> str | None:
        """uwsgi or gunicorn when the process runs one: its first word ("uwsgi --ini ...",
        "gunicorn: worker [...]" as setproctitle names it), or the script after an interpreter
        ("/usr/local/bin/python .../gunicorn --config"); not a shell that has one as an argument
        (single-container's "/bin/sh .../entrypoint uwsgi --ini ...")."""
        words = proc["cmd"].split() or [""]
        name = os.path.basename(words[0])
        if name.startswith("python") and len(words) > 1:
            name = os.path.basename(words[1])
        name = name.rstrip(":")
        return name if name in ("uwsgi", "gunicorn") else None

    by_pid = {p["pid"]: p for p in procs}
    masters = [p for p in procs if program(p) and not program(by_pid.get(p["ppid"], {"cmd": ""}))]
    assert len(masters) == 1, f"{stack.name}/{service}: masters {masters} in {procs}"
    master = masters[0]
    workers = [p for p in procs if p["ppid"] == master["pid"] and program(p)]
    assert workers, f"{stack.name}/{service}: no workers under {master}: {procs}"
    return AppServer(program(master), master, workers)


def in_flight(stack: Stack, services: list[str]) -> int:
    """Requests inside the app servers' workers now: the connections their workers hold."""
    total = 0
    for service in services:
        pids = [w["pid"] for w in app_server(stack, service).workers]
        total += int(stack.exec(service, "python", "-c", HELD_CONNECTIONS, json.dumps(pids)))
    return total


def kill_worker(stack: Stack, service: str) -> dict:
    """SIGKILL one worker, from inside the container (`kill` is a shell builtin there). It is
    stopped first (SIGSTOP: it accepts nothing more) and the requests inside it counted
    (`held`): what the kill may lose, and no more."""
    worker = app_server(stack, service).workers[0]
    pid = worker["pid"]
    stack.exec(service, "sh", "-c", f"kill -STOP {pid}")
    try:
        held = int(stack.exec(service, "python", "-c", HELD_CONNECTIONS, json.dumps([pid])))
    finally:
        stack.exec(service, "sh", "-c", f"kill -9 {pid}")
    return {**worker, "held": held}


def kill_master(stack: Stack, service: str) -> None:
    """SIGKILL the app server's master, as a crash would: PID 1 of the container can only be
    killed from the host (the kernel shields a namespace's init from its own processes).
    Returns once the signal is sent; time the fault after the call (its lookup takes an exec)."""
    server = app_server(stack, service)
    if server.master["pid"] == 1:
        os.kill(stack.inspect(service)["State"]["Pid"], signal.SIGKILL)
    else:
        stack.exec(service, "sh", "-c", f"kill -9 {server.master['pid']}", check=False)


def memory_mib(stack: Stack, service: str) -> float:
    """The app server's own memory: the anonymous PSS of the master and its workers (pages they
    share counted once; Stack.processes says why not all of PSS), the median of 3 samples 0.5 s
    apart: a worker being recycled inflates one sample by ~30%."""
    samples = []
    for _ in range(3):
        server = app_server(stack, service)
        samples.append(sum(p["own_kib"] for p in [server.master, *server.workers]) / 1024)
        time.sleep(0.5)
    return statistics.median(samples)
