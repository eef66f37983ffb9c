"""load-balanced-pair on a single-node Docker Swarm, deployed by scripts/swarm.py (`make
swarm-up`) from the stack's compose.yaml + compose.swarm.yaml: nginx finds every replica, and
under scaling, a rolling update and a killed task no request fails.
The swarm is created for the module if there is none, and left again afterwards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest

from harness.compose import ROOT, images_env
from harness.tls import free_port
from harness.traffic import RATE, Stream, failed, fetch_many, summary, wait_for

REPLICAS = 3


SWARM = "load-balanced-pair (Swarm)"  # its name in the failure-behaviour table


def docker(*args: str, timeout: float = 120, check: bool = True, stderr_too: bool = False) -> str:
    """docker's output; with stderr_too, its error stream in it (`service logs` writes a
    task's stderr there: nginx's error log)."""
    try:
        result = subprocess.run(
            ["docker", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if stderr_too else subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        if check:
            raise
        return f"(docker {args[0]} {args[1]} timed out)"
    if check and result.returncode:
        said = (result.stderr or result.stdout).strip()
        raise AssertionError(f"docker {' '.join(args)}: {said[-2000:]}")
    return result.stdout


def swarm_py(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, ROOT / "scripts/swarm.py", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **images_env(), **env},
        check=False,
    )


@dataclass
class Deployment:
    name: str
    url: str

    def service(self, short: str) -> str:
        return f"{self.name}_{short}"

    def app_containers(self) -> list[str]:
        """Containers of the app tasks meant to run and running (not those draining)."""
        out = docker(
            *("service", "ps", "--no-trunc", "--filter", "desired-state=running"),
            *("--format", "{{.Name}}.{{.ID}} {{.CurrentState}}", self.service("app")),
        )
        return [line.split()[0] for line in out.splitlines() if " Running " in f"{line} "]

    def slots(self) -> dict[str, str]:
        """Each slot's running app task ("stack_app.2") -> its hostname (what /whoami reports)."""
        names = self.app_containers()
        if not names:
            return {}
        hostnames = docker("inspect", "--format", "{{.Config.Hostname}}", *names).split()
        return {name.rsplit(".", 1)[0]: host for name, host in zip(names, hostnames, strict=True)}

    def app_hostnames(self) -> set[str]:
        """Hostnames of the running app tasks."""
        return set(self.slots().values())

    def converged(self, replicas: int) -> bool:
        """`replicas` app tasks running (Swarm counts a task once its healthcheck passes),
        none starting, and no update in progress."""
        spec = json.loads(docker("service", "inspect", self.service("app")))[0]
        state = (spec.get("UpdateStatus") or {}).get("State", "completed")
        wanted = docker(
            *("service", "ps", "-q", "--filter", "desired-state=running", self.service("app"))
        ).split()
        running = self.app_containers()
        return len(running) == len(wanted) == replicas and state in (
            "completed",
            "rollback_completed",
        )

    def replicas(self) -> int:
        """How many app tasks the service asks for."""
        spec = json.loads(docker("service", "inspect", self.service("app")))[0]["Spec"]
        return spec["Mode"]["Replicated"]["Replicas"]

    def settled_slots(self) -> dict[str, str]:
        """Each slot's app task hostname once Swarm has converged (the starting point of a test)."""
        replicas = self.replicas()
        self.wait_converged(replicas, 60, f"{replicas} app tasks running")
        slots = self.slots()
        assert len(set(slots.values())) == replicas, slots
        return slots

    def settled_hostnames(self) -> set[str]:
        """The app tasks' hostnames once Swarm has converged."""
        return set(self.settled_slots().values())

    def wait_converged(self, replicas: int, timeout: float, what: str) -> None:
        """`wait_for(converged)`; a failure says what Swarm reports of the app service."""
        try:
            wait_for(lambda: self.converged(replicas), timeout, what)
        except AssertionError as error:
            spec = json.loads(docker("service", "inspect", self.service("app")))[0]
            raise AssertionError(f"{error}\n{spec.get('UpdateStatus')}\n{self.tasks()}") from None

    def tasks(self) -> str:
        """Every app task Swarm has run, the ended ones too, and why each ended (a failed
        healthcheck, a kill, a scale-down)."""
        return docker(
            *("service", "ps", "--no-trunc", self.service("app")),
            "--format",
            "{{.Name}} {{.Image}} {{.DesiredState}} {{.CurrentState}} {{.Error}}",
        )

    def logs(self) -> str:
        return "".join(
            docker(
                "service",
                "logs",
                "--raw",
                "--tail",
                "200",
                self.service(s),
                timeout=20,
                check=False,
                stderr_too=True,
            )
            for s in ("nginx", "app")
        )

    def said(self, since: float) -> str:
        """What a failed check shows beside its figure: nginx's log, Swarm's tasks and their
        healthchecks."""
        return (
            f"nginx said:\n{self.nginx_said(since)}\napp tasks:\n{self.tasks()}\n"
            f"app healthchecks:\n{self.health()}"
        )

    def health(self) -> str:
        """Each app container's last healthcheck probes, the ended ones' too: Swarm stops a task
        whose probes fail `retries` times (its uWSGI then exits 0: "Shutdown Complete")."""
        label = f"label=com.docker.swarm.service.name={self.service('app')}"
        ids = docker("ps", "-aq", "--filter", label).split()
        if not ids:
            return "-"
        form = (
            "{{.Name}} {{.State.Status}} exit {{.State.ExitCode}}{{with .State.Health}} "
            "{{.Status}}{{range .Log}}\n  {{.Start}} -> {{.End}} exit {{.ExitCode}}: "
            '{{printf "%.160q" .Output}}{{end}}{{end}}'
        )
        return docker("inspect", "--format", form, *ids, check=False)

    def nginx_said(self, since: float) -> str:
        """nginx's own warnings and errors (upstream failures, reloads) since `since` (epoch
        seconds), the first and last 40."""
        out = docker(
            *("service", "logs", "--raw", "--since", f"{since:.0f}", self.service("nginx")),
            timeout=20,
            check=False,
            stderr_too=True,  # nginx's error log and the watcher write to stderr
        )
        said = re.compile(r"\[(notice|warn|error|crit|alert|emerg)\] |^reresolve-upstreams: ")
        lines = [line for line in out.splitlines() if said.search(line)]
        if len(lines) > 80:  # the first failures say why; the last, how it ended
            lines[40:-40] = [f"[... {len(lines) - 80} lines ...]"]
        return "\n".join(lines) or "-"


@pytest.fixture(scope="module")
def swarm(images, leave_swarm_at_end) -> None:
    """A swarm this node manages: the one it is in, or a single-node one made here and left
    when the whole run ends, not when this module does: leaving wipes the DNS records of the
    stacks other workers still run (harness.compose.leave_swarm)."""
    state = subprocess.run(
        ["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    created = state == "inactive"
    if created:
        subprocess.run(
            ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
            capture_output=True,
            check=True,
        )
    elif state != "active":
        pytest.fail(f"this node's Swarm state is {state!r}: fix it or `docker swarm leave`")
    if created:
        leave_swarm_at_end()


@pytest.fixture(scope="module")
def deployed(swarm) -> Deployment:
    name = f"fs-test-swarm-{uuid.uuid4().hex[:6]}"
    port = free_port(below_ephemeral=True)
    env = {"SWARM_PUBLISH_PORT": str(port)}
    deployment = Deployment(name, f"http://127.0.0.1:{port}")
    up = swarm_py("up", "--name", name, "--replicas", str(REPLICAS), env=env)
    try:
        assert up.returncode == 0, (
            f"swarm.py up failed:\n{up.stdout}\n{up.stderr}\n{deployment.logs()}"
        )
        yield deployment
    finally:
        down = swarm_py("down", "--name", name, "--volumes", env=env)
        assert down.returncode == 0, down.stderr
        label = f"label=com.docker.stack.namespace={name}"
        assert not docker("service", "ls", "-q", "--filter", label)
        assert not docker("volume", "ls", "-q", "--filter", label), "the stack's volumes stayed"


def test_nginx_reaches_every_replica(deployed):
    expected = deployed.settled_hostnames()
    assert len(expected) == REPLICAS, expected
    results = fetch_many(f"{deployed.url}/whoami", count=60, concurrency=4)
    assert [r for r in results if r.status != 200] == [], summary(results)
    assert {r.body["hostname"] for r in results} == expected


def test_files_come_from_swarm_configs_and_tasks_by_dns(deployed):
    """What lets the stack run on more than one host: no bind mount, no virtual IP."""
    for short in ("nginx", "app"):
        spec = json.loads(docker("service", "inspect", deployed.service(short)))[0]["Spec"]
        container = spec["TaskTemplate"]["ContainerSpec"]
        assert [m for m in container.get("Mounts", []) if m["Type"] == "bind"] == [], short
        assert container["Configs"], f"{short} has no Swarm configs"
    app = json.loads(docker("service", "inspect", deployed.service("app")))[0]["Spec"]
    assert app["EndpointSpec"]["Mode"] == "dnsrr"
    assert app["UpdateConfig"]["Order"] == "start-first"


@pytest.mark.timed
def test_killed_task_fails_no_request_and_is_replaced(deployed, record):
    began = time.time()  # nginx's log from here is shown beside a failure
    # first of the module: one of the deployment's three (the scaling check leaves two, and a
    # lone survivor of two whose own probes fail meanwhile, as on a busy node, is stopped by
    # Swarm too: nothing serves until the replacement is up; docs/swarm.md)
    before = deployed.settled_hostnames()
    assert len(before) == REPLICAS, before
    slot, killed = next(iter(deployed.slots().items()))
    victim = next(c for c in deployed.app_containers() if c.startswith(f"{slot}."))
    with Stream(f"{deployed.url}/whoami", clients=4, limit=120) as stream:
        stream.wait_for_successes(20, after=0, timeout=10)
        docker("kill", victim)
        fault = time.monotonic()

        def replaced() -> bool:  # a new task in the victim's slot, and healthy
            now = deployed.slots()
            return deployed.converged(len(before)) and now.get(slot) not in (None, killed)

        wait_for(replaced, 60, f"Swarm replacing the killed task in {slot}")
        replacement = deployed.slots()[slot]
        replaced_after = time.monotonic() - fault
        wait_for(lambda: stream.served_by(replacement, fault), 20, "the replacement served")
        time.sleep(2)
    results = stream.stop()
    figure = f"{summary(results)}; replaced after {replaced_after:.1f} s"
    record(SWARM, "task killed", figure)
    assert not failed(results), f"{figure}\n{deployed.said(began)}"
    assert deployed.app_hostnames() == before - {killed} | {replacement}


@pytest.mark.timed
def test_scaling_up_and_down_fails_no_request(deployed, record):
    began = time.time()  # nginx's log from here is shown beside a failure
    url = f"{deployed.url}/whoami"
    before = deployed.settled_slots()
    # a request nginx sends to a task that is stopping waits in uWSGI's listen queue until that
    # task's master exits, which then resets it (unbit/uwsgi#2693), and nginx retries it on the
    # next task: stopping three of five, one request can meet two or three of them, seconds
    # each on a busy host (s54b: 5.0 s). A slow answer, not a failure: nginx itself gives up
    # (502/504) after uwsgi_next_upstream_timeout (5 s) and that attempt, well inside 15 s
    with Stream(url, clients=4, limit=240, timeout=15) as stream:
        stream.wait_for_successes(20, after=0, timeout=10)
        docker("service", "scale", "--detach=false", f"{deployed.service('app')}=5", timeout=180)
        scaled = time.monotonic()
        # the two new slots' tasks (by slot: a task Swarm replaced meanwhile in an old slot, as a
        # healthcheck that timed out on two busy cores makes it, is not one of the new ones)
        after = deployed.slots()
        new = {after[slot] for slot in after.keys() - before.keys()}
        assert len(new) == 2, (before, after)
        # a new task is in DNS once running; nginx reloads within UPSTREAM_RECHECK_SECONDS
        wait_for(lambda: all(stream.served_by(h, scaled) for h in new), 20, "new tasks served")
        reached = time.monotonic() - scaled
        docker("service", "scale", "--detach=false", f"{deployed.service('app')}=2", timeout=180)
        deployed.wait_converged(2, 60, "scaled down to 2")
        converged = time.monotonic()
        remaining = deployed.app_hostnames()

        def dropped() -> bool:  # the last second's requests all went to the remaining tasks
            window = stream.since(time.monotonic() - 1)
            return len(window) >= RATE / 2 and all(
                isinstance(r.body, dict) and r.body.get("hostname") in remaining for r in window
            )

        # nginx reloads without the removed tasks within UPSTREAM_RECHECK_SECONDS (2)
        wait_for(dropped, 10, "nginx sends nothing to the removed tasks")
        settled = time.monotonic()
        wait_for(lambda: time.monotonic() > settled + 3, 4, "3 s more of the stream")
    results = stream.stop()
    figure = (
        f"{summary(results)}; new tasks served after {reached:.1f} s; removed ones dropped "
        f"{settled - converged:.1f} s after scaling down"
    )
    record(SWARM, "scale 3 -> 5 -> 2", figure)
    assert not failed(results), f"{figure}\n{deployed.said(began)}"
    served_after = {r.body["hostname"] for r in stream.since(settled) if isinstance(r.body, dict)}
    assert served_after == remaining, f"served by {served_after}, running {remaining}"


@pytest.mark.timed
def test_rolling_update_fails_no_request(deployed, record):
    began = time.time()  # nginx's log from here is shown beside a failure
    service = deployed.service("app")
    spec = json.loads(docker("service", "inspect", service))[0]["Spec"]
    image = spec["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0]
    updated = f"flask-stacks/app:swarm-update-{uuid.uuid4().hex[:6]}"  # a new tag: a new image
    docker("tag", image, updated)
    before = deployed.settled_hostnames()
    try:
        with Stream(f"{deployed.url}/whoami", clients=4, limit=240) as stream:
            stream.wait_for_successes(20, after=0, timeout=10)
            docker("service", "update", "--detach=false", "--image", updated, service, timeout=240)
            deployed.wait_converged(len(before), 60, "update completed")
            time.sleep(1)
        results = stream.stop()
    finally:
        docker("rmi", updated, check=False)
    figure = summary(results)
    record(SWARM, "rolling update", figure)
    assert not failed(results), f"{figure}\n{deployed.said(began)}"
    after = deployed.app_hostnames()
    assert not after & before, f"tasks not replaced: {before} -> {after}"
    assert all(
        docker("inspect", "--format", "{{.Config.Image}}", c).strip().startswith(updated)
        for c in deployed.app_containers()
    )
