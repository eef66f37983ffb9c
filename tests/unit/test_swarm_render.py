"""scripts/swarm.py's conversion of `docker compose config` output into a file `docker stack
deploy` accepts: bind mounts become content-named configs, tmpfs becomes mounts, what Swarm does
not run is dropped and reported. No Docker needed."""

from __future__ import annotations

import importlib.util
import os

import pytest

from harness.compose import ROOT
from stackctl import apps

spec = importlib.util.spec_from_file_location("swarm", ROOT / "scripts/swarm.py")
swarm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(swarm)


def rendered(**service) -> dict:
    base = {
        "image": "nginx:1.28",
        "restart": "unless-stopped",
        "depends_on": {"app": {"condition": "service_healthy"}},
        "security_opt": ["no-new-privileges:true"],
        "tmpfs": ["/run/x", "/etc/nginx/generated:uid=101,gid=101,mode=0755"],
        "ports": [{"mode": "host", "target": 8080, "published": "8084", "host_ip": "127.0.0.1"}],
        "volumes": [
            {
                "type": "bind",
                "source": str(ROOT / "shared/nginx/nginx.conf"),
                "target": "/etc/nginx/nginx.conf",
                "read_only": True,
                "bind": {"create_host_path": True},
            },
            {
                "type": "bind",
                "source": str(ROOT / "shared/nginx/snippets"),
                "target": "/etc/nginx/snippets",
                "read_only": True,
            },
            {
                "type": "bind",
                "source": str(ROOT / "shared/nginx/tls.sh"),
                "target": "/docker-entrypoint.d/45-tls.sh",
                "read_only": True,
            },
        ],
        "deploy": {"replicas": 1, "placement": {}, "resources": {}},
        **service,
    }
    networks = {"default": {"name": "x_default", "ipam": {}}}
    return {"name": "x", "x-anchor": {}, "services": {"nginx": base}, "networks": networks}


def test_a_stack_file_swarm_accepts():
    out, dropped = swarm.to_stack_file(rendered(), "demo")
    assert out["version"] == "3.8" and "name" not in out and "x-anchor" not in out
    assert out["networks"] == {"default": {}}  # named by the stack: <stack>_default
    nginx = out["services"]["nginx"]
    assert dropped == {"restart", "depends_on", "security_opt"}
    assert nginx["ports"] == [{"mode": "host", "target": 8080, "published": 8084}]
    assert nginx["volumes"] == [
        {"type": "tmpfs", "target": "/run/x"},
        {"type": "tmpfs", "target": "/etc/nginx/generated"},
    ]
    assert nginx["deploy"] == {"replicas": 1}


def test_bind_mounts_become_content_named_configs():
    out, _ = swarm.to_stack_file(rendered(), "demo")
    refs = {ref["target"]: ref for ref in out["services"]["nginx"]["configs"]}
    snippets = sorted(p.name for p in (ROOT / "shared/nginx/snippets").iterdir())
    assert set(refs) == {
        "/etc/nginx/nginx.conf",
        "/docker-entrypoint.d/45-tls.sh",
        *(f"/etc/nginx/snippets/{name}" for name in snippets),
    }
    assert refs["/docker-entrypoint.d/45-tls.sh"]["mode"] == 0o555  # still runnable
    assert refs["/etc/nginx/nginx.conf"]["mode"] == 0o444
    config = out["configs"][refs["/etc/nginx/nginx.conf"]["source"]]
    assert config["file"] == str(ROOT / "shared/nginx/nginx.conf")
    assert all(len(name) <= 64 for name in out["configs"])


def test_new_content_is_a_new_config_name(tmp_path):
    path = tmp_path / "default.conf"
    path.write_text("server {}\n")
    first = swarm.config_name("demo", path, path.read_bytes())
    assert first == swarm.config_name("demo", path, path.read_bytes())
    assert first != swarm.config_name("demo", path, b"server { listen 81; }\n")


def test_a_writable_or_missing_bind_mount_is_refused(tmp_path):
    writable = {"type": "bind", "source": str(ROOT / "shared"), "target": "/x"}
    with pytest.raises(swarm.SwarmError, match="writable"):
        swarm.to_stack_file(rendered(volumes=[writable]), "demo")
    missing = {**writable, "source": str(tmp_path / "nope"), "read_only": True}
    with pytest.raises(swarm.SwarmError, match="does not exist"):
        swarm.to_stack_file(rendered(volumes=[missing]), "demo")


def test_bad_replicas_and_stack_names_get_the_fix(capsys, monkeypatch):
    # `make test STACK=<other stack>` puts STACK in the environment swarm.py read at import
    monkeypatch.setattr(swarm, "STACK_DIR", ROOT / "stacks/load-balanced-pair")
    for argv, message in (
        (["up", "--replicas", "0"], "REPLICAS='0' is not a whole number above 0"),
        (["up", "--name", "Bad Name"], "lower case, digits"),
    ):
        monkeypatch.setattr("sys.argv", ["swarm.py", *argv])
        assert swarm.main() == 2
        assert message in capsys.readouterr().err
    assert os.access(ROOT / "scripts/swarm.py", os.X_OK)


def test_the_null_settings_file_is_left_out():
    """APP_ENV unset mounts /dev/null: nothing to ship, and app-env.sh then adds nothing."""
    none = {"type": "bind", "source": "/dev/null", "target": "/opt/flask-stacks/app.env",
            "read_only": True}  # fmt: skip
    out, _ = swarm.to_stack_file(rendered(volumes=[none]), "demo")
    nginx = out["services"]["nginx"]
    targets = [m["target"] for m in nginx.get("volumes", []) + nginx.get("configs", [])]
    assert "/opt/flask-stacks/app.env" not in targets and targets, targets


def test_features_without_a_swarm_part_are_refused(monkeypatch):
    """TLS, ACME and METRICS have no Swarm part: swarm-up says so instead of leaving them out."""
    monkeypatch.setattr(swarm, "STACK_DIR", ROOT / "stacks/load-balanced-pair")
    for key, value in (("TLS", "1"), ("ACME", "1"), ("METRICS", "1")):
        monkeypatch.setenv(key, value)
        with pytest.raises(swarm.SwarmError, match=f"{key}: not deployed to Swarm"):
            swarm.render(2, "demo")
        monkeypatch.delenv(key)


def test_a_feature_brings_its_swarm_part_after_it():
    """LOG_FORMAT=json on the pair: its compose file, then its Swarm part (the replicated app);
    the allow-list has none (nginx is the same service under Swarm)."""
    env = {"LOG_FORMAT": "json", "ALLOWED_IPS": "10.0.0.0/8"}
    files = [p.relative_to(ROOT).as_posix() for p in
             apps.requested_overlays("load-balanced-pair", env, swarm=True)]  # fmt: skip
    assert files == [
        "shared/compose/allow-list.yaml",
        "stacks/load-balanced-pair/compose.json-logs.yaml",
        "stacks/load-balanced-pair/compose.swarm.json-logs.yaml",
    ]
    assert "compose.swarm.json-logs.yaml" not in str(
        apps.requested_overlays("load-balanced-pair", env)
    )
