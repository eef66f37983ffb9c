"""`make bench`: every stack under the same load, side by side, in one run.

Method (printed with the results):
- wrk runs on the host against each stack's 127.0.0.1 published port, as a user's client
  would, so Docker's userland proxy (docker-proxy) is in the path for every stack and the
  ceiling alike; its CPU is measured and shown as its own column.
- Each measurement is repeated (REPEAT, default 3), interleaved across stacks, and reported
  as the median with min-max: the machine is shared and noisy.
- CPU cost per request: each container's cgroup CPU time (cpuacct.usage) over the measured
  window divided by the requests served, in microseconds. Peak memory: the cgroup's
  memory.max_usage_in_bytes at the end.
- The ceiling: nginx answering `return 200` itself with the stacks' own nginx.conf.
wrk shares the 2 cores with the stacks: compare ratios within one run, not across machines.
wrk is closed-loop: its p99 under-reports tail latency (coordinated omission).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import (  # noqa: E402 - tests/ is on the path only from here
    STACKS,
    Stack,
    ephemeral_ports,
    images_env,
    start_stack,
    stop_stack,
)

CGROUP = Path("/sys/fs/cgroup")


def cgroup_value(kind: str, container: str, name: str) -> int:
    for path in (
        CGROUP / kind / "docker" / container / name,
        CGROUP / kind / "system.slice" / f"docker-{container}.scope" / name,
    ):
        if path.exists():
            return int(path.read_text().split()[0])
    raise SystemExit(f"bench: no cgroup v1 {kind}/{name} for container {container[:12]}")


def containers(stack: Stack) -> dict[str, str]:
    """service -> full container id."""
    out = {}
    for service in stack.services():
        ids = stack.compose("ps", "--quiet", "--no-trunc", service).stdout.split()
        out[service] = ids[0]
    return out


def proxy_pids(port: str) -> list[int]:
    """docker-proxy processes serving this host port (the cost of publishing a port)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"docker-proxy") and port.encode() in cmd:
                pids.append(int(proc.name))
    return pids


def proc_cpu_ns(pids: list[int]) -> int:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) * 1_000_000_000 // ticks
    return total


def wrk(url: str, connections: int, duration: int) -> dict:
    result = subprocess.run(
        ["wrk", "--latency", "-t", "2", "-c", str(connections), "-d", f"{duration}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    )
    out = result.stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, flags=re.MULTILINE)
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out)[1])
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "requests": requests,
        "p50": ms("50"),
        "p90": ms("90"),
        "p99": ms("99"),
        "non2xx": int(non2xx[1]) if non2xx else 0,
        "errors": sum(map(int, errors.groups())) if errors else 0,
    }


def measure(stack: Stack, url: str, connections: int, duration: int) -> dict:
    ids = containers(stack)
    pids = proxy_pids(url.rsplit(":", 1)[1].split("/")[0])
    wrk(url, connections, 2)  # warm up: workers, caches, connection setup
    before = {s: cgroup_value("cpuacct", c, "cpuacct.usage") for s, c in ids.items()}
    proxy_before = proc_cpu_ns(pids)
    result = wrk(url, connections, duration)
    served = max(result["requests"], 1)
    result["cpu_us"] = {
        s: (cgroup_value("cpuacct", c, "cpuacct.usage") - before[s]) / 1000 / served
        for s, c in ids.items()
    }
    result["cpu_us"]["docker-proxy"] = (proc_cpu_ns(pids) - proxy_before) / 1000 / served
    return result


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    low, mid, high = (fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
    return f"{mid} ({low}-{high})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--stacks",
        default=os.environ.get("STACKS", ""),
        help="comma-separated; default: every nginx stack",
    )
    parser.add_argument("--duration", type=int, default=int(os.environ.get("DURATION", "10")))
    parser.add_argument("--connections", default=os.environ.get("CONNECTIONS", "64,256"))
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("REPEAT", "3")))
    args = parser.parse_args()

    if not shutil.which("wrk"):
        raise SystemExit("bench: wrk is missing: run `make setup` (Debian: apt-get install wrk)")
    names = [s for s in args.stacks.split(",") if s] or [s for s in STACKS if s != "flask-dev"]
    unknown = sorted(set(names) - set(STACKS))
    if unknown:
        raise SystemExit(f"bench: unknown stacks {unknown}; choose from {STACKS}")
    connections = [int(c) for c in args.connections.split(",")]

    os.environ.update(ephemeral_ports(), BENCH_CEILING_PUBLISH="127.0.0.1:0")
    running: dict[str, Stack] = {}
    try:
        running["ceiling (nginx return 200)"] = start_stack(
            "bench-ceiling", ROOT / "bench/ceiling/compose.yaml"
        )
        for name in names:
            running[name] = start_stack(name)
        results: dict[tuple[str, int], list[dict]] = {}
        for round_ in range(args.repeat):
            for conns in connections:
                for label, stack in running.items():  # interleaved: each round visits all
                    print(
                        f"round {round_ + 1}/{args.repeat}: {label}, / at {conns} connections",
                        file=sys.stderr,
                    )
                    result = measure(stack, stack.base_url() + "/", conns, args.duration)
                    results.setdefault((label, conns), []).append(result)
        peaks = {
            label: {
                s: cgroup_value("memory", c, "memory.max_usage_in_bytes") / 2**20
                for s, c in containers(stack).items()
            }
            for label, stack in running.items()
        }
    finally:
        for stack in running.values():
            stop_stack(stack)

    print(__doc__)
    print(f"GET / for {args.duration} s, median (min-max) of {args.repeat} interleaved runs\n")
    print(
        "| stack | conns | req/s | p50 ms | p90 ms | p99 ms | non-2xx | socket errors "
        "| CPU µs/request per container |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (label, conns), runs in results.items():
        services = runs[0]["cpu_us"].keys()
        cpu = ", ".join(f"{s} {spread([r['cpu_us'][s] for r in runs])}" for s in services)
        print(
            f"| {label} | {conns} | {spread([r['rps'] for r in runs])} "
            f"| {spread([r['p50'] for r in runs], '{:.1f}')} "
            f"| {spread([r['p90'] for r in runs], '{:.1f}')} "
            f"| {spread([r['p99'] for r in runs], '{:.1f}')} "
            f"| {sum(r['non2xx'] for r in runs)} | {sum(r['errors'] for r in runs)} | {cpu} |"
        )
    print("\nPeak memory (MiB) per container:")
    for label, services in peaks.items():
        print(f"- {label}: " + ", ".join(f"{s} {mib:.0f}" for s, mib in services.items()))
    print("\nImage sizes:")
    for image in (
        "flask-stacks/app:latest",
        "flask-stacks/single-container:latest",
        {**images_env(), **os.environ}.get("NGINX_IMAGE", "nginx:1.28"),
    ):
        size = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Size}}", image],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if size:
            print(f"- {image}: {int(size) / 2**20:.0f} MiB")
    failures = sum(r["non2xx"] + r["errors"] for runs in results.values() for r in runs)
    print(f"\nnon-2xx + socket errors over the whole run: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
