#!/usr/bin/env python3
"""`make swarm-up` / `make swarm-down`: load-balanced-pair on Docker Swarm, from its own files.

    STACK=load-balanced-pair (the stack with a compose.swarm.yaml)
    scripts/swarm.py up   [--name flask-stacks] [--replicas 3]    build, render, deploy, wait
    scripts/swarm.py down [--name flask-stacks] [--volumes]       remove the stack (--volumes:
                                                                  and its data), and the
                                                                  swarm if `up` created it
    scripts/swarm.py render [--replicas 3]                        print the stack file

The stack file is `docker compose config` of stacks/load-balanced-pair/compose.yaml plus its
compose.swarm.yaml (so `extends`, anchors and variables resolve exactly as under Compose), made
deployable by `docker stack deploy`:
  - every bind-mounted file becomes a Swarm config (a folder: one config per file), named
    after its content, so other nodes get the same files and an edit rolls the services;
  - `tmpfs:` entries become tmpfs mounts (Swarm sets no owner on them: mode 1777);
  - what Swarm does not run is dropped and listed: build, depends_on, restart (deploy has
    restart_policy), security_opt and ulimits (Docker 20.10 services have neither);
  - images (the app's, and nginx's with the app's static files) are tagged by content
    (`flask-stacks/app:<id>`), so a rebuilt app rolls out, and with REGISTRY=host:port pushed
    there for the other nodes to pull.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from stackctl import apps
from stackctl.stacks import ROOT, OverlayError, images_env, leave_swarm

STACK_DIR = ROOT / "stacks" / os.environ.get("STACK", "load-balanced-pair")
FILES = ["-f", str(STACK_DIR / "compose.yaml"), "-f", str(STACK_DIR / "compose.swarm.yaml")]
STATE = ROOT / ".swarm"  # rendered stack files, and a mark when `up` created the swarm
DROPPED = ("build", "depends_on", "restart", "security_opt", "ulimits", "profiles", "pull_policy")
KEPT_TOP = ("services", "networks", "volumes", "secrets")
WAIT_SECONDS = 240


class SwarmError(Exception):
    """A problem with a fix: printed without a traceback."""


def run(*cmd: str, check: bool = True, env: dict | None = None) -> str:
    result = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    if check and result.returncode:
        raise SwarmError(f"`{' '.join(cmd)}` failed:\n{result.stderr.strip()[-2000:]}")
    return result.stdout


def config_name(stack: str, source: Path, data: bytes) -> str:
    """A Swarm config's name: its folder and file, and its content's hash (a config cannot
    change in place: new content is a new config, and the services using it roll)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{source.parent.name}-{source.name}").strip("-")
    digest = hashlib.sha256(data).hexdigest()[:10]
    return f"{stack}_{slug[: 63 - len(stack) - 12]}-{digest}"


def bind_to_configs(stack: str, mount: dict, configs: dict) -> list[dict]:
    """A read-only bind mount as Swarm configs: the file, or each file under the folder."""
    source, target = Path(mount["source"]), mount["target"]
    if not mount.get("read_only"):
        raise SwarmError(f"{source} is mounted writable: Swarm configs are read-only")
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file())
    else:
        files = [source] if source.is_file() else []
    if not files:
        raise SwarmError(f"{source} does not exist or is empty: nothing to ship to the nodes")
    refs = []
    for path in files:
        if "__pycache__" in path.parts:
            continue
        data = path.read_bytes()
        name = config_name(stack, path, data)
        configs[name] = {"name": name, "file": str(path)}
        inside = target if path == source else f"{target}/{path.relative_to(source)}"
        executable = os.access(path, os.X_OK)  # entrypoint.d scripts stay runnable
        refs.append({"source": name, "target": inside, "mode": 0o555 if executable else 0o444})
    return refs


def to_stack_file(rendered: dict, stack: str) -> tuple[dict, set[str]]:
    """`docker compose config --format json` output -> a file `docker stack deploy` accepts,
    and the names of the keys dropped (Swarm does not run them)."""
    out = {key: rendered[key] for key in KEPT_TOP if key in rendered}
    out["version"] = "3.8"
    for network in (out.get("networks") or {}).values():  # Compose's project-wide names: let the
        for key in ("name", "ipam"):  # stack namespace them (<stack>_default, an overlay)
            if network and not network.get("external"):
                network.pop(key, None)
    for volume in (out.get("volumes") or {}).values():  # <stack>_app-data, not the Compose
        if volume and not volume.get("external"):  # project's volume of the same name
            volume.pop("name", None)
    configs: dict[str, dict] = {}
    dropped: set[str] = set()
    for service in out["services"].values():
        for key in DROPPED:
            if service.pop(key, None) is not None:
                dropped.add(key)
        for key in [k for k, v in service.items() if v is None or k.startswith("x-")]:
            service.pop(key)
        mounts, refs = [], []
        for mount in service.pop("volumes", []):
            if mount["type"] == "bind" and mount["source"] == os.devnull:
                continue  # "none" (APP_ENV unset): app-env.sh finds no file and adds nothing
            if mount["type"] == "bind":
                refs += bind_to_configs(stack, mount, configs)
            else:
                mounts.append({k: v for k, v in mount.items() if k != "bind"})
        for entry in service.pop("tmpfs", []):
            mounts.append({"type": "tmpfs", "target": entry.split(":", 1)[0]})
        if mounts:
            service["volumes"] = mounts
        if refs:
            service["configs"] = refs
        for port in service.get("ports", []):
            port.pop("host_ip", None)  # Swarm binds host-mode ports on every interface
            port["published"] = int(port["published"])
        deploy = service.get("deploy", {})
        for key in [k for k, v in deploy.items() if v in ({}, None)]:
            deploy.pop(key)
    if configs:
        out["configs"] = configs
    # only the secrets a service uses (a build secret, e.g. extra_ca, has no place here)
    used = {
        s if isinstance(s, str) else s["source"]
        for v in out["services"].values()
        for s in v.get("secrets", [])
    }
    if out.get("secrets"):
        out["secrets"] = {k: v for k, v in out["secrets"].items() if k in used}
    return out, dropped


def render(replicas: int, stack: str) -> tuple[dict, set[str]]:
    env = {**images_env(), "REPLICAS": str(replicas)}
    # ALLOWED_IPS and LOG_FORMAT=json: their overlays, as `make up` adds them, with their Swarm
    # parts; the others have none, and are refused rather than left out unsaid
    try:
        unsupported = [key for key in ("TLS", "ACME") if os.environ.get(key)]
        unsupported += ["METRICS"] if apps.metrics_on(os.environ) else []
        if unsupported:
            raise SwarmError(
                f"{', '.join(unsupported)}: not deployed to Swarm by swarm-up (its stack file has "
                "no Swarm part for them); unset them, or use `make up` on one host (docs/swarm.md)"
            )
        overlays = apps.requested_overlays(STACK_DIR.name, os.environ, swarm=True)
    except (apps.AppError, OverlayError) as error:
        raise SwarmError(str(error)) from None
    files = [*FILES, *(arg for path in overlays for arg in ("-f", str(path)))]
    rendered = json.loads(run("docker", "compose", *files, "config", "--format", "json", env=env))
    return to_stack_file(rendered, stack)


def swarm_state() -> str:
    return run("docker", "info", "--format", "{{.Swarm.LocalNodeState}}").strip()


def ensure_swarm() -> None:
    state = swarm_state()
    if state == "active":
        manager = run("docker", "info", "--format", "{{.Swarm.ControlAvailable}}").strip()
        if manager != "true":
            raise SwarmError("this node is a Swarm worker: run `make swarm-up` on a manager")
        return
    if state != "inactive":
        raise SwarmError(f"this node's Swarm state is '{state}': fix it, or `docker swarm leave`")
    print("swarm: no swarm here: docker swarm init --advertise-addr 127.0.0.1 (single node;")
    print("       `make swarm-down` leaves it again; other hosts: docs/swarm.md)")
    run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
    STATE.mkdir(exist_ok=True)
    (STATE / "created-swarm").write_text("scripts/swarm.py up ran `docker swarm init`\n")


BUILT = ("flask-stacks/app:latest", "flask-stacks/nginx:latest")  # the images compose.yaml builds


def build_images(registry: str) -> dict[str, str]:
    """Build the app image and nginx's (the app's static files in it), tag each by content;
    with a registry, push them there. Returns image -> the reference the stack file uses."""
    # LOG_FORMAT=json's package in the app image, as `make up` builds it (stackctl/apps.py)
    features = apps.from_settings({"LOG_FORMAT": os.environ.get("LOG_FORMAT", "")})
    env = {**images_env(), "APP_FEATURE_PACKAGES": features.feature_packages}
    run("docker", "compose", "-f", str(STACK_DIR / "compose.yaml"), "build", env=env)
    refs = {}
    for latest in BUILT:
        image_id = run("docker", "image", "inspect", "--format", "{{.Id}}", latest)
        tagged = f"{latest.rsplit(':', 1)[0]}:{image_id.strip().split(':')[-1][:12]}"
        run("docker", "tag", latest, tagged)
        refs[latest] = tagged
        if registry:
            remote = f"{registry.rstrip('/')}/{tagged}"
            run("docker", "tag", tagged, remote)
            print(f"swarm: pushing {remote}")
            run("docker", "push", remote)
            refs[latest] = remote
    return refs


def services(stack: str) -> dict[str, str]:
    """Service name -> "running/desired" for the stack's services."""
    out = run(
        *("docker", "service", "ls", "--filter", f"label=com.docker.stack.namespace={stack}"),
        *("--format", "{{.Name}} {{.Replicas}}"),
    )
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def wait_converged(stack: str, port: int, timeout: float = WAIT_SECONDS) -> None:
    """Every service at its replica count (tasks count once healthy) and nginx answering."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = services(stack)
        # "2/3" or "1/1 (max 1 per node)": running/desired
        counts = [replicas.split()[0].split("/") for replicas in current.values()]
        ready = bool(counts) and all(running == desired for running, desired in counts)
        probe = subprocess.run(
            ["curl", "-fsS", "-o", "/dev/null", "-m", "2", f"http://127.0.0.1:{port}/healthz"],
            capture_output=True,
            check=False,
        )
        if ready and probe.returncode == 0:
            return
        time.sleep(2)
    tasks = run("docker", "stack", "ps", "--no-trunc", stack, check=False)
    raise SwarmError(f"{stack} did not converge within {timeout:.0f} s: {current}\n{tasks}")


def up(args) -> None:
    ensure_swarm()
    apps.ensure_secret_key(apps.SECRETS)  # the app's secret_key, a Swarm secret (made if missing)
    stack_file, dropped = render(args.replicas, args.name)  # first: it checks the settings
    refs = build_images(os.environ.get("REGISTRY", ""))
    for service in stack_file["services"].values():  # the content-tagged (or pushed) images
        service["image"] = refs.get(service["image"], service["image"])
    STATE.mkdir(exist_ok=True)
    path = STATE / f"{args.name}.json"  # JSON is YAML: what was deployed, for reading
    path.write_text(json.dumps(stack_file, indent=2) + "\n")
    resolve = "always" if os.environ.get("REGISTRY") else "never"  # no registry: local images
    print(f"swarm: not run by Swarm, dropped: {', '.join(sorted(dropped))}")
    deploy = ["docker", "stack", "deploy", "--prune", "--resolve-image", resolve]
    run(*deploy, "-c", str(path), args.name)
    port = stack_file["services"]["nginx"]["ports"][0]["published"]
    wait_converged(args.name, port)
    for name, replicas in sorted(services(args.name).items()):
        print(f"swarm: {name} {replicas}")
    print(f"{args.name} is up on Swarm: http://127.0.0.1:{port}/ (stack file: {path})")


def down(args) -> None:
    if swarm_state() == "active" and services(args.name):
        run("docker", "stack", "rm", args.name)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # tasks, then the network, go away asynchronously
            label = f"label=com.docker.stack.namespace={args.name}"
            left = run("docker", "ps", "-aq", "--filter", label)
            nets = run("docker", "network", "ls", "-q", "--filter", label)
            if not left.strip() and not nets.strip():
                break
            time.sleep(1)
        print(f"swarm: {args.name} removed")
    if args.volumes:  # Swarm keeps a stack's volumes (the app's data) after `stack rm`
        label = f"label=com.docker.stack.namespace={args.name}"
        for volume in run("docker", "volume", "ls", "-q", "--filter", label).split():
            run("docker", "volume", "rm", volume)
            print(f"swarm: deleted volume {volume}")
    (STATE / f"{args.name}.json").unlink(missing_ok=True)
    mark = STATE / "created-swarm"
    if mark.exists() and not services_anywhere():
        leave_swarm()
        mark.unlink()
        print("swarm: left the single-node swarm that `make swarm-up` created")
        print("       (Docker 20.10 forgets other compose projects' DNS names on leaving: if one")
        print("       runs on this engine, `make up` it again; docs/swarm.md)")


def services_anywhere() -> bool:
    return bool(run("docker", "service", "ls", "-q", check=False).strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "render"])
    parser.add_argument("--name", default=os.environ.get("SWARM_STACK", "flask-stacks"))
    parser.add_argument("--replicas", default=os.environ.get("REPLICAS", "3"))
    parser.add_argument(
        "--volumes", action="store_true", help="down: also delete the stack's volumes (its data)"
    )
    args = parser.parse_args()
    if not re.fullmatch(r"[1-9][0-9]*", str(args.replicas)):
        print(f"swarm: REPLICAS='{args.replicas}' is not a whole number above 0", file=sys.stderr)
        return 2
    args.replicas = int(args.replicas)
    if not (STACK_DIR / "compose.swarm.yaml").exists():
        print(
            f"swarm: {STACK_DIR.name} has no compose.swarm.yaml; Swarm runs load-balanced-pair",
            file=sys.stderr,
        )
        return 2
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,30}", args.name):
        print(f"swarm: stack name '{args.name}': lower case, digits, - and _", file=sys.stderr)
        return 2
    try:
        if args.command == "up":
            up(args)
        elif args.command == "down":
            down(args)
        else:
            print(json.dumps(render(args.replicas, args.name)[0], indent=2))
    except SwarmError as error:
        print(f"swarm: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
