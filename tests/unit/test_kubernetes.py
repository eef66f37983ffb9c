"""kubernetes/<stack>/ runs what the compose stack runs (docs/kubernetes.md): each file the
compose stack mounts reaches the same path of the matching container, with the same content,
from a ConfigMap; its named volumes are there as a claim or a shared emptyDir; its healthchecks
are the readiness probes; its app settings have the same values. A mount added to a compose
stack and forgotten here fails. Needs kubectl (kustomize) and docker compose, no engine."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from stackctl.apps import ROOT
from stackctl.export import PLUMBING  # what only make and the tests set: no cluster sets it

STACKS = sorted(p.name for p in (ROOT / "kubernetes").iterdir() if p.is_dir())


# each read once per stack, by every test (nothing mutates them)
@functools.cache
def compose_config(stack: str) -> dict:
    return json.loads(
        subprocess.run(
            ["docker", "compose", "-f", f"stacks/{stack}/compose.yaml", "config", "--format",
             "json"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip


@functools.cache
def rendered(stack: str) -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone",
         f"kubernetes/{stack}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]


def pod_containers(docs: list[dict]) -> tuple[dict, dict[str, dict]]:
    """The one Deployment's pod spec, and its containers (init ones too) by name."""
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]
    return spec, {c["name"]: c for c in containers}


def mounted_file(spec: dict, container: dict, configmaps: dict, target: str) -> str | None:
    """The content the container sees at `target` from a ConfigMap: a file mounted there by
    subPath, or a key of a ConfigMap mounted on its folder; None when no ConfigMap puts it there."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    path = PurePosixPath(target)
    for mount in container.get("volumeMounts", []):
        source = volumes[mount["name"]]
        if "configMap" not in source:
            continue
        data = configmaps[source["configMap"]["name"]]
        if mount.get("subPath") and mount["mountPath"] == target:
            return data.get(mount["subPath"])
        if not mount.get("subPath") and PurePosixPath(mount["mountPath"]) == path.parent:
            return data.get(path.name)
    return None


@pytest.mark.parametrize("stack", STACKS)
def test_every_file_the_compose_stack_mounts_is_mounted_from_a_configmap(stack):
    docs = rendered(stack)
    spec, containers = pod_containers(docs)
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    configs = "".join(text for data in configmaps.values() for text in data.values())
    for name, service in compose_config(stack)["services"].items():
        container = containers[name]  # the compose service's role, under its name
        for volume in service.get("volumes", []):
            source = Path(volume.get("source", ""))
            if volume["type"] != "bind" or ROOT not in source.parents:
                continue  # a named volume (below), or APP_ENV's /dev/null
            files = [source] if source.is_file() else sorted(source.iterdir())
            for path in files:
                target = volume["target"] if source.is_file() else f"{volume['target']}/{path.name}"
                seen = mounted_file(spec, container, configmaps, target)
                if seen is None and f"{source.name}/{path.name}" not in configs:
                    continue  # a file of a mounted folder that no config of this stack includes
                assert seen == path.read_text(), f"{stack}: {name}'s {target} is not {path}"


@pytest.mark.parametrize("stack", STACKS)
def test_named_volumes_settings_and_healthchecks_are_the_compose_stacks(stack):
    spec, containers = pod_containers(rendered(stack))
    volumes = {v["name"]: v for v in spec["volumes"]}
    for name, service in compose_config(stack)["services"].items():
        container = containers[name]
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
        for volume in service.get("volumes", []):
            if volume["type"] == "volume":
                kind = "persistentVolumeClaim" if volume["source"] == "app-data" else "emptyDir"
                assert kind in mounts.get(volume["target"], {}), f"{stack}: {name} {volume}"
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        wanted = {
            k: str(v) for k, v in (service.get("environment") or {}).items()
            if k not in PLUMBING
        }  # fmt: skip
        assert env == wanted, f"{stack}: {name}'s settings"
        test = (service.get("healthcheck") or {}).get("test")
        if test and not (service["healthcheck"].get("disable")):
            assert container["readinessProbe"]["exec"]["command"] == test[1:], f"{stack}: {name}"


@pytest.mark.parametrize("stack", STACKS)
def test_the_network_policy_holds_only_this_stacks_pods(stack):
    """An empty podSelector would restrict every pod of the namespace, not only this stack's."""
    docs = rendered(stack)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    for policy in [d for d in docs if d["kind"] == "NetworkPolicy"]:
        selected = policy["spec"]["podSelector"].get("matchLabels") or {}
        assert selected and selected.items() <= pods.items(), f"{stack}: {policy['spec']}"
