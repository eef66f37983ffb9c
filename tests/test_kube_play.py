"""Each production stack's Kubernetes manifests (kubernetes/<stack>) run by a real engine:
podman 4.3.1's `kube play` with the images the compose stacks build (harness/kube_play.py says
what it adapts for podman, and why). Through nginx, the app answers (the socket stack's through
the shared emptyDir); every container runs as the manifests say (its user, a read-only root, no
capability); each probe's command passes inside its container; the secret is where the app
reads it; a stop lets the request in flight finish, and what the app wrote survives `kube down`
and a new `kube play` on the same volume (REPLAYED: the two pod layouts). The stacks play one
after another, in one group: the pods answer to their names (`app`, `nginx`) on podman's one
kube network."""

from __future__ import annotations

import uuid

import pytest
import requests

from harness.kube_play import Play, images_of, load_images, podman
from harness.tls import free_port
from harness.traffic import wait_for
from stackctl import kubernetes

STACKS = kubernetes.stacks()
SERVER = {"nginx-gunicorn-gevent": "gunicorn/"}  # /whoami's server; the others' are uWSGI
DATA = "/app/instance"  # APP_DATA, on the claim app-data
# played again on their volume after the stop: one pod for nginx and the app, and pods of their
# own. The claim's mount is components/app's in every stack (held by tests/unit/test_kubernetes)
REPLAYED = ("nginx-uwsgi-socket", "nginx-uwsgi-tcp")


@pytest.fixture(scope="module")
def podman_images(images) -> list[str]:
    """The images the manifests name, copied into podman's store once (and removed after)."""
    needed = sorted(set().union(*(images_of(kubernetes.manifests(stack)) for stack in STACKS)))
    load_images(needed)
    yield needed
    podman("rmi", "--force", *needed, check=False)


@pytest.fixture(scope="module", params=STACKS)
def played(request, podman_images, tmp_path_factory):
    stack = request.param
    key = uuid.uuid4().hex.encode()  # what `kubectl create secret ... --from-file` would hold
    play = Play(stack, tmp_path_factory.mktemp(f"kube-{stack}"), free_port(), {"secret_key": key})
    try:
        play.up()
        wait_for(
            lambda: answers(play.url + "/healthz"), 90, f"{stack}: nginx answering through podman"
        )
        yield play
    except BaseException:
        print(play.logs())
        raise
    finally:
        play.remove()


# one test per stack, its checks in this order (the last stops the pods): the scheduler keeps
# the tests of a group in the order written, which would play each stack again per test
def test_the_manifests_run_under_podman(played):
    nginx_answers_through_the_pods(played)
    every_container_runs_as_the_manifests_say(played)
    each_probe_passes_inside_its_container(played)
    the_secret_is_where_the_app_reads_it(played)
    a_stop_finishes_the_request_in_flight_and_the_data_survives(played)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def nginx_answers_through_the_pods(played):
    body = requests.get(f"{played.url}/whoami", timeout=10).json()
    assert body["server"].lower().startswith(SERVER.get(played.stack, "uwsgi/")), body
    assert requests.get(f"{played.url}/", timeout=10).text == "Hello from flask-stacks!\n"


def every_container_runs_as_the_manifests_say(played):
    for name, spec in played.containers().items():
        context = spec["securityContext"]
        uid = played.exec(name, "id", "-u", check=True).stdout.strip()
        assert uid != "0" and uid == str(context.get("runAsUser", uid)), (name, uid)
        touched = played.exec(name, "touch", "/written-to-the-root")
        assert touched.returncode and "Read-only file system" in touched.stderr, (name, touched)
        assert not played.inspect(name)["EffectiveCaps"], name


def each_probe_passes_inside_its_container(played):
    for name, spec in played.containers().items():
        probes = [
            spec[p]["exec"]["command"] for p in ("readinessProbe", "livenessProbe") if p in spec
        ]
        assert probes, f"{name} has no probe"
        for command in probes:
            result = played.exec(name, *command)
            assert result.returncode == 0, (name, command, result.stdout, result.stderr)


def the_secret_is_where_the_app_reads_it(played):
    app = next(name for name in played.containers() if name.endswith("-app"))
    seen = played.exec(app, "cat", "/run/secrets/secret_key", check=True).stdout
    assert seen.encode() == played.secrets["secret_key"]


def a_stop_finishes_the_request_in_flight_and_the_data_survives(played):
    app = next(name for name in played.containers() if name.endswith("-app"))
    probe = f"{DATA}/kube-{uuid.uuid4().hex[:6]}"
    played.exec(app, "sh", "-c", f"echo kept > {probe}", check=True)
    # the request comes from a container on the pods' network, as from an Ingress: podman's
    # port on 127.0.0.1 goes with the pod, and would drop an answer nginx sent as it stopped
    client = played.client(f"http://{played.front()}:8080/slow?seconds=3")
    try:
        wait_for(lambda: "sent" in played.said(client), 30, "the request sent")
        played.down()
        podman("wait", client, timeout=60)
        assert played.said(client).splitlines()[-1] == "200", played.said(client)
    finally:
        podman("rm", "--force", client, check=False)
    if played.stack in REPLAYED:
        played.up()
        wait_for(
            lambda: answers(played.url + "/healthz"), 90, f"{played.stack}: back, played again"
        )
        assert played.exec(app, "cat", probe, check=True).stdout == "kept\n"
