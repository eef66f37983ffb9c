"""What a container costs: its cgroup's CPU time and peak memory (cgroup v1 accounting), and
the CPU of the docker-proxy processes that carry a published 127.0.0.1 port to it."""

from __future__ import annotations

import os
from pathlib import Path

from harness.compose import Stack

CGROUP = Path("/sys/fs/cgroup")


class NoAccounting(Exception):
    """This machine's cgroups do not keep the figure asked for."""


def cgroup_value(kind: str, container: str, name: str) -> int:
    """A cgroup v1 counter of a container, e.g. ("cpuacct", id, "cpuacct.usage") in ns."""
    for path in (
        CGROUP / kind / "docker" / container / name,
        CGROUP / kind / "system.slice" / f"docker-{container}.scope" / name,
    ):
        if path.exists():
            return int(path.read_text().split()[0])
    raise NoAccounting(
        f"no cgroup v1 {kind}/{name} for container {container[:12]} "
        "(the CPU and memory figures need cgroup v1 accounting)"
    )


def cpu_ns(container: str) -> int:
    """CPU time the container has used so far, in nanoseconds."""
    return cgroup_value("cpuacct", container, "cpuacct.usage")


def peak_memory_mib(container: str) -> float:
    """The container's highest memory use since it started."""
    return cgroup_value("memory", container, "memory.max_usage_in_bytes") / 2**20


def container_ids(stack: Stack) -> dict[str, str]:
    """service -> full container id."""
    return {service: stack.containers(service, running=True)[0] for service in stack.services()}


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


def process_cpu_ns(pids: list[int]) -> int:
    """CPU time (user + system) the processes have used so far, in nanoseconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) * 1_000_000_000 // ticks
    return total
