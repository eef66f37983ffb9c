"""APP= settings (stackctl/apps.py), the release step (shared/docker/release.py) and
`make export` (stackctl/export.py), without Docker: bad input gets a message that says what to
fix, before anything starts."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from stackctl import apps, export

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "shared/docker/release.py"


@pytest.fixture
def project(tmp_path) -> Iterator[Path]:
    """A minimal Flask project of someone else's: a factory, a static folder, requirements."""
    folder = tmp_path / "shop"
    (folder / "shop/static").mkdir(parents=True)
    (folder / "shop/static/site.css").write_text("body {}\n")
    (folder / "shop/__init__.py").write_text(
        "from flask import Flask\n\n\ndef create_app():\n    app = Flask(__name__)\n"
        "    app.add_url_rule('/up', 'up', lambda: 'ok')\n    return app\n"
    )
    (folder / "requirements.txt").write_text("Flask==3.1.3\n")
    yield folder
    # the secrets that make's settings made for it (secrets/<app's name>/, as for a user's app)
    shutil.rmtree(apps.SECRETS / apps.app_name(folder.resolve()), ignore_errors=True)


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
        ({"APP_MODULE": "shop create_app"}, "is not a module's import path"),
        ({"APP_MODULE": "shop:create_app(os.environ)"}, "arguments must be literals"),
        ({"APP_MODULE": "shop:create_app(**conf)"}, "no \\*\\*arguments"),
        ({"APP_MODULE": "shop:factories.create_app()"}, "not a variable name or a call"),
        ({"APP_MODULE": 'shop:create_app("x)'}, "not a variable name or a call"),
        ({"APP_STATIC": "/etc"}, "must name a folder inside APP"),
        ({"APP_STATIC": "../x"}, "must name a folder inside APP"),
        ({"APP_STATIC": "shop:../x"}, "must name a folder inside APP"),
        ({"APP_STATIC": "shop:"}, "must name a folder inside APP"),
        ({"APP_STATIC": "my-shop:static"}, "is not a package's import name"),
        ({"APP_STATIC": "static"}, "Found: shop/static"),
        ({"APP_STATIC": "static"}, "'package:folder' for one inside an installed package"),
        ({"HEALTH_PATH": "healthz"}, "must be a path starting with /"),
        ({"APP_DATA": "data"}, "must be an absolute folder"),
        ({"APP_DATA": "/app"}, "must be an absolute folder"),
        ({"SECRETS_AS_ENV": "Secret-Key"}, "is not a secret name"),
        ({"APP_SECRETS": "secret_key DB_PASSWORD"}, "APP_SECRETS: 'DB_PASSWORD' is not a secret"),
        ({"APP_SECRETS": "extra_ca"}, "and not extra_ca"),
        ({"ALLOWED": "10.0.0.0/8"}, "ALLOWED is not read: name the allow-list ALLOWED_IPS"),
    ],
)
def test_bad_settings_say_what_to_fix(project, change, message):
    with pytest.raises(apps.AppError, match=message):
        apps.from_settings({**settings(project), **change})


@pytest.mark.parametrize(
    "module",
    [
        "shop",  # Gunicorn's default: shop:application
        "shop.web:app",
        "shop:create_app()",
        """shop:create_app("it's", who='say "hi"')""",
        "shop:create_app({'DEBUG': False}, workers=2)",
    ],
)
def test_app_module_forms_every_server_loads_are_accepted(project, module):
    assert apps.from_settings(settings(project, APP_MODULE=module)).module == module


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


def app_env(stack: str, **variables: str) -> subprocess.CompletedProcess:
    """`scripts/app.py env STACK` as make runs it, with make's variables in the environment."""
    features = ("APP", "TLS", "ACME", "METRICS", "ALLOWED_IPS", "LOG_FORMAT")
    env = {k: v for k, v in os.environ.items() if k not in features}
    return subprocess.run([sys.executable, str(ROOT / "scripts/app.py"), "env", stack],
                          env={**env, **variables}, capture_output=True, text=True,
                          check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("stack", "variables", "overlays"),
    [
        ("nginx-uwsgi-tcp", {}, ""),
        ("nginx-uwsgi-tcp", {"TLS": "1"}, "-f shared/compose/tls.yaml"),
        ("single-container", {"TLS": "1"}, "-f stacks/single-container/compose.tls.yaml"),
        ("nginx-uwsgi-socket", {"ACME": "1"},
         "-f shared/compose/tls.yaml -f shared/compose/acme.yaml"),
        ("load-balanced-pair", {"METRICS": "1"},
         "-f shared/compose/metrics.yaml -f stacks/load-balanced-pair/compose.metrics.yaml"),
        ("nginx-uwsgi-tcp", {"METRICS": "0"}, ""),
        ("nginx-uwsgi-socket", {"ALLOWED_IPS": "10.0.0.0/8"}, "-f shared/compose/allow-list.yaml"),
        ("single-container", {"ALLOWED_IPS": "10.0.0.0/8"},
         "-f stacks/single-container/compose.allow-list.yaml"),
        ("nginx-gunicorn-gevent", {"LOG_FORMAT": "json"},
         "-f stacks/nginx-gunicorn-gevent/compose.json-logs.yaml"),
        ("nginx-uwsgi-tcp", {"LOG_FORMAT": "text"}, ""),
    ],
)  # fmt: skip
def test_make_gets_each_features_overlays_for_the_stack(stack, variables, overlays):
    result = app_env(stack, **variables)
    assert result.returncode == 0, result.stderr
    assert f"export FEATURE_OVERLAYS={shlex.quote(overlays)}" in result.stdout.splitlines()


def test_overlays_lists_the_files_one_per_line_for_lint():
    env = {k: v for k, v in os.environ.items() if k not in ("APP", "TLS", "ACME", "METRICS")}
    result = subprocess.run([sys.executable, str(ROOT / "scripts/app.py"), "overlays",
                             "single-container"], env={**env, "TLS": "1", "METRICS": "1"},
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.stdout.splitlines() == [
        "stacks/single-container/compose.tls.yaml",
        "shared/compose/metrics.yaml",
        "stacks/single-container/compose.metrics.yaml",
    ]


@pytest.mark.parametrize(
    ("stack", "variables", "message"),
    [
        ("flask-dev", {"TLS": "1"}, "flask-dev has no nginx to terminate TLS"),
        ("single-container", {"ACME": "1"}, "ACME=1 needs a stack with an nginx service"),
        ("flask-dev", {"METRICS": "1"}, "flask-dev is for development: METRICS=1 works"),
        ("nginx-uwsgi-tcp", {"METRICS": "yes"}, "METRICS='yes' must be 1 (on) or 0"),
        ("flask-dev", {"ALLOWED_IPS": "10.0.0.0/8"}, "ALLOWED_IPS works with the nginx stacks"),
        ("flask-dev", {"LOG_FORMAT": "json"}, "LOG_FORMAT=json works with the nginx stacks"),
        ("nginx-uwsgi-tcp", {"LOG_FORMAT": "yaml"}, "LOG_FORMAT='yaml' must be text"),
    ],
)
def test_a_feature_the_stack_cannot_take_exits_2_with_what_works(stack, variables, message):
    result = app_env(stack, **variables)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stdout == ""


def test_secret_key_is_made_once_and_kept(tmp_path):
    key = apps.ensure_secret_key(tmp_path / "secrets")
    first = key.read_text()
    assert len(first.strip()) >= 48 and oct(key.parent.stat().st_mode)[-3:] == "700"
    apps.ensure_secret_key(tmp_path / "secrets")
    assert key.read_text() == first


# --- APP_ENV: the app's own settings -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("DEBUG=0\nnot a setting\n", "line 2: 'not a setting' is not KEY=VALUE"),
        ("2FA=on\n", "line 1: '2FA=on' is not KEY=VALUE"),
        ("MY KEY=1\n", "is not KEY=VALUE"),
        ("export DEBUG=0\n", "line 1: 'export DEBUG=0': drop 'export '"),
        ('TITLE="Shop"\n', "line 1: TITLE's value is in quotes"),
        ("# mine\nPROXY_COUNT=2\n", "line 2: PROXY_COUNT is set by the stack itself"),
        ("APP_MODULE=shop:app\n", "APP_MODULE is set by the stack itself"),
        ("SECRET_KEY=dev\n", "SECRET_KEY comes from the secret file .*secret_key"),
        ("DB_PASSWORD_FILE=/x\n", "DB_PASSWORD_FILE comes from the secret file .*db_password"),
        ("A=1\n\nA=2\n", "line 3: A is set again \\(first on line 1\\)"),
    ],
)
def test_a_bad_app_env_line_is_named_with_the_fix(project, tmp_path, text, message):
    env_file = tmp_path / "shop.env"
    env_file.write_text(text)
    with pytest.raises(apps.AppError, match=message):
        apps.from_settings(
            settings(project, APP_ENV=str(env_file), SECRETS_AS_ENV="secret_key db_password")
        )


def test_app_secrets_are_made_once_each_secret_key_first(project, tmp_path):
    app = apps.from_settings(settings(project, APP_SECRETS="db_password  api_token db_password"))
    assert app.secret_names == ("secret_key", "db_password", "api_token")
    assert app.compose_env()["APP_SECRETS"] == "secret_key db_password api_token"
    (tmp_path / "s").mkdir()
    (tmp_path / "s/db_password").write_text("mine\n")  # a value of yours is never overwritten
    made = apps.ensure_secrets(tmp_path / "s", app.secret_names)
    assert [p.name for p in made] == list(app.secret_names)
    assert (tmp_path / "s/db_password").read_text() == "mine\n"
    assert len((tmp_path / "s/api_token").read_text().strip()) >= 48


APP_ENV_SH = ROOT / "shared/docker/app-env.sh"


def app_env_sh(text: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """app-env.sh as the containers run it, printing three variables after it."""
    (tmp_path / "app.env").write_text(text)
    return subprocess.run(
        ["sh", str(APP_ENV_SH), "sh", "-c", 'printf "[%s]" "$NOTE" "$EMPTY" "$URL"'],
        env={"PATH": os.environ["PATH"], "APP_ENV_FILE": str(tmp_path / "app.env"), **env},
        cwd=tmp_path,
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip


def test_app_env_sh_exports_each_line_as_written(tmp_path):
    result = app_env_sh('# c\n\nNOTE=it\'s "$HOME" `x` # kept\nEMPTY=\nURL=a=b', tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '[it\'s "$HOME" `x` # kept][][a=b]'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NOTE=1\nnot a setting\n", "line 2 of APP_ENV is not KEY=VALUE"),
        ("$(touch x)=1\n", "line 1 of APP_ENV is not KEY=VALUE"),
        ("PROXY_COUNT=2\n", "APP_ENV sets PROXY_COUNT (line 1), which is set already"),
    ],
)
def test_app_env_sh_refuses_what_cannot_work(tmp_path, text, message):
    result = app_env_sh(text, tmp_path, PROXY_COUNT="1")
    assert result.returncode == 78 and message in result.stderr, result.stderr
    assert result.stdout == "" and not (tmp_path / "x").exists()


def test_app_env_values_are_taken_as_written(project, tmp_path):
    env_file = tmp_path / "shop.env"
    env_file.write_text('# comment\n\nNOTE=it\'s "$HOME" # kept\nEMPTY=\nURL=a=b\n')
    app = apps.from_settings(settings(project, APP_ENV=str(env_file)))
    assert app.compose_env()["APP_ENV"] == str(env_file)
    assert apps.read_env_file(env_file, "x", {}) == {
        "NOTE": 'it\'s "$HOME" # kept',
        "EMPTY": "",
        "URL": "a=b",
    }
    assert apps.from_settings(settings(project)).compose_env()["APP_ENV"] == "/dev/null"


def test_a_missing_app_env_exits_2_with_the_message(project, tmp_path):
    env = {**os.environ, **settings(project), "APP_ENV": f"{tmp_path}/nope.env"}
    result = subprocess.run([sys.executable, str(ROOT / "scripts/app.py"), "env", "x"],
                            env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert f"APP_ENV='{tmp_path}/nope.env': no such file" in result.stderr


def test_stack_keys_are_every_variable_the_stacks_set_in_app_containers():
    """STACK_KEYS (what APP_ENV may not set) holds every environment key that a compose file
    sets in a container running the app, and every ENV of the app image."""
    from ruamel.yaml import YAML

    def environment(path: Path, service: dict) -> set[str]:
        """A service's keys, and those of the service it extends from another file (the
        single-container overlays apply nginx's to `app`)."""
        keys = set(service.get("environment") or {})
        extends = service.get("extends") or {}
        if isinstance(extends, dict) and "file" in extends:
            other = path.parent / extends["file"]
            base = (YAML().load(other.read_text()).get("services") or {})[extends["service"]]
            keys |= environment(other, base)
        return keys

    found = set()
    for path in [*ROOT.glob("stacks/*/compose*.yaml"), *ROOT.glob("shared/compose/*.yaml")]:
        services = YAML().load(path.read_text()).get("services") or {}
        for name, service in services.items():
            if name.startswith(("app", "release", "uwsgi-app")):
                found.update(environment(path, service))
    dockerfile = (ROOT / "shared/docker/Dockerfile").read_text()
    env_block = dockerfile.split("\nENV APP_MODULE", 1)[1].split("\n\n", 1)[0]
    found.update(["APP_MODULE", *re.findall(r"^\s+([A-Z_]+)=", env_block, re.MULTILINE)])
    found -= {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}  # the app may set these as it likes
    assert found <= apps.STACK_KEYS, sorted(found - apps.STACK_KEYS)
    assert {"PROXY_COUNT", "FLASK_APP", "ALLOWED_IPS", "PATH"} <= found


# --- APP_STATIC in the image (shared/nginx/static-folder.py) ------------------------------

STATIC_FOLDER = ROOT / "shared/nginx/static-folder.py"


def static_folder(cwd: Path, setting: str, dest: Path) -> subprocess.CompletedProcess:
    """static-folder.py as nginx's image build runs it; nginx's include goes to DEST.conf."""
    return subprocess.run(
        [sys.executable, str(STATIC_FOLDER), setting, str(dest), f"{dest}.conf"], cwd=cwd,
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_app_static_forms_all_settings_accept(project):
    for form in ("shop/static", "shop:static", "flask:static", ""):
        assert apps.from_settings(settings(project, APP_STATIC=form)).static == form


def test_static_folder_copies_a_project_folder_or_an_installed_packages(project, tmp_path):
    ours = static_folder(project, "shop/static", tmp_path / "ours")
    assert ours.returncode == 0, ours.stderr
    assert (tmp_path / "ours/site.css").read_text() == "body {}\n"
    assert "include snippets/static-files.conf;" in (tmp_path / "ours.conf").read_text()
    # an installed package's folder, found through the import system: pytest's own package
    # has none, so a package of this venv that ships one: Flask's own debugger assets
    werkzeug = static_folder(tmp_path, "werkzeug.debug:shared", tmp_path / "pkg")
    assert werkzeug.returncode == 0, werkzeug.stderr
    assert (tmp_path / "pkg/debugger.js").is_file() and "files from" in werkzeug.stdout
    empty = static_folder(project, "", tmp_path / "none")  # the app serves /static/ itself
    assert empty.returncode == 0 and not any((tmp_path / "none").iterdir())
    assert "include" not in (tmp_path / "none.conf").read_text()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("static", "no folder .*/static in the app image.*Found: shop/static"),
        ("nosuchpkg:static", "'nosuchpkg' is not an installed package"),
        ("werkzeug:nothing", "no folder .*werkzeug/nothing.* Found: .*werkzeug:debug, "),
    ],
)
def test_static_folder_says_what_to_fix(project, tmp_path, setting, message):
    result = static_folder(project, setting, tmp_path / "out")
    assert result.returncode == 1 and re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


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
    (project / "shop/named.py").write_text(
        "from shop import create_app as make\n\n\ndef create_app(name, *, flag):\n"
        '    assert (name, flag) == ("it\'s", \'say "hi"\'), (name, flag)\n'
        "    return make()\n"
    )
    quoted = """shop.named:create_app("it's", flag='say "hi"')"""
    both = release(project, APP_MODULE=quoted, HEALTH_PATH="/up")
    assert both.returncode == 0, both.stderr


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
    assert "- ./nginx/tls.sh:/docker-entrypoint.d/45-tls.sh:ro" in compose
    assert "tls.yaml" in (tmp_path / "d/README.md").read_text()


def test_export_with_metrics_brings_prometheus_and_counts_by_default(project, tmp_path):
    dest = tmp_path / "d"
    job = export.export("load-balanced-pair", str(dest), False, False, False, settings(project),
                        metrics=True)  # fmt: skip
    assert [p.name for p in job.overlays] == ["metrics.yaml", "compose.metrics.yaml"]
    compose = (dest / "compose.yaml").read_text()
    # x-app's merge keys and app2's alias resolved, as Compose resolves them
    services = YAML(typ="safe", pure=True).load(compose)["services"]
    for name, service in services.items():  # app1, app2: not the release step
        counts = name in ("app1", "app2")
        assert (service.get("environment", {}).get("METRICS") == 1) == counts, name
        mount = "./metrics/uwsgi.ini:/etc/uwsgi/metrics.ini:ro"
        assert (mount in service.get("volumes", [])) == counts, name
    assert "./prometheus/prometheus-targets.yml:/etc/prometheus/app-targets.yml:ro" in compose
    for name in ("prometheus.yml", "alerts.yml"):
        assert f"./prometheus/{name}:/etc/prometheus/{name}:ro" in compose
        assert (dest / "prometheus" / name).is_file(), name
    assert "app1:9102" in (dest / "prometheus/prometheus-targets.yml").read_text()
    for name in ("flask_stacks_metrics.py", "uwsgi.ini", "nginx.conf"):
        assert (dest / "metrics" / name).is_file(), name
    assert not (dest / "metrics/gunicorn.conf.py").exists()  # the uWSGI stack's parts only


def exported(dest: Path) -> dict[str, int]:
    """The files an export wrote besides the app's and the secret's, with their line counts."""
    return {
        str(path.relative_to(dest)): len(path.read_text().splitlines())
        for path in sorted(dest.rglob("*"))
        if path.is_file() and path.relative_to(dest).parts[0] not in ("app", "secrets")
    }


# `make export STACK=nginx-uwsgi-socket` with nothing switched on, besides the app: what a user
# reads before running it. Lower it as features move into overlays of their own.
EXPORT_LINES = 855


def test_an_export_with_nothing_on_stays_small(project, tmp_path):
    export.export("nginx-uwsgi-socket", str(tmp_path / "d"), False, False, False, settings(project))
    files = exported(tmp_path / "d")
    assert sum(files.values()) <= EXPORT_LINES, files
    assert not any(name.startswith(("metrics/", "prometheus/")) for name in files), files
    text = "".join((tmp_path / "d" / name).read_text() for name in files)
    assert "ALLOWED_IPS" not in text and "allowed-ips" not in text  # the allow-list overlay's
    assert "ssl_" not in text and "tls.sh" not in text  # the TLS overlay's
    assert "flask_stacks_logging" not in text and "log_format json" not in text  # JSON logs'
    # make's and the tests' settings: nothing in a folder run by `docker compose` sets them
    settings_text = "".join(
        (tmp_path / "d" / n).read_text() for n in ("compose.yaml", ".env.example")
    )
    assert not re.search(r"APP_ENV_SHA256|FAULT_ROUTES|FEATURE_PACKAGES", settings_text)


def test_every_line_of_the_env_example_uncommented_changes_nothing(project, tmp_path):
    """.env.example's lines are the defaults: a .env of all of them, uncommented, with their
    whys after the value, is read by Compose exactly as no .env at all (its own parser)."""
    dest = tmp_path / "d"
    export.export("nginx-uwsgi-socket", str(dest), False, False, False,
                  settings(project, APP_RELEASE_CMD=""))  # fmt: skip

    def config() -> str:
        return subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=dest,
                              capture_output=True, text=True, check=True).stdout  # fmt: skip

    plain = config()
    lines = (dest / ".env.example").read_text().splitlines()
    settings_lines = [line[2:] for line in lines if re.match(r"# [A-Z0-9_]+=", line)]
    assert len(settings_lines) > 10 and any(line.endswith("=") for line in settings_lines)
    (dest / ".env").write_text("\n".join(settings_lines) + "\n")
    assert config() == plain


# each overlay's export: the plain one plus only that overlay's own files
OVERLAY_FILES = {
    "metrics": (
        {"metrics": True},
        ["metrics/flask_stacks_metrics.py", "metrics/nginx.conf", "metrics/uwsgi.ini",
         "prometheus/alerts.yml", "prometheus/app-targets.yml", "prometheus/prometheus.yml"],
    ),
    "allow-list": ({"allowed_ips": "10.0.0.0/8;192.0.2.7"}, ["nginx/allowed-ips.sh"]),
    "tls": ({"tls": True}, ["nginx/tls-redirect.conf", "nginx/tls.conf", "nginx/tls.sh"]),
    "json-logs": (
        {"LOG_FORMAT": "json"},
        ["json-logs/access-log.conf", "json-logs/flask_stacks_logging.py", "json-logs/uwsgi.ini"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("overlay", OVERLAY_FILES)
def test_an_overlay_adds_only_its_own_files(project, tmp_path, overlay):
    """An overlay's export is the plain one plus its own files; nothing else of the plain
    export changes but compose.yaml, .env.example and README.md."""
    options, own_files = OVERLAY_FILES[overlay]
    plain, on = tmp_path / "plain", tmp_path / "on"
    export.export("nginx-uwsgi-socket", str(plain), False, False, False, settings(project))
    env = settings(project, **{k: v for k, v in options.items() if k.isupper()})
    options = {k: v for k, v in options.items() if not k.isupper()}
    options = {"tls": False, "acme": False, "force": False, "env": env, **options}
    export.export("nginx-uwsgi-socket", str(on), **options)
    before, after = exported(plain), exported(on)
    assert sorted(set(after) - set(before)) == own_files
    assert set(before) <= set(after)
    changed = {name for name in before if (plain / name).read_text() != (on / name).read_text()}
    assert changed <= {"compose.yaml", ".env.example", "README.md"}, changed


def test_an_allow_list_export_keeps_the_list_as_its_default(project, tmp_path):
    """ALLOWED_IPS at export time is the exported list's default (.env can change it); a value
    that is no list of addresses is refused before anything is written."""
    dest = tmp_path / "d"
    export.export("nginx-uwsgi-tcp", str(dest), False, False, False, settings(project),
                  allowed_ips="10.0.0.0/8; 192.0.2.7")  # fmt: skip
    compose = (dest / "compose.yaml").read_text()
    assert "ALLOWED_IPS: ${ALLOWED_IPS:-10.0.0.0/8; 192.0.2.7}" in compose, compose
    assert "- ./nginx/allowed-ips.sh:/docker-entrypoint.d/40-allowed-ips.sh:ro" in compose
    with pytest.raises(export.ExportError, match="only addresses and CIDRs"):
        export.export("nginx-uwsgi-tcp", str(tmp_path / "e"), False, False, False,
                      settings(project), allowed_ips="10.0.0.1}")  # fmt: skip
    assert not (tmp_path / "e").exists()
    with pytest.raises(export.ExportError, match="ALLOWED_IPS works with the nginx stacks"):
        export.export("flask-dev", str(tmp_path / "f"), False, False, False, settings(project),
                      allowed_ips="10.0.0.1")  # fmt: skip


def test_export_with_app_env_copies_it_and_lists_only_its_keys(project, tmp_path):
    env_file = tmp_path / "shop.env"
    env_file.write_text("DATABASE_URL=postgresql://shop@db/shop\nFEATURE_X=on\n")
    dest = tmp_path / "d"
    export.export("nginx-uwsgi-tcp", str(dest), False, False, False,
                  settings(project, APP_ENV=str(env_file)))  # fmt: skip
    compose = (dest / "compose.yaml").read_text()
    mount = "- ${APP_ENV:-./app.env}:/opt/flask-stacks/app.env:ro"
    assert compose.count(mount) == 2  # release, app
    assert str(env_file) not in compose
    assert (dest / "app.env").read_text() == env_file.read_text()
    example = (dest / "app.env.example").read_text()
    assert "DATABASE_URL=\nFEATURE_X=\n" in example and "postgresql" not in example
    assert "app.env" in (dest / ".gitignore").read_text().split()
    plain = tmp_path / "plain"
    export.export("nginx-uwsgi-tcp", str(plain), False, False, False, settings(project))
    plain_compose = (plain / "compose.yaml").read_text()
    assert "${APP_ENV:-/dev/null}:/opt/flask-stacks/app.env:ro" in plain_compose
    assert not (plain / "app.env").exists()


def test_export_with_metrics_refuses_flask_dev(project, tmp_path):
    with pytest.raises(export.ExportError, match="METRICS=1 works with the nginx stacks"):
        export.export("flask-dev", str(tmp_path / "d"), False, False, False, settings(project),
                      metrics=True)  # fmt: skip


def test_an_overlays_packages_reach_the_image_only_when_it_is_on(project, tmp_path):
    """LOG_FORMAT=json's and METRICS=1's packages (their folders' requirements.txt) are the app
    image's FEATURE_PACKAGES when on, and nothing when off: in `make up` and in an export."""
    for env, wanted in (
        ({}, ""),
        ({"LOG_FORMAT": "json"}, "python-json-logger=="),
        ({"METRICS": "1"}, "prometheus-client=="),
    ):
        app = apps.from_settings(settings(project, **env))
        packages = app.compose_env()["APP_FEATURE_PACKAGES"]
        assert packages.startswith(wanted) if wanted else packages == "", (env, packages)
        assert len(packages.split()) == len(env), packages
    dockerfile = (ROOT / "shared/docker/Dockerfile").read_text()
    assert "prometheus" not in dockerfile and "json-logger" not in dockerfile
    export.export("nginx-uwsgi-tcp", str(tmp_path / "m"), False, False, False, settings(project),
                  metrics=True)  # fmt: skip
    compose = (tmp_path / "m/compose.yaml").read_text()
    assert re.search(r"FEATURE_PACKAGES: \$\{APP_FEATURE_PACKAGES:-prometheus-client==[\d.]+\}",
                     compose), compose  # fmt: skip
