"""`make k8s STACK=x DEST=dir [APP=...]`: a stack's Kubernetes manifests (kubernetes/<stack>,
docs/kubernetes.md) rendered for your app, in DEST/<stack>.yaml, ready for `kubectl apply -f`.

The stack's kustomize folder is rendered under an overlay written from the checked settings, as
`make up` passes them to compose: the app's images (built by `make up APP=...`, pushed by you),
HEALTH_PATH, APP_RELEASE_CMD, SECRETS_AS_ENV, a <NAME>_FILE for each of APP_SECRETS, the data
volume at APP_DATA, and with APP_ENV the ConfigMap `app-env` mounted where the app-env tool
reads it. The values of APP_ENV and of the secrets are not in the manifests (as an export keeps
them out of its files): you create the ConfigMap and the Secret from your files, with the
commands `next_steps` prints. Nothing a user gave is pasted into YAML text: the overlay is
data, dumped by a YAML library.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from stackctl.apps import ROOT, App, AppError

DEFAULT_DATA = "/app/instance"  # where the manifests mount the claim app-data
APP_CONTAINERS = "app.kubernetes.io/component in (app, nginx-and-app)"  # components/app's target
IMAGES = {  # the stacks' own images -> the App property naming yours
    "flask-stacks/app": "image",
    "flask-stacks/nginx": "nginx_image",
    "flask-stacks/single-container": "single_container_image",
}


def stacks() -> list[str]:
    """The stacks with Kubernetes manifests."""
    return sorted(
        p.name for p in (ROOT / "kubernetes").iterdir() if (p / "kustomization.yaml").is_file()
    )


def kustomize(folder: Path) -> str:
    """`kubectl kustomize` of a folder. The load restrictor is lifted: the stacks' ConfigMaps
    read the files the compose stacks mount, outside their folders. AppError: kustomize's own."""
    result = subprocess.run(
        ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(folder)],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if result.returncode:
        raise AppError(f"kustomize could not render {folder}: {result.stderr.strip()}")
    return result.stdout


def manifests(stack: str) -> list[dict]:
    """kubernetes/<stack> as kustomize renders it (what `kubectl apply` would get), by document."""
    return [doc for doc in yaml.safe_load_all(kustomize(ROOT / "kubernetes" / stack)) if doc]


def overlay(app: App, stack: str, base: Path) -> dict:
    """The kustomization that turns the stack's manifests into the app's."""
    extra = app.secret_names[1:]  # secret_key's variable is the stack's own
    env = [
        {"name": "HEALTH_PATH", "value": app.health_path},
        {"name": "SECRETS_AS_ENV", "value": app.secrets_as_env},
        *({"name": f"{n.upper()}_FILE", "value": f"/run/secrets/{n}"} for n in extra),
    ]
    mounts: list[dict] = []
    volumes: list[dict] = []
    if app.data != DEFAULT_DATA:  # mountPath is the merge key: the old one out, the new one in
        mounts += [
            {"$patch": "delete", "mountPath": DEFAULT_DATA},
            {"name": "data", "mountPath": app.data},
        ]
    if app.env_file:  # made by you from APP_ENV (next_steps): its values stay out of the manifests
        mounts.append(
            {
                "name": "app-env",
                "mountPath": "/opt/flask-stacks/app.env",
                "subPath": "app.env",
                "readOnly": True,
            }
        )
        volumes.append({"name": "app-env", "configMap": {"name": "app-env"}})
    release_env = [{"name": "APP_RELEASE_CMD", "value": app.release_cmd}, *env]
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "any"},  # the target picks the Deployments
        "spec": {
            "template": {
                "spec": {
                    "initContainers": [
                        {"name": "release", "env": release_env, "volumeMounts": mounts}
                    ],
                    "containers": [{"name": "app", "env": env, "volumeMounts": mounts}],
                    **({"volumes": volumes} if volumes else {}),
                }
            }
        },
    }
    images = []
    for name, attribute in IMAGES.items():
        repository, _, tag = getattr(app, attribute).rpartition(":")
        images.append({"name": name, "newName": repository, "newTag": tag})
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(ROOT / "kubernetes" / stack, base)],
        "images": images,
        "patches": [
            {
                "target": {"kind": "Deployment", "labelSelector": APP_CONTAINERS},
                "patch": yaml.safe_dump(patch),
            }
        ],
    }


def render(app: App, stack: str) -> str:
    """The stack's manifests for the app, as `kubectl kustomize` renders them."""
    if stack not in stacks():
        raise AppError(
            f"STACK={stack} has no Kubernetes manifests; those that do: {' '.join(stacks())}"
        )
    if app.services or app.worker:
        raise AppError(
            "DB=, QUEUE= and WORKER= have no Kubernetes manifests yet (docs/kubernetes.md): "
            "leave them unset for make k8s, and give the app your database's address in APP_ENV"
        )
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        (base / "kustomization.yaml").write_text(
            yaml.safe_dump(overlay(app, stack, base), sort_keys=False)
        )
        return kustomize(base)


def write(app: App, stack: str, dest: Path, force: bool = False) -> Path:
    """DEST/<stack>.yaml; refuses a DEST that holds anything else unless `force`."""
    if shutil.which("kubectl") is None:
        raise AppError("make k8s needs kubectl (with its kustomize): install it, then run again")
    manifests = render(app, stack)
    target = dest / f"{stack}.yaml"
    if dest.exists() and any(p != target for p in dest.iterdir()) and not force:
        raise AppError(f"DEST={dest} holds other files: name an empty folder, or FORCE=1")
    dest.mkdir(parents=True, exist_ok=True)
    header = (
        f"# {stack} for Kubernetes, rendered for your app by make k8s (docs/kubernetes.md).\n"
        "# Push the images it names to your registry and point the image: lines at them;\n"
        "# create the Secret app-secrets (and the ConfigMap app-env, if it mounts one) as make\n"
        "# k8s printed, then: kubectl apply -f this-file\n"
    )
    target.write_text(header + manifests)
    return target


def next_steps(app: App, stack: str, target: Path) -> list[list[str]]:
    """The commands that create what the manifests expect besides themselves, then apply them
    (as argument lists: the caller quotes them for a shell)."""
    steps = [
        ["kubectl", "create", "secret", "generic", "app-secrets",
         *(f"--from-file={app.secrets_dir / name}" for name in app.secret_names)],
    ]  # fmt: skip
    if app.env_file:
        steps.append(
            ["kubectl", "create", "configmap", "app-env", f"--from-file=app.env={app.env_file}"]
        )
    return [*steps, ["kubectl", "apply", "-f", str(target)]]
