"""load-balanced-pair: both servers share the load; losing one costs no request; it comes back."""

import time
from collections import Counter

from conftest import only
from traffic import fetch_many, summary

pytestmark = only("load-balanced-pair")

REQUESTS = 100


def hostnames(stack):
    """app1/app2 -> the container hostname /whoami reports."""
    return {name: stack.exec(name, "hostname").strip() for name in ("app1", "app2")}


def test_both_backends_share_the_load(stack, base_url):
    results = fetch_many(base_url + "/whoami", REQUESTS, concurrency=4)
    assert all(r.status == 200 for r in results), summary(results)
    share = Counter(r.body["hostname"] for r in results)
    names = hostnames(stack)
    assert set(share) == set(names.values()), f"answered by {share}, servers {names}"
    assert all(0.35 * REQUESTS <= n <= 0.65 * REQUESTS for n in share.values()), share


def test_one_backend_stopped_no_request_fails(stack, base_url):
    names = hostnames(stack)
    stack.compose("stop", "app2", timeout=60)
    results = fetch_many(base_url + "/whoami", 50, concurrency=4)
    print(f"{stack.name}, app2 stopped: {summary(results)}")
    assert all(r.status == 200 for r in results), summary(results)
    assert {r.body["hostname"] for r in results} == {names["app1"]}
    assert max(r.seconds for r in results) < 3  # uwsgi_connect_timeout 1s, then app1


def test_restarted_backend_gets_traffic_again(stack, base_url):
    stack.compose("start", "app2", timeout=60)
    app2 = hostnames(stack)["app2"]
    started = time.monotonic()
    deadline = started + 30  # healthcheck start + fail_timeout 5s
    while True:
        results = fetch_many(base_url + "/whoami", 10, concurrency=2)
        assert all(r.status == 200 for r in results), summary(results)
        if any(r.body["hostname"] == app2 for r in results):
            break
        assert time.monotonic() < deadline, "app2 got no traffic within 30 s of its restart"
        time.sleep(0.5)
    print(f"{stack.name}: app2 served again {time.monotonic() - started:.1f} s after its start")
