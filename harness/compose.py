"""A stack's compose project: started under a unique name on host ports the OS picks, driven
with `docker compose`, put back as its files describe after a test broke it, stopped with its
volumes. Stacks are discovered from stacks/*/compose.yaml: a new stack directory is picked up
without editing a list."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import requests

from harness import machine_load
from harness.traffic import POLL, wait_for
from stackctl import apps
from stackctl.stacks import (  # noqa: F401 (the tests read the stacks' facts from here too)
    ROOT,
    STACKS,
    app_server_of,
    front_service,
    images_env,
    leave_swarm,
    nginx_in_front,
    nginx_overlay,
    nginx_service,
    publish_var,
)

FAMILIES = sorted(p.name for p in ROOT.glob("docker-compose.*.yml"))
UP_TIMEOUT = 300  # seconds; the first run builds the app image
# every image a stack builds, a tag per project that start_stack builds (compose variable ->
# repository); removed in the order written (the app image is the others' base)
TEST_PROJECT_IMAGES = {
    "APP_NGINX_IMAGE": "flask-stacks-test/nginx",
    "SINGLE_CONTAINER_IMAGE": "flask-stacks-test/single-container",
    "APP_IMAGE": "flask-stacks-test/app",
}


def docker_time(stamp: str) -> float:
    """A time Docker reports (RFC 3339, nanoseconds, UTC) as time.time()."""
    return datetime.fromisoformat(stamp).timestamp()


class StackError(Exception):
    """A stack that could not come up or come back: the message carries compose's error and
    the containers' logs."""


def app_env(settings: dict[str, str] | None = None) -> dict[str, str]:
    """The compose variables of the app the settings name (APP, APP_MODULE... default the
    environment's; none: the demo app), its secrets made if missing (stackctl.apps)."""
    app = apps.from_settings({**os.environ, **(settings or {})})
    apps.ensure_secrets(app.secrets_dir, app.secret_files)
    return app.compose_env()


def app_overlays(stack: str, settings: dict[str, str] | None = None) -> tuple[Path, ...]:
    """The compose files the app adds to `stack`: the services that are on (DB, QUEUE, WORKER),
    then its own part of them and of APP_SECRETS beyond secret_key, if any (as make adds them)."""
    app = apps.from_settings({**os.environ, **(settings or {})})
    overlay = app.secrets_overlay(stack)
    return (*app.service_overlays(), *((overlay,) if overlay else ()))


# shared/nginx/nginx.conf's `log_format main`, field by field
ACCESS_LOG_TEXT = re.compile(
    r'(?P<client>\S+) \[(?P<time>[^]]+)\] "(?P<method>\S+) (?P<uri>\S+) [^"]*" (?P<status>\d+) '
    r'(?P<bytes>\d+) "(?P<user_agent>[^"]*)" rid=(?P<request_id>\S+) rt=(?P<request_time>\S+) '
    r"urt=(?P<upstream_response_time>\S+) upstream=(?P<upstream>\S*)"
)


NGINX_STACKS = [name for name in STACKS if nginx_in_front(name)]
# nginx and the app server in separate services (each can be stopped, killed, recreated alone)
SPLIT_STACKS = [name for name in NGINX_STACKS if nginx_service(name)]
GUNICORN_STACKS = [name for name in NGINX_STACKS if app_server_of(name) == "gunicorn"]
# a check of what one shared file decides (shared/uwsgi/base.ini, which every uWSGI stack's
# uwsgi.ini extends with its socket only) runs on one uWSGI stack, this one (docs/tests.md)
UWSGI_ONCE = "nginx-uwsgi-socket"


def ephemeral_ports(*patterns: str) -> dict[str, str]:
    """Every *_PUBLISH variable of every stack (and of the compose files `patterns` add, e.g.
    make bench's baselines) set to 127.0.0.1:0: the OS picks free ports, so tests never collide
    with each other or with a stack a user has up."""
    names = set()
    # the stacks' own, and the overlays' (PROMETHEUS_PUBLISH)
    defaults = ("stacks/*/compose.yaml", "shared/compose/*.yaml")
    for compose in (p for pattern in (*defaults, *patterns) for p in ROOT.glob(pattern)):
        names.update(re.findall(r"\$\{([A-Z0-9_]+_PUBLISH):-", compose.read_text()))
    return dict.fromkeys(sorted(names), "127.0.0.1:0")


@dataclass
class Stack:
    """A compose project of one stack, under a unique project name."""

    name: str
    compose_file: Path
    project: str
    env: dict[str, str]
    overlays: tuple[Path, ...] = ()  # compose files layered on top (e.g. shared/compose/tls.yaml)

    @functools.cached_property
    def front(self) -> str:
        """The service clients talk to (stackctl.stacks.front_service)."""
        return front_service(self.name)

    @property
    def behind_nginx(self) -> bool:
        """Whether nginx answers clients (in its own service, or inside the single container)."""
        return nginx_in_front(self.name)

    def app_services(self) -> list[str]:
        """The app-server services (app, or app1 and app2 in the pair), sorted: compose lists
        services in an order that varies between runs, and tests pick the first."""
        return sorted(name for name in self.services() if re.fullmatch(r"app\d*", name))

    def compose(
        self, *args: str, check: bool = True, timeout: float = 120, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        """Run `docker compose` on this project; `env` adds variables for this call only."""
        files = [arg for path in (self.compose_file, *self.overlays) for arg in ("-f", str(path))]
        cmd = ["docker", "compose", *files, "-p", self.project, *args]
        return subprocess.run(
            cmd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def db(self, *args: str) -> subprocess.CompletedProcess:
        """scripts/db.sh (`make backup`, `make restore`: DB=postgres) on this project, with its
        compose files, as make runs it; its dumps go to the repository's backups/."""
        files = [arg for path in (self.compose_file, *self.overlays) for arg in ("-f", str(path))]
        return subprocess.run(
            [str(ROOT / "scripts/db.sh"), *args, *files, "-p", self.project],
            env={**self.env, "COMPOSE_PROJECT_NAME": self.project},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    @functools.cached_property
    def _services(self) -> tuple[str, ...]:
        return tuple(self.compose("config", "--services").stdout.split())

    def services(self) -> list[str]:
        """The project's long-running services, as its compose files define them: all but the
        one-shot `release` step (which has exited by design once the stack is up)."""
        return [name for name in self._services if name != "release"]

    def recreate(self, service: str, env: dict[str, str], wait: bool = True):
        """Recreate one service with extra variables (e.g. an allow-list), its deps untouched;
        with `wait`, until it is healthy. Returns the result: a refused start is a result too."""
        args = ["up", "--detach", "--no-deps", "--force-recreate"] + (["--wait"] if wait else [])
        return self.compose(*args, service, env=env, check=False, timeout=120)

    def containers(self, service: str, running: bool = False) -> list[str]:
        """The service's containers (ids) by their number, as `docker compose ps --all --quiet`
        lists them (`running`: without --all), read from the labels Compose gives them with the
        docker CLI: a `docker compose` call parses every compose file first (~70 ms of CPU
        against ~13), and the tests poll containers every half second."""
        number = '{{.Label "com.docker.compose.container-number"}}'
        out = subprocess.run(
            ["docker", "ps", *([] if running else ["--all"]), "--no-trunc",
             "--filter", f"label=com.docker.compose.project={self.project}",
             "--filter", f"label=com.docker.compose.service={service}",
             "--filter", "label=com.docker.compose.oneoff=False",
             "--format", f"{number} {{{{.ID}}}}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rows = sorted((int(n), container) for n, container in map(str.split, out.splitlines()))
        return [container for _, container in rows]

    def run_in(self, service: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """`docker compose exec -T service cmd...` (its first container), through the docker
        CLI (`containers`)."""
        found = self.containers(service, running=True)
        if not found:
            raise StackError(f"{self.name}/{service}: no running container to exec {cmd}")
        return subprocess.run(
            ["docker", "exec", found[0], *cmd], capture_output=True, text=True, check=check
        )

    def exec(self, service: str, *cmd: str, check: bool = True) -> str:
        return self.run_in(service, *cmd, check=check).stdout

    def has_shell(self, service: str) -> bool:
        """Whether the service's image has a shell to exec (the NGINX exporter's is `scratch`)."""
        return self.run_in(service, "sh", "-c", "true", check=False).returncode == 0

    def processes(self, service: str) -> list[dict[str, str]]:
        """Every process of the service's container: its /proc/<pid>/status fields (Name, Pid,
        PPid, Uid, CapEff, CapPrm, NoNewPrivs...), its command line (Cmdline) and its own memory
        (Pss_Anon, Pss before Linux 5.8: the proportional share of its anonymous pages, which only
        a master and its forked workers share; not all of Pss, whose file pages, the interpreter
        and libraries, are shared with every container of the image and moved when another stack
        started or stopped). An image without a shell is read from a throwaway container in its
        PID namespace (the app's image, no privileges: status and command lines only)."""
        # the glob is expanded once, before the loop starts anything: the shell itself (parent 0,
        # it enters from outside) is left out below, and a process that ends meanwhile (a
        # healthcheck's) is skipped
        script = (
            "for d in /proc/[0-9]*; do s=$(cat $d/status 2>/dev/null) || continue; "
            "printf '@@proc\\n%s\\nCmdline:\\t%s\\n' \"$s\" \"$(tr '\\0' ' ' <$d/cmdline)\"; "
            "grep -E '^Pss(_Anon)?:' $d/smaps_rollup 2>/dev/null; done"
        )
        if self.has_shell(service):
            status = self.exec(service, "sh", "-c", script, check=False)
        else:
            container = self.containers(service, running=True)[0]
            image = self.env.get("APP_IMAGE") or "flask-stacks/app:latest"
            status = subprocess.run(
                ["docker", "run", "--rm", f"--pid=container:{container}", "--network=none",
                 "--user=65534", "--cap-drop=ALL", "--entrypoint=sh", image, "-c", script],
                capture_output=True, text=True, check=False, timeout=60,
            ).stdout  # fmt: skip
        blocks = [
            dict(re.findall(r"^(\w+):\s*(.*?)\s*$", block, flags=re.MULTILINE))
            for block in status.split("@@proc\n")[1:]
        ]
        blocks = [fields for fields in blocks if "Pid" in fields]
        if not blocks:
            raise StackError(f"{self.name}/{service}: no process status could be read")
        return [fields for fields in blocks if fields["Pid"] == "1" or fields["PPid"] != "0"]

    def logs(self, *services: str, since: float | None = None, stderr: bool = True) -> str:
        """Logs of the services (all when none given), stdout and stderr, restarting ones too:
        `docker compose logs <service>` skips a container while it is restarting. `since`: only
        lines written after this time.time(); `stderr=False`: stdout only (named services)."""
        after = ["--since", f"{since:.3f}"] if since is not None else []
        if not services:
            return self.compose("logs", "--no-color", "--no-log-prefix", *after, check=False).stdout
        out = []
        for service in services:
            for container in self.containers(service):
                result = subprocess.run(
                    ["docker", "logs", *after, container],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                out.append(result.stdout + (result.stderr if stderr else ""))
        return "".join(out)

    def inspect(self, service: str) -> dict:
        """`docker inspect` of the service's (first) container."""
        container = self.containers(service)[0]
        out = subprocess.run(
            ["docker", "inspect", container], capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout)[0]

    def health(self, service: str) -> str:
        """The service's health as Docker reports it: "starting", "healthy", "unhealthy", or ""
        for a service without a healthcheck."""
        return (self.inspect(service)["State"].get("Health") or {}).get("Status", "")

    def healthchecks(self, service: str) -> list[dict]:
        """The service's last healthchecks (Docker keeps five): start and end as time.time(),
        exit code."""
        log = (self.inspect(service)["State"].get("Health") or {}).get("Log") or []
        return [
            {"start": docker_time(e["Start"]), "end": docker_time(e["End"]), "code": e["ExitCode"]}
            for e in log
        ]

    def first_passing_probe(self, service: str, after: float, timeout: float = 60) -> float:
        """When (time.time()) the first healthcheck begun after `after` passed: the moment the
        service's own probe says it serves again. Waits up to `timeout` s for one."""
        passed: list[float] = []

        def found() -> bool:
            checks = self.healthchecks(service)
            passed[:] = [c["end"] for c in checks if c["start"] > after and c["code"] == 0]
            return bool(passed)

        wait_for(found, timeout, f"{self.name}/{service}: a passing healthcheck")
        return min(passed)

    def wait_refused(self, service: str, timeout: float = 30) -> dict:
        """Wait until the service's (new) container has refused to start: exited with an error,
        or been restarted by its restart policy after exiting. Returns `docker inspect`; fails
        if it is still running its first start after `timeout` s (e.g. an entrypoint that
        logged the problem and carried on)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.inspect(service)
            state = info["State"]
            exited = state["Status"] in ("exited", "restarting") and state["ExitCode"] != 0
            if exited or info["RestartCount"] > 0:
                return info
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}/{service}: still {state['Status']} after {timeout} s, "
                    f"health {state.get('Health', {}).get('Status')}: it did not refuse to start"
                )
            time.sleep(POLL)

    def wait_for_log(self, service: str, needle: str, timeout: float = 5.0, parse=None):
        """The first log line of `service` with `needle` (nginx flushes its log every second);
        with `parse`, the first such line it makes something of, as what it made."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.logs(service).splitlines() if needle in line]
            for line in lines:
                found = parse(line) if parse else line
                if found:
                    return found
            if time.monotonic() > deadline:
                what = f" that {parse.__name__} reads" if parse else ""
                raise AssertionError(
                    f"{self.name}: no {service} log line with {needle!r}{what} in {timeout} s;"
                    f" lines with it: {lines[:5]}"
                )
            time.sleep(POLL)

    @property
    def metrics(self) -> bool:
        """Whether the stack runs with METRICS=1 (Prometheus beside it: harness.metrics)."""
        return self.env.get("METRICS") == "1"

    @property
    def log_format(self) -> str:
        """LOG_FORMAT the stack runs with: text (the default) or json."""
        return self.env.get("LOG_FORMAT") or "text"

    def access_log(self, needle: str, timeout: float = 5.0) -> dict:
        """nginx's access log line with `needle` (a request id, a unique URI), parsed the same
        from either LOG_FORMAT (nginx.conf's `main`, shared/json-logs/'s `json`): client, uri,
        status, request_id, upstream (None for none), upstream_response_time, as strings."""
        # single-container: the app's own lines are in this log too, so parse, not just match
        return self.wait_for_log(self.front, needle, timeout, parse=self._access_fields)

    def app_services_serving(self, base_url: str, uri: str, count: int = 20) -> set[str]:
        """The app services nginx passes `count` GETs of `uri`, sent now, to: its access log's
        upstream addresses (both of a retried request), by service. Needs no route of the
        app's own (/whoami), so it holds for any app."""
        since = time.time() - 1
        answers = [requests.get(base_url + uri, timeout=10) for _ in range(count)]
        sent = {answer.headers["X-Request-ID"] for answer in answers}
        service_at = {
            network["IPAddress"]: service
            for service in self.app_services()
            for network in self.inspect(service)["NetworkSettings"]["Networks"].values()
        }
        served = set()
        for fields in map(self._access_fields, self.logs(self.front, since=since).splitlines()):
            if fields and fields["request_id"] in sent and fields["upstream"]:
                for upstream in fields["upstream"].split(", "):
                    served.add(service_at.get(upstream.rsplit(":", 1)[0], upstream))
        return served

    def served(self, logs: str, uri: str, status: int) -> bool:
        """Whether nginx's access log lines in `logs` (either LOG_FORMAT) have a GET of `uri`
        answered `status`: a check that the log read is the one of the traffic sent."""
        return any(
            fields["method"] == "GET" and fields["uri"] == uri and fields["status"] == str(status)
            for fields in map(self._access_fields, logs.splitlines())
            if fields
        )

    def _access_fields(self, line: str) -> dict | None:
        """An nginx access log line in the stack's LOG_FORMAT as fields, else None."""
        if self.log_format == "json":
            try:
                fields = json.loads(line)
            except json.JSONDecodeError:
                return None
            if "upstream_response_time" not in fields:
                return None
        else:
            found = ACCESS_LOG_TEXT.fullmatch(line)
            if not found:
                return None
            fields = found.groupdict()
        fields = {key: str(value) for key, value in fields.items()}
        fields["upstream"] = None if fields["upstream"] in ("", "-") else fields["upstream"]
        return fields

    def published(self) -> dict[tuple[str, int], str]:
        """(service, container port) -> http://127.0.0.1:<host port> for every published port."""
        out = self.compose("ps", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line]
        return {
            (row["Service"], p["TargetPort"]): f"http://{p['URL']}:{p['PublishedPort']}"
            for row in rows
            for p in row.get("Publishers") or []
            if p.get("PublishedPort")
        }

    def address(self, service: str) -> str:
        """The service's container address on the project's network: this host reaches it
        directly (the network's bridge is one of its interfaces), without Docker's userland
        proxy."""
        container = self.containers(service, running=True)[0]
        networks = json.loads(
            subprocess.run(
                ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", container],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        return next(n["IPAddress"] for n in networks.values() if n.get("IPAddress"))

    def base_url(self) -> str:
        """URL of the stack's front door: nginx if it has one, else its only published port."""
        published = self.published()
        if ("nginx", 8080) in published:
            return published["nginx", 8080]
        assert len(published) == 1, f"{self.name}: expected one published port, got {published}"
        return next(iter(published.values()))

    def container_url(self) -> str:
        """The front door at its container's address (`address`), without Docker's userland
        proxy: a closed port is refused there, where the proxy would accept and then cut."""
        (service, port), _ = next(i for i in self.published().items() if i[1] == self.base_url())
        return f"http://{self.address(service)}:{port}"

    def up(self, *flags: str, timeout: float = UP_TIMEOUT) -> list[str]:
        """`docker compose up --detach --wait` (plus `flags`): every service as the files
        describe, healthy. Returns what compose changed ("Container x  Recreated", ...);
        raises StackError with compose's error and the logs when it cannot."""
        result = self.compose(
            *("up", "--detach", "--wait", "--wait-timeout", str(timeout), *flags),
            check=False,
            timeout=timeout + 60,
        )
        if result.returncode:
            raise StackError(
                f"{self.name}: `docker compose up --wait` failed:\n{result.stderr[-3000:]}\n"
                f"--- logs ---\n{self.logs()[-5000:]}"
            )
        return [
            line.strip()
            for line in result.stderr.splitlines()
            if re.search(r"\b(Recreated|Started|Created)\s*$", line)
        ]

    def as_described(self) -> bool:
        """Whether `up` would change nothing: each service has one container, made from the
        configuration the compose files describe now (compose's config hash), running and
        healthy (where it has a healthcheck); the one-shot release step exited 0. `up` would
        then only run the release step again (seconds per call: once per test module)."""
        expected = dict(
            line.split() for line in self.compose("config", "--hash", "*").stdout.splitlines()
        )
        fields = "{{.Service}} {{.State}} {{.ExitCode}} {{.Label `com.docker.compose.config-hash`}}"
        rows = self.compose("ps", "--all", "--format", fields + " {{.Health}}").stdout
        found: dict[str, bool] = {}
        for service, state, code, config_hash, *health in (r.split() for r in rows.splitlines()):
            if service == "release":
                ok = state == "exited" and code == "0"
            else:
                ok = state == "running" and health in ([], ["healthy"])
            ok = ok and config_hash == expected.get(service) and service not in found
            found[service] = ok
        return found.keys() == expected.keys() and all(found.values())

    def recover(self, timeout: float = 60) -> list[str]:
        """`up`, also when a container that kept running was unhealthy (an app server a test
        broke, whose probes failed `retries` times): `up --wait` gives up on an unhealthy
        container at once instead of waiting for its next probe. Then wait, up to `timeout` s,
        for every service to pass again."""
        try:
            return self.up(timeout=120)
        except StackError as error:
            if "is unhealthy" not in str(error):
                raise
            deadline = time.monotonic() + timeout
            while not self.as_described():
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
            unhealthy = next(line for line in str(error).splitlines() if "is unhealthy" in line)
            return [f"waited until healthy again: {unhealthy.strip()}"]

    def restore(self) -> list[str]:
        """After a test stopped, killed or recreated services: put every service back as the
        compose files describe (nothing is restarted that already is), and prove it: the front
        door answers the app's HEALTH_PATH with a 2xx. Returns what had to change."""
        changed = [] if self.as_described() else self.recover()
        url = self.base_url() + self.env.get("HEALTH_PATH", "/healthz")
        try:
            status = requests.get(url, timeout=10, allow_redirects=False).status_code
        except requests.RequestException as error:
            status = repr(error)
        if not isinstance(status, int) or not 200 <= status < 300:
            raise StackError(f"{self.name}: restored, but {url} answers {status}")
        return changed


def docker_available() -> str | None:
    """None if a Docker engine and Compose v2 answer, else what is missing and how to fix it."""
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
        compose = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (FileNotFoundError, subprocess.TimeoutExpired) as error:
        return f"the docker CLI is missing or hangs ({error})"
    if info.returncode:
        return f"no Docker engine answers: {info.stderr.strip()[:300]}"
    if compose.returncode:
        return "Docker Compose v2 is missing (`docker compose version` failed)"
    return None


def build_images(names: list[str] | None = None, settings: dict | None = None) -> list[str]:
    """Build every image the stacks (`names`, default all) build, once each (the app image is
    shared by most stacks): Docker's cache makes it instant when no input changed. Run before
    stacks start side by side, so that they do not build the same image at the same time.
    Returns the images built; raises StackError with the build's output."""
    env = {
        **os.environ,
        **images_env(),
        **ephemeral_ports(),
        **app_env(settings),
        **(settings or {}),
    }
    built: list[str] = []
    # a build takes both cores, so no timed check runs beside it: one hold for all of them (a
    # hold waits for every running timed check to end, and a cached build takes a second)
    with machine_load.exclusive(f"building the images of {', '.join(names or STACKS)}"):
        for name in names or STACKS:
            stack = Stack(name, ROOT / "stacks" / name / "compose.yaml", f"fs-build-{name}", env)
            config = json.loads(stack.compose("config", "--format", "json").stdout)
            images = {
                spec.get("image", f"{name}-{service}")
                for service, spec in config["services"].items()
                if "build" in spec
            }
            if images <= set(built):
                continue
            # all of the stack's images at once: compose builds them in dependency order (the
            # single-container image is built on the app image that its `release` service builds)
            result = stack.compose("build", check=False, timeout=UP_TIMEOUT)
            if result.returncode:
                raise StackError(
                    f"{name}: building {sorted(images)} failed:\n{result.stderr[-5000:]}"
                )
            built.extend(sorted(images - set(built)))
    return built


def start_stack(
    name: str,
    compose_file: Path | None = None,
    overlays: tuple[Path, ...] = (),
    env: dict[str, str] | None = None,
    build: bool = True,
    prefix: str = "fs-test",
    app_settings: bool = True,
) -> Stack:
    """`docker compose build`, then `up --wait`, under a unique project name (images are
    rebuilt only when their inputs changed; `build=False` after `build_images`, e.g. to start
    several stacks at once). `overlays`: compose files on top of the stack's; `env`: variables for
    compose; `prefix`: the project name's start (`fs-bench` for make bench); `app_settings`:
    pass the app's variables (APP, APP_MODULE... in `env` or the environment: stackctl.apps),
    False for a folder that sets its own (make export's). Raises StackError, with the logs,
    after taking down what started."""
    project = f"{prefix}-{name.replace('.', '-')}-{uuid.uuid4().hex[:6]}"
    # the images it builds under tags of this project's own: Compose labels each image it builds
    # with its project, so another project's build of a shared tag gives it a new id, and the
    # next `up` here recreates what runs it: the front on a new host port (the tests' base_url
    # gone), or both of the pair's app servers at once (nothing serves meanwhile)
    own_images = {var: f"{repo}:{project}" for var, repo in TEST_PROJECT_IMAGES.items()}
    own_images = own_images if build else {}
    stack = Stack(
        name=name,
        compose_file=compose_file or ROOT / "stacks" / name / "compose.yaml",
        project=project,
        env={
            **os.environ,
            **images_env(),
            **ephemeral_ports(),
            **(app_env(env) if app_settings else {}),
            **own_images,
            **(env or {}),
        },
        overlays=(*overlays, *(app_overlays(name, env) if app_settings else ())),
    )
    try:
        if build:
            # built first, then a plain `up`: after `up --build`, the next plain `up` (restore(),
            # a test's `finally`) found the pair's image changed (its three services build one
            # image) and recreated both app servers at once, which turned its nginx unhealthy
            # and failed that `up --wait` (a busy-core run of a71ed09)
            result = stack.compose("build", check=False, timeout=UP_TIMEOUT)
            if result.returncode:
                raise StackError(f"{name}: `docker compose build` failed:\n{result.stderr[-5000:]}")
        stack.up()
    except StackError:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: Stack) -> None:
    """`docker compose down` with the project's volumes (the app's data too) and orphans, and
    the project's own tags of its images (the layers stay, shared with other tags). A `down`
    that fails or leaves a container is tried once more, then raises StackError with compose's
    output: a project left running takes CPU and memory from every later check, and a
    silent failure would hide which one and why."""
    errors = []
    for _ in range(2):
        try:
            result = stack.compose(
                "down", "--volumes", "--remove-orphans", "--timeout", "40", check=False, timeout=120
            )
            errors.append(result.stderr.strip()[-3000:] if result.returncode else "")
        except subprocess.TimeoutExpired:
            errors.append("`docker compose down` took over 120 s")
        left = stack.compose("ps", "--all", "--quiet", check=False).stdout.split()
        if not left and not errors[-1]:
            break
    else:
        raise StackError(
            f"{stack.project}: `docker compose down` failed twice, {len(left)} containers left:\n"
            + "\n".join(errors)
        )
    for var, repo in TEST_PROJECT_IMAGES.items():
        own = stack.env.get(var, "")
        if own.startswith(repo + ":"):
            subprocess.run(["docker", "image", "rm", own], capture_output=True, check=False)


def recreate_allow_list(stack: Stack, allowed: str | None, wait: bool = True):
    """The service that runs nginx recreated with the allow-list overlay and ALLOWED_IPS=allowed,
    as `make up ALLOWED_IPS=...` runs it; None: without the overlay (open, as the stack's files
    describe). Returns the result: a refused start is a result too."""
    if allowed is None:
        return stack.recreate(stack.front, {})
    listed = replace(stack, overlays=(*stack.overlays, nginx_overlay(stack.name, "allow-list")))
    return listed.recreate(stack.front, {"ALLOWED_IPS": allowed}, wait=wait)


def stop_stacks(stacks: Iterable[Stack]) -> None:
    """stop_stack on each, all of them tried before one StackError names those that failed."""
    errors = []
    for stack in stacks:
        try:
            stop_stack(stack)
        except StackError as error:
            errors.append(str(error))
    if errors:
        raise StackError("\n".join(errors))
