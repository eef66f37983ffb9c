"""load-balanced-pair: both servers share the load; losing one mid-stream costs no request;
it comes back within a bound."""

import time
from collections import Counter

import pytest

from harness.traffic import Stream, fetch_many, summary, wait_for

pytestmark = pytest.mark.stacks("load-balanced-pair")

REQUESTS = 100


def hostnames(stack):
    """app1/app2 -> the container hostname /whoami reports."""
    return {name: stack.exec(name, "hostname").strip() for name in ("app1", "app2")}


def test_both_backends_share_the_load(stack, base_url):
    names = hostnames(stack)
    # precondition: both in nginx's rotation (a connect that timed out under an earlier
    # module's load takes a server out for fail_timeout, 5 s, by design)
    wait_for(
        lambda: (
            {r.body["hostname"] for r in fetch_many(base_url + "/whoami", 6)} == set(names.values())
        ),
        15,
        "both backends in nginx's rotation",
    )
    results = fetch_many(base_url + "/whoami", REQUESTS, concurrency=4)
    assert all(r.status == 200 for r in results), summary(results)
    share = Counter(r.body["hostname"] for r in results)
    assert set(share) == set(names.values()), f"answered by {share}, servers {names}"
    assert all(0.35 * REQUESTS <= n <= 0.65 * REQUESTS for n in share.values()), share


def test_one_backend_stopped_mid_stream_no_request_fails(stack, base_url, record):
    names = hostnames(stack)
    with Stream(base_url + "/whoami", clients=4, limit=30) as stream:
        time.sleep(1)
        fault = time.monotonic()
        stack.compose("stop", "app2", timeout=60)
        time.sleep(2)  # requests keep coming while app2 is gone
    results = stream.stop()
    record(stack, "one backend stopped mid-stream", summary(results))
    assert all(r.status == 200 for r in results), summary(results)
    after = {r.body["hostname"] for r in results if r.at > time.monotonic() - 1.5}
    assert after == {names["app1"]}, after
    assert max(r.seconds for r in results if r.at > fault) < 3  # uwsgi_connect_timeout 1s
    assert len(stream.since(fault)) > 20


def test_restarted_backend_gets_traffic_again(stack, base_url, record):
    with Stream(base_url + "/whoami", clients=2, limit=40) as stream:
        started = time.monotonic()
        stack.compose("start", "app2", timeout=60)
        app2 = hostnames(stack)["app2"]
        # app2's start + fail_timeout 5s
        wait_for(lambda: stream.served_by(app2), 30, "app2 gets traffic after its start")
        back = time.monotonic() - started
    results = stream.stop()
    record(
        stack, "stopped backend started again", f"{summary(results)} / serving after {back:.1f} s"
    )
    assert all(r.status == 200 for r in results), summary(results)
    assert back < 15, f"app2 served again only {back:.1f} s after its start"
