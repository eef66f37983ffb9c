"""nginx-gunicorn-gevent: gevent patched in time, slow requests overlap."""

import re
import time

from conftest import only
from traffic import fetch_many, summary

pytestmark = only("nginx-gunicorn-gevent")


def test_gevent_workers_and_no_late_patching(stack, base_url):
    assert fetch_many(base_url + "/", 5)[0].status == 200  # the workers have handled requests
    logs = stack.logs("app")
    assert "Using worker: gevent" in logs
    for warning in ("MonkeyPatchWarning", "monkey-patch", "patched too late", "WORKER TIMEOUT"):
        assert warning not in logs, f"{warning!r} in the app's log:\n{logs[-3000:]}"


def test_concurrent_slow_requests_overlap(stack, base_url):
    workers = len(re.findall(r"Booting worker with pid", stack.logs("app")))
    concurrent = 10 * workers
    started = time.monotonic()
    results = fetch_many(base_url + "/slow?seconds=1", concurrent, concurrency=concurrent)
    elapsed = time.monotonic() - started
    print(f"{stack.name}: {concurrent} x /slow?seconds=1 on {workers} workers: {summary(results)}")
    assert all(r.status == 200 for r in results), summary(results)
    # sync workers would need concurrent / workers = 10 s; gevent overlaps the sleeps
    assert elapsed < 3, f"{concurrent} concurrent 1 s requests took {elapsed:.1f} s"


def test_access_log_carries_the_request_id(stack, base_url):
    response = fetch_many(base_url + "/whoami", 1)[0]
    request_id = response.body["request_id"]
    stack.wait_for_log("app", f"rid={request_id}")  # Gunicorn's access_log_format has it
