"""Which app a stack serves: the demo app (shared/app) or yours (`make up APP=path ...`).

Reads the settings (APP, APP_MODULE, APP_STATIC, HEALTH_PATH, APP_DATA, APP_RELEASE_CMD),
refuses bad ones with what to fix, and turns them into the variables the compose files read
(shared/compose/services.yaml). One place for `make`, `make export`, the tests and the bench.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import secrets
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from stackctl import stacks

ROOT = Path(__file__).resolve().parent.parent
DEMO_APP = ROOT / "shared/app"
DOCKERFILE = ROOT / "shared/docker/Dockerfile"
SECRETS = ROOT / "secrets"

MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")  # a dotted import path
MODULE_FORMS = (
    "'module:variable' (e.g. wsgi:app) or 'module:factory(literal arguments)' "
    "(e.g. 'mypackage:create_app()' or 'mypackage:create_app(\"production\", debug=False)')"
)
PROJECT_FILES = ("requirements.txt", "pyproject.toml", "setup.py")

# name -> (default for the demo app, default for yours, what it is)
SETTINGS = {
    "APP": (
        "shared/app",
        "",
        "your Flask project's folder (with requirements.txt or pyproject.toml)",
    ),
    "APP_MODULE": (
        "wsgi:application",
        "",
        "the WSGI app in that folder: 'module:variable' or 'module:factory()'",
    ),
    "APP_STATIC": (
        "flask_stacks/static",
        "static",
        "the app's static folder, served by nginx as /static/: a folder of APP (static), or "
        "pkg:static inside an installed package; empty: the app serves /static/ itself",
    ),
    "HEALTH_PATH": (
        "/healthz",
        "/healthz",
        "what the healthchecks ask: a cheap route answering 2xx",
    ),
    "APP_DATA": (
        "/app/instance",
        "/app/instance",
        "where the app writes (a named volume; /app/instance is Flask's instance folder)",
    ),
    "APP_RELEASE_CMD": ("", "", "run once before the app servers on every up (e.g. migrations)"),
    "APP_SECRETS": (
        "secret_key",
        "secret_key",
        "the app's secrets: files in secrets/ (random when missing), /run/secrets/<name> and "
        "<NAME>_FILE in the app's containers",
    ),
    "SECRETS_AS_ENV": (
        "secret_key",
        "secret_key",
        "secrets also exported as variables (upper case) for apps that read only the environment",
    ),
    "APP_ENV": (
        "",
        "",
        "a file of your app's own settings (KEY=VALUE lines) for every container that runs it",
    ),
    "DB": (
        "",
        "",
        "postgres: PostgreSQL beside the app, which gets DATABASE_URL and DATABASE_PASSWORD_FILE "
        "(docs/services.md); empty: none",
    ),
    "QUEUE": (
        "",
        "",
        "redis: Redis beside the app, which gets REDIS_URL and REDIS_PASSWORD_FILE; empty: none",
    ),
    "WORKER": (
        "",
        "",
        "a background worker's command, in the app's image (needs QUEUE), e.g. "
        "WORKER='rq worker -c myapp.rq_settings'; empty: none",
    ),
    "WORKER_HEALTHCHECK": (
        "",
        "",
        "a shell command in the worker's container that exits 0 when it takes jobs (default for "
        "rq: rq-health), e.g. 'celery -A myapp inspect ping -d celery@$HOSTNAME'",
    ),
}


class Service(NamedTuple):
    """A service that DB= or QUEUE= switches on beside the app (docs/services.md)."""

    compose_file: str  # in shared/compose/
    app_secret: str  # the app's secret for it: <NAME>_FILE in the app's containers
    own_secrets: tuple[str, ...]  # the service's own (the database superuser's), not the app's
    addresses: dict[str, str]  # what the app is told, no password in them


SERVICES: dict[str, dict[str, Service]] = {
    "DB": {
        "postgres": Service(
            "postgres.yaml",
            "database_password",
            ("postgres_password",),
            {"DATABASE_URL": "postgresql://app@postgres:5432/app"},
        ),
    },
    "QUEUE": {
        "redis": Service("redis.yaml", "redis_password", (), {"REDIS_URL": "redis://redis:6379/0"}),
    },
}
# What the stacks and the image set in the app's containers themselves (services.yaml's app
# and release, flask-dev's FLASK_APP, single-container's overlays; the Dockerfile's ENV): a
# key of APP_ENV's among them would be overridden, or would override what the stack relies on
# (tests/unit/test_your_app_settings.py holds this list to the compose files)
STACK_KEYS = frozenset(
    {
        "ALLOWED_IPS",
        "APP_DATA",
        "APP_MODULE",
        "APP_RELEASE_CMD",
        "CERT_RECHECK_SECONDS",
        "FAULT_ROUTES",
        "FLASK_APP",
        "HEALTH_PATH",
        "HSTS_MAX_AGE",
        "HTTPS_PORT",
        "METRICS",
        "PATH",
        "PROMETHEUS_MULTIPROC_DIR",
        "PROXY_COUNT",
        "PYTHONPATH",
        "SECRETS_AS_ENV",
        "SECRET_KEY_FILE",
        "APP_ENV_SHA256",
        "UWSGI_INCLUDE",
        "UWSGI_INI",
    }
)
SECRET_NAME = re.compile(r"[a-z0-9_]+")
BUILD_SECRETS = ("extra_ca",)  # the stacks' own secret (pip's extra CA, at build time only)
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class AppError(ValueError):
    """A setting that cannot work; the message says what to fix."""


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "app"


def app_name(folder: Path) -> str:
    """An app's name, from its folder (resolved): the folder's name and a hash of its path, so
    two `app` folders never share an image, a project or a data volume."""
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    return f"{slug(folder.name)[:40]}-{digest}"


# the demo app's requirements with DB= or QUEUE= on: its image (tagged `services`) installs them
DEMO_SERVICES_REQUIREMENTS = "requirements-services.txt"
IMAGE_REPOSITORY = "flask-stacks-app"  # the images of apps other than the demo: <it>/<name>:<tag>


@dataclass(frozen=True)
class App:
    folder: Path
    module: str
    static: str
    health_path: str
    data: str
    release_cmd: str
    secrets_as_env: str
    env_file: Path | None = None  # APP_ENV: the app's own settings, checked
    secret_names: tuple[str, ...] = ("secret_key",)  # APP_SECRETS, secret_key first
    services: tuple[tuple[str, str], ...] = ()  # (DB, postgres), (QUEUE, redis): those on
    worker: str = ""  # WORKER: the background worker's command
    worker_healthcheck: str = ""  # WORKER_HEALTHCHECK, or rq's own
    json_logs: bool = False  # LOG_FORMAT=json: the worker's part of it (the stack's: stacks.py)
    metrics: bool = False  # METRICS=1: its package in the app image (its compose files: stacks.py)

    @property
    def feature_packages(self) -> str:
        """The Python packages the features that are on add to the app image (each feature
        folder's requirements.txt), for the Dockerfile's FEATURE_PACKAGES; none: empty."""
        on = [("json-logs", self.json_logs), ("metrics", self.metrics)]
        files = [ROOT / "shared" / folder / "requirements.txt" for folder, is_on in on if is_on]
        return " ".join(
            line.strip()
            for path in files
            for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )

    @property
    def services_on(self) -> list[Service]:
        """What DB= and QUEUE= switched on, in SERVICES' terms."""
        return [SERVICES[kind][name] for kind, name in self.services]

    @property
    def services_app_secrets(self) -> set[str]:
        """The app's secrets that the services that are on bring (database_password...)."""
        return {service.app_secret for service in self.services_on}

    @property
    def services_own_secrets(self) -> tuple[str, ...]:
        """The services' own secrets (the database superuser's): theirs, not the app's."""
        return tuple(n for service in self.services_on for n in service.own_secrets)

    @property
    def secret_files(self) -> tuple[str, ...]:
        """Every secret file the app's folder keeps: the app's, then its services' own."""
        return (*self.secret_names, *self.services_own_secrets)

    def service_overlays(self) -> list[Path]:
        """The compose files of the services that are on (shared/compose/), worker last."""
        files = [ROOT / "shared/compose" / service.compose_file for service in self.services_on]
        if self.worker:
            files.append(ROOT / "shared/compose/worker.yaml")
            if self.json_logs:  # the worker's logging module, mounted after its overlay
                files.append(ROOT / "shared/json-logs/worker.yaml")
        return files

    @property
    def is_demo(self) -> bool:
        return self.folder == DEMO_APP

    @property
    def name(self) -> str:
        """Short and unique per folder (app_name)."""
        return "demo" if self.is_demo else app_name(self.folder)

    def _image(self, demo: str, tag: str) -> str:
        """The demo app's image `demo` (tagged `services` when they are on: other packages),
        or this app's: IMAGE_REPOSITORY/<name>:<tag>."""
        if self.is_demo:
            return demo.replace(":latest", ":services") if self.services else demo
        return f"{IMAGE_REPOSITORY}/{self.name}:{tag}"

    @property
    def image(self) -> str:
        return self._image("flask-stacks/app:latest", "latest")

    @property
    def nginx_image(self) -> str:
        """nginx with the app's static files (shared/nginx/Dockerfile)."""
        return self._image("flask-stacks/nginx:latest", "nginx")

    @property
    def single_container_image(self) -> str:
        return self._image("flask-stacks/single-container:latest", "single-container")

    @property
    def secrets_dir(self) -> Path:
        """secrets/ for the demo app, secrets/<name>/ for yours (git-ignored either way)."""
        return SECRETS if self.is_demo else SECRETS / self.name

    def project(self, stack: str) -> str:
        """The compose project: the stack's name, plus the app's for yours (its own volumes)."""
        return stack if self.is_demo else f"{stack}-{self.name}"

    @property
    def env_sha256(self) -> str:
        """APP_ENV's content hash ("" without one)."""
        if self.env_file is None:
            return ""
        return hashlib.sha256(self.env_file.read_bytes()).hexdigest()

    def secrets_overlay(self, stack: str) -> Path | None:
        """The app's own part of APP_SECRETS beyond secret_key and of the services that are on
        (DB, QUEUE, WORKER), on `stack`: a compose file that, in every service that gets
        secret_key (the app servers and the release step: the stack's own compose file says
        which) and the worker, mounts each secret at /run/secrets/<name> with <NAME>_FILE, sets
        the services' addresses (DATABASE_URL, REDIS_URL: no password in them), and has the
        release step wait for the services to be healthy. Written as JSON (which Compose reads
        as YAML) from the checked settings into the app's secrets folder (git-ignored), where
        the files are. None when there is nothing to add: nothing added."""
        extra = self.secret_names[1:]
        if not extra and not self.services and not self.worker:
            return None
        ensure_secrets(self.secrets_dir, self.secret_files)
        config = subprocess.run(
            ["docker", "compose", "-f", str(ROOT / "stacks" / stack / "compose.yaml"),
             "config", "--no-interpolate", "--format", "json"],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if config.returncode:
            raise AppError(f"APP_SECRETS: cannot read {stack}'s services: {config.stderr.strip()}")
        services = json.loads(config.stdout)["services"]
        getting = sorted(
            name
            for name, service in services.items()
            if any(s.get("source") == "secret_key" for s in service.get("secrets") or [])
        ) + (["worker"] if self.worker else [])
        addresses = {k: v for service in self.services_on for k, v in service.addresses.items()}
        healthy = {name: {"condition": "service_healthy"} for _, name in self.services}
        overlay: dict = {"services": {}}
        for name in getting:
            service: dict = {}
            build = (services.get(name) or {}).get("build") or {}
            builds_app = name == "worker" or "APP_MODULE" in build.get("args", {})
            if self.is_demo and self.services and builds_app:
                # the demo's clients of the services (shared/app/requirements-services.txt)
                service["build"] = {"args": {"APP_REQUIREMENTS": DEMO_SERVICES_REQUIREMENTS}}
            if extra:
                service["secrets"] = list(extra)
            environment = {f"{n.upper()}_FILE": f"/run/secrets/{n}" for n in extra}
            if environment or addresses:
                service["environment"] = {**environment, **addresses}
            if name == "release" and healthy:
                service["depends_on"] = healthy  # migrations need the database up
            overlay["services"][name] = service
        if extra:  # the services' own secrets: their compose files declare them
            overlay["secrets"] = {n: {"file": str(self.secrets_dir / n)} for n in extra}
        path = self.secrets_dir / f"compose.{stack}.json"
        path.write_text(json.dumps(overlay, indent=2) + "\n")
        return path

    def check_stack(self, stack: str) -> None:
        """What a stack needs of the app beyond the settings: flask-dev mounts the app's folder
        read-only at /app, so a data folder under /app needs its mount point there."""
        data = PurePosixPath(self.data)
        if stack == "flask-dev" and data.is_relative_to("/app"):
            mount_point = self.folder / data.relative_to("/app")
            if not mount_point.is_dir():
                raise AppError(
                    f"flask-dev mounts APP read-only at /app, and APP_DATA={self.data} needs "
                    f"its mount point there: mkdir {mount_point} (keep it out of git)"
                )

    def compose_env(self) -> dict[str, str]:
        """The variables shared/compose/services.yaml and the stacks read."""
        return {
            "APP_CONTEXT": str(self.folder),
            "APP_DOCKERFILE": str(DOCKERFILE),
            "APP_MODULE": self.module,
            "APP_STATIC": self.static,
            "HEALTH_PATH": self.health_path,
            "APP_DATA": self.data,
            "APP_RELEASE_CMD": self.release_cmd,
            "SECRETS_AS_ENV": self.secrets_as_env,
            # as the user gave them: the services' own (DB=, QUEUE=) are added again when read
            "APP_SECRETS": " ".join(
                n for n in self.secret_names if n not in self.services_app_secrets
            ),
            "APP_IMAGE": self.image,
            "APP_FEATURE_PACKAGES": self.feature_packages,
            "APP_NGINX_IMAGE": self.nginx_image,
            "SINGLE_CONTAINER_IMAGE": self.single_container_image,
            "SECRETS_DIR": str(self.secrets_dir),
            # mounted in every app container (services.yaml); none: an empty file
            "APP_ENV": str(self.env_file or "/dev/null"),
            # its hash in the containers' config: a changed file recreates them at the next up
            "APP_ENV_SHA256": self.env_sha256,
            # worker.yaml's command (only with WORKER: nothing else reads it)
            **(
                {"WORKER": self.worker, "WORKER_HEALTHCHECK": self.worker_healthcheck}
                if self.worker
                else {}
            ),
        }


def from_settings(env: Mapping[str, str] | None = None) -> App:
    """The app the settings name (default: os.environ); AppError says what to fix."""
    env = os.environ if env is None else env
    if env.get("ALLOWED", "").strip():  # ignored, it would leave the stack open to everyone
        raise AppError("ALLOWED is not read: name the allow-list ALLOWED_IPS (same format)")
    raw = env.get("APP", "").strip()
    folder = (Path(raw).expanduser() if raw else DEMO_APP).resolve()
    demo = folder == DEMO_APP
    column = 0 if demo else 1

    def value(name: str) -> str:
        """The setting, or its default when unset (empty means none for the two that may be)."""
        given = env.get(name)
        if given is None or (
            not given.strip() and name not in ("SECRETS_AS_ENV", "APP_RELEASE_CMD", "APP_STATIC")
        ):
            return SETTINGS[name][column]
        return given.strip()

    if not folder.is_dir():
        raise AppError(
            f"APP={raw!r} is not a directory: point APP at your Flask project's folder, the one "
            "with its requirements.txt or pyproject.toml"
        )
    if not any((folder / name).is_file() for name in PROJECT_FILES):
        raise AppError(
            f"APP={raw!r} has no {', '.join(PROJECT_FILES)}: the image installs the app's "
            "dependencies from one of them; add a requirements.txt that lists them, pinned"
        )
    module = value("APP_MODULE")
    if not module:
        raise AppError(
            "APP_MODULE is not set: name your WSGI app in APP, e.g. APP_MODULE=wsgi:app or "
            "APP_MODULE='mypackage:create_app()'"
        )
    check_module(module)
    static = value("APP_STATIC")
    check_static(static, folder)
    health = value("HEALTH_PATH")
    if not health.startswith("/"):
        raise AppError(f"HEALTH_PATH={health!r} must be a path starting with /, e.g. /healthz")
    data = value("APP_DATA")
    if not PurePosixPath(data).is_absolute() or data.rstrip("/") in ("", "/app", "/tmp"):  # noqa: S108 - refused
        raise AppError(
            f"APP_DATA={data!r} must be an absolute folder of its own in the container, e.g. "
            "/app/instance (Flask's instance folder) or /data"
        )
    secrets_as_env = value("SECRETS_AS_ENV")
    for name in secrets_as_env.split():
        if not SECRET_NAME.fullmatch(name):
            raise AppError(f"SECRETS_AS_ENV: {name!r} is not a secret name (a-z, 0-9, _)")
    secret_names = ["secret_key"]
    for name in value("APP_SECRETS").split():
        if not SECRET_NAME.fullmatch(name) or name in BUILD_SECRETS:
            raise AppError(
                f"APP_SECRETS: {name!r} is not a secret name: lower-case letters, digits and _ "
                f"(a file of that name in secrets/), and not {', '.join(BUILD_SECRETS)}, e.g. "
                "APP_SECRETS='secret_key db_password api_token'"
            )
        if name not in secret_names:
            secret_names.append(name)
    services, service_keys = [], {}
    for kind, choices in SERVICES.items():
        chosen = value(kind)
        if not chosen:
            continue
        if chosen not in choices:
            raise AppError(
                f"{kind}={chosen!r} is not one of {', '.join(choices)}: e.g. {kind}="
                f"{next(iter(choices))} (docs/services.md), or leave it empty for none"
            )
        services.append((kind, chosen))
        app_secret = choices[chosen].app_secret
        if app_secret in secret_names:
            raise AppError(
                f"APP_SECRETS: {app_secret!r} is {kind}={chosen}'s own secret, made with it: "
                "remove it from APP_SECRETS"
            )
        secret_names.append(app_secret)
        service_keys.update({key: f"{kind}={chosen}" for key in choices[chosen].addresses})
    worker = value("WORKER")
    if worker and not any(kind == "QUEUE" for kind, _ in services):
        raise AppError(
            f"WORKER={worker!r} needs a queue to take jobs from: add QUEUE=redis (docs/services.md)"
        )
    worker_healthcheck = value("WORKER_HEALTHCHECK")
    if worker and not worker_healthcheck:
        program = PurePosixPath((worker.split() or [""])[0]).name
        if program != "rq":  # RQ's workers are found in Redis by hostname (shared/worker/)
            raise AppError(
                f"WORKER={worker!r}: say how to check that it takes jobs, a shell command that "
                "exits 0 then, e.g. WORKER_HEALTHCHECK='celery -A myapp inspect ping -d "
                "celery@$HOSTNAME' for Celery (docs/services.md)"
            )
        worker_healthcheck = "rq-health"
    env_file = None
    if value("APP_ENV") and value("APP_ENV") != "/dev/null":  # /dev/null: compose's "none"
        env_file = Path(value("APP_ENV")).expanduser().resolve()
        secret_keys = {
            key: name
            for name in [*secret_names, *secrets_as_env.split()]
            for key in (name.upper(), name.upper() + "_FILE")
        }
        read_env_file(env_file, value("APP_ENV"), secret_keys, service_keys)
    return App(
        folder=folder,
        module=module,
        static=static,
        health_path=health,
        data=data,
        release_cmd=value("APP_RELEASE_CMD"),
        secrets_as_env=secrets_as_env,
        env_file=env_file,
        secret_names=tuple(secret_names),
        services=tuple(services),
        worker=worker,
        worker_healthcheck=worker_healthcheck if worker else "",
        json_logs=log_format(env) == "json",
        metrics=metrics_on(env),
    )


def metrics_on(env: Mapping[str, str]) -> bool:
    """METRICS: 1 (on) or 0 / empty (off); anything else is refused."""
    value = env.get("METRICS", "")
    if value not in ("", "0", "1"):
        raise AppError(f"METRICS='{value}' must be 1 (on) or 0 (off, the default)")
    return value == "1"


def log_format(env: Mapping[str, str]) -> str:
    """LOG_FORMAT: text (the default) or json (its overlays: shared/json-logs/)."""
    value = env.get("LOG_FORMAT", "").strip() or "text"
    if value not in ("text", "json"):
        raise AppError(f"LOG_FORMAT={value!r} must be text (the default) or json")
    return value


def requested_overlays(stack: str, env: Mapping[str, str], *, swarm: bool = False) -> list[Path]:
    """The compose files make's variables switch on for `stack` (TLS, ACME, ALLOWED_IPS,
    LOG_FORMAT, METRICS; any value but empty switches TLS, ACME and the allow-list on), read here
    for `make up`, `make lint` and `make swarm-up` alike. Under Swarm, each file's Swarm part
    follows it where the stack has one (compose.swarm.<feature>.yaml: the replicated `app`).
    OverlayError / AppError say what to fix."""
    files = stacks.feature_overlays(
        stack,
        tls=bool(env.get("TLS")),
        acme=bool(env.get("ACME")),
        allow_list=bool(env.get("ALLOWED_IPS")),
        json_logs=log_format(env) == "json",
        metrics=metrics_on(env),
    )
    if not swarm:
        return files
    with_twins = []
    for file in files:
        twin = file.with_name(file.name.replace("compose.", "compose.swarm.", 1))
        with_twins += [file, twin] if file.name.startswith("compose.") and twin.exists() else [file]
    return with_twins


def read_env_file(
    path: Path, given: str, secret_keys: Mapping[str, str], service_keys: Mapping[str, str] = {}
) -> dict[str, str]:
    """APP_ENV's settings, read as Compose reads them with `format: raw` (docker run
    --env-file's rule): `KEY=VALUE` a line, the value exactly as written (no quotes removed,
    no $ expanded), blank lines and lines starting with # skipped. AppError names the line."""
    if not path.is_file():
        raise AppError(
            f"APP_ENV={given!r}: no such file. Point APP_ENV at your app's settings file "
            "(KEY=VALUE lines), or leave it unset"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise AppError(f"APP_ENV={given!r}: cannot read it as UTF-8 text ({error})") from None
    settings: dict[str, str] = {}
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        where = f"APP_ENV {path}, line {number}"
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, val = line.partition("=")
        if key.startswith("export "):
            raise AppError(f"{where}: {line!r}: drop 'export ': lines are KEY=VALUE")
        if not sep or not ENV_KEY.fullmatch(key):
            raise AppError(
                f"{where}: {line!r} is not KEY=VALUE (KEY: letters, digits and _, not starting "
                "with a digit, right before the =)"
            )
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
            raise AppError(
                f"{where}: {key}'s value is in quotes, which would be part of it: values are "
                "taken as written (no quotes removed, no $ expanded); remove the quotes"
            )
        if key in STACK_KEYS:
            raise AppError(
                f"{where}: {key} is set by the stack itself; use the make variable "
                f"{key}=... if it is one (docs/your-app.md), or rename your setting"
            )
        if key in service_keys:
            raise AppError(
                f"{where}: {key} is set by {service_keys[key]} (the service beside the app); "
                f"remove it here, or leave {service_keys[key].split('=')[0]} unset to use a "
                "service of your own (docs/services.md)"
            )
        if key in secret_keys:
            raise AppError(
                f"{where}: {key} comes from the secret file secrets/.../{secret_keys[key]} "
                f"(/run/secrets/{secret_keys[key]}); keep secrets out of APP_ENV"
            )
        if key in seen:
            raise AppError(f"{where}: {key} is set again (first on line {seen[key]})")
        seen[key] = number
        settings[key] = val
    return settings


def check_static(static: str, folder: Path) -> None:
    """APP_STATIC: a folder of the project (relative to it: checked here), `package:folder`
    inside an installed package (checked in the image, when nginx's image copies the folder
    out: shared/nginx/static-folder.py), or empty (the app serves /static/ itself)."""
    package, colon, inside = static.partition(":")
    path = PurePosixPath(inside if colon else static)
    if not static:
        return
    if colon and not MODULE_NAME.fullmatch(package):
        raise AppError(
            f"APP_STATIC={static!r}: {package!r} is not a package's import name; write "
            "'package:folder' for a folder inside an installed package, e.g. mypackage:static"
        )
    if not str(path).strip(".") or path.is_absolute() or ".." in path.parts:
        raise AppError(
            f"APP_STATIC={static!r} must name a folder inside APP, as a relative path (e.g. "
            "static or mypackage/static), or inside an installed package (mypackage:static)"
        )
    if not colon and not (folder / static).is_dir():
        found = sorted(str(p.relative_to(folder)) for p in folder.glob("*/static") if p.is_dir())
        hint = f" Found: {', '.join(found)}." if found else ""
        raise AppError(
            f"APP_STATIC={static!r}: no such folder in {folder}. Set APP_STATIC to the app's "
            "static folder, relative to APP, or 'package:folder' for one inside an installed "
            f"package (e.g. mypackage:static), or empty if the app serves /static/ itself.{hint}"
        )


def check_module(module: str) -> None:
    """APP_MODULE as every server reads it (Gunicorn's loader, which uWSGI's base.ini, the
    release step and Flask's `flask run` follow): a dotted module, then a name or a call of a
    name with literal arguments (quotes of either kind). It reaches them as data, an
    environment variable, and is never pasted into code; AppError says what to fix."""
    name, colon, obj = module.partition(":")
    problem = ""
    if not MODULE_NAME.fullmatch(name):
        problem = f"{name!r} is not a module's import path (e.g. wsgi or mypackage.web)"
    elif colon:
        try:
            expression = ast.parse(obj.strip(), mode="eval").body
        except SyntaxError:
            expression = None
        if isinstance(expression, ast.Call) and isinstance(expression.func, ast.Name):
            try:
                for argument in [*expression.args, *(k.value for k in expression.keywords)]:
                    ast.literal_eval(argument)
            except ValueError:
                problem = f"{obj!r}: the factory's arguments must be literals (strings, numbers...)"
            if any(k.arg is None for k in expression.keywords):
                problem = f"{obj!r}: no **arguments; name each keyword"
        elif not isinstance(expression, ast.Name):
            problem = f"{obj!r} is not a variable name or a call of a factory"
    if problem:
        raise AppError(f"APP_MODULE={module!r}: {problem}. Write it as {MODULE_FORMS}")


def ensure_secret_key(folder: Path) -> Path:
    """`folder`/secret_key, made once if missing (ensure_secrets)."""
    return ensure_secrets(folder, ("secret_key",))[0]


def ensure_secrets(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """`folder`/<name> for each name, made once with 48 random bytes if missing, never
    overwritten (yours: write your own value in the file first). The folder is the owner's only
    (0700); the files are 0644 so that the container's user can read them through the bind
    mounts Compose makes of them (no one else can reach them on the host)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    made = []
    for name in names:
        path = folder / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48) + "\n")
        made.append(path)
    return made
