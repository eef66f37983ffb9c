"""APP= settings (harness/apps.py), the release step (shared/docker/release.py) and
`make export` (harness/export.py), without Docker: bad input gets a message that says what to
fix, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import apps, export

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "shared/docker/release.py"


@pytest.fixture
def project(tmp_path) -> Path:
    """A minimal Flask project of someone else's: a factory, a static folder, requirements."""
    folder = tmp_path / "shop"
    (folder / "shop/static").mkdir(parents=True)
    (folder / "shop/static/site.css").write_text("body {}\n")
    (folder / "shop/__init__.py").write_text(
        "from flask import Flask\n\n\ndef create_app():\n    app = Flask(__name__)\n"
        "    app.add_url_rule('/up', 'up', lambda: 'ok')\n    return app\n"
    )
    (folder / "requirements.txt").write_text("Flask==3.1.3\n")
    return folder


def settings(project: Path, **extra: str) -> dict[str, str]:
    return {"APP": str(project), "APP_MODULE": "shop:create_app()", "APP_STATIC": "shop/static",
            **extra}  # fmt: skip


def test_demo_app_is_the_default():
    app = apps.from_settings({})
    assert app.is_demo and app.image == "flask-stacks/app:latest"
    assert app.project("nginx-uwsgi-tcp") == "nginx-uwsgi-tcp"
    assert app.compose_env()["APP_MODULE"] == "wsgi:application"


def test_your_app_gets_its_own_image_project_and_secrets(project, tmp_path):
    app = apps.from_settings(settings(project))
    assert app.module == "shop:create_app()" and app.health_path == "/healthz"
    assert app.image.startswith("flask-stacks-app/shop-")
    assert app.project("nginx-uwsgi-tcp") == f"nginx-uwsgi-tcp-{app.name}"
    assert app.secrets_dir == ROOT / "secrets" / app.name
    twin = tmp_path / "other" / "shop"  # another folder with the same name: another image
    twin.parent.mkdir()
    project.rename(twin)
    assert apps.from_settings(settings(twin)).image != app.image


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"APP": "/no/such/folder"}, "is not a directory"),
        ({"APP_MODULE": ""}, "APP_MODULE is not set"),
        ({"APP_MODULE": "shop create_app"}, "is not 'module:variable'"),
        ({"APP_STATIC": "/etc"}, "must be a folder inside APP"),
        ({"APP_STATIC": "../x"}, "must be a folder inside APP"),
        ({"APP_STATIC": "static"}, "Found: shop/static"),
        ({"HEALTH_PATH": "healthz"}, "must be a path starting with /"),
        ({"APP_DATA": "data"}, "must be an absolute folder"),
        ({"APP_DATA": "/app"}, "must be an absolute folder"),
        ({"SECRETS_AS_ENV": "Secret-Key"}, "is not a secret name"),
    ],
)
def test_bad_settings_say_what_to_fix(project, change, message):
    with pytest.raises(apps.AppError, match=message):
        apps.from_settings({**settings(project), **change})


def test_a_folder_without_dependencies_is_refused(project):
    (project / "requirements.txt").unlink()
    with pytest.raises(apps.AppError, match="has no requirements.txt"):
        apps.from_settings(settings(project))


def test_scripts_app_env_exits_2_with_the_message():
    env = {**os.environ, "APP": "/no/such/folder"}
    result = subprocess.run([sys.executable, str(ROOT / "scripts/app.py"), "env", "x"],
                            env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 2 and "is not a directory" in result.stderr
    assert result.stdout == ""


def test_secret_key_is_made_once_and_kept(tmp_path):
    key = apps.ensure_secret_key(tmp_path / "secrets")
    first = key.read_text()
    assert len(first.strip()) >= 48 and oct(key.parent.stat().st_mode)[-3:] == "700"
    apps.ensure_secret_key(tmp_path / "secrets")
    assert key.read_text() == first


# --- the release step ----------------------------------------------------------------------


def release(cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RELEASE)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
        timeout=60,
    )


def test_release_loads_variable_and_factory_forms(project):
    ok = release(ROOT / "shared/app", APP_MODULE="wsgi:application", HEALTH_PATH="/healthz")
    assert ok.returncode == 0, ok.stderr
    assert "loads" in ok.stdout and "answers 200" in ok.stdout
    factory = release(project, APP_MODULE="shop:create_app()", HEALTH_PATH="/up")
    assert factory.returncode == 0, factory.stderr


@pytest.mark.parametrize(
    ("module", "message"),
    [("nosuchmodule:app", "No module named"), ("shop:nothing", "Failed to find attribute")],
)
def test_release_refuses_an_app_module_that_does_not_load(project, module, message):
    result = release(project, APP_MODULE=module)
    assert result.returncode == 3
    assert f"APP_MODULE={module!r} does not load" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_release_refuses_a_health_path_that_is_not_2xx(project):
    result = release(project, APP_MODULE="shop:create_app()", HEALTH_PATH="/healthz")
    assert result.returncode == 4
    assert "HEALTH_PATH=/healthz answered 404 NOT FOUND" in result.stderr


def test_release_command_failure_stops_with_its_output(project):
    result = release(project, APP_MODULE="shop:create_app()", HEALTH_PATH="/up",
                     APP_RELEASE_CMD="echo migrating; exit 5")  # fmt: skip
    assert result.returncode == 5
    assert "migrating" in result.stdout and "APP_RELEASE_CMD failed (exit 5)" in result.stderr


# --- make export ---------------------------------------------------------------------------


def test_export_stands_alone(project, tmp_path):
    dest = tmp_path / "deploy"
    job = export.export("nginx-uwsgi-socket", str(dest), False, False, False,
                        settings(project))  # fmt: skip
    compose = (dest / "compose.yaml").read_text()
    assert "extends" not in compose
    for path in dest.rglob("*"):
        if path.is_file():
            assert str(ROOT) not in path.read_text(errors="ignore"), path
    assert "context: ${APP_CONTEXT:-../shop}" in compose
    assert "APP_MODULE: ${APP_MODULE:-shop:create_app()}" in compose
    assert "# a non-root server on ports > 1024 needs no capability" in compose  # whys kept
    files = ("docker/Dockerfile", "docker/healthcheck.py", "nginx/default.conf", "uwsgi/base.ini")
    for name in (*files, "uwsgi/uwsgi.ini", "README.md", "secrets/secret_key"):
        assert (dest / name).is_file(), name
    example = (dest / ".env.example").read_text()
    assert "# APP_STATIC=shop/static" in example and "# NGINX_UWSGI_SOCKET_PUBLISH=" in example
    assert "secrets/" in (dest / ".gitignore").read_text()
    assert not job.overlays


def test_export_never_overwrites_without_force_and_keeps_the_secret(project, tmp_path):
    dest = tmp_path / "deploy"
    export.export("nginx-uwsgi-tcp", str(dest), False, False, False, settings(project))
    key = (dest / "secrets/secret_key").read_text()
    (dest / "compose.yaml").write_text("# mine\n")
    with pytest.raises(export.ExportError, match="already has .*compose.yaml.*FORCE=1"):
        export.export("nginx-uwsgi-tcp", str(dest), False, False, False, settings(project))
    assert (dest / "compose.yaml").read_text() == "# mine\n"
    export.export("nginx-uwsgi-tcp", str(dest), False, False, True, settings(project))
    assert (dest / "compose.yaml").read_text() != "# mine\n"
    assert (dest / "secrets/secret_key").read_text() == key


def test_export_refuses_a_dest_inside_the_repository(project):
    with pytest.raises(export.ExportError, match="inside this repository"):
        export.export("nginx-uwsgi-tcp", str(ROOT / "x"), False, False, False, settings(project))


def test_export_with_tls_says_so(project, tmp_path):
    job = export.export("nginx-gunicorn-gevent", str(tmp_path / "d"), True, False, False,
                        settings(project))  # fmt: skip
    assert [p.name for p in job.overlays] == ["tls.yaml"]
    compose = (tmp_path / "d/compose.yaml").read_text()
    assert "${TLS_CERTS_DIR:-./certs}:/etc/nginx/certs:ro" in compose
    assert 'TLS: "on"' in compose
    assert "tls.yaml" in (tmp_path / "d/README.md").read_text()


def test_export_with_metrics_brings_prometheus_and_counts_by_default(project, tmp_path):
    dest = tmp_path / "d"
    job = export.export("load-balanced-pair", str(dest), False, False, False, settings(project),
                        metrics=True)  # fmt: skip
    assert [p.name for p in job.overlays] == ["metrics.yaml", "compose.metrics.yaml"]
    compose = (dest / "compose.yaml").read_text()
    assert compose.count("METRICS: ${METRICS:-1}") == 3  # release, app1, app2
    assert "./prometheus/prometheus-targets.yml:/etc/prometheus/app-targets.yml:ro" in compose
    for name in ("prometheus.yml", "alerts.yml"):
        assert f"./prometheus/{name}:/etc/prometheus/{name}:ro" in compose
        assert (dest / "prometheus" / name).is_file(), name
    assert "app1:9102" in (dest / "prometheus/prometheus-targets.yml").read_text()
    assert (dest / "python/flask_stacks_metrics.py").is_file()


def test_export_with_metrics_refuses_flask_dev(project, tmp_path):
    with pytest.raises(export.ExportError, match="METRICS=1 works with the nginx stacks"):
        export.export("flask-dev", str(tmp_path / "d"), False, False, False, settings(project),
                      metrics=True)  # fmt: skip
