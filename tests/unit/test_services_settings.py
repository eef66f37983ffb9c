"""DB=, QUEUE=, WORKER= (docs/services.md) as settings and in `make export`, without an engine
(`docker compose config` needs none): bad values say what to fix; switched off, no line of
theirs is in any stack's configuration or export; switched on, the export brings their files."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from harness.compose import STACKS
from stackctl import apps, export

ROOT = Path(__file__).resolve().parents[2]
ON = {"DB": "postgres", "QUEUE": "redis", "WORKER": "rq worker -c flask_stacks.rq_settings"}
THEIRS = (
    "postgres",
    "redis",
    "rq-health",
    "DATABASE_URL",
    "REDIS_URL",
    "APP_REQUIREMENTS",
    "WORKER_HEALTHCHECK",
)


@pytest.fixture
def project(tmp_path) -> Iterator[Path]:
    folder = tmp_path / "shop"
    (folder / "shop").mkdir(parents=True)
    (folder / "shop/__init__.py").write_text("from flask import Flask\n\napp = Flask(__name__)\n")
    (folder / "requirements.txt").write_text("Flask==3.1.3\nrq==3.0.0\n")
    yield folder
    # the secrets that make's settings made for it (secrets/<app's name>/, as for a user's app)
    shutil.rmtree(apps.SECRETS / apps.app_name(folder.resolve()), ignore_errors=True)


def yours(project: Path, **extra: str) -> dict[str, str]:
    return {"APP": str(project), "APP_MODULE": "shop:app", "APP_STATIC": "", **extra}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"DB": "mysql"}, "DB='mysql' is not one of postgres"),
        ({"QUEUE": "rabbitmq"}, "QUEUE='rabbitmq' is not one of redis"),
        ({"WORKER": "rq worker"}, "needs a queue to take jobs from: add QUEUE=redis"),
        ({"QUEUE": "redis", "WORKER": "celery -A shop worker"}, "WORKER_HEALTHCHECK='celery"),
        ({"DB": "postgres", "APP_SECRETS": "database_password"}, "DB=postgres's own secret"),
    ],
)
def test_bad_service_settings_say_what_to_fix(project, change, message):
    with pytest.raises(apps.AppError, match=message):
        apps.from_settings({**yours(project), **change})


def test_the_settings_make_exports_read_back_the_same(project):
    """make exports the checked settings (scripts/app.py env) and its failure path reads them
    back (diagnose): the services' own secrets are not handed back as the user's."""
    app = apps.from_settings(yours(project, APP_SECRETS="api_token", **ON))
    again = apps.from_settings({**app.compose_env(), **ON, "APP": str(project)})
    assert again.secret_names == app.secret_names
    assert app.compose_env()["APP_SECRETS"] == "secret_key api_token"


def test_an_app_env_key_the_service_sets_is_refused(project, tmp_path):
    env = tmp_path / "app.env"
    env.write_text("DATABASE_URL=postgresql://me@elsewhere/db\n")
    with pytest.raises(apps.AppError, match=r"app.env, line 1: DATABASE_URL is set by DB=postgres"):
        apps.from_settings({**yours(project), "DB": "postgres", "APP_ENV": str(env)})
    assert apps.from_settings({**yours(project), "APP_ENV": str(env)}).env_file == env


def test_rq_workers_get_rq_health_and_others_their_own_check(project):
    app = apps.from_settings({**yours(project), **ON})
    assert (app.worker_healthcheck, app.compose_env()["WORKER"]) == ("rq-health", ON["WORKER"])
    celery = apps.from_settings(
        {**yours(project), "QUEUE": "redis", "WORKER": "celery -A shop worker",
         "WORKER_HEALTHCHECK": "celery -A shop inspect ping -d celery@$HOSTNAME"}
    )  # fmt: skip
    assert celery.compose_env()["WORKER_HEALTHCHECK"].endswith("celery@$HOSTNAME")
    assert [p.name for p in app.service_overlays()] == [
        "postgres.yaml",
        "redis.yaml",
        "worker.yaml",
    ]
    assert app.secret_files == (
        "secret_key", "database_password", "redis_password", "postgres_password"
    )  # fmt: skip


def config(stack: str, settings: dict[str, str]) -> dict:
    """`docker compose config` of the stack as make would run it with these settings."""
    app = apps.from_settings(settings)
    files = [ROOT / "stacks" / stack / "compose.yaml", *app.service_overlays()]
    overlay = app.secrets_overlay(stack)
    files += [overlay] if overlay else []
    run = subprocess.run(
        ["docker", "compose", *(a for f in files for a in ("-f", str(f))), "config",
         "--format", "json"],
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", **app.compose_env(),
             "COMPOSE_PROJECT_NAME": app.project(stack)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(run.stdout)


@pytest.mark.parametrize("stack", STACKS)
def test_switched_off_no_line_of_the_services_is_in_any_stack(stack):
    text = json.dumps(config(stack, {}))
    assert not [word for word in THEIRS if word in text]


def test_switched_on_the_demo_app_builds_its_services_variant(tmp_path):
    on = config("nginx-uwsgi-tcp", ON)
    assert {"postgres", "redis", "worker"} <= on["services"].keys()
    for name in ("app", "release", "worker"):
        service = on["services"][name]
        assert service["image"] == "flask-stacks/app:services", name
        assert service["build"]["args"]["APP_REQUIREMENTS"] == "requirements-services.txt", name
        assert service["environment"]["DATABASE_URL"] == "postgresql://app@postgres:5432/app"
        assert service["environment"]["REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"  # noqa: S105 - a path
    assert on["services"]["release"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert on["services"]["worker"]["command"] == ["rq", "worker", "-c", "flask_stacks.rq_settings"]
    assert "postgres_password" not in {s["source"] for s in on["services"]["app"]["secrets"]}


def test_export_with_the_services_brings_their_files_and_tools(project, tmp_path):
    dest = tmp_path / "deploy"
    export.export("nginx-uwsgi-socket", str(dest), False, False, False, yours(project, **ON))
    for name in ("postgres/app-role.sql", "postgres/db.sh", "redis/redis.conf",
                 "worker/rq-health.py", "secrets/database_password", "secrets/postgres_password",
                 "secrets/redis_password"):  # fmt: skip
        assert (dest / name).is_file(), name
    compose = (dest / "compose.yaml").read_text()
    assert "command: ${WORKER:-rq worker -c flask_stacks.rq_settings}" in compose
    assert "/backups/" in (dest / ".gitignore").read_text()
    assert "postgres/db.sh backup" in (dest / "README.md").read_text()
    # the demo's services variant: its build args merged, its build context still the app's
    demo = tmp_path / "demo"
    export.export("nginx-uwsgi-socket", str(demo), False, False, False, dict(ON))
    services = YAML(typ="safe").load(demo / "compose.yaml")["services"]
    for name in ("app", "release", "worker"):
        build = services[name]["build"]
        assert build["context"] == "${APP_CONTEXT:-./app}", (name, build)
        assert build["args"]["APP_REQUIREMENTS"] == "requirements-services.txt", (name, build)
    plain = tmp_path / "plain"
    export.export("nginx-uwsgi-socket", str(plain), False, False, False, yours(project))
    text = "".join(p.read_text() for p in plain.rglob("*") if p.is_file())
    assert not [w for w in ("postgres", "redis", "rq-health", "DATABASE_URL") if w in text]
    assert not (plain / "postgres").exists()
