"""METRICS=1 (docs/metrics.md), on the stacks that run with it (conftest's METRICS_STACKS: one
uWSGI, one Gunicorn): Prometheus' own query API counts exactly the requests sent through the
published port, by route and status, for the app and for nginx; a killed worker loses and
doubles nothing; /metrics and stub_status are on the compose network only. The alert that an
app server is down fires in time: test_nginx_uwsgi_tcp.py (it stops the app)."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import requests
from conftest import METRICS_STACKS

from harness.compose import Stack, app_server_of
from harness.faults import app_server, kill_worker, setting
from harness.metrics import Prometheus, config, seconds
from harness.traffic import fetch_many, wait_for

pytestmark = pytest.mark.stacks(*METRICS_STACKS)

# what the tests send, by (route, status): a page, an error on purpose, a path no route has
SENT = {("/", "200"): 7, ("/fault/error", "500"): 3, ("<unmatched>", "404"): 2}
PATHS = {
    ("/", "200"): "/",
    ("/fault/error", "500"): "/fault/error",
    ("<unmatched>", "404"): "/no/such",
}
# the app's answers to everyone but the healthchecks (which ask /healthz every few seconds)
APP_COUNTS = 'sum by (route, status) (flask_http_requests_total{route!="/healthz"})'
NGINX_COUNT = 'nginx_http_requests_total{job="nginx"}'


@pytest.fixture(scope="module")
def prometheus(stack: Stack) -> Prometheus:
    return Prometheus(stack.published()["prometheus", 9090])


def send(base_url: str) -> int:
    """SENT's requests through the published port, each answered as expected; their number."""
    for (route, status), count in SENT.items():
        for result in fetch_many(base_url + PATHS[route, status], count):
            assert result.status == int(status), f"{PATHS[route, status]}: {result}"
    return sum(SENT.values())


def app_counts(prometheus: Prometheus, after: float) -> dict[tuple[str, str], float]:
    """The app's counts by (route, status), from a scrape that began after `after`."""
    prometheus.scraped_after("app", after)
    return prometheus.counts(APP_COUNTS, by=("route", "status"))


def difference(after: dict, before: dict) -> dict:
    return {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key)}


def test_prometheus_counts_exactly_the_requests_sent(stack, base_url, prometheus):
    """The app's counter rises by what was sent, by route and status. nginx's (stub_status)
    counts every request nginx handles, between two of its scrapes: those sent, the exporter's
    reads of stub_status (one per scrape, counted in the value it returns) and the nginx
    container's own healthchecks (docker's log says when each ran). A healthcheck that ran
    while a scrape began cannot be placed on one side of it: such a scrape is no edge, and the
    count runs between the latest two scrapes that are (with every send between them)."""
    interval = seconds(config()["global"]["scrape_interval"])
    began = time.time()
    before = app_counts(prometheus, began)
    prometheus.scraped_after("nginx", began)
    edges = prometheus.stamped(NGINX_COUNT)  # one scrape before each send, and one after all
    total: Counter = Counter()
    for _ in range(6):  # a scrape is ambiguous only now and then (~0.2-1.5 s of each 5 s)
        send(base_url)
        total.update(SENT)
        prometheus.scraped_after("nginx", time.time())
        edges += prometheus.stamped(NGINX_COUNT)
        checks = [(c["start"], c["end"]) for c in stack.healthchecks("nginx")]
        # the exporter reads stub_status a few ms after the scrape begins; a scrape before the
        # oldest healthcheck Docker still lists could have one unlisted after it
        clear = [
            i
            for i, edge in enumerate(edges)
            if min(ran for ran, _ in checks) < edge.time
            and not any(ran - 0.1 < edge.time < ended for ran, ended in checks)
        ]
        if len(clear) > 1:
            start, end = edges[clear[-2]], edges[clear[-1]]
            sent = sum(SENT.values()) * (clear[-1] - clear[-2])
            break
    else:
        pytest.fail(f"{stack.name}: no two scrapes without a healthcheck: {edges} {checks}")
    after = app_counts(prometheus, time.time())
    assert difference(after, before) == dict(total), f"{stack.name}: the app's, by route/status"
    scrapes = round((end.time - start.time) / interval)
    own = sum(1 for ran, _ in checks if start.time < ran < end.time)
    assert end.value - start.value == sent + scrapes + own, (
        f"{stack.name}: nginx counted {end.value - start.value} between scrapes at "
        f"{start.time} and {end.time}: {sent} sent + {scrapes} stub_status reads + {own} "
        f"healthchecks (began {checks})"
    )


@pytest.mark.timed
def test_a_killed_worker_loses_and_doubles_nothing(stack, base_url, prometheus):
    (service,) = stack.app_services()
    before = app_counts(prometheus, time.time())
    assert all(r.status == 200 for r in fetch_many(base_url + "/", 20, concurrency=4))
    killed = kill_worker(stack, service)
    wait_for(
        lambda: killed["pid"] not in [w["pid"] for w in app_server(stack, service).workers],
        20,
        f"{stack.name}: worker {killed['pid']} gone",
    )
    assert all(r.status == 200 for r in fetch_many(base_url + "/", 20, concurrency=4))
    after = app_counts(prometheus, time.time())
    assert difference(after, before) == {("/", "200"): 40}, f"{stack.name}: killed {killed}"
    in_flight = prometheus.query("sum(flask_http_requests_in_flight)")
    assert [s.value for s in in_flight] == [0], f"{stack.name}: in flight after: {in_flight}"


def test_the_app_servers_own_figures(stack, prometheus):
    """uWSGI's stats server adds what the app cannot see (listen queue, busy workers);
    Gunicorn has no such figures, and no uwsgi_* series appears for it."""
    (service,) = stack.app_services()
    prometheus.scraped_after("app", time.time())
    figures = {s.labels["__name__"]: s.value for s in prometheus.query('{__name__=~"uwsgi_.*"}')}
    if app_server_of(stack.name) == "gunicorn":
        assert figures == {}, f"{stack.name}: {figures}"
        return
    workers = len(app_server(stack, service).workers)
    assert figures == {
        "uwsgi_stats_up": 1,
        "uwsgi_listen_queue": 0,
        "uwsgi_listen_queue_size": setting("uwsgi", "listen"),
        "uwsgi_workers": workers,
        "uwsgi_workers_busy": 0,
    }, f"{stack.name}: idle, {workers} workers"


def test_metrics_are_reachable_on_the_compose_network_only(stack, base_url, prometheus):
    """Prometheus reaches the app's exporter and nginx's stub_status; the published port
    answers neither, and no service publishes their ports."""
    targets = prometheus.get("targets")["activeTargets"]
    assert {(t["labels"]["job"], t["health"]) for t in targets} == {
        ("app", "up"),
        ("nginx", "up"),
        ("prometheus", "up"),
    }, f"{stack.name}: {[(t['scrapeUrl'], t['lastError']) for t in targets]}"
    for path in ("/metrics", "/stub_status"):
        answer = requests.get(base_url + path, timeout=10)
        assert answer.status_code == 404 and answer.json()["status"] == 404, (stack.name, path)
    published = {port for _, port in stack.published()}
    assert not published & {8090, 9102, 9113}, f"{stack.name}: publishes {published}"
