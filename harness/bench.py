"""`make bench`'s measurements (scripts/bench.py is its command line; `make tune` measures with
them too): every stack under the same load, side by side, in one run.

Method (written into every report):
- wrk runs on the host along two paths (the report's "path" column): to each target's
  container address on its compose network ("container"), as traffic from other hosts reaches
  a published port in production (the kernel forwards it; no process in between), and to its
  127.0.0.1 published port ("docker-proxy"), as a client on this host does, through Docker's
  userland proxy, whose CPU is its own column. GET / takes both; the other workloads the first.
- Each measurement is repeated (REPEAT, default 3), interleaved across targets, and reported
  as the median with min-max: the machine is shared and noisy.
- CPU cost per request: each container's cgroup CPU time (cpuacct.usage) over the measured
  window divided by the requests served, in microseconds. Peak memory: the cgroup's
  memory.max_usage_in_bytes at the end.
- Baselines in the same run: the ceiling (nginx answering `return 200` itself, with the
  stacks' own nginx.conf and logging), each app server reached directly (uWSGI through an added
  HTTP/1.1 socket, Gunicorn on its own port, same configs), and Flask in-process (the WSGI app
  called in a loop inside the app image: the limit for the app code itself, per core).
- The error run: GET / at ERRORS_AT (1,024) connections to each stack's container, wrk's
  timeout 30 s; its figure is whether any request failed (non-2xx, socket errors).
- HTTP/2 over TLS (h2load, to the socket stack's container with its TLS overlay): clients
  keeping their connection for 500 requests (10 streams in flight each), and a new TLS
  connection per request.
- WebSockets (the gevent stack, `/ws/echo`, the `websockets` library's asyncio client on the
  host): messages echoed per second by as many sockets as the lowest connection count, each
  sending its next 64-byte message when the echo of the last arrives; and the app server's
  memory (anonymous PSS) per idle socket held, from before to after opening WS_HELD of them, with
  permessage-deflate (as browsers negotiate it) and without.
wrk shares the 2 cores with the stacks: compare ratios within one run, not across machines.
wrk is closed-loop: its p99 under-reports tail latency (coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from harness import h2load, machine_load
from harness.compose import (
    NGINX_STACKS,
    ROOT,
    Stack,
    StackError,
    build_images,
    ephemeral_ports,
    images_env,
    start_stack,
    stop_stacks,
)
from harness.faults import memory_mib
from harness.resource_usage import (
    NoAccounting,
    container_ids,
    cpu_ns,
    peak_memory_mib,
    process_cpu_ns,
    proxy_pids,
)
from harness.tls import free_port, make_certs, tls_overlay
from harness.websockets_load import allow_open_files, close_all, echo_rate, open_sockets
from harness.wrk import wrk

CEILING = "ceiling (nginx return 200)"
ERROR_RUN = "GET / (error run)"
CONTAINER, PROXY = "container", "docker-proxy"  # the two paths (see the method above)
APP_IMAGE = "flask-stacks/app:latest"
STATIC_PATH = "/static/style.css"
SLOW_PATH = "/slow?seconds=0.05"
WS_STACK = "nginx-gunicorn-gevent"  # the one stack that serves WebSockets (the others: 501)
# HTTP/2 over TLS on the split stack with the highest share (single-container, a little higher,
# bundles nginx and uWSGI in one container)
H2_STACK = "nginx-uwsgi-socket"
H2_LABEL = f"{H2_STACK} over HTTPS (HTTP/2)"
WS_HELD = 1000  # idle sockets held for the memory figure: the stack's per-address limit_conn
# the error run: as many connections as each nginx worker can proxy at once on 2 cores
# (worker_connections 2048, two per request), every production stack, any failure counted
ERRORS_AT = 1024

# Flask's own cost: the WSGI app called in a loop, no server, no socket (inside the app image).
IN_PROCESS = """
import json, time
from werkzeug.test import EnvironBuilder
from wsgi import application
environ = EnvironBuilder(path="/", base_url="http://localhost/").get_environ()
def start_response(status, headers, exc_info=None):
    assert status.startswith("200"), status
requests, cpu, deadline = 0, time.process_time(), time.monotonic() + {seconds}
while time.monotonic() < deadline:
    for _ in range(200):
        body = application(dict(environ), start_response)
        b"".join(body)
        body.close()
    requests += 200
print(json.dumps({{"requests": requests, "cpu_s": time.process_time() - cpu}}))
"""


class TargetPlan(NamedTuple):
    """How to start a target: its compose project, and what wrk (or h2load) loads."""

    name: str
    compose_file: Path | None  # None: the stack's own
    baseline: bool
    front: tuple[str, int] | None  # (service, container port); None: the stack's front door
    overlays: tuple[Path, ...] = ()
    env: dict[str, str] | None = None
    scheme: str = "http"


@dataclass
class Target:
    """Something wrk loads: a stack's nginx or a baseline."""

    label: str
    stack: Stack
    url: str  # the 127.0.0.1 published port: through docker-proxy
    direct: str  # the container's address on its compose network: no proxy
    baseline: bool  # baselines' errors are reported, not failures (sync workers time out)
    containers: dict[str, str]  # service -> container id


@dataclass
class Workload:
    name: str  # as shown in the report
    path: str
    connections: int
    labels: list[str]
    via: str = CONTAINER  # or PROXY
    # /slow: no warm-up (its queued requests would still hold sync workers when the measured
    # run starts) and a timeout above the queueing delay of 256 clients on 2 sync workers
    slow: bool = False
    timeout: int = 2  # wrk's: a request slower than this counts as a socket error
    runs: dict[str, list[dict]] = field(default_factory=dict)


def alone(measurement):
    """A measurement holds the machine's load lock alone (harness.machine_load), so that no
    timed check of a test run, and no other load, runs beside it; the stack starts and stops
    between measurements hold nothing."""

    @functools.wraps(measurement)
    def held(*args, **kwargs):
        with machine_load.exclusive(f"bench: {measurement.__name__}"):
            return measurement(*args, **kwargs)

    return held


def with_cpu(ids: dict[str, str], run, count: str) -> dict:
    """`run()`'s figures plus `cpu_us`: each container's cgroup CPU over the call divided by
    the figures' `count` (requests, messages)."""
    before = {s: cpu_ns(c) for s, c in ids.items()}
    figures = run()
    done = max(figures[count], 1)
    figures["cpu_us"] = {s: (cpu_ns(c) - before[s]) / 1000 / done for s, c in ids.items()}
    return figures


def cpu_column(runs: list[dict]) -> str:
    """Each container's CPU µs per request over the runs: "app 160 (157-205), nginx 77 ..."."""
    return ", ".join(f"{s} {spread([r['cpu_us'][s] for r in runs])}" for s in runs[0]["cpu_us"])


@alone
def measure(target: Target, workload: Workload, duration: int, warm_up: bool = True) -> dict:
    ids = target.containers
    url = (target.url if workload.via == PROXY else target.direct) + workload.path
    pids = proxy_pids(target.url.rsplit(":", 1)[1])
    if warm_up and not workload.slow:
        wrk(url, workload.connections, 1)  # warm up: workers, caches, connection pools
    proxy_before = process_cpu_ns(pids)
    result = with_cpu(
        ids, lambda: wrk(url, workload.connections, duration, workload.timeout), "requests"
    )
    served = max(result["requests"], 1)
    result["cpu_us"]["docker-proxy"] = (process_cpu_ns(pids) - proxy_before) / 1000 / served
    return result


@alone
def measure_websockets(
    target: Target, connections: int, duration: int, held: int, warm_up: bool = True
) -> dict:
    """The gevent stack's WebSockets: echo rate and CPU per message, then memory per idle
    socket (the app server's anonymous PSS before and with `held` open)."""
    url = target.direct.replace("http://", "ws://", 1) + "/ws/echo"
    ids = target.containers
    if warm_up:
        asyncio.run(echo_rate(url, connections, 1))
    result = with_cpu(ids, lambda: asyncio.run(echo_rate(url, connections, duration)), "messages")
    result["connections"] = connections

    async def hold(compression: str | None) -> float:
        sockets = await open_sockets(url, held, ping_interval=None, compression=compression)
        try:
            return await asyncio.to_thread(memory_mib, target.stack, "app")
        finally:
            await close_all(sockets)

    allow_open_files(held)
    result["held"] = held
    # permessage-deflate (what browsers and the websockets client offer, and simple-websocket
    # accepts) keeps a zlib compressor and decompressor per socket: measured with and without
    for variant, compression in (("deflate", "deflate"), ("plain", None)):
        idle = memory_mib(target.stack, "app")
        kib = (asyncio.run(hold(compression)) - idle) * 1024 / held
        result[f"kib_per_socket_{variant}"] = kib
    return result


@alone
def measure_http2(target: Target, connections: int, duration: int, warm_up: bool = True) -> dict:
    """HTTP/2 over TLS to the container (h2load): `connections` kept for many requests (10
    streams each), and a new TLS connection per request (the handshake's cost); CPU per
    request per container for each."""
    url = target.direct + "/"
    ids = target.containers
    if warm_up:
        h2load.reused(url, connections, 1)
    return {
        "reused": with_cpu(ids, lambda: h2load.reused(url, connections, duration), "requests"),
        "new": with_cpu(
            ids, lambda: h2load.new_connections(url, connections, duration), "requests"
        ),
    }


@alone
def in_process(seconds: int) -> dict:
    """Flask alone: requests per CPU-second (= per core) and CPU µs per request."""
    out = subprocess.run(
        ["docker", "run", "--rm", APP_IMAGE, "python", "-c", IN_PROCESS.format(seconds=seconds)],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    sample = json.loads(out.strip().splitlines()[-1])
    return {
        "rps_per_core": sample["requests"] / sample["cpu_s"],
        "cpu_us": sample["cpu_s"] * 1e6 / sample["requests"],
    }


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    low, mid, high = (fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
    return f"{mid} ({low}-{high})"


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def machine_info() -> dict:
    def run(*cmd: str) -> str:
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except FileNotFoundError:
            return ""
        return (result.stdout or result.stderr).strip()

    cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    env = {**images_env(), **os.environ}
    return {
        "cpu": cpu[1] if cpu else platform.processor(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "docker": run("docker", "version", "--format", "{{.Server.Version}}"),
        "compose": run("docker", "compose", "version", "--short"),
        "wrk": " ".join(run("wrk", "--version").split()[:2]),
        "h2load": run("h2load", "--version"),
        "python_image": env.get("PYTHON_IMAGE", "python:3.13-slim-trixie"),
        "nginx_image": env.get("NGINX_IMAGE", "nginx:1.28"),
        "git": run("git", "-C", str(ROOT), "describe", "--always", "--dirty"),
    }


def plan(
    names: list[str], connections: list[int], certs: Path, errors_at: int = ERRORS_AT
) -> tuple[dict[str, tuple], list[Workload]]:
    """Targets (label -> compose name, compose file, baseline?, (service, port) wrk loads) and
    workloads. Baselines follow the chosen stacks: uWSGI direct with a uWSGI stack, and so on."""
    bench = ROOT / "bench"
    targets = {CEILING: ("bench-ceiling", bench / "ceiling/compose.yaml", True, ("nginx", 8080))}
    targets.update({name: (name, None, False, None) for name in names})
    if any("gunicorn" not in name for name in names):
        targets["uWSGI direct (HTTP/1.1 socket)"] = (
            "bench-uwsgi-direct",
            bench / "uwsgi-direct/compose.yaml",
            True,
            ("app", 9000),
        )
    gunicorn = "nginx-gunicorn-gevent" in names
    if gunicorn:
        targets["Gunicorn gevent direct"] = (
            "bench-gunicorn-direct",
            bench / "gunicorn-direct/compose.yaml",
            True,
            ("app", 8000),
        )
    workloads = [
        Workload("GET /", "/", c, list(targets), via)
        for via in (CONTAINER, PROXY)
        for c in connections
    ]
    # the stacks only: whether any request fails (a queue wait of seconds is not a failure)
    workloads.append(Workload(ERROR_RUN, "/", errors_at, list(names), timeout=30))
    static_stack = "nginx-uwsgi-socket" if "nginx-uwsgi-socket" in names else names[0]
    workloads.append(Workload("static file", STATIC_PATH, min(connections), [static_stack]))
    if gunicorn:
        sync = "nginx-gunicorn-gevent, sync workers"
        targets[sync] = (
            "bench-gunicorn-sync",
            bench / "gunicorn-sync/compose.yaml",
            True,
            ("nginx", 8080),
        )
        workloads.append(
            Workload(
                "GET /slow 50 ms",
                SLOW_PATH,
                max(connections),
                ["nginx-gunicorn-gevent", sync],
                slow=True,
                timeout=30,
            )
        )
    if H2_STACK in names:  # HTTP/2 over TLS (h2load, not wrk): its own rounds, not workloads
        targets[H2_LABEL] = TargetPlan(
            H2_STACK,
            None,
            False,
            ("nginx", 8443),
            (tls_overlay(H2_STACK),),
            {"TLS_CERTS_DIR": str(certs), "HTTPS_PORT": str(free_port())},
            "https",
        )
    return targets, workloads


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "-"


def report(data: dict) -> str:
    """The Markdown report of one run."""
    lines = [f"`{data['command']}`, {data['started']}", ""]
    m = data["machine"]
    lines += [
        f"Machine: {m['cpu']}, {m['cores']} cores, kernel {m['kernel']}, Docker {m['docker']}, "
        f"Compose {m['compose']}, {m['wrk']}, {m.get('h2load', 'no h2load')}; "
        f"images {m['python_image']}, {m['nginx_image']}; "
        f"commit {m['git']}.",
        f"{data['duration']} s per run after a 1 s warm-up; median (min-max) of "
        f"{data['repeat']} runs interleaved across targets.",
        "",
        "| workload | path | target | conns | req/s | × ceiling | p50 ms | p90 ms | p99 ms "
        "| non-2xx | socket errors | CPU µs/request per container |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ceilings = {
        (w["connections"], w["via"]): median(w["runs"][CEILING], "rps")
        for w in data["workloads"]
        if CEILING in w["runs"]
    }
    for w in data["workloads"]:
        for label, runs in w["runs"].items():
            cpu = cpu_column(runs)
            x_ceiling = (
                ratio(median(runs, "rps"), ceilings.get((w["connections"], w["via"]), 0))
                if w["name"] == "GET /"
                else "-"
            )
            lines.append(
                f"| {w['name']} | {w['via']} | {label} | {w['connections']} "
                f"| {spread([r['rps'] for r in runs])} | {x_ceiling} "
                f"| {spread([r['p50'] for r in runs], '{:.1f}')} "
                f"| {spread([r['p90'] for r in runs], '{:.1f}')} "
                f"| {spread([r['p99'] for r in runs], '{:.1f}')} "
                f"| {sum(r['non2xx'] for r in runs)} | {sum(r['errors'] for r in runs)} | {cpu} |"
            )
    lines += ["", proxy_cost(data["workloads"])]
    flask = data["in_process"]
    lines += [
        "",
        f"Flask in-process (GET / called as a WSGI app, no server): "
        f"{spread([s['rps_per_core'] for s in flask])} req/s per core, "
        f"{spread([s['cpu_us'] for s in flask])} µs CPU per request: the app's own share of "
        "every app server's CPU column above.",
    ]
    slow = next((w for w in data["workloads"] if w["path"] == SLOW_PATH), None)
    if slow:
        gevent, sync = (median(slow["runs"][label], "rps") for label in slow["labels"])
        own = next(
            (
                median(w["runs"]["nginx-gunicorn-gevent"], "rps")
                for w in data["workloads"]
                if w["name"] == "GET /"
                and w["connections"] == slow["connections"]
                and w["via"] == slow["via"]
            ),
            0,
        )
        lines.append(
            f"`/slow` (50 ms of waiting per request) at {slow['connections']} connections: "
            f"gevent {gevent:.0f} req/s = {ratio(gevent, sync)}× the same-sized sync workers "
            f"({sync:.0f} req/s), {ratio(gevent, own)}× its own `GET /` throughput."
        )
    http2 = data.get("http2")
    if http2:
        for kind, what in (
            (
                "reused",
                f"connections kept for {h2load.REQUESTS_PER_CONNECTION} requests "
                "(10 streams in flight on each)",
            ),
            ("new", "a new TLS connection per request"),
        ):
            runs = [r[kind] for r in http2]
            cpu = cpu_column(runs)
            lines.append(
                f"HTTP/2 over TLS (h2load, {runs[0]['protocol']}) to {H2_STACK}'s container, "
                f"{min(data['connections'])} clients, {what}: {spread([r['rps'] for r in runs])} "
                f"req/s, mean {spread([r['mean_ms'] for r in runs], '{:.1f}')} ms, max "
                f"{spread([r['max_ms'] for r in runs], '{:.0f}')} ms, "
                f"{sum(r['failed'] for r in runs)} failed ({sum(r['non2xx'] for r in runs)} "
                "of them non-2xx answers); "
                f"CPU µs per request: {cpu}."
            )
    websockets = data.get("websockets")
    if websockets:
        cpu = cpu_column(websockets)
        held = []
        for variant, how in (("deflate", "with permessage-deflate"), ("plain", "without")):
            kib = [r[f"kib_per_socket_{variant}"] for r in websockets]
            per_mib = 1024 / statistics.median(kib) if statistics.median(kib) > 0 else 0
            held.append(f"{spread(kib, '{:.1f}')} KiB each {how} ({per_mib:.0f} per MiB)")
        lines.append(
            f"WebSockets on {WS_STACK} (`/ws/echo`, {websockets[0]['connections']} sockets "
            f"echoing 64-byte messages back to back): {spread([r['rate'] for r in websockets])} "
            f"messages/s, p99 {spread([r['p99'] for r in websockets], '{:.1f}')} ms, "
            f"{sum(r['errors'] for r in websockets)} errors; CPU µs per message: {cpu}. "
            f"{websockets[0]['held']} idle sockets held, app-server memory: "
            + ", ".join(held)
            + "."
        )
    lines += ["", "Peak memory (MiB) per container:"]
    for label, services in data["peak_memory_mib"].items():
        lines.append(f"- {label}: " + ", ".join(f"{s} {mib:.0f}" for s, mib in services.items()))
    lines += ["", "Image sizes:"]
    lines += [f"- {image}: {mib:.0f} MiB" for image, mib in data["image_sizes_mib"].items()]
    lines += ["", f"Errors in production stacks over the whole run: {data['failures']}"]
    return "\n".join(lines) + "\n"


def proxy_cost(workloads: list[dict]) -> str:
    """What Docker's userland proxy costs: each target's GET / rate through it as a share of
    its rate to the container's address, and the proxy's own CPU per request."""
    by_path = {(w["connections"], w["via"]): w for w in workloads if w["name"] == "GET /"}
    parts = []
    for (connections, via), proxied in sorted(by_path.items()):
        direct = by_path.get((connections, CONTAINER))
        if via != PROXY or not direct:
            continue
        shares = ", ".join(
            f"{label} {ratio(median(runs, 'rps'), median(direct['runs'][label], 'rps'))}"
            for label, runs in proxied["runs"].items()
        )
        cpu = statistics.median(
            r["cpu_us"]["docker-proxy"] for runs in proxied["runs"].values() for r in runs
        )
        parts.append(f"at {connections} connections {shares} (its CPU: {cpu:.0f} µs/request)")
    return (
        "docker-proxy's cost, GET / through 127.0.0.1 as a share of the rate to the container: "
        + "; ".join(parts)
        + "."
    )


def chart(data: dict, path: Path) -> None:
    """req/s and p99 per target for GET / at each connection count."""
    import matplotlib  # noqa: PLC0415 - only the bench needs it, and headless

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    get = [w for w in data["workloads"] if w["name"] == "GET /" and w["via"] == CONTAINER]
    labels = list(get[0]["runs"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.5 * len(labels) + 2), sharey=True)
    height = 0.8 / len(get)
    for i, w in enumerate(get):
        ys = [n + i * height for n in range(len(labels))]
        for ax, key in zip(axes, ("rps", "p99"), strict=True):
            ax.barh(
                ys,
                [median(w["runs"][label], key) for label in labels],
                height=height,
                label=f"{w['connections']} connections",
            )
    axes[0].set_title("GET / to the container's address: requests per second (median)")
    axes[1].set_title("GET /: p99 latency, ms (median)")
    axes[1].set_xscale("log")
    axes[0].set_yticks([n + 0.4 - height / 2 for n in range(len(labels))], labels)
    axes[0].invert_yaxis()
    axes[0].legend()
    fig.suptitle(f"make bench, {data['started']}, {data['machine']['cores']} cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def image_sizes() -> dict[str, float]:
    env = {**images_env(), **os.environ}
    sizes = {}
    for image in (
        APP_IMAGE,
        "flask-stacks/single-container:latest",
        env.get("NGINX_IMAGE", "nginx:1.28"),
        "flask-stacks/nginx:latest",  # the stacks' nginx: that image plus the app's static files
    ):
        size = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Size}}", image],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if size:
            sizes[image] = int(size) / 2**20
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (or STACKS, DURATION, CONNECTIONS, REPEAT, OUT from make), checked:
    a bad value stops the bench with what to give instead."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--stacks",
        default=os.environ.get("STACKS", ""),
        help="comma-separated; default: every nginx stack",
    )
    add_run_options(
        parser,
        "measure",
        "1 s runs, no warm-ups, 16 connections, once: checks the harness, measures nothing",
    )
    args = parser.parse_args(argv)
    args.ws_held = WS_HELD
    if args.smoke:
        args.duration, args.connections, args.repeat, args.ws_held = 1, "16", 1, 50
    args.errors_at = 32 if args.smoke else ERRORS_AT
    nginx_stacks = NGINX_STACKS
    args.names = [s for s in args.stacks.split(",") if s] or nginx_stacks
    unknown = sorted(set(args.names) - set(nginx_stacks))
    if unknown:
        raise SystemExit(f"bench: not an nginx stack: {unknown}; choose from {nginx_stacks}")
    check_run_options(args, "bench")
    return args


def add_run_options(parser: argparse.ArgumentParser, verb: str, smoke: str) -> None:
    """The options `make bench` and `make tune` share (or DURATION, CONNECTIONS, REPEAT, OUT,
    ALLOW_DIRTY from make)."""
    parser.add_argument("--duration", type=int, default=int(os.environ.get("DURATION", "5")))
    parser.add_argument("--connections", default=os.environ.get("CONNECTIONS", "64,256"))
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("REPEAT", "3")))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/results")))
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        default=os.environ.get("ALLOW_DIRTY", "") not in ("", "0"),
        help=f"{verb} a tree with uncommitted changes (the report says so); by default refused",
    )
    parser.add_argument("--smoke", action="store_true", help=smoke)


def run_facts(
    command: str, started: datetime.datetime, machine: dict, args: argparse.Namespace, method: str
) -> dict:
    """What every report of `make bench` and `make tune` starts with: how to repeat the run,
    when and where it ran, its settings and its method."""
    return {
        "command": command,
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "duration": args.duration,
        "connections": args.connection_counts,
        "repeat": args.repeat,
        "method": method,
    }


def check_run_options(args: argparse.Namespace, tool: str) -> None:
    """`args.connection_counts` from CONNECTIONS; a bad value stops `tool` with what to give."""
    try:
        args.connection_counts = [int(c) for c in args.connections.split(",")]
    except ValueError:
        raise SystemExit(
            f"{tool}: CONNECTIONS={args.connections!r}: give numbers, e.g. 64,256"
        ) from None
    if args.duration < 1 or args.repeat < 1 or min(args.connection_counts) < 1:
        raise SystemExit(f"{tool}: DURATION, REPEAT and CONNECTIONS must be at least 1")


def tree_state(describe: str, allow_dirty: bool) -> str:
    """The commit a report names (`git describe --dirty`): a dirty tree is refused, since its
    figures would belong to no commit, unless `allow_dirty`, and then the report says so."""
    if not describe.endswith("-dirty"):
        return describe
    if not allow_dirty:
        raise SystemExit(
            f"bench: the tree has uncommitted changes ({describe}): commit them, so the results "
            "name the commit they measure, or pass --allow-dirty (make bench ALLOW_DIRTY=1)"
        )
    return f"{describe} (uncommitted changes: run with --allow-dirty)"


def start_targets(targets: dict[str, tuple], running: dict[str, Target]) -> None:
    """Bring every target up into `running` (label -> Target), all at once once the images are
    built (most of a start is waiting on healthchecks); a target that cannot come up ends the
    bench with its compose error and logs, not a traceback."""

    started: dict[str, Target] = {}

    def start(label: str) -> None:
        name, compose_file, baseline, front, overlays, env, scheme = TargetPlan(*targets[label])
        stack = start_stack(name, compose_file, overlays, env, build=False, prefix="fs-bench")
        started[label] = Target(label, stack, "", "", baseline, {})  # taken down at the end
        published = stack.published()
        front = front or next(key for key, url in published.items() if url == stack.base_url())
        service, port = front
        direct = f"{scheme}://{stack.address(service)}:{port}"
        started[label] = Target(
            label, stack, published[front], direct, baseline, container_ids(stack)
        )

    try:
        build_images([name for name, compose_file, *_ in targets.values() if not compose_file])
        # every container starting at once takes both cores: alone, like a measurement
        with (
            machine_load.exclusive("bench: starting the targets"),
            ThreadPoolExecutor(len(targets)) as pool,
        ):
            for done in [pool.submit(start, label) for label in targets]:
                done.result()
    except StackError as error:
        raise SystemExit(f"bench: {error}") from None
    finally:  # in the plan's order, for the report; every started target, for the teardown
        running.update({label: started[label] for label in targets if label in started})


def run_rounds(
    running: dict[str, Target], workloads: list[Workload], args: argparse.Namespace
) -> tuple[list[dict], list[dict], list[dict]]:
    """`repeat` rounds, each visiting every workload's targets in turn (interleaved, so drift
    on a shared machine spreads over all); returns the in-process Flask samples, the HTTP/2
    runs and the WebSocket runs (the last two if their stacks are measured)."""
    flask: list[dict] = []
    http2: list[dict] = []
    websockets: list[dict] = []
    for round_ in range(args.repeat):
        for w in workloads:
            for label in w.labels:
                print(
                    f"round {round_ + 1}/{args.repeat}: {label}: {w.name} "
                    f"at {w.connections} connections",
                    file=sys.stderr,
                )
                w.runs.setdefault(label, []).append(
                    measure(running[label], w, args.duration, not args.smoke)
                )
        if H2_LABEL in running:
            print(f"round {round_ + 1}/{args.repeat}: {H2_LABEL}: h2load", file=sys.stderr)
            http2.append(
                measure_http2(
                    running[H2_LABEL], min(args.connection_counts), args.duration, not args.smoke
                )
            )
        if WS_STACK in running:
            print(f"round {round_ + 1}/{args.repeat}: {WS_STACK}: WebSockets", file=sys.stderr)
            websockets.append(
                measure_websockets(
                    running[WS_STACK],
                    min(args.connection_counts),
                    args.duration,
                    args.ws_held,
                    not args.smoke,
                )
            )
        flask.append(in_process(min(args.duration, 3)))
    return flask, http2, websockets


def peak_memory(running: dict[str, Target]) -> dict[str, dict[str, float]]:
    """label -> service -> peak MiB, read before the targets are taken down."""
    return {
        label: {s: peak_memory_mib(c) for s, c in target.containers.items()}
        for label, target in running.items()
    }


def production_failures(workloads: list[Workload], running: dict[str, Target]) -> int:
    """Non-2xx answers and socket errors of the stacks (baselines' are reported, not counted)."""
    return sum(
        r["non2xx"] + r["errors"]
        for w in workloads
        for label, runs in w.runs.items()
        if not running[label].baseline
        for r in runs
    )


def command_line(args: argparse.Namespace) -> str:
    """How to repeat this run: the make command with the settings that were given."""
    given = (
        ("stacks", args.stacks),
        ("duration", args.duration),
        ("connections", args.connections),
        ("repeat", args.repeat),
    )
    if args.smoke:
        return "make bench (smoke)"
    return "make bench" + "".join(f" {k.upper()}={v}" for k, v in given if v)


def write_results(data: dict, out: Path, started: datetime.datetime) -> str:
    """bench-<time>.json, .md and .png in `out`, copied to latest.*; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / started.strftime("bench-%Y%m%d-%H%M%S")
    markdown = report(data)
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown)
    chart(data, stem.with_suffix(".png"))
    for suffix in (".json", ".md", ".png"):
        shutil.copyfile(stem.with_suffix(suffix), out / f"latest{suffix}")
    print(f"bench: wrote {stem}.json, .md, .png (and {out}/latest.*)")
    return markdown


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("bench: wrk is missing: run `make setup` (Debian: apt-get install wrk)")
    if not shutil.which("h2load"):
        raise SystemExit(
            "bench: h2load is missing: run `make setup` (Debian: apt-get install nghttp2-client)"
        )
    machine = machine_info()
    machine["git"] = tree_state(machine["git"], args.allow_dirty)
    certs = Path(tempfile.mkdtemp(prefix="fs-bench-certs-"))
    certs.chmod(0o755)  # nginx (uid 101) reads it through the mount
    make_certs(certs)  # the local CA's localhost pair, as `make certs` writes it
    targets, workloads = plan(args.names, args.connection_counts, certs, args.errors_at)
    # every stack's and baseline's published address on a port the OS picks
    os.environ.update(ephemeral_ports("bench/*/compose.yaml"))
    started = datetime.datetime.now(datetime.UTC)
    running: dict[str, Target] = {}
    try:
        start_targets(targets, running)
        flask, http2, websockets = run_rounds(running, workloads, args)
        peaks = peak_memory(running)
    except NoAccounting as error:
        raise SystemExit(f"bench: {error}") from None
    finally:
        shutil.rmtree(certs, ignore_errors=True)
        try:
            stop_stacks(target.stack for target in running.values())
        except StackError as error:
            raise SystemExit(f"bench: {error}") from None
    data = {
        **run_facts(command_line(args), started, machine, args, __doc__),
        "workloads": [
            {k: getattr(w, k) for k in ("name", "path", "via", "connections", "labels", "runs")}
            for w in workloads
        ],
        "in_process": flask,
        "http2": http2,
        "websockets": websockets,
        "peak_memory_mib": peaks,
        "image_sizes_mib": image_sizes(),
        "failures": production_failures(workloads, running)
        + sum(run["errors"] for run in websockets)
        + sum(run[k]["failed"] for run in http2 for k in ("reused", "new")),
    }
    print(__doc__)
    print(write_results(data, args.out, started))
    return 1 if data["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
