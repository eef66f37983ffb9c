"""The facts about a stack, read from its files (no container needed), answered here once for
the tools (`make up`, `make export`, `make swarm-up`) and the tests alike: which stacks exist,
whether nginx is in front and as a service of its own, which app server runs, and which compose
files an overlay (TLS, ACME, ALLOWED_IPS, LOG_FORMAT=json, METRICS) adds to it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACKS = sorted(p.parent.name for p in ROOT.glob("stacks/*/compose.yaml"))


def nginx_service(stack: str) -> bool:
    """Whether the stack runs nginx as a service of its own (apart from the app server)."""
    return "nginx" in own_services(stack)


def nginx_in_front(stack: str) -> bool:
    """Whether nginx answers the stack's clients, read from its files (no container needed): an
    `nginx` service in its compose.yaml, or an image built from a Dockerfile of its own that
    installs nginx's config (single-container)."""
    if nginx_service(stack):
        return True
    compose = (ROOT / "stacks" / stack / "compose.yaml").read_text()
    dockerfile = re.search(r"^\s+dockerfile:\s*(\S+)", compose, flags=re.MULTILINE)
    if not dockerfile:
        return False
    recipe = ROOT / dockerfile[1]  # relative to the context, the repository root
    return recipe.is_file() and "/etc/nginx/" in recipe.read_text()


def own_services(stack: str) -> list[str]:
    """The services a stack's compose.yaml defines itself (not those of the files it includes)."""
    compose = (ROOT / "stacks" / stack / "compose.yaml").read_text()
    block = re.search(r"^services:\n(.*?)(?=^\S|\Z)", compose, flags=re.MULTILINE | re.DOTALL)
    return re.findall(r"^  ([A-Za-z0-9_.-]+):", block[1] if block else "", flags=re.MULTILINE)


def front_service(stack: str) -> str:
    """The service the stack's clients talk to: nginx, or the stack's one service (flask-dev's
    development server, single-container's nginx and uWSGI in one)."""
    if nginx_service(stack):
        return "nginx"
    own = own_services(stack)
    if len(own) != 1:
        raise ValueError(f"{stack}: no nginx service and not one service but {own}")
    return own[0]


def nginx_runs_in(stack: str) -> str | None:
    """The service nginx runs in (its own, or single-container's one), None without nginx."""
    return front_service(stack) if nginx_in_front(stack) else None


def app_server_of(stack: str) -> str:
    """The stack's app server, from the config file it ships: "uwsgi", "gunicorn" or "flask"."""
    folder = ROOT / "stacks" / stack
    if (folder / "uwsgi.ini").exists():
        return "uwsgi"
    if (folder / "gunicorn.conf.py").exists():
        return "gunicorn"
    return "flask"


def publish_var(stack: str) -> str:
    """The env var that sets a stack's published address, e.g. NGINX_UWSGI_SOCKET_PUBLISH."""
    return stack.upper().replace("-", "_") + "_PUBLISH"


def nginx_overlay(stack: str, feature: str) -> Path | None:
    """The compose file that switches an nginx feature on for a stack (`tls`, `allow-list`): its
    own compose.<feature>.yaml (single-container, whose nginx runs in `app`), else the shared one
    where nginx is a service of its own; None for a stack without nginx."""
    own = ROOT / "stacks" / stack / f"compose.{feature}.yaml"
    if own.exists():
        return own
    return ROOT / f"shared/compose/{feature}.yaml" if nginx_service(stack) else None


def tls_overlay(stack: str) -> Path | None:
    """The compose file that turns HTTPS on for a stack; None for a stack without nginx."""
    return nginx_overlay(stack, "tls")


def metrics_overlays(stack: str) -> tuple[Path, ...]:
    """The compose files METRICS=1 adds to `stack`, for make and the tests alike: the
    shared overlay (Prometheus, the exporter), then the stack's own compose.metrics.yaml (the
    metrics files in its app servers and nginx)."""
    own = ROOT / "stacks" / stack / "compose.metrics.yaml"
    return (ROOT / "shared" / "compose" / "metrics.yaml", *([own] if own.exists() else []))


class OverlayError(ValueError):
    """A feature that cannot be switched on for a stack; the message says what works."""


def feature_overlays(
    stack: str,
    *,
    tls: bool = False,
    acme: bool = False,
    allow_list: bool = False,
    json_logs: bool = False,
    metrics: bool = False,
) -> list[Path]:
    """The compose files that switch TLS, ACME, the allow-list (ALLOWED_IPS), JSON logs
    (LOG_FORMAT=json) and METRICS on for `stack`, in the order they apply (TLS, certbot on top of
    it, the allow-list, the logs, then METRICS'), for `make` and `make export` alike."""
    overlays = []
    if tls or acme:
        tls_file = tls_overlay(stack)
        if tls_file is None:
            raise OverlayError(
                f"{stack} has no nginx to terminate TLS; TLS=1 works with the nginx stacks"
            )
        overlays.append(tls_file)
    if acme:
        if not nginx_service(stack):
            raise OverlayError(
                f"ACME=1 needs a stack with an nginx service; for {stack} mount certbot's "
                "files (docs/https.md)"
            )
        overlays.append(ROOT / "shared/compose/acme.yaml")
    if allow_list:
        allow_file = nginx_overlay(stack, "allow-list")
        if allow_file is None:
            raise OverlayError(
                f"{stack} has no nginx to hold an allow-list; ALLOWED_IPS works with the nginx "
                "stacks"
            )
        overlays.append(allow_file)
    if json_logs:
        logs_file = ROOT / "stacks" / stack / "compose.json-logs.yaml"
        if not logs_file.exists():
            raise OverlayError(
                f"{stack} keeps its server's own text log; LOG_FORMAT=json works with the nginx "
                "stacks"
            )
        overlays.append(logs_file)
    if metrics:
        if not nginx_in_front(stack):
            raise OverlayError(f"{stack} is for development: METRICS=1 works with the nginx stacks")
        overlays.extend(metrics_overlays(stack))
    return overlays


def images_env() -> dict[str, str]:
    """Base images chosen by scripts/setup.sh (.images.env), unless the caller set them."""
    env = {}
    path = ROOT / ".images.env"
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key not in os.environ:
                env[key] = value
    return env


def leave_swarm() -> None:
    """Leave this node's swarm and remove the bridge `swarm init` made (`leave` keeps it).
    Careful: on Docker 20.10 leaving a swarm also drops the embedded DNS records of the
    containers of every compose project running on this engine (a shared alias such as the
    pair's `app` then resolves to nothing, and later to the recreated containers only), so
    leave only when no other project runs, or recreate them after."""
    subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, check=False)
    subprocess.run(["docker", "network", "rm", "docker_gwbridge"], capture_output=True, check=False)
