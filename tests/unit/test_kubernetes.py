"""kubernetes/<stack>/ runs what the compose stack runs (docs/kubernetes.md): each file the
compose stack mounts reaches the same path of the matching container, with the same content,
from a ConfigMap; its named volumes are there as a claim or an emptyDir; its healthchecks are
the readiness probes; its app settings have the same values. A mount added to a compose stack
and forgotten here fails. And the parts compose has no word for hold together: each Service and
NetworkPolicy selects pods of the stack by ports they have, a replicated Deployment has a
disruption budget. Needs kubectl (kustomize) and docker compose, no engine."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from stackctl import kubernetes
from stackctl.apps import ROOT
from stackctl.export import PLUMBING  # what only make and the tests set: no cluster sets it

STACKS = kubernetes.stacks()

# What a compose stack mounts or sets that its manifests leave out on purpose, and why
RERESOLVER = "/docker-entrypoint.d/50-reresolve-upstreams.sh"
LEFT_OUT = {
    # nginx reaches the app through a ClusterIP Service: an address that never changes, so
    # there is nothing to re-resolve (the pair's headless Service keeps the re-resolver)
    "nginx-uwsgi-tcp": {RERESOLVER, "UPSTREAM_RECHECK_SECONDS"},
    "nginx-gunicorn-gevent": {RERESOLVER, "UPSTREAM_RECHECK_SECONDS"},
}
# What the manifests set that the compose stack does not, and why
ADDED = {
    # gunicorn.conf.py's default counts the node's cores, not the pod's
    "nginx-gunicorn-gevent": {"GUNICORN_WORKERS"},
}


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
    return kubernetes.manifests(stack)


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def containers(docs: list[dict]) -> dict[str, tuple[dict, dict]]:
    """Every container of the stack's Deployments (init ones too) by name -> (its pod spec, it)."""
    found = {}
    for deployment in of_kind(docs, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert container["name"] not in found, f"two containers named {container['name']}"
            found[container["name"]] = (spec, container)
    return found


def role(service: str) -> str:
    """The container that runs a compose service: the pair's app1 and app2 are replicas of `app`."""
    return re.sub(r"\d+$", "", service)


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


def selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels, matchExpressions with In) that is not empty, and matches."""
    match = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    assert all(e["operator"] == "In" for e in expressions), "a selector this test cannot read"
    return bool(match or expressions) and (
        match.items() <= labels.items()
        and all(labels.get(e["key"]) in e["values"] for e in expressions)
    )


def pods(docs: list[dict], selector: dict) -> list[dict]:
    """The pod templates of the stack's Deployments that `selector` picks."""
    return [
        d["spec"]["template"] for d in of_kind(docs, "Deployment")
        if selects(selector, d["spec"]["template"]["metadata"]["labels"])
    ]  # fmt: skip


def port_names(pod: dict) -> set[str]:
    return {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}


def test_every_stack_of_the_kubernetes_folder_is_a_compose_stack():
    assert STACKS and all((ROOT / "stacks" / stack / "compose.yaml").is_file() for stack in STACKS)


@pytest.mark.parametrize("stack", STACKS)
def test_every_file_the_compose_stack_mounts_is_mounted_from_a_configmap(stack):
    docs = rendered(stack)
    found = containers(docs)
    configmaps = {d["metadata"]["name"]: d["data"] for d in of_kind(docs, "ConfigMap")}
    configs = "".join(text for data in configmaps.values() for text in data.values())
    for name, service in compose_config(stack)["services"].items():
        spec, container = found[role(name)]
        for volume in service.get("volumes", []):
            source = Path(volume.get("source", ""))
            if volume["type"] != "bind" or ROOT not in source.parents:
                continue  # a named volume (below), or APP_ENV's /dev/null
            if volume["target"] in LEFT_OUT.get(stack, ()):
                assert mounted_file(spec, container, configmaps, volume["target"]) is None
                continue
            files = [source] if source.is_file() else sorted(source.iterdir())
            for path in files:
                target = volume["target"] if source.is_file() else f"{volume['target']}/{path.name}"
                if not source.is_file() and f"{source.name}/{path.name}" not in configs:
                    continue  # a file of a mounted folder that no config of this stack includes
                seen = mounted_file(spec, container, configmaps, target)
                assert seen == path.read_text(), f"{stack}: {name}'s {target} is not {path}"


@pytest.mark.parametrize("stack", STACKS)
def test_named_volumes_settings_and_healthchecks_are_the_compose_stacks(stack):
    found = containers(rendered(stack))
    for name, service in compose_config(stack)["services"].items():
        spec, container = found[role(name)]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
        for volume in service.get("volumes", []):
            if volume["type"] == "volume":
                kind = "persistentVolumeClaim" if volume["source"] == "app-data" else "emptyDir"
                assert kind in mounts.get(volume["target"], {}), f"{stack}: {name} {volume}"
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        wanted = {
            k: str(v) for k, v in (service.get("environment") or {}).items()
            if k not in PLUMBING and k not in LEFT_OUT.get(stack, ())
        }  # fmt: skip
        added = {k: v for k, v in env.items() if k in ADDED.get(stack, ())}
        if role(name) == "app":
            assert added.keys() == ADDED.get(stack, set()), f"{stack}: {name}'s settings"
        assert env == wanted | added, f"{stack}: {name}'s settings"
        test = (service.get("healthcheck") or {}).get("test")
        if test and not (service["healthcheck"].get("disable")):
            assert container["readinessProbe"]["exec"]["command"] == test[1:], f"{stack}: {name}"


@pytest.mark.parametrize("stack", STACKS)
def test_services_reach_ready_ports_of_the_stacks_pods(stack):
    docs = rendered(stack)
    for service in of_kind(docs, "Service"):
        selected = pods(docs, {"matchLabels": service["spec"]["selector"]})
        assert selected, f"{stack}: Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            assert all(port["targetPort"] in port_names(pod) for pod in selected), (stack, port)
    # nginx's default.conf reaches the app by the Service `app` where the app has pods of its own
    apps = pods(docs, {"matchLabels": {"app.kubernetes.io/component": "app"}})
    names = {s["metadata"]["name"] for s in of_kind(docs, "Service")}
    assert not apps or "app" in names, f"{stack}: no Service `app` in front of the app's pods"


@pytest.mark.parametrize("stack", STACKS)
def test_network_policies_hold_only_this_stacks_pods_and_only_nginx_reaches_the_app(stack):
    """An empty podSelector would restrict every pod of the namespace, not only this stack's."""
    docs = rendered(stack)
    policies = of_kind(docs, "NetworkPolicy")
    for deployment in of_kind(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        held = [p for p in policies if selects(p["spec"]["podSelector"], labels)]
        assert held, f"{stack}: no NetworkPolicy holds {deployment['metadata']['name']}'s pods"
        for policy in held:
            for rule in policy["spec"]["ingress"]:
                ports = {p["port"] for p in rule["ports"]}
                assert ports <= port_names(deployment["spec"]["template"]), (stack, rule)
                for peer in rule.get("from", []):  # only nginx's pods of this stack
                    (nginx,) = pods(docs, peer["podSelector"])
                    assert nginx["metadata"]["labels"]["app.kubernetes.io/component"] == "nginx"
                if labels["app.kubernetes.io/component"] == "app":
                    assert rule.get("from"), f"{stack}: anyone reaches the app server: {rule}"


@pytest.mark.parametrize("stack", STACKS)
def test_a_replicated_deployment_has_a_disruption_budget(stack):
    docs = rendered(stack)
    budgets = of_kind(docs, "PodDisruptionBudget")
    for deployment in of_kind(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        mine = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        if deployment["spec"].get("replicas", 1) > 1:
            assert [b["spec"].get("maxUnavailable") for b in mine] == [1], (stack, mine)
        else:
            assert not mine, f"{stack}: a budget on one pod blocks every node drain: {mine}"
