#!/usr/bin/env python3
"""The release step: each stack's `release` service, once per `up`, before the app servers.

1. APP_RELEASE_CMD, if set (e.g. `flask --app pkg db upgrade`), through `sh -c`.
2. APP_MODULE loaded as every server loads it (Gunicorn's loader): a wrong name stops here.
3. HEALTH_PATH asked of the loaded app (Werkzeug's test client): not 2xx stops here.
"""

import os
import subprocess
import sys
import traceback

from gunicorn.errors import AppImportError
from gunicorn.util import import_app

FORMS = "'module:variable' (e.g. wsgi:app) or 'module:factory()' (e.g. 'myapp:create_app()')"


def main() -> int:
    command = os.environ.get("APP_RELEASE_CMD", "").strip()
    if command:
        print(f"release: running APP_RELEASE_CMD: {command}", flush=True)
        code = subprocess.call(["sh", "-c", command])  # noqa: S603, S607 - the operator's own command
        if code:
            print(f"release: APP_RELEASE_CMD failed (exit {code}): {command}", file=sys.stderr)
            return code
    module = os.environ.get("APP_MODULE", "")
    sys.path.insert(0, os.getcwd())  # the app's folder, as the servers see it
    try:
        app = import_app(module)
    except (AppImportError, ImportError) as error:  # no such module, attribute or factory
        print(
            f"release: APP_MODULE={module!r} does not load: {error}\n"
            f"  APP_MODULE names your WSGI app in your APP folder (/app here) as {FORMS}.",
            file=sys.stderr,
        )
        return 3
    except Exception:  # the app's own code failed while loading: its traceback is the news
        print(f"release: loading APP_MODULE={module!r} raised:", file=sys.stderr)
        traceback.print_exc()
        return 3
    if not callable(app):
        print(
            f"release: APP_MODULE={module!r} is {type(app).__name__}, not a WSGI app",
            file=sys.stderr,
        )
        return 3
    print(f"release: APP_MODULE={module!r} loads: {type(app).__module__}.{type(app).__name__}")
    return check_health(app)


def check_health(app) -> int:
    path = os.environ.get("HEALTH_PATH") or "/healthz"
    try:
        from werkzeug.test import Client  # every Flask app has Werkzeug
    except ImportError:
        print("release: no Werkzeug to ask HEALTH_PATH with; the healthchecks will")
        return 0
    response = Client(app).get(path, headers={"Host": "localhost"})
    if not 200 <= response.status_code < 300:
        print(
            f"release: HEALTH_PATH={path} answered {response.status}, not 2xx (asked of the app "
            "itself, before any server started). Name a cheap route that answers 2xx on its "
            "own (no redirect), e.g. HEALTH_PATH=/healthz, or fix the route.",
            file=sys.stderr,
        )
        return 4
    print(f"release: HEALTH_PATH={path} answers {response.status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
