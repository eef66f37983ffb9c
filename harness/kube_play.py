"""A stack's Kubernetes manifests (kubernetes/<stack>, docs/kubernetes.md) run by a real engine:
Debian's podman 4.3.1 `kube play`, with the images the compose stacks build.

podman plays Pods, not Deployments and Services, and 4.3.1 differs from Kubernetes where a
cluster would deliver files or set permissions. `Play.pod` changes exactly that, and nothing a
container runs or reads: every container keeps its image, command, args, settings, mount
paths, user, groups and security context, and sees the same bytes at the same paths.

- a Deployment becomes one Pod of its template (`restartPolicy: OnFailure`: podman 4.3.1 runs
  init containers again under `Always` and then fails to remove them);
- ConfigMap and Secret volumes become host folders holding the same files with the modes
  Kubernetes gives them (4.3.1 ignores `defaultMode` and `subPath`, mounts a Secret's value
  base64-encoded, and panics on a Secret volume without `optional`);
- an emptyDir becomes a host folder with Kubernetes' mode, 0777 (podman's is root's 0755);
- `fsGroup` is added to the pod's `supplementalGroups`, as Kubernetes adds it to every
  container's groups (4.3.1 does not);
- the claim `app-data` becomes a podman volume named for this play, which `down` keeps;
- the container port named `http` is published on 127.0.0.1;
- `down` stops each pod's containers within its grace period before removing the pod, as the
  kubelet does (`Play.down`); podman runs no `preStop`.

Services are played by podman's DNS: a pod answers to its name on the kube network, and the
Deployments that Services front are named as the Services (`app`). Readiness gating, rolling
updates, disruption budgets, affinity and NetworkPolicies are not played (docs/kubernetes.md).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from stackctl import kubernetes
from stackctl.stacks import ROOT

# podman reads this file instead of /etc/containers/containers.conf: the machine's own stays
# as it is (scripts/setup.sh installs podman)
CONTAINERS_CONF = ROOT / "harness/podman-containers.conf"
CLAIM = "app-data"
NETWORK = "podman-default-kube-network"  # where `kube play` puts every pod
# a GET that says when it is out, then the status it got (Play.client)
CLIENT = """
import http.client, sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
connection.request("GET", f"{url.path}?{url.query}")
print("sent", flush=True)
print(connection.getresponse().status, flush=True)
"""


def podman(
    *args: str, timeout: float = 180, check: bool = True, stdin=None
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["podman", *args],
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        check=False,
    )
    if check and result.returncode:
        raise RuntimeError(f"podman {' '.join(args)}: {(result.stderr or result.stdout)[-3000:]}")
    return result


def images_of(docs: list[dict]) -> set[str]:
    """The images the manifests' pods run."""
    return {
        c["image"]
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"].get("initContainers", [])
        + d["spec"]["template"]["spec"]["containers"]
    }


def load_images(images: list[str]) -> None:
    """Copy the images the manifests name from Docker's store into podman's, unless podman
    already holds the same image (the same ID)."""
    missing = []
    for image in images:
        docker_id = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", image],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        held = podman("image", "inspect", "--format", "{{.Id}}", image, check=False)
        if held.returncode or f"sha256:{held.stdout.strip()}" != docker_id:
            missing.append(image)
    if missing:
        save = subprocess.Popen(["docker", "save", *missing], stdout=subprocess.PIPE)
        load = podman("load", "--quiet", stdin=save.stdout, timeout=300, check=False)
        save.stdout.close()
        if save.wait() or load.returncode:
            raise RuntimeError(f"docker save | podman load {missing}: {load.stderr[-2000:]}")


@dataclass
class Play:
    """One stack's manifests as podman plays them, from `folder` (the adapted YAML and the
    files it mounts). `volume` is the data claim's podman volume."""

    stack: str
    folder: Path
    port: int
    secrets: dict[str, bytes]
    docs: list[dict] = field(default_factory=list)

    @property
    def volume(self) -> str:
        return f"flask-stacks-kube-{self.stack}-{CLAIM}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def manifest(self) -> Path:
        return self.folder / "play.yaml"

    def deployments(self) -> list[dict]:
        return [d for d in self.docs if d["kind"] == "Deployment"]

    def containers(self) -> dict[str, dict]:
        """podman's name of each container that keeps running (`<pod>-<container>`) -> its spec."""
        return {
            f"{d['metadata']['name']}-{c['name']}": c
            for d in self.deployments()
            for c in d["spec"]["template"]["spec"]["containers"]
        }

    def write(self) -> None:
        """Render the manifests and write the adapted ones (module docstring) with their files."""
        self.docs = kubernetes.manifests(self.stack)
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        configmaps = {
            d["metadata"]["name"]: d["data"] for d in self.docs if d["kind"] == "ConfigMap"
        }
        pods = [self.pod(d, configmaps) for d in self.deployments()]
        self.manifest.write_text(yaml.safe_dump_all(pods, sort_keys=False))

    def pod(self, deployment: dict, configmaps: dict[str, dict]) -> dict:
        name = deployment["metadata"]["name"]
        template = copy.deepcopy(deployment["spec"]["template"])
        spec = template["spec"]
        files = self.folder / name
        volumes = []
        for volume in spec["volumes"]:
            here = files / volume["name"]
            if "configMap" in volume:
                source = volume["configMap"]
                self.write_files(here, configmaps[source["name"]], source.get("defaultMode", 0o644))
            elif "secret" in volume:
                source = volume["secret"]
                group = spec.get("securityContext", {}).get("fsGroup", 0)
                self.write_files(here, self.secrets, source.get("defaultMode", 0o644), group)
            elif "emptyDir" in volume:
                here.mkdir(parents=True)
                here.chmod(0o777)
            elif "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] == CLAIM, volume
                volumes.append(
                    {"name": volume["name"], "persistentVolumeClaim": {"claimName": self.volume}}
                )
                continue
            else:
                raise AssertionError(f"{self.stack}: a volume this adapter does not know: {volume}")
            volumes.append(
                {"name": volume["name"], "hostPath": {"path": str(here), "type": "Directory"}}
            )
        for container in spec.get("initContainers", []) + spec["containers"]:
            for mount in container.get("volumeMounts", []):
                if "subPath" in mount:  # the one file, as a volume of its own
                    source = next(v for v in volumes if v["name"] == mount["name"])
                    path = Path(source["hostPath"]["path"]) / mount.pop("subPath")
                    mount["name"] = f"{mount['name']}-{len(volumes)}"
                    volumes.append(
                        {"name": mount["name"], "hostPath": {"path": str(path), "type": "File"}}
                    )
            for port in container.get("ports", []):
                if port.get("name") == "http":
                    port.update(hostPort=self.port, hostIP="127.0.0.1")
        spec["volumes"] = volumes
        group = spec.get("securityContext", {}).get("fsGroup")
        if group:
            spec["securityContext"]["supplementalGroups"] = [group]
        spec["restartPolicy"] = "OnFailure"
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": template["metadata"]["labels"]},
            "spec": spec,
        }

    @staticmethod
    def write_files(folder: Path, data: dict, mode: int, group: int = 0) -> None:
        folder.mkdir(parents=True)
        for key, value in data.items():
            path = folder / key
            path.write_bytes(value if isinstance(value, bytes) else value.encode())
            os.chown(path, 0, group)
            path.chmod(mode)

    def up(self) -> None:
        """Play the pods on the data volume (made once, kept by `down`), with their files
        written anew: an emptyDir starts empty in each pod, as on Kubernetes."""
        self.write()
        if podman("volume", "exists", self.volume, check=False).returncode:
            podman("volume", "create", self.volume)
        try:
            podman("kube", "play", str(self.manifest), timeout=300)
        except RuntimeError:
            self.down()  # a play that failed half-way leaves its pods behind
            raise

    def down(self) -> None:
        """Stop the pods as the kubelet does, then remove them; the volume is kept. Each pod's
        containers get their stop signals at once and up to its terminationGracePeriodSeconds,
        and its network goes after them: podman's `kube down` kills them, and its `pod stop`
        stops the network's holder (the infra container) beside them, which cut nginx off
        from a client it was still answering."""
        for deployment in self.deployments():
            grace = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
            pod = deployment["metadata"]["name"]
            names = [
                f"{pod}-{c['name']}" for c in deployment["spec"]["template"]["spec"]["containers"]
            ]
            podman(
                "stop", "--ignore", "--time", str(grace), *names, timeout=grace + 60, check=False
            )
        podman("kube", "down", str(self.manifest), timeout=180, check=False)

    def remove(self) -> None:
        """Everything of this play: the pods, the volume, the files."""
        self.down()
        podman("volume", "rm", "--force", self.volume, check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def front(self) -> str:
        """The pod clients reach (the Service `nginx`'s): its name on podman's kube network."""
        (service,) = [
            d for d in self.docs if d["kind"] == "Service" and d["metadata"]["name"] == "nginx"
        ]
        picks = service["spec"]["selector"].items()
        (pod,) = [
            d["metadata"]["name"]
            for d in self.deployments()
            if picks <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        return pod

    def client(self, url: str) -> str:
        """A container on the pods' network that GETs `url`, says "sent" once the request is
        out, then the status it gets; its name."""
        name = f"flask-stacks-kube-client-{os.getpid()}"
        image = min(images_of(self.docs) - {"flask-stacks/nginx:latest"})  # one with Python
        podman(
            *("run", "--detach", "--name", name, "--network", NETWORK, "--entrypoint", "python3"),
            *(image, "-c", CLIENT, url),
        )
        return name

    @staticmethod
    def said(container: str) -> str:
        return podman("logs", container, check=False).stdout

    def exec(
        self, container: str, *command: str, check: bool = False
    ) -> subprocess.CompletedProcess:
        return podman("exec", container, *command, check=check, timeout=60)

    def inspect(self, container: str) -> dict:
        return json.loads(podman("inspect", container).stdout)[0]

    def logs(self) -> str:
        """Every container's last lines, the init containers' too while they exist."""
        names = podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
        said = {name: podman("logs", "--tail", "40", name, check=False) for name in names}
        return "\n".join(
            f"--- {name}:\n{r.stdout}{r.stderr}"
            for name, r in said.items()
            if not name.endswith("-infra")
        )
