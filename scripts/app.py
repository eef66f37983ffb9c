#!/usr/bin/env python3
"""Your app behind a stack: what `make up/down/run/test/export APP=...` run first.

    scripts/app.py env STACK       the compose variables for the app the settings name, as
                                   shell `export` lines (make evaluates them); refuses bad
                                   settings with what to fix (exit 2)
    scripts/app.py secrets         make the app's secrets (APP_SECRETS) in secrets/ if missing
    scripts/app.py export STACK DEST [--tls] [--acme] [--metrics] [--force]
                                   a folder that runs STACK alone (stackctl/export.py)
    scripts/app.py k8s STACK DEST [--force]
                                   STACK's Kubernetes manifests for the app, in DEST/STACK.yaml
                                   (stackctl/kubernetes.py)
    scripts/app.py overlays STACK  the compose files TLS, ACME, ALLOWED_IPS, LOG_FORMAT and METRICS
                                   (as set) add to STACK,
                                   one per line (make lint); exit 2 where one does not apply
    scripts/app.py nginx STACK     the service nginx runs in (nginx, or single-container's app);
                                   nothing for a stack without nginx (make lint)
    scripts/app.py diagnose STACK [-f overlay ...]
                                   after a failed `up`: why (the release step's output, each
                                   unhealthy container's last healthcheck answer)

Settings come from the environment (APP, APP_MODULE, APP_STATIC, HEALTH_PATH, APP_DATA,
APP_RELEASE_CMD, APP_SECRETS, SECRETS_AS_ENV, APP_ENV): docs/your-app.md; the services
beside it (DB, QUEUE, WORKER): docs/services.md. The logic:
stackctl/apps.py.
"""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stackctl import apps, stacks  # noqa: E402


def diagnose(app: apps.App, stack: str, overlays: list[str]) -> None:
    """Say why `up` failed, from the containers themselves."""
    secrets_overlay = app.secrets_overlay(stack)
    files = ["-f", f"{apps.ROOT}/stacks/{stack}/compose.yaml", *overlays]
    files += ["-f", str(secrets_overlay)] if secrets_overlay else []
    env = {**os.environ, **app.compose_env(), "COMPOSE_PROJECT_NAME": app.project(stack)}

    def compose(*args: str) -> str:
        run = subprocess.run(
            ["docker", "compose", *files, *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        return run.stdout

    rows = [json.loads(line) for line in compose("ps", "--all", "--format", "json").splitlines()]
    for row in rows:
        if row["Service"] == "release" and row.get("ExitCode"):
            print(f"--- the release step failed (exit {row['ExitCode']}):", file=sys.stderr)
            print(
                compose("logs", "--no-color", "--no-log-prefix", "--tail", "40", "release"),
                file=sys.stderr,
            )
        elif row.get("Health") not in (None, "", "healthy") or row.get("State") != "running":
            if row["Service"] == "release":
                continue
            info = json.loads(
                subprocess.run(
                    ["docker", "inspect", row["ID"]], capture_output=True, text=True, check=False
                ).stdout
                or "[{}]"
            )[0]
            log = (info.get("State", {}).get("Health") or {}).get("Log") or []
            answer = log[-1]["Output"].strip() if log else "(no healthcheck answer yet)"
            print(
                f"--- {row['Service']}: {row.get('State')} {row.get('Health') or ''}; last "
                f"healthcheck (HEALTH_PATH={app.health_path}): {answer}",
                file=sys.stderr,
            )
            print(
                compose("logs", "--no-color", "--no-log-prefix", "--tail", "15", row["Service"]),
                file=sys.stderr,
            )


COMMANDS = ("env", "secrets", "diagnose", "export", "k8s", "overlays", "nginx")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        app = apps.from_settings()
    except apps.AppError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if argv[1] == "secrets":
        for path in apps.ensure_secrets(app.secrets_dir, app.secret_files):
            print(f"secret: {path.relative_to(apps.ROOT)} (kept if it was there; git ignores it)")
        return 0
    if argv[1] == "export":
        from stackctl import export  # ruamel.yaml: in .venv (make export runs it from there)

        stack, dest = (argv[2:4] + ["", ""])[:2]
        try:
            flags = {flag: f"--{flag}" in argv for flag in ("tls", "acme", "force", "metrics")}
            allowed = os.environ.get("ALLOWED_IPS", "")
            job = export.export(stack, dest, allowed_ips=allowed, **flags)
        except export.ExportError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"exported {stack} to {job.dest}: cd there, then `docker compose up --build --wait`")
        print("overlays: " + (", ".join(p.name for p in job.overlays) or "none"))
        return 0
    if argv[1] == "k8s":
        from stackctl import kubernetes  # PyYAML: in .venv (make k8s runs it from there)

        stack, dest = (argv[2:4] + ["", ""])[:2]
        if not dest:
            print("error: DEST= names the folder to write, e.g. DEST=../deploy", file=sys.stderr)
            return 2
        try:  # a feature switched on is refused, never dropped without a word
            on = apps.requested_overlays(stack, os.environ)
        except (stacks.OverlayError, apps.AppError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if on:
            print(f"error: {', '.join(p.name for p in on)}: no Kubernetes manifests yet; unset "
                  "TLS, ACME, ALLOWED_IPS, LOG_FORMAT=json and METRICS for make k8s",
                  file=sys.stderr)  # fmt: skip
            return 2
        try:
            apps.ensure_secrets(app.secrets_dir, app.secret_files)
            target = kubernetes.write(app, stack, Path(dest), force="--force" in argv)
        except apps.AppError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"wrote {target}; then:")
        for step in kubernetes.next_steps(app, stack, target):
            print("  " + shlex.join(step))
        return 0
    if argv[1] == "diagnose":
        diagnose(app, argv[2], argv[3:])
        return 0
    if argv[1] == "nginx":
        stack = argv[2] if len(argv) > 2 else ""
        if stack not in stacks.STACKS:
            print(f"error: STACK={stack!r}: one of {', '.join(stacks.STACKS)}", file=sys.stderr)
            return 2
        print(stacks.nginx_runs_in(stack) or "")
        return 0
    if argv[1] == "overlays":
        try:
            files = apps.requested_overlays(argv[2] if len(argv) > 2 else "", os.environ)
        except (stacks.OverlayError, apps.AppError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for path in files:
            print(path.relative_to(apps.ROOT))
        return 0
    env = app.compose_env()
    if len(argv) > 2:
        try:
            app.check_stack(argv[2])
            overlay = app.secrets_overlay(argv[2])
        except apps.AppError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        env["COMPOSE_PROJECT_NAME"] = app.project(argv[2])
        # APP_SECRETS beyond secret_key: the compose file that mounts them (make adds it)
        env["APP_SECRETS_FILE"] = str(overlay.relative_to(apps.ROOT)) if overlay else ""
        # DB, QUEUE, WORKER: their compose files, as make's -f options (none: empty)
        env["SERVICE_OVERLAYS"] = " ".join(
            f"-f {path.relative_to(apps.ROOT)}" for path in app.service_overlays()
        )
        try:
            features = apps.requested_overlays(argv[2], os.environ)
        except stacks.OverlayError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        env["FEATURE_OVERLAYS"] = " ".join(f"-f {path.relative_to(apps.ROOT)}" for path in features)
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
