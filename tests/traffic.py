"""Bounded traffic for the tests: a fixed number of requests, each with a timeout."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests


@dataclass
class Result:
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    seconds: float
    body: dict | str | None


def fetch(url: str, timeout: float = 10) -> Result:
    started = time.monotonic()
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as error:
        return Result(None, time.monotonic() - started, repr(error))
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Result(response.status_code, time.monotonic() - started, body)


def fetch_many(url: str, count: int, concurrency: int = 1, timeout: float = 10) -> list[Result]:
    """`count` GETs of `url`, `concurrency` at a time."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda _: fetch(url, timeout), range(count)))


def summary(results: list[Result]) -> str:
    """The one-line figure a test prints and asserts on: sent / failed / max latency."""
    failed = [r for r in results if r.status != 200]
    worst = max((r.seconds for r in results), default=0.0)
    return f"sent {len(results)} / failed {len(failed)} / max latency {worst:.2f} s"


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
