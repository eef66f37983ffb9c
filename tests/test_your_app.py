"""Your app behind every production stack: what holds for any WSGI app, proven on real apps
this project did not write, and on yours.

- Real apps, installed at test time from PyPI, pinned and hash-checked, never edited: from
  their source distributions, Flask's own tutorial app `flaskr` (app factory, SQLite in its
  instance folder, an `init-db` command, register/login with sessions and redirects, its own
  static/) and `httpbin` (a module-level app; redirects, cookies, request echo); installed as
  their users ship them (a folder holding only a requirements.txt and a settings file),
  `ihatemoney` (Flask, templates and static files inside its package, migrations, a REST API)
  and `radicale` (a CalDAV server, WSGI but not Flask, its users in an htpasswd secret, its
  JavaScript served by itself). Each is served with `APP=<its folder>`: ihatemoney and radicale
  on every stack with nginx in front, flaskr through make on the socket stack, and all but
  flaskr exported with `make export` to a folder outside the repository, brought up there with
  plain `docker compose` (.ci/run serves httpbin through `make test APP=...` too).
- Yours: `make test STACK=<stack> APP=path APP_MODULE=...` runs the checks that need no
  knowledge of the app (health, static files through nginx, hardening, secrets, data that
  survives a stop, graceful stop) against it instead (conftest.py: `--app`).

Each target (app x stack) is one project, up once for all its checks, always taken down.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml
from itsdangerous import URLSafeSerializer
from markupsafe import escape
from urllib3.exceptions import NewConnectionError

from harness import faults
from harness.compose import (
    NGINX_STACKS,
    ROOT,
    Stack,
    app_overlays,
    build_images,
    ephemeral_ports,
    images_env,
    start_stack,
    stop_stack,
)
from harness.kube_play import images_of
from harness.traffic import CLOSE, NGINX_REFUSALS, RATE, raw_request, wait_for
from stackctl import apps, kubernetes


@dataclass(frozen=True)
class RealApp:
    """A WSGI app written elsewhere (Flask or not), on PyPI, pinned and hash-checked
    (tests/real-apps/<pins>): either its sdist, unpacked, with the folder in it to serve; or,
    `installed`, the app as its users ship it: a folder of theirs holding only a
    requirements.txt (the pins) and the app's own settings file (`files`), the app installed
    from PyPI when the image is built, its settings named in an APP_ENV file beside the folder
    (`env`)."""

    pins: str  # a requirements file in tests/real-apps/
    folder: str  # inside the unpacked sdist, or the user's folder's name (installed)
    settings: dict[str, str] = field(default_factory=dict)
    static_file: str = ""  # a file in APP_STATIC that nginx must serve
    stacks: tuple[str, ...] = tuple(NGINX_STACKS)  # served on these
    exported: bool = True  # and from make export's folder (EXPORTED_STACK)
    installed: bool = False
    files: tuple[str, ...] = ()  # of tests/real-apps/, copied into the user's folder
    env: str = ""  # the APP_ENV file's lines


# flaskr reads its SECRET_KEY from instance/config.py only (its factory), so its release step
# writes that file, in its data volume, from the secret file: never the image, never the env.
FLASKR_CONFIG = (
    "python -c \"import pathlib; key = pathlib.Path('/run/secrets/secret_key').read_text()"
    ".strip(); pathlib.Path('instance/config.py').write_text('SECRET_KEY = %r' % key)\""
)
FLASKR_USERS = (
    "python -c \"import sqlite3; print(sqlite3.connect('instance/flaskr.sqlite')"
    ".execute('select username from user').fetchall())\""
)
# through ihatemoney's own models and settings (app-env exports its APP_ENV file): its SQLite
# file, or PostgreSQL with DB=postgres
IHATEMONEY_STORED_HASH = (
    "import sys; from ihatemoney.run import create_app; from ihatemoney.models import Project, db\n"
    "with create_app().app_context(): print(db.session.get(Project, sys.argv[1]).password)"
)
REAL_APPS = {
    "flaskr": RealApp(
        pins="flaskr.txt",
        folder="flask-3.1.3/examples/tutorial",
        settings={
            "APP_MODULE": "flaskr:create_app()",
            "APP_STATIC": "flaskr/static",
            "HEALTH_PATH": "/auth/login",  # a page that needs no database yet
            "APP_RELEASE_CMD": FLASKR_CONFIG,
        },
        static_file="style.css",
        # through make on the socket stack (its own flow, `make run` init-db, up/down/purge):
        # ihatemoney is the real Flask app on every nginx stack and exported
        stacks=("nginx-uwsgi-socket",),
        exported=False,
    ),
    "httpbin": RealApp(
        pins="httpbin.txt",
        folder="httpbin-0.10.4",
        settings={
            "APP_MODULE": "httpbin:app",
            "APP_STATIC": "httpbin/static",
            "HEALTH_PATH": "/get",
            "SECRETS_AS_ENV": "",  # it reads no secret
        },
        static_file="favicon.ico",
        # its own checks (absolute redirects, cookies, the request id) are about what reaches
        # the app: the proxy headers in the export's Gunicorn stack here; the uwsgi params
        # (every uWSGI stack includes the same snippet) where .ci/run serves it on the socket
        # stack, through `make test APP=...`
        stacks=(),
    ),
    # its settings: a Python file named by its own variable (APP_ENV), which reads the secret
    # from its file; migrations run when the app is made (the release step runs them first)
    "ihatemoney": RealApp(
        pins="ihatemoney.txt",
        folder="ihatemoney-deploy",
        installed=True,
        files=("ihatemoney.cfg",),
        env=(
            "IHATEMONEY_SETTINGS_FILE_PATH=/app/ihatemoney.cfg\n"
            'IHATEMONEY_SITE_NAME=Shared costs (it\'s "ours")\n'
        ),
        settings={
            # its users' database (its [database] extra): PostgreSQL beside it (docs/services.md)
            "DB": "postgres",
            "APP_MODULE": "ihatemoney.wsgi:application",
            "APP_STATIC": "ihatemoney:static",  # inside the installed package
            "HEALTH_PATH": "/healthcheck",
            "SECRETS_AS_ENV": "",  # its settings file reads /run/secrets/secret_key
        },
        static_file="css/main.css",
    ),
    # not Flask: a WSGI callable whose settings file is named by its own variable (APP_ENV),
    # its users in an htpasswd secret, its data in files, its web interface's JavaScript
    # served by itself (APP_STATIC empty: nginx passes /static/ on)
    "radicale": RealApp(
        pins="radicale.txt",
        folder="radicale-deploy",
        installed=True,
        files=("radicale.cfg",),
        env="RADICALE_CONFIG=/app/radicale.cfg\n",
        settings={
            "APP_MODULE": "radicale:application",
            "APP_STATIC": "",
            "HEALTH_PATH": "/.web/",
            "APP_SECRETS": "htpasswd",  # /run/secrets/htpasswd, named in its settings file
            "SECRETS_AS_ENV": "",
        },
    ),
}
IHATEMONEY_SITE_NAME = """Shared costs (it's "ours")"""
RADICALE_USER = ("ada", "ada-calendar-password")  # a line of its htpasswd secret
RADICALE_EVENT = """BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//flask-stacks//tests//EN\r
BEGIN:VEVENT\r
UID:{uid}\r
DTSTAMP:20261206T120000Z\r
DTSTART:20261224T180000Z\r
SUMMARY:Dinner kept by the data volume\r
END:VEVENT\r
END:VCALENDAR\r
"""
# what a developer's checkout holds beside the code and must not ship (Dockerfile.dockerignore):
# written into each real app's folder before its image is built
LOCAL_STATE = {
    ".env": "DATABASE_URL=postgresql://dev:local-password@localhost/dev\n",
    ".env.local": "SECRET_KEY=local-only\n",
    "secrets/api_token": "local-api-token\n",
    "instance/local.sqlite": "a developer's own database\n",
}
EXPORTED_STACK = "nginx-gunicorn-gevent"  # each real app is exported with this stack too
MADE = ("flaskr", "nginx-uwsgi-socket")  # brought up, run, down, up and purged with make


def your_app() -> dict[str, str]:
    """The settings of `make test APP=...` (the environment), or none."""
    names = ("APP", *(n for n in apps.SETTINGS if n != "APP"))
    return {n: os.environ[n] for n in names if n in os.environ} if os.environ.get("APP") else {}


def targets() -> list[str]:
    """app@stack for every real app on its stacks, and app@export:stack; with APP set,
    yours@stack for every nginx stack (conftest's --stack narrows it to one)."""
    if your_app():
        return [f"yours@{stack}" for stack in NGINX_STACKS]
    return [
        # the socket stack with flaskr through make itself: up, run, down, up, purge
        *(
            f"{name}@{'make:' if (name, stack) == MADE else ''}{stack}"
            for name, app in REAL_APPS.items()
            for stack in app.stacks
        ),
        *(f"{name}@export:{EXPORTED_STACK}" for name, app in REAL_APPS.items() if app.exported),
    ]


def stacks_served_from(name: str, where: str) -> list[str]:
    """The stacks whose images a target's app folder needs (built once, by its first target):
    the make target's folder is its own (the `stack` fixture), the others share one."""
    if name == "yours":
        return list(NGINX_STACKS)
    if where.startswith("make:"):
        return [where.split(":", 1)[1]]
    stacks = [s for s in REAL_APPS[name].stacks if (name, s) != MADE]
    return [*stacks, *([] if EXPORTED_STACK in stacks else [EXPORTED_STACK])]


def fetch(app: RealApp, into: Path) -> Path:
    """The app's sdist from PyPI, hash-checked, unpacked into `into` once per run; or the
    folder of a user of the installed app (its image build installs it from PyPI, checking the
    hashes), with its APP_ENV file beside it."""
    folder = into / app.folder
    with open(into / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if folder.is_dir():
            return folder
        if app.installed:
            staging = folder.parent / f"{folder.name}.tmp"
            staging.mkdir(mode=0o755)
            shutil.copy(ROOT / "tests/real-apps" / app.pins, staging / "requirements.txt")
            for name in app.files:
                shutil.copy(ROOT / "tests/real-apps" / name, staging / name)
            (into / f"{app.folder}.env").write_text(app.env)
            staging.rename(folder)  # whole, or not there: another worker waits on the lock
            return folder
        pins = ROOT / "tests/real-apps" / app.pins
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", "--require-hashes", "--requirement", str(pins), "--dest", str(into)],
            check=True, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        (sdist,) = into.glob(f"{app.folder.split('/')[0]}.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(into, filter="data")
        return folder


def write_radicale_users(folder: Path) -> None:
    """Radicale's htpasswd secret as its user writes it before the first up (left missing, the
    stack would fill it with random bytes: no user could log in): a sha512-crypt line made by
    openssl, replacing the file whole (a running Radicale rereads it on each login)."""
    user, password = RADICALE_USER
    digest = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    staged = folder / "htpasswd.new"
    staged.write_text(f"{user}:{digest}\n")
    staged.chmod(0o644)  # as apps.ensure_secrets makes them: the container's user reads it
    staged.rename(folder / "htpasswd")


@dataclass
class Target:
    """One app on one stack, up: where to reach it and what it is."""

    name: str  # flaskr, httpbin, yours
    stack: Stack
    folder: Path
    settings: dict[str, str]
    exported: Path | None = None
    via_make: bool = False  # up, run, down and purge go through the Makefile

    @property
    def app(self) -> apps.App:
        return apps.from_settings({**self.settings, "APP": str(self.folder)})

    @property
    def url(self) -> str:
        return self.stack.base_url()

    def secret(self, name: str = "secret_key") -> str:
        folder = self.exported / "secrets" if self.exported else self.app.secrets_dir
        return (folder / name).read_text().strip()


@pytest.fixture(scope="session")
def real_apps_folder(tmp_path_factory) -> Path:
    # this session's: under xdist, each worker's base folder is inside the session's (shared by
    # the workers); without it, the base folder's parent holds every session's (a stale build)
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "real-apps"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="module", params=targets())
def target(request, images, real_apps_folder, tmp_path_factory):
    """The app (the param's first half) up on the stack (its second half), once for every
    check of this module; always taken down, volumes and all."""
    name, _, where = request.param.partition("@")
    if name == "yours":
        settings = your_app()
        folder = apps.from_settings(settings).folder
    else:
        real = REAL_APPS[name]
        folder = fetch(real, real_apps_folder)
        if where.startswith("make:"):
            # a copy of its own (its own image and project): its new-version check changes a
            # file, and the app's other targets, on other workers, rebuilt their image from it
            # and had their app server recreated mid-check
            own = real_apps_folder / "make" / folder.name
            with open(real_apps_folder / ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not own.is_dir():
                    shutil.copytree(folder, own)
            folder = own
        settings = {**real.settings, "APP": str(folder)}
        if real.installed:  # its settings file's name and its own settings, as data
            settings["APP_ENV"] = str(folder.parent / f"{real.folder}.env")
    key = apps.from_settings(settings).name  # one build per app folder and run
    with open(real_apps_folder / f"build-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = real_apps_folder / f"built-{key}"  # by this run's first target of the folder
        if not built.exists():
            if name != "yours":  # a checkout's local state beside the code (never yours)
                for path, text in LOCAL_STATE.items():
                    (folder / path).parent.mkdir(parents=True, exist_ok=True)
                    (folder / path).write_text(text)
            if name == "radicale":
                write_radicale_users(apps.from_settings(settings).secrets_dir)
            build_images(stacks_served_from(name, where), settings)
            built.touch()
    exported, via_make = None, where.startswith("make:")
    if where.startswith("export:"):
        where = where.split(":", 1)[1]
        exported = tmp_path_factory.mktemp(f"export-{name}")  # outside the repository
        make("export", where, settings, DEST=str(exported))
        assert_stands_alone(exported)
        if name == "radicale":  # the export made its secrets: its user writes this one
            write_radicale_users(exported / "secrets")
        started = start_stack(
            where, compose_file=exported / "compose.yaml", app_settings=False,
            env={"FAULT_ROUTES": "0"},
        )  # fmt: skip
    elif where.startswith("make:"):
        where = where.split(":", 1)[1]
        make("up", where, settings)
        app = apps.from_settings(settings)
        started = Stack(
            name=where,
            compose_file=ROOT / "stacks" / where / "compose.yaml",
            project=app.project(where),  # make's project name for this app
            env={**os.environ, **images_env(), **ephemeral_ports(), **app.compose_env()},
            overlays=app_overlays(where, settings),  # make's: APP_SECRETS beyond secret_key
        )
    else:
        started = start_stack(where, env=settings)
    target = Target(
        name=name,
        stack=started,
        folder=folder,
        settings=settings,
        exported=exported,
        via_make=via_make,
    )
    try:
        if name == "flaskr":  # its init command
            run_once(target, "flask --app flaskr init-db")
        yield target
    finally:
        if target.via_make:
            make("purge", where, settings)
            left = subprocess.run(
                ["docker", "volume", "ls", "-q", "--filter",
                 f"label=com.docker.compose.project={started.project}"],
                capture_output=True, text=True, check=True,
            ).stdout.split()  # fmt: skip
            assert not left, f"make purge left volumes: {left}"
        stop_stack(started)


def make(
    goal: str, stack: str, settings: dict[str, str], check: bool = True, **variables: str
) -> subprocess.CompletedProcess:
    """`make <goal> STACK=<stack> VAR=value...` with the app's settings, on ports the OS picks;
    with `check`, it must succeed."""
    env = {**os.environ, **settings, **ephemeral_ports(), "FAULT_ROUTES": "0"}
    args = [f"{key}={value}" for key, value in variables.items()]
    result = subprocess.run(
        ["make", "--no-print-directory", goal, f"STACK={stack}", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, (
            f"make {goal}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
        )
    return result


def assert_stands_alone(folder: Path) -> None:
    """An export names no file of this repository and extends nothing."""
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode(errors="ignore")
            assert str(ROOT) not in text, f"{path} refers to this repository ({ROOT})"
    assert "extends:" not in (folder / "compose.yaml").read_text()


def run_once(target: Target, command: str) -> str:
    """`make run`'s command: a fresh container of the release service, removed after."""
    if target.via_make:
        return make("run", target.stack.name, target.settings, CMD=command).stdout
    result = target.stack.compose(
        "run", "--rm", "--no-deps", "release", "sh", "-c", command, check=False, timeout=120
    )
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result.stdout


# --- any app -------------------------------------------------------------------------------


def app_targets() -> list[str]:
    """One target per real app, its export where it has one (the copy users run), else its
    first: where the checks of what its image holds, of its processes and of what nginx refuses
    before any app run (the same files on every stack, whose own are the demo's checks in
    test_stacks.py and test_hardening.py); yours: every target (`--stack` picks one)."""
    if your_app():
        return targets()
    chosen: dict[str, str] = {}
    for target in targets():
        name = target.split("@", 1)[0]
        if name not in chosen or "@export:" in target:
            chosen[name] = target
    return list(chosen.values())


once_per_app = pytest.mark.parametrize("target", app_targets(), indirect=True)


FINGERPRINTED = re.compile(r"[.-][0-9a-f]{8,}\.[A-Za-z0-9]+$")  # static-files.conf's
# the sha256 of a file of APP_STATIC's folder as the app's image has it (a folder of the
# project, or `package:folder` found through the import system from the app's folder)
STATIC_FILE_SHA = (
    "import hashlib, importlib.util, os, pathlib, sys; sys.path.insert(0, os.getcwd()); "
    "setting, name = sys.argv[1:]; package, colon, inside = setting.partition(':'); "
    "spec = importlib.util.find_spec(package) if colon else None; "
    "base = pathlib.Path(next(iter(spec.submodule_search_locations))) / inside if colon "
    "else pathlib.Path(setting); "
    "print(hashlib.sha256((base / name).read_bytes()).hexdigest())"
)


def test_health_path_and_static_file_through_nginx(target: Target):
    health = requests.get(target.url + target.app.health_path, timeout=10, allow_redirects=False)
    assert 200 <= health.status_code < 300, f"{target.app.health_path}: {health.status_code}"
    assert health.headers.get("X-Request-ID"), "nginx's request id is missing"
    front, app_service = target.stack.front, target.stack.app_services()[0]
    served = target.stack.exec(front, "find", "/srv/www/static", "-type", "f").split()
    if not target.app.static:  # the app serves /static/ itself: nginx passes it on
        assert not served, f"APP_STATIC is empty, yet nginx's image holds {served[:3]}"
        uri = f"/static/flask-stacks-probe-{uuid.uuid4().hex}"
        requests.get(target.url + uri, timeout=10)
        line = target.stack.access_log(uri)
        assert line["upstream"], f"nginx answered {uri} itself: {line}"
        return
    name = REAL_APPS[target.name].static_file if target.name in REAL_APPS else ""
    name = name or min(served).removeprefix("/srv/www/static/")  # yours: a file nginx holds
    static = requests.get(f"{target.url}/static/{name}", timeout=10)
    assert static.status_code == 200, f"/static/{name}: {static.status_code}"
    # the app's own file: what its image has under APP_STATIC
    digest = target.stack.exec(
        app_service, "python", "-c", STATIC_FILE_SHA, target.app.static, name
    )
    assert hashlib.sha256(static.content).hexdigest() == digest.strip(), f"/static/{name}"
    # nginx's static location, not the app (Flask would say no-cache): a year for a name with
    # its content's hash in it (snippets/static-files.conf), an hour for any other
    cache = "max-age=31536000" if FINGERPRINTED.search(name) else "max-age=3600"
    assert static.headers.get("Cache-Control") == cache, static.headers


@once_per_app
def test_nginx_refuses_hostile_input_before_the_app(target: Target):
    """What nginx refuses itself (harness.traffic.NGINX_REFUSALS: a request line that is not
    HTTP, a 64 KiB URI, a 17 KB cookie, a body over 10 MiB, its own error page; a missing
    static file where nginx serves the static folder) gets nginx's JSON answer with its request
    id, whatever the app: the app, which answers in its own shape, never saw the request."""
    for case, (status, data) in NGINX_REFUSALS.items():
        if case == "a missing static file" and not target.app.static:
            continue  # APP_STATIC empty: the app answers /static/ itself
        answer = raw_request(target.url, data.replace(b"\r\n\r\n", CLOSE, 1))
        assert answer.status == status, f"{case} -> {answer.raw[:300]!r}"
        assert answer.headers.get("content-type") == "application/json", (case, answer.headers)
        body = json.loads(answer.body)
        assert body.pop("request_id") == answer.headers["x-request-id"], f"{case}: {body}"
        assert body.keys() == {"error", "status", "detail"} and body["status"] == status, body


@once_per_app
def test_every_process_unprivileged_and_locked_down(target: Target):
    for service in target.stack.services():
        config = target.stack.inspect(service)["HostConfig"]
        assert config["ReadonlyRootfs"], f"{service}: root filesystem is writable"
        assert config["CapDrop"] == ["ALL"] and not config.get("CapAdd"), f"{service}: {config}"
        for fields in target.stack.processes(service):
            process = fields["Name"]
            assert "0" not in fields["Uid"].split(), f"{service}: {process} runs as root"
            assert int(fields["CapEff"], 16) == 0, f"{service}: {process} has capabilities"
            assert fields["NoNewPrivs"] == "1", f"{service}: {process} may gain privileges"
    page = requests.get(target.url + target.app.health_path, timeout=10)
    for header in ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"):
        assert header in page.headers, f"nginx's {header} is missing on the app's page"


@once_per_app
def test_data_folder_is_the_apps_alone(target: Target):
    app_service = target.stack.app_services()[0]
    data = target.app.data
    owner = target.stack.exec(app_service, "stat", "-c", "%u %a", data).split()
    assert owner == ["10001", "700"], f"{data}: owner and mode {owner}, want the app's, 700"
    mounts = {m["Destination"]: m for m in target.stack.inspect(app_service)["Mounts"]}
    assert mounts.get(data, {}).get("Type") == "volume", f"{data} is not a named volume"


# a process's environment, a line per variable
PROCESS_ENV = (
    "import sys; print(open(f'/proc/{sys.argv[1]}/environ').read().replace(chr(0), chr(10)))"
)


def test_secret_is_a_file_not_in_the_environment_or_image(target: Target, real_apps_folder):
    """Each secret of APP_SECRETS is the file /run/secrets/<name>, named by <NAME>_FILE; in no
    service's `docker inspect`, no image layer; in the app's processes as <NAME> exactly when
    SECRETS_AS_ENV names it (the README's words)."""
    app_service = target.stack.app_services()[0]
    secrets = {name: target.secret(name) for name in target.app.secret_names}
    master = faults.app_server(target.stack, app_service).master["pid"]
    process_env = target.stack.exec(app_service, "python", "-c", PROCESS_ENV, str(master))
    assert "APP_MODULE=" in process_env, f"{app_service}: not the app server's env: {master}"
    variables = process_env.splitlines()
    for name, secret in secrets.items():
        path = f"/run/secrets/{name}"
        assert target.stack.exec(app_service, "cat", path).strip() == secret, path
        assert f"{name.upper()}_FILE={path}" in variables, f"{name.upper()}_FILE is not {path}"
        for service in target.stack.services():
            env = target.stack.inspect(service)["Config"]["Env"]
            assert not any(secret in entry for entry in env), f"{service}: {name} in its env"
        exported = name in target.app.secrets_as_env.split()
        assert (f"{name.upper()}={secret}" in variables) == exported, (
            f"SECRETS_AS_ENV={target.app.secrets_as_env!r}: {name.upper()} is "
            f"{'missing from' if exported else 'in'} the app server's environment"
        )
    image = target.stack.inspect(app_service)["Config"]["Image"]
    # once per app and secrets in a run, whichever xdist worker comes first (a `docker save` takes
    # seconds): each project tags the app's image anew (start_stack), its layers are the same
    searched = hashlib.sha256(json.dumps([target.app.name, secrets]).encode()).hexdigest()[:16]
    try:
        (real_apps_folder / f"saved-{searched}").touch(exist_ok=False)
    except FileExistsError:  # the same app on another stack: its layers were read already
        return
    history = subprocess.run(
        ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    saved = subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
    for name, secret in secrets.items():
        assert secret not in history, f"{image}: its history holds {name}"
        assert secret.encode() not in saved, f"{image}: a layer holds {name}"


@once_per_app
def check_local_state_stays_out_of_the_image(target: Target):
    """.env files, secrets/ and instance/ of the checkout are not in the app's image (nor,
    through it, in the data volume Docker fills from the image at its first mount)."""
    app_service = target.stack.app_services()[0]
    found = target.stack.exec(
        app_service, "python", "-c",
        "import os, sys; print(*[p for p in sys.argv[1:] if os.path.lexists('/app/' + p)])",
        *LOCAL_STATE,
    ).split()  # fmt: skip
    assert not found, f"in the image under /app: {found} (Dockerfile.dockerignore)"


# --- each real app's own flow --------------------------------------------------------------


def flaskr_login(url: str, user: str) -> requests.Session:
    client = requests.Session()
    register = client.post(
        url + "/auth/register", data={"username": user, "password": "pw-" + user},
        allow_redirects=False, timeout=10,
    )  # fmt: skip
    assert register.status_code == 302, register.text[:500]
    assert register.headers["Location"] == "/auth/login"
    login = client.post(
        url + "/auth/login", data={"username": user, "password": "pw-" + user},
        allow_redirects=False, timeout=10,
    )  # fmt: skip
    assert login.status_code == 302 and login.headers["Location"] == "/", login.text[:500]
    assert "session" in client.cookies, "no session cookie after login"
    return client


def check_the_apps_own_flow(target: Target):
    if target.name == "flaskr":
        user = f"u{uuid.uuid4().hex[:8]}"
        client = flaskr_login(target.url, user)
        # the session is signed with our secret: Flask's own serializer opens it with that key
        from flask import Flask
        from flask.sessions import SecureCookieSessionInterface

        probe = Flask("probe")
        probe.secret_key = target.secret()
        opened = (
            SecureCookieSessionInterface()
            .get_signing_serializer(probe)
            .loads(client.cookies["session"])
        )
        assert "user_id" in opened, opened
        title = f"post by {user}"
        created = client.post(
            target.url + "/create", data={"title": title, "body": "kept"}, allow_redirects=False,
            timeout=10,
        )  # fmt: skip
        assert created.status_code == 302, created.text[:500]
        assert title in client.get(target.url + "/", timeout=10).text
    elif target.name == "httpbin":
        port = target.url.rsplit(":", 1)[1]
        hop = requests.get(target.url + "/absolute-redirect/1", allow_redirects=False, timeout=10)
        assert hop.status_code == 302
        assert hop.headers["Location"] == f"http://127.0.0.1:{port}/get", hop.headers
        client = requests.Session()
        client.get(target.url + "/cookies/set?flavour=ginger", timeout=10)
        assert client.get(target.url + "/cookies", timeout=10).json()["cookies"] == {
            "flavour": "ginger"
        }
        # show_env: httpbin hides proxy headers unless asked
        sent = requests.get(target.url + "/headers?show_env=1", timeout=10)
        echoed = sent.json()["headers"]
        assert echoed["Host"] == f"127.0.0.1:{port}", echoed
        assert echoed.get("X-Request-Id") == sent.headers["X-Request-ID"], echoed
        assert echoed.get("X-Forwarded-Proto") == "http", echoed
    elif target.name == "ihatemoney":
        project, auth = ihatemoney_project(target.url)
        member = requests.post(
            f"{target.url}/api/projects/{project}/members", data={"name": "Ada"}, auth=auth,
            timeout=10,
        )  # fmt: skip
        assert member.status_code == 201, member.text[:500]
        bill = requests.post(
            f"{target.url}/api/projects/{project}/bills", auth=auth, timeout=10,
            data={"date": "2026-12-01", "what": "dinner", "payer": member.json(),
                  "payed_for": [member.json()], "amount": "42.5", "bill_type": "Expense"},
        )  # fmt: skip
        assert bill.status_code == 201, bill.text[:500]
        bills = requests.get(f"{target.url}/api/projects/{project}/bills", auth=auth, timeout=10)
        assert [(b["what"], b["amount"]) for b in bills.json()] == [("dinner", 42.5)], bills.text
        # its API token is signed with our secret key (and the project's password hash), which
        # its settings file read from the secret file
        token = requests.get(f"{target.url}/api/projects/{project}/token", auth=auth, timeout=10)
        password_hash = target.stack.exec(
            target.stack.app_services()[0],
            "app-env",
            "python",
            "-c",
            IHATEMONEY_STORED_HASH,
            project,
        ).strip()
        signer = URLSafeSerializer(target.secret() + password_hash, salt="auth")
        assert signer.loads(token.json()["token"]) == [project], token.text
        # a page: the site name from the APP_ENV file, as written; its CSS and JavaScript, from
        # inside the installed package, served by nginx
        page = requests.get(target.url + "/create", timeout=10)
        assert page.status_code == 200, page.status_code
        assert f"<title>{escape(IHATEMONEY_SITE_NAME)} " in page.text, page.text[:600]
        assets = re.findall(r'(?:href|src)="(/static/[^"?]+)"', page.text)
        assert {Path(a).suffix for a in assets} >= {".css", ".js"}, assets
        for asset in assets:
            probe = f"{asset}?probe={uuid.uuid4().hex}"
            response = requests.get(target.url + probe, timeout=10)
            assert response.status_code == 200, f"{asset}: {response.status_code}"
            assert target.stack.access_log(probe)["upstream"] is None, f"{asset}: not from nginx"
    elif target.name == "radicale":
        user, password = RADICALE_USER
        home = f"{target.url}/{user}/"
        assert requests.request("PROPFIND", home, timeout=10).status_code == 401, "no password"
        wrong = requests.request("PROPFIND", home, auth=(user, "not-" + password), timeout=10)
        assert wrong.status_code == 401, f"a wrong password: {wrong.status_code}"
        others = requests.request("PROPFIND", f"{target.url}/bob/", auth=RADICALE_USER, timeout=10)
        assert others.status_code == 403, f"another user's calendars: {others.status_code}"
        radicale_event(target.url)
        # its web interface and its JavaScript, served by the app itself (APP_STATIC empty)
        page = requests.get(target.url + "/.web/", timeout=10)
        assert page.status_code == 200 and "Radicale" in page.text, page.text[:300]
        scripts = re.findall(r'<script[^>]* src="([^"?]+)"', page.text)
        assert scripts, page.text[:600]
        for script in scripts:
            probe = f"/.web/{script}?probe={uuid.uuid4().hex}"
            response = requests.get(target.url + probe, timeout=10)
            assert response.status_code == 200, f"{probe}: {response.status_code}"
            assert "javascript" in response.headers.get("Content-Type", ""), response.headers
            assert target.stack.access_log(probe)["upstream"], f"{probe}: not from the app"
    else:
        raise AssertionError(f"{target.name}: no flow written for it")


def radicale_event(url: str) -> str:
    """A new calendar of RADICALE_USER's with an event in it, through CalDAV, read back; the
    event's path under the user's collections."""
    user = RADICALE_USER[0]
    calendar = f"{user}/c{uuid.uuid4().hex[:8]}"
    made = requests.request("MKCALENDAR", f"{url}/{calendar}/", auth=RADICALE_USER, timeout=10)
    assert made.status_code == 201, f"MKCALENDAR: {made.status_code} {made.text[:300]}"
    uid = uuid.uuid4().hex
    event = f"{url}/{calendar}/event.ics"
    put = requests.put(
        event, data=RADICALE_EVENT.format(uid=uid), auth=RADICALE_USER, timeout=10,
        headers={"Content-Type": "text/calendar; charset=utf-8"},
    )  # fmt: skip
    assert put.status_code == 201, f"PUT: {put.status_code} {put.text[:300]}"
    read = requests.get(event, auth=RADICALE_USER, timeout=10)
    assert read.status_code == 200 and f"UID:{uid}" in read.text, read.text[:300]
    return f"{calendar}/event.ics"


def ihatemoney_project(url: str) -> tuple[str, tuple[str, str]]:
    """A new project through ihatemoney's REST API, read back with its credentials."""
    project = f"p{uuid.uuid4().hex[:8]}"
    auth = (project, "pw-" + project)
    created = requests.post(
        url + "/api/projects", timeout=10,
        data={"name": "Trip", "id": project, "password": auth[1],
              "contact_email": "ada@example.com", "default_currency": "XXX"},
    )  # fmt: skip
    assert created.status_code == 201 and created.json() == project, created.text[:500]
    read = requests.get(f"{url}/api/projects/{project}", auth=auth, timeout=10)
    assert read.status_code == 200 and read.json()["name"] == "Trip", read.text[:500]
    return project, auth


if not your_app():  # yours: only the checks that hold for any app (no skip: not collected)
    test_the_apps_own_flow = check_the_apps_own_flow
    # nothing is written into your folder: the real apps prove the build context
    test_local_state_stays_out_of_the_image = check_local_state_stays_out_of_the_image


# --- release step, stop, start: nothing lost -----------------------------------------------


def release_targets() -> list[str]:
    """Where a failing release is tried: through make, and in an export (Compose's behaviour,
    the same on every stack)."""
    chosen = [t for t in targets() if "@make:" in t or "@export:" in t]
    return chosen or targets()[:1]


@pytest.mark.parametrize("target", release_targets(), indirect=True)
def test_a_failing_release_stops_the_up_and_the_app_serves_on(target: Target):
    """APP_RELEASE_CMD failing: `up` fails with the command's output; the running app servers
    are left as they were (only the release service changed) and serve on. (A plain `up`, as
    the stack was started with one after its build: `up --build` after a plain `up` recreates
    a service whose image other services build too, whatever the release does; `make up` and
    the export's README use `up --build` every time.)"""
    before = {s: target.stack.inspect(s)["Id"] for s in target.stack.app_services()}
    failing = "echo release-output-seen; exit 7"
    if target.via_make:
        result = make(
            "up", target.stack.name, {**target.settings, "APP_RELEASE_CMD": failing}, check=False
        )
        output = result.stdout + result.stderr
    else:
        result = target.stack.compose(
            "up", "--detach", "--wait", env={"APP_RELEASE_CMD": failing},
            check=False, timeout=300,
        )  # fmt: skip
        output = result.stdout + result.stderr + target.stack.logs("release")
    assert result.returncode != 0, "up succeeded with a failing release step"
    assert "release-output-seen" in output and "APP_RELEASE_CMD failed (exit 7)" in output, output
    assert {s: target.stack.inspect(s)["Id"] for s in target.stack.app_services()} == before
    health = requests.get(target.url + target.app.health_path, timeout=10, allow_redirects=False)
    assert 200 <= health.status_code < 300, health.status_code
    target.stack.up()  # the release step as the files describe it, run again


def check_a_new_version_whose_release_fails_stays_down(target: Target):
    """A new version of the app (a changed file: a new image) with a failing release step,
    through `make up`: the app servers' new containers are made but never started (the old
    ones are gone), nginx answers its 502 until a good `up` (docs/your-app.md)."""
    before = {s: target.stack.inspect(s)["Id"] for s in target.stack.app_services()}
    version = target.folder / "flask-stacks-new-version.txt"  # in the image: /app/...
    version.write_text(uuid.uuid4().hex)
    try:
        failing = {**target.settings, "APP_RELEASE_CMD": "echo release-output-seen; exit 7"}
        result = make("up", target.stack.name, failing, check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0, "make up succeeded with a failing release step"
        assert "APP_RELEASE_CMD failed (exit 7)" in output, output[-3000:]
        for service, old_id in before.items():
            info = target.stack.inspect(service)
            assert info["Id"] != old_id, f"{service}: not replaced by the new version's container"
            assert info["State"]["Status"] == "created", f"{service}: {info['State']['Status']}"
        down = requests.get(target.url + target.app.health_path, timeout=10)
        assert down.status_code == 502, f"{down.status_code}: {down.text[:300]}"
        assert down.json()["status"] == 502 and down.json()["request_id"], down.text[:300]
    finally:
        version.unlink()
        make("up", target.stack.name, target.settings)  # the good version, served again
    health = requests.get(target.url + target.app.health_path, timeout=10, allow_redirects=False)
    assert 200 <= health.status_code < 300, health.status_code


if not your_app():  # it changes the app's folder: the real app's, never yours
    test_a_new_version_whose_release_fails_stays_down = pytest.mark.parametrize(
        "target", [t for t in targets() if "@make:" in t], indirect=True
    )(check_a_new_version_whose_release_fails_stays_down)


# --- stop, start: nothing lost -------------------------------------------------------------


def never_connected(error: requests.RequestException) -> bool:
    """Whether a request failed before its connection was made (refused, unreachable, connect
    timeout), as opposed to one cut or stuck once sent."""
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(error, requests.ConnectTimeout) or isinstance(reason, NewConnectionError)


def database_targets() -> list[str]:
    """Where the real app on PostgreSQL (DB=postgres) sees its database restarted and restored:
    one stack (the same compose file and scripts/db.sh on every stack)."""
    return [t for t in targets() if t == "ihatemoney@nginx-uwsgi-socket"]


if database_targets():

    @pytest.mark.parametrize("target", database_targets(), indirect=True)
    def test_the_apps_data_outlives_a_database_restart_and_comes_back_from_a_backup(
        target: Target, record
    ):
        """ihatemoney's projects in PostgreSQL: after PostgreSQL restarts, every request is
        answered as before, none 500 (its settings file checks a pooled connection before use:
        pool_pre_ping; each of the app server's processes holds one); `make backup`, a second
        project, `make restore FORCE=1`: the first is back, the second gone."""
        first, auth = ihatemoney_project(target.url)
        # the reads below carry the project's API token (ihatemoney checks its signature against
        # the project in the database): a password is checked with werkzeug's scrypt on every
        # request, ~0.5 s of a busy core each, which 40 reads queued past any sane timeout
        token = requests.get(
            f"{target.url}/api/projects/{first}/token", auth=auth, timeout=10
        ).json()["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        target.stack.compose("restart", "postgres", timeout=120)
        wait_for(
            lambda: target.stack.health("postgres") == "healthy", 90, "PostgreSQL healthy again"
        )
        # 8 at a time: every app server process (uWSGI: 2 per core) serves some of them (the
        # failure looked for is a 500 from a dead pooled connection, not a slow answer)
        with ThreadPoolExecutor(8) as pool:
            reads = list(pool.map(
                lambda _: requests.get(
                    f"{target.url}/api/projects/{first}", headers=bearer, timeout=60
                ),
                range(40),
            ))  # fmt: skip
        failed = [r.status_code for r in reads if r.status_code != 200]
        assert not failed, f"after PostgreSQL's restart: {failed} ({reads[0].text[:300]})"
        assert reads[-1].json()["name"] == "Trip", reads[-1].text[:300]
        dump = target.stack.db("backup")
        assert dump.returncode == 0, dump.stderr
        dumps = [ROOT / re.match(r"backup: (\S+) ", dump.stdout)[1]]
        try:
            second, second_auth = ihatemoney_project(target.url)
            restored = target.stack.db("restore", str(dumps[0]), "force")
            assert restored.returncode == 0, restored.stderr
            saved = re.search(r"backup of the database being replaced: (\S+)", restored.stdout)
            assert saved, restored.stdout
            dumps.append(ROOT / saved[1])
            back = requests.get(f"{target.url}/api/projects/{first}", auth=auth, timeout=10)
            assert back.status_code == 200 and back.json()["name"] == "Trip", back.text[:300]
            gone = requests.get(f"{target.url}/api/projects/{second}", auth=second_auth, timeout=10)
            assert gone.status_code in (401, 403, 404), (gone.status_code, gone.text[:300])
        finally:
            for path in dumps:
                path.unlink(missing_ok=True)
        record(
            target.stack, "ihatemoney: PostgreSQL restarted, then restored",
            "40 reads after the restart, none failed; restore: the first project back, the "
            "second gone",
        )  # fmt: skip


@pytest.mark.timed
def test_graceful_stop_then_data_survives_start(target: Target, record, timed_part_over):
    """Requests stream while the whole stack stops: every answer is a 2xx (nothing cut, no
    502), every container exits 0; after `down`, what was written is still there (through
    make: `make down`, `make up`, and the app serves it)."""
    app_service = target.stack.app_services()[0]
    probe = f"{target.app.data}/probe-{uuid.uuid4().hex[:6]}"
    target.stack.exec(app_service, "sh", "-c", f"echo kept > {probe}")
    # nginx's graceful quit answers and logs every request it has read before it exits: the
    # ground for reading "not in its log" below. (single-container: its entrypoint turns
    # docker stop's SIGTERM into nginx's QUIT; test_hardening's drain test holds that.)
    if target.stack.front == "nginx":  # a container of its own
        signal = target.stack.inspect(target.stack.front)["Config"].get("StopSignal")
        assert signal == "SIGQUIT", f"nginx stops with {signal}: a fast stop cuts what it read"
    user = f"keep{uuid.uuid4().hex[:6]}" if target.name == "flaskr" else ""
    if user:
        flaskr_login(target.url, user)
    # a project in PostgreSQL, read back through the app after down and up, where the database's
    # files differ: the stacks share shared/compose/postgres.yaml (on the stack that also sees
    # PostgreSQL restarted and restored), an export writes its own compose.yaml
    database_proof = target.exported or f"{target.name}@{target.stack.name}" in database_targets()
    project = (
        ihatemoney_project(target.url)[0] if database_proof and target.name == "ihatemoney" else ""
    )
    event = radicale_event(target.url) if target.name == "radicale" else ""
    # to nginx's container: through 127.0.0.1, Docker's proxy would accept each connection and
    # cut it once nginx is gone, which looks like a cut request
    url = target.stack.container_url() + target.app.health_path
    bad: list[str] = []
    answered = []
    unanswered: dict[str, str] = {}  # request id -> how its connection ended
    stop = threading.Event()

    def stream():
        while not stop.is_set():
            # nginx logs it (and passes it on) once it answered the request
            request_id = uuid.uuid4().hex
            try:
                status = requests.get(
                    url, timeout=30, allow_redirects=False, headers={"X-Request-ID": request_id}
                ).status_code
            except requests.RequestException as error:
                if not never_connected(error):  # reset, closed or timed out once sent
                    unanswered[request_id] = error
                return  # refused: nginx has closed its port, the stop
            answered.append(request_id)
            if not 200 <= status < 300:
                bad.append(str(status))
            stop.wait(len(threads) / RATE)  # the rate of a Stream (harness.traffic), in all

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1)
    target.stack.compose("stop", timeout=120)
    stop.set()
    for thread in threads:
        thread.join(timeout=40)
    # a connection nginx closed unread as its port closed ends in a reset or in a close the
    # client reads as "closed without response", whichever reaches it first; under a graceful
    # quit, one nginx had read is answered and logged. So: in the log and unanswered, or still
    # unanswered after 30 s, is a cut; the rest were never read (refused, in effect)
    read_by_nginx = target.stack.logs(target.stack.front)
    assert answered and answered[-1] in read_by_nginx, "nginx's log lacks the stream's requests"
    cut = [
        f"{error!r} (request {rid})"
        for rid, error in unanswered.items()
        if rid in read_by_nginx or isinstance(error, requests.Timeout)
    ]
    assert not bad + cut, f"answers during the stop that were not 2xx, or cut: {bad + cut}"
    assert len(answered) > 10, f"only {len(answered)} answers before the stop"
    for service in target.stack.services():
        state = target.stack.inspect(service)["State"]
        if state["ExitCode"] != 0:  # 137: still running when its stop grace ran out
            tail = "\n".join(target.stack.logs(service).splitlines()[-40:])
            raise AssertionError(f"{service} exited {state['ExitCode']}; its last lines:\n{tail}")
    record(
        target.stack,
        f"{target.name}: graceful stop",
        f"answered {len(answered)} / non-2xx 0 / cut 0 / closed unread {len(unanswered)}",
    )
    timed_part_over()  # what follows (down, up, the data read back) has no bound
    if target.via_make:  # make down removes the containers; make up serves the same data
        make("down", target.stack.name, target.settings)
        make("up", target.stack.name, target.settings)
        assert target.stack.exec(app_service, "cat", probe).strip() == "kept"
        if user:  # the account made before the stop logs in again
            login = requests.post(
                target.url + "/auth/login", data={"username": user, "password": "pw-" + user},
                allow_redirects=False, timeout=10,
            )  # fmt: skip
            assert login.status_code == 302, f"{user} is gone after down/up"
        return
    # down removes the containers; a fresh container of the app's image finds the data
    target.stack.compose("down", "--timeout", "40", timeout=120)
    assert run_once(target, f"cat {probe}").strip() == "kept"
    if user:
        users = run_once(target, FLASKR_USERS)
        assert user in users, f"{user} is gone after down: {users}"
    if project:  # in PostgreSQL's volume (DB=postgres): served again after up
        target.stack.up()
        kept = requests.get(f"{target.stack.base_url()}/api/projects/{project}",
                            auth=(project, "pw-" + project), timeout=10)  # fmt: skip
        assert kept.status_code == 200, f"{project} is gone after down: {kept.status_code}"
    if event:  # in its collections folder in the data volume (its settings file says where)
        kept = run_once(target, f"cat instance/collections/collection-root/{event}")
        assert "SUMMARY:Dinner kept by the data volume" in kept, f"{event} is gone after down"


def test_make_k8s_writes_the_apps_manifests_that_pass_the_lint_checks(real_apps_folder, tmp_path):
    """`make k8s` for radicale as its users ship it (installed from PyPI, its settings file
    named in APP_ENV, an htpasswd secret, APP_STATIC empty, its data elsewhere than Flask's
    instance folder) on every stack with manifests: its images, settings, secrets and data mount
    are in them, no value of APP_ENV is, and they pass make lint's Kubernetes checks. The
    services (DB=) have no manifests yet: refused, with what to do."""
    real = REAL_APPS["radicale"]
    folder = fetch(real, real_apps_folder)
    settings = {
        **real.settings,
        "APP": str(folder),
        "APP_ENV": str(folder.parent / f"{real.folder}.env"),
        "APP_DATA": "/app/collections",
    }
    app = apps.from_settings(settings)
    written = []
    for stack in kubernetes.stacks():
        k8s = subprocess.run(
            [sys.executable, "scripts/app.py", "k8s", stack, str(tmp_path / stack)],
            cwd=ROOT, env={**os.environ, **settings}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert k8s.returncode == 0, k8s.stderr
        assert "kubectl create configmap app-env" in k8s.stdout, k8s.stdout
        path = tmp_path / stack / f"{stack}.yaml"
        text = path.read_text()
        assert real.env.split("=", 1)[1].strip() not in text, "APP_ENV's value in the manifests"
        docs = [d for d in yaml.safe_load_all(text) if d]
        pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
        images = images_of(docs)
        assert images <= {app.image, app.nginx_image, app.single_container_image}, images
        for container in (c for p in pods for c in p.get("initContainers", []) + p["containers"]):
            if container["name"] not in ("app", "release"):
                continue
            env = {e["name"]: e["value"] for e in container["env"]}
            assert env["HEALTH_PATH"] == "/.web/" and env["SECRETS_AS_ENV"] == "", env
            assert env["HTPASSWD_FILE"] == "/run/secrets/htpasswd", env
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/app/collections") == "data" and "/app/instance" not in mounts
            assert mounts.get("/opt/flask-stacks/app.env") == "app-env", mounts
        written.append(str(path))
    check = subprocess.run(
        ["scripts/kubernetes-check.sh", *written], cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    refused = subprocess.run(
        [sys.executable, "scripts/app.py", "k8s", "nginx-uwsgi-tcp", str(tmp_path / "db")],
        cwd=ROOT, env={**os.environ, **settings, "DB": "postgres"}, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and "DB=" in refused.stderr, refused.stderr
    assert not (tmp_path / "db").exists()
