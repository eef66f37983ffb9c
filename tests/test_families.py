"""docker-compose.uwsgi.yml and docker-compose.gunicorn.yml: every nginx in them answers."""

import pytest
import requests

from harness.compose import FAMILIES, ROOT, start_stack, stop_stack


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, images):
    """One top-level compose file, up once, always taken down."""
    started = start_stack(request.param, ROOT / request.param)
    try:
        yield started
    finally:
        stop_stack(started)


def test_every_nginx_answers(family):
    fronts = {service: url for (service, port), url in family.published().items() if port == 8080}
    nginx_services = [s for s in family.services() if s.endswith("nginx")]
    assert sorted(fronts) == sorted(nginx_services), f"{family.name}: published {fronts}"
    servers = set()
    for service, url in fronts.items():
        assert requests.get(url + "/", timeout=10).text == "Hello from flask-stacks!\n", service
        servers.add(requests.get(url + "/whoami", timeout=10).json()["hostname"])
    assert len(servers) == len(fronts), f"{family.name}: two nginx reached the same app {servers}"
