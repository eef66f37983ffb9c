"""Bounded traffic: a fixed number of requests, or a stream at a fixed rate, each request with a
timeout; and what the tests read from it (failures, outages, who served)."""

from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
from requests_toolbelt.adapters.host_header_ssl import HostHeaderSSLAdapter


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes
    raw: bytes  # the whole answer, status line and headers included


def raw_request(base_url: str, data: bytes, timeout: float = 10) -> RawResponse:
    """Send bytes as they are (no client library fixes them up), read until the server closes
    (send `Connection: close` unless the request makes it close)."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.[01] (\d{3})", status_line)
    assert match, f"no HTTP status line in {raw[:200]!r}"
    headers = {name.lower(): value for name, _, value in (h.partition(": ") for h in lines)}
    return RawResponse(int(match[1]), headers, body, raw)


CLOSE = b"\r\nConnection: close\r\n\r\n"  # one request per connection: read to the end
# Requests nginx itself refuses (snippets/server-defaults.conf's error_page), sent as raw bytes:
# requests would refuse to send some of them. Each: the status expected, the bytes sent. None
# depends on a route of the app's (any app's stack refuses them alike: test_your_app.py); the
# missing static file needs a static folder that nginx serves.
NGINX_REFUSALS = {
    "a request line that is not HTTP": (400, b"GARBAGE\r\n\r\n"),
    "a 64 KiB URI": (414, b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    "a 17 KB cookie": (
        400,
        b"GET / HTTP/1.1\r\nHost: x\r\nCookie: c=" + b"a" * 17000 + b"\r\n\r\n",
    ),
    "a body over 10 MiB": (
        413,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10485761\r\n\r\n",
    ),
    "a missing static file": (404, b"GET /static/missing.txt HTTP/1.1\r\nHost: x\r\n\r\n"),
    "nginx's error page itself": (404, b"GET /.flask-stacks/error HTTP/1.1\r\nHost: x\r\n\r\n"),
}


@dataclass
class Result:
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    seconds: float
    body: dict | str | None
    at: float = field(default=0.0)  # time.monotonic() when the request started

    @property
    def ok(self) -> bool:
        """A 2xx answer (an app's health route may answer 204)."""
        return self.status is not None and 200 <= self.status < 300


def get(
    url: str, timeout: float = 10, verify: bool | str = True, host: str = ""
) -> requests.Response:
    """One GET on a new connection. `verify`: a CA file for HTTPS with a private CA; `host`: the
    name to ask for (Host, SNI) and verify when `url` names an address, e.g. 127.0.0.1."""
    with requests.Session() as session:
        if host:  # requests-toolbelt: SNI and certificate check follow the Host header
            session.mount("https://", HostHeaderSSLAdapter())
        headers = {"Host": host} if host else {}
        return session.get(url, timeout=timeout, verify=verify, headers=headers)


def fetch(url: str, timeout: float = 10, verify: bool | str = True, host: str = "") -> Result:
    """`get`, timed, as a Result: no answer is a Result too (status None)."""
    started = time.monotonic()
    try:
        response = get(url, timeout, verify, host)
    except requests.RequestException as error:
        return Result(None, time.monotonic() - started, repr(error), started)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Result(response.status_code, time.monotonic() - started, body, started)


def fetch_many(url: str, count: int, concurrency: int = 1, timeout: float = 10) -> list[Result]:
    """`count` GETs of `url`, `concurrency` at a time."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda _: fetch(url, timeout), range(count)))


def failed(results: list[Result]) -> list[Result]:
    """The requests that got no 2xx, or no answer at all."""
    return [r for r in results if not r.ok]


def summary(results: list[Result]) -> str:
    """The one-line figure a test prints and asserts on: sent / failed / max latency."""
    worst = max((r.seconds for r in results), default=0.0)
    return f"sent {len(results)} / failed {len(failed(results))} / max latency {worst:.2f} s"


def percentile(values: list[float], share: float) -> float:
    """The value below which `share` of `values` lie (nearest rank; nan for none): the one rule
    every figure of the tests and the bench uses."""
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)] if ordered else float("nan")


def p99_seconds(results: list[Result]) -> float:
    """The 99th percentile of the requests' latencies (nan for none)."""
    return percentile([r.seconds for r in results], 0.99)


class Background:
    """One request running in a thread, e.g. an in-flight request during a stop."""

    def __init__(self, url: str, timeout: float = 60):
        self.result: Result | None = None
        self._thread = threading.Thread(target=self._run, args=(url, timeout), daemon=True)
        self._thread.start()

    def _run(self, url: str, timeout: float) -> None:
        self.result = fetch(url, timeout)

    def wait(self, timeout: float = 60) -> Result:
        self._thread.join(timeout)
        assert self.result is not None, "the background request did not finish"
        return self.result


# a Stream's requests per second, in all. Each costs ~5-7 ms of the machine's CPU (the client,
# Docker's userland proxy, nginx, the app): 200/s took a whole core of two, and the timed checks'
# streams overlap. At 50/s each of 4 clients still asks every 80 ms: an outage is seen.
RATE = 50


class Stream:
    """Steady, bounded traffic in the background: `clients` threads sending GETs, `rate` per
    second in all, until `stop()` or `limit` seconds. Use as a context manager; `results` after
    it ends.

    Why a rate, besides the CPU (RATE): every GET is a new connection, and Docker's userland
    proxy behind a 127.0.0.1 port opens its own to the container from one address, whose port
    then waits 60 s in TIME_WAIT. Back to back (about 600/s here) the proxy used up the 28k
    ephemeral ports within 45 s and reset every connection after that: a failure of the test's
    client, not the stack."""

    def __init__(
        self,
        url: str,
        clients: int = 4,
        limit: float = 30,
        timeout: float = 5,
        verify: bool | str = True,
        host: str = "",
        rate: float = RATE,
    ):
        self.url, self.timeout, self.verify, self.host = url, timeout, verify, host
        self._interval = clients / rate  # each client's share of the rate
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + limit
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stopped.is_set() and time.monotonic() < self._deadline:
            result = fetch(self.url, self.timeout, self.verify, self.host)
            with self._lock:
                self.results.append(result)
            due = max(due + self._interval, time.monotonic())  # late: no catching up in a burst
            self._stopped.wait(due - time.monotonic())

    def __enter__(self) -> Stream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> list[Result]:
        self._stopped.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return sorted(self.results, key=lambda r: r.at)

    def since(self, moment: float) -> list[Result]:
        with self._lock:
            return [r for r in self.results if r.at >= moment]

    def served_by(self, hostname: str, after: float = 0.0) -> bool:
        """Whether a /whoami request started after `after` was answered by `hostname`."""
        return any(
            isinstance(r.body, dict) and r.body.get("hostname") == hostname
            for r in self.since(after)
        )

    def wait_for_successes(self, count: int, after: float, timeout: float) -> float:
        """The moment (time.monotonic()) by which `count` requests in a row, all started after
        `after`, succeeded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = 0
            for result in sorted(self.since(after), key=lambda r: r.at):
                run = run + 1 if result.ok else 0
                if run >= count:
                    return result.at + result.seconds
            time.sleep(0.2)
        raise AssertionError(
            f"no {count} successes in a row within {timeout} s: {summary(self.since(after))}"
        )


# seconds between polls: most conditions start a `docker logs` or `exec`, whose load the other
# xdist worker's timed checks share (at 0.2 s, 200 of them while one stuck request waits)
POLL = 0.5


def wait_for(condition, timeout: float, what: str, every: float = POLL) -> None:
    """Poll `condition` every `every` s until it holds; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(every)


def wait_served_by_all(url: str, hostnames: set[str], timeout: float = 15) -> None:
    """Wait until GETs of `url` (a /whoami) are answered by every one of `hostnames`: each
    server is in the proxy's rotation (a server that failed a connect is out for a while)."""
    wait_for(
        lambda: {r.body["hostname"] for r in fetch_many(url, 3 * len(hostnames))
                 if isinstance(r.body, dict)} == hostnames,
        timeout,
        f"every server ({', '.join(sorted(hostnames))}) in the proxy's rotation",
    )  # fmt: skip


def outage(results: list[Result], fault: float) -> float:
    """Seconds from the fault to the end of the last failed request (0: nothing failed)."""
    failed = [r.at + r.seconds for r in results if r.status != 200]
    return max(failed) - fault if failed else 0.0
