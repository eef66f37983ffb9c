"""Your app's settings reach every server as data, never pasted into code or config text:
APP_MODULE, a factory called with string arguments holding quotes of both kinds; APP_ENV, a
file of the app's own variables (one value with quotes, a $ and a #, taken as written);
APP_SECRETS, a second secret (api_token) as the file /run/secrets/api_token named by
API_TOKEN_FILE (and as API_TOKEN, SECRETS_AS_ENV opting in), in no `docker inspect`; and
APP_STATIC, a folder found in the app's image the way the app finds its package. Under uWSGI
(base.ini's loader), Gunicorn (gunicorn.conf.py's `wsgi_app`), Flask's own server
(`FLASK_APP`), the release step before each of them and `make run`'s one-off container, the
app gets the first two exactly as written; nginx serves the package's static folder, with a
year's cache for a file whose name carries its hash, or passes /static/ to the app when
APP_STATIC is empty.

The app is a factory written here for the purpose (this is about the servers' loaders, the
containers' environment and nginx's image, not about an app): it refuses to build with any
other arguments or settings, so a server that mangled them never turns healthy, and /args
shows what it got.
"""

from __future__ import annotations

import hashlib
import shutil
import time

import pytest
import requests

from harness.compose import ROOT, app_server_of, build_images, start_stack, stop_stack
from stackctl import apps

# each loader once: uWSGI's (every uWSGI stack shares base.ini), Gunicorn's, Flask's; with the
# APP_STATIC each runs with: the package's folder served by nginx, or by the app itself
SERVERS = {
    "nginx-uwsgi-socket": "quoting:static",
    "nginx-gunicorn-gevent": "",  # empty: nginx passes /static/ to the app
    "flask-dev": "quoting:static",  # no nginx: Flask serves it
}
GREETING = "it's"
WHO = 'say "hi"'
# both kinds of quote, each inside the other kind, as a user writes them on the command line
MODULE = f"""quoting:create_app("{GREETING}", who='{WHO}')"""
NOTE = """it's "$HOME" # kept"""  # what a shell or Compose's default env_file format would change
FACTORY = f'''"""A factory that takes arguments, as real apps' create_app(config_name) does."""

import hashlib
import os

from flask import Flask


def create_app(greeting, *, who):
    got = (greeting, who, os.environ.get("QUOTING_NOTE"))
    if got != ({GREETING!r}, {WHO!r}, {NOTE!r}):
        raise SystemExit(f"create_app got {{got!r}}")
    with open(os.environ["API_TOKEN_FILE"]) as file:  # the official images' *_FILE convention
        token = file.read()
    if os.environ.get("API_TOKEN") != token.strip():  # SECRETS_AS_ENV's copy, for apps that
        raise SystemExit("API_TOKEN is not the file's")  # read only their environment
    answer = dict(zip(("greeting", "who", "note"), got))
    answer["api_token_sha256"] = hashlib.sha256(token.encode()).hexdigest()
    app = Flask(__name__)  # its static folder: quoting/static, at /static/
    app.add_url_rule("/args", "args", lambda: answer)
    return app
'''
STATIC = {"site.css": "body {}\n", "site.3f2a9c1b.css": "h1 {}\n"}  # the second: fingerprinted


@pytest.fixture(scope="module")
def settings(images, tmp_path_factory) -> dict[str, str]:
    """The project's settings (the APP= variables), its image built once for every server."""
    folder = tmp_path_factory.mktemp("quoting")
    folder.chmod(0o755)  # as a project folder is: flask-dev's app user reads it through a mount
    (folder / "quoting/static").mkdir(parents=True)
    (folder / "quoting/__init__.py").write_text(FACTORY)
    for name, text in STATIC.items():
        (folder / "quoting/static" / name).write_text(text)
    shutil.copy(ROOT / "shared/app/requirements.txt", folder)  # Flask, pinned as the demo's
    (folder / "instance").mkdir()  # flask-dev mounts the folder; APP_DATA's mount point
    env_file = folder.parent / "quoting.env"  # beside the project, as a deploy's settings are
    env_file.write_text(f"# the app's own settings\nQUOTING_NOTE={NOTE}\n")
    values = {
        "APP": str(folder),
        "APP_MODULE": MODULE,
        "APP_ENV": str(env_file),
        "HEALTH_PATH": "/args",
        "APP_SECRETS": "secret_key api_token",
        "SECRETS_AS_ENV": "api_token",
    }
    build_images(list(SERVERS), {**values, "APP_STATIC": "quoting:static"})
    return values


@pytest.mark.parametrize("server", SERVERS)
def test_app_module_and_app_env_reach_the_server_as_written(settings, server):
    stack = start_stack(server, env={**settings, "APP_STATIC": SERVERS[server]})
    try:
        answer = requests.get(stack.base_url() + "/args", timeout=10)
        assert answer.status_code == 200, f"{server}: /args answered {answer.status_code}"
        app = apps.from_settings({**settings, "APP_STATIC": SERVERS[server]})
        token = (app.secrets_dir / "api_token").read_bytes()  # made at random, kept
        expected = {"greeting": GREETING, "who": WHO, "note": NOTE,
                    "api_token_sha256": hashlib.sha256(token).hexdigest()}  # fmt: skip
        assert answer.json() == expected, f"{server}: {answer.text}"
        for service in [*stack.services(), "release"]:  # the value in no environment listing
            env = stack.inspect(service)["Config"]["Env"]
            assert not any(token.decode().strip() in entry for entry in env), service
        assert app_server_of(server) in stack.logs(*stack.app_services()).lower(), (
            f"{server}: not served by {app_server_of(server)}"
        )
        release = stack.logs("release")
        assert f"APP_MODULE={MODULE!r} loads" in release, f"{server}'s release step: {release}"
        one_off = stack.compose(
            "run", "--rm", "--no-deps", "release", "sh", "-c",
            'printenv QUOTING_NOTE; sha256sum < "$API_TOKEN_FILE"', timeout=120,
        )  # fmt: skip
        note, digest = one_off.stdout.splitlines()  # what `make run` starts has both
        assert note == NOTE, f"{server}: make run's container: {one_off}"
        assert digest.split()[0] == hashlib.sha256(token).hexdigest(), one_off
        check_static_files(stack, SERVERS[server])
    finally:
        stop_stack(stack)


def check_static_files(stack, app_static: str) -> None:
    """Each file of the package's static folder at /static/: from nginx's image, cached an hour
    (a year when its name carries its hash), or, APP_STATIC empty, from the app."""
    for name, text in STATIC.items():
        uri = f"/static/{name}?probe={time.time_ns()}"
        response = requests.get(stack.base_url() + uri, timeout=10)
        assert response.status_code == 200 and response.text == text, f"{uri}: {response}"
        if not stack.behind_nginx:
            continue
        upstream = stack.access_log(uri)["upstream"]
        if not app_static:
            assert upstream, f"{stack.name}: APP_STATIC empty, yet nginx served {uri} itself"
            continue
        assert upstream is None, f"{stack.name}: nginx passed {uri} to {upstream}"
        cache = "max-age=31536000" if "3f2a9c1b" in name else "max-age=3600"
        assert response.headers.get("Cache-Control") == cache, (name, response.headers)
