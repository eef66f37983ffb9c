"""wrk, the load generator of `make bench` and the load tests (Debian's package; `make setup`
installs it), run from the host and its report parsed."""

from __future__ import annotations

import re
import subprocess

from harness import machine_load


def parse_wrk(out: str) -> dict:
    """wrk --latency output -> req/s, requests, p50/p90/p99 (ms), non-2xx, socket errors."""

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, flags=re.MULTILINE)
        if not match:
            raise ValueError(f"wrk output has no {label}% latency line:\n{out}")
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests_ = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not (requests_ and rps):
        raise ValueError(f"wrk output has no request count or rate:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    kinds = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True))
        if errors
        else {}
    )
    return {
        "rps": float(rps[1]),
        "requests": int(requests_[1]),
        "p50": ms("50"),
        "p90": ms("90"),
        "p99": ms("99"),
        "non2xx": int(non2xx[1]) if non2xx else 0,
        "errors": sum(kinds.values()),
        "socket_errors": kinds,
    }


def wrk(url: str, connections: int, duration: int, timeout: int = 2) -> dict:
    """wrk from the host (Debian's package; `make setup` installs it): parsed report. A load:
    it runs alone on the machine (harness.machine_load)."""
    with machine_load.exclusive(f"wrk -c {connections} {url}"):
        result = subprocess.run(
            [
                "wrk",
                "--latency",
                "-t",
                "2",
                "-c",
                str(connections),
                "-d",
                f"{duration}s",
                "--timeout",
                f"{timeout}s",
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + timeout + 30,
        )
    return parse_wrk(result.stdout)
