"""METRICS=1 for the app servers: every Flask request counted, timed and tracked while in
flight, per route and status, in prometheus-client's multiprocess mode (each forked worker
writes its own file under PROMETHEUS_MULTIPROC_DIR; the exporter adds them up, so a worker
that dies or is recycled loses nothing and no worker's count resets the sum).

Imported before the app like flask_stacks_logging (uWSGI: shared/uwsgi/base.ini; Gunicorn:
gunicorn.conf.py). The requests are seen through Flask's signals, so any Flask app is counted
without a line of its own changed. Served on PORT (9102), which no stack publishes:
uWSGI runs `python -m flask_stacks_metrics` as an attached daemon (it also reads uWSGI's
stats server: listen queue, busy workers); Gunicorn serves it from its master (when_ready).
Metric names and queries: docs/metrics.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import time

SWITCH = ("0", "1")
PORT = 9102
UNMATCHED = "<unmatched>"  # requests no route matched (404, 405): one series, not one per path
STARTED = "flask_stacks.metrics.started"  # request.environ keys
STATUS = "flask_stacks.metrics.status"


def enabled() -> bool:
    """Whether METRICS is 1 (then the directory the workers write to is made) or 0/unset;
    any other value exits with what to fix."""
    value = os.environ.get("METRICS", "0") or "0"
    if value not in SWITCH:
        raise SystemExit(f"METRICS={value!r} must be 0 or 1 (default 0)")
    if value == "0":
        return False
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not folder:
        raise SystemExit(
            "METRICS=1 needs PROMETHEUS_MULTIPROC_DIR: a directory on a tmpfs, empty when the "
            "app server starts (shared/compose/services.yaml sets /tmp/metrics)"
        )
    os.makedirs(folder, exist_ok=True)  # /tmp is a tmpfs in every stack: new with the container
    return True


def _route() -> str:
    from flask import request

    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED


def instrument() -> None:
    """Count every request of every Flask app in this process (its workers inherit this)."""
    from flask import request, request_finished, request_started, request_tearing_down
    from prometheus_client import Counter, Gauge, Histogram

    requests_total = Counter(
        "flask_http_requests", "Requests the app answered.", ["method", "route", "status"]
    )
    duration = Histogram(
        "flask_http_request_duration_seconds",
        "Time from the app receiving a request to its response (body not streamed yet).",
        ["method", "route", "status"],
    )
    # livesum: the sum over the workers alive now (a killed worker's requests are not in flight)
    in_flight = Gauge(
        "flask_http_requests_in_flight",
        "Requests inside the app now.",
        ["method", "route"],
        multiprocess_mode="livesum",
    )

    def started(sender, **extra) -> None:
        request.environ[STARTED] = time.perf_counter()
        in_flight.labels(request.method, _route()).inc()

    def finished(sender, response, **extra) -> None:
        request.environ[STATUS] = response.status_code

    def torn_down(sender, **extra) -> None:
        began = request.environ.pop(STARTED, None)
        if began is None:  # not started: a context pushed outside a request (tests, CLI)
            return
        method, route = request.method, _route()
        in_flight.labels(method, route).dec()
        # no response recorded: it failed after the app (an after_request hook): the server's 500
        status = str(request.environ.pop(STATUS, 500))
        # a WebSocket's request lasts as long as the socket: a lifetime, not a latency (it would
        # fill the top bucket and fire SlowRequests); counted when it closes, in flight while open
        if request.headers.get("Upgrade", "").lower() != "websocket":
            duration.labels(method, route, status).observe(time.perf_counter() - began)
        requests_total.labels(method, route, status).inc()

    # strong references (module-level closures kept by these names): blinker holds weak ones
    instrument.receivers = (started, finished, torn_down)
    request_started.connect(started)
    request_finished.connect(finished)
    request_tearing_down.connect(torn_down)


def registry(uwsgi_stats: str = ""):
    """What the exporter serves: the workers' files added up (dead workers' gauges dropped)
    and, with `uwsgi_stats` (host:port), uWSGI's stats server's figures."""
    from prometheus_client import CollectorRegistry, multiprocess

    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]

    class LiveWorkers(multiprocess.MultiProcessCollector):
        """Marks the workers that are gone before each collection, so that livesum gauges (in
        flight) forget them, whether they exited, were recycled or were killed."""

        def collect(self):
            for name in os.listdir(folder):
                found = re.fullmatch(r"gauge_live\w+_(\d+)\.db", name)
                if found and not os.path.exists(f"/proc/{found[1]}"):
                    multiprocess.mark_process_dead(int(found[1]), folder)
            return super().collect()

    result = CollectorRegistry()
    LiveWorkers(result, folder)
    if uwsgi_stats:
        result.register(UwsgiStats(uwsgi_stats))
    return result


class UwsgiStats:
    """uWSGI's stats server (JSON) as gauges: what the app's own metrics cannot see, the
    requests waiting in the listen queue and how many workers are busy. No maintained uWSGI
    exporter is packaged or pullable here; this reads the same JSON those exporters read."""

    def __init__(self, address: str):
        host, _, port = address.rpartition(":")
        self.address = (host or "127.0.0.1", int(port))

    def read(self) -> dict:
        with socket.create_connection(self.address, timeout=2) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")  # stats-http = true (base.ini)
            data = b"".join(iter(lambda: conn.recv(65536), b""))
        return json.loads(data.partition(b"\r\n\r\n")[2])

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("uwsgi_stats_up", "1 if uWSGI's stats server answered.")
        try:
            stats = self.read()
        except (OSError, ValueError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        sockets = [s for s in stats.get("sockets", []) if not s.get("shared")]
        queue = GaugeMetricFamily(
            "uwsgi_listen_queue", "Connections waiting to be accepted.", labels=["socket"]
        )
        size = GaugeMetricFamily(
            "uwsgi_listen_queue_size", "The listen queue's length (listen).", labels=["socket"]
        )
        for entry in sockets:
            queue.add_metric([entry["name"]], entry.get("queue", 0))
            size.add_metric([entry["name"]], entry.get("max_queue", 0))
        yield queue
        yield size
        workers = stats.get("workers", [])
        yield GaugeMetricFamily("uwsgi_workers", "Worker processes.", value=len(workers))
        busy = sum(1 for w in workers if w.get("status") == "busy")
        yield GaugeMetricFamily("uwsgi_workers_busy", "Workers serving a request.", value=busy)


def start_in_background() -> None:
    """The exporter on PORT in a thread of this process (Gunicorn's master: when_ready)."""
    from prometheus_client import start_http_server

    start_http_server(PORT, registry=registry())


def main(argv: list[str] | None = None) -> None:
    """The exporter on PORT, in the foreground (uWSGI's attached daemon)."""
    from prometheus_client import start_http_server

    parser = argparse.ArgumentParser(prog="python -m flask_stacks_metrics")
    parser.add_argument(
        "--uwsgi-stats", default="", metavar="HOST:PORT", help="uWSGI's stats server"
    )
    args = parser.parse_args(argv)
    if not enabled():
        raise SystemExit("python -m flask_stacks_metrics: METRICS is not 1, nothing to export")
    _, thread = start_http_server(PORT, registry=registry(args.uwsgi_stats))
    thread.join()


if __name__ == "__main__":
    main()
elif enabled():
    instrument()
