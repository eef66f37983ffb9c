"""h2load, nghttp2's HTTP/2 load generator (Debian's `nghttp2-client`; `make setup` installs
it), run from the host by `make bench`: connections reused for many requests, or a new TLS
connection for every request (the handshake's cost)."""

from __future__ import annotations

import re
import subprocess
import time

from harness import machine_load


def parse_h2load(out: str) -> dict:
    """h2load's report -> req/s, requests that succeeded, failed (h2load's count: non-2xx
    answers and errors), non-2xx, the protocol it negotiated, mean and max time per request
    (ms; h2load has no percentiles)."""
    finished = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", out)
    requests_ = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        out,
    )
    statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    protocol = re.search(r"Application protocol: (\S+)", out)
    timing = re.search(
        r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out
    )
    if not (finished and requests_ and statuses):
        raise ValueError(f"h2load output has no request counts or rate:\n{out}")

    def ms(value: str, unit: str) -> float:
        return (
            float(value) / 1000
            if unit == "us"
            else float(value) * 1000
            if unit == "s"
            else float(value)
        )

    seconds = ms(finished[1], finished[2]) / 1000
    return {
        "rps": float(finished[3]),
        "seconds": seconds,
        "requests": int(requests_[3]),
        "failed": int(requests_[4]),  # HTTP-level failures and the errored (h2load's manual)
        "non2xx": sum(int(statuses[i]) for i in (2, 3, 4)),
        "protocol": protocol[1] if protocol else "none",
        "max_ms": ms(timing[3], timing[4]) if timing else 0.0,
        "mean_ms": ms(timing[5], timing[6]) if timing else 0.0,
    }


def run_h2load(*args: str, timeout: float) -> dict:
    with machine_load.exclusive(f"h2load {' '.join(args)}"):  # a load: alone on the machine
        result = subprocess.run(
            ["h2load", *args], capture_output=True, text=True, check=True, timeout=timeout
        )
    return parse_h2load(result.stdout)


# requests each kept connection makes in one h2load call, below nginx.conf's
# `keepalive_requests 1000`: nginx then ends the connection with a GOAWAY, and h2load neither
# reconnects on HTTP/2 nor retries the streams it had sent past it, counting them as failed
# (16 clients, 3 s: exactly 16,000 succeeded, 12-35 failed)
REQUESTS_PER_CONNECTION = 500


def reused(url: str, clients: int, duration: int, streams: int = 10) -> dict:
    """`clients` HTTP/2 connections, `streams` requests in flight on each, for `duration` s:
    calls of REQUESTS_PER_CONNECTION requests per connection, again and again."""
    return batches(
        (
            *("--requests", str(clients * REQUESTS_PER_CONNECTION), "--clients", str(clients)),
            *("--max-concurrent-streams", str(streams), url),
        ),
        duration,
    )


def new_connections(url: str, clients: int, duration: int) -> dict:
    """A new TLS connection for every request: `clients` connections at once, one request
    each, again and again for `duration` s."""
    return batches(("--requests", str(clients), "--clients", str(clients), url), duration)


def batches(args: tuple[str, ...], duration: int) -> dict:
    """h2load `args` again and again for `duration` s (at least once); the calls' counts and
    times added up."""
    total = {"requests": 0, "failed": 0, "non2xx": 0, "seconds": 0.0, "max_ms": 0.0}
    weighted_mean = 0.0
    deadline = time.monotonic() + duration
    protocols = set()
    while True:
        batch = run_h2load(*args, timeout=30)
        for key in ("requests", "failed", "non2xx", "seconds"):
            total[key] += batch[key]
        total["max_ms"] = max(total["max_ms"], batch["max_ms"])
        weighted_mean += batch["mean_ms"] * batch["requests"]
        protocols.add(batch["protocol"])
        if time.monotonic() >= deadline:
            break
    return {
        **total,
        "rps": total["requests"] / total["seconds"] if total["seconds"] else 0.0,
        "mean_ms": weighted_mean / total["requests"] if total["requests"] else 0.0,
        "protocol": "/".join(sorted(protocols)),
    }
