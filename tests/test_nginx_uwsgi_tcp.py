"""nginx-uwsgi-tcp: uwsgi protocol over TCP, never published; stats for the operator only."""

import pytest
import requests

pytestmark = pytest.mark.stacks("nginx-uwsgi-tcp")


def test_only_nginx_and_stats_are_published_and_on_loopback(stack):
    published = stack.published()
    assert set(published) == {("nginx", 8080), ("app", 9191)}, published
    assert all(url.startswith("http://127.0.0.1:") for url in published.values()), published


def test_uwsgi_speaks_its_protocol_not_http(stack):
    # port 3031 answers the uwsgi protocol (the healthcheck), and is no HTTP server
    assert "200 OK" in stack.exec("app", "healthcheck", "uwsgi://127.0.0.1:3031")
    probe = stack.exec("app", "healthcheck", "http://127.0.0.1:3031", check=False)
    assert "200" not in probe


def test_stats_show_the_workers(stack):
    stats = requests.get(stack.published()["app", 9191], timeout=10).json()
    cores = int(stack.exec("app", "nproc").strip())
    want = 2 * cores  # base.ini: two single-threaded workers per core
    assert len(stats["workers"]) == want, f"want {want} workers ({cores} cores): {stats['workers']}"
    assert all(len(worker["cores"]) == 1 for worker in stats["workers"]), stats["workers"]
    # reachable on the compose network too, as the seeds use it
    inside = stack.exec("nginx", "curl", "-fsS", "http://app:9191/")
    assert '"workers"' in inside
