"""`make export STACK=x DEST=dir [APP=...] [TLS=1] [ACME=1] [ALLOWED_IPS=...] [METRICS=1]
[FORCE=1]`: a folder that runs a stack on its own, with no path back into this repository.

The stack's compose.yaml is flattened: each `extends` (shared/compose/services.yaml) and each
overlay (TLS, ACME) merged in as Compose merges them (mappings key by key, mounts by their
target, `!reset`/`!override` honoured), with the files' one-line comments kept (ruamel.yaml's
round trip). Every file the result mounts or builds from is copied beside it, and every path is
rewritten to the copy: nginx/, uwsgi/ or gunicorn/, docker/. The app's folder stays where it is
(the build context is a path relative to DEST); the demo app is copied into app/.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar

from stackctl import apps
from stackctl.stacks import OverlayError, feature_overlays

ROOT = apps.ROOT
# a ${VAR:-default} (or ${VAR-default}) reference; VARIABLE: a value that starts with one
# (or ${VAR:?error}: a setting without a default, e.g. WORKER's, given one by set_defaults)
REFERENCE = r"\$\{(?P<name>[A-Z0-9_]+)(?P<op>:?[-?])(?P<default>[^}]*)\}"
VARIABLE = re.compile(rf"^{REFERENCE}(?P<rest>.*)$")
# keys whose sequences Compose merges entry by entry (a mount by its target, a port as is)
MERGED_BY = {
    "volumes": lambda e: mount_target(e),
    "tmpfs": lambda e: str(e).split(":", 1)[0],
    "secrets": lambda e: e if isinstance(e, str) else e.get("source"),
    "ports": lambda e: str(e),
    "group_add": lambda e: str(e),
}


OTHER_WHYS = {
    "APP_CONTEXT": "the app's folder, relative to this one: the app image's build context",
    "APP_DOCKERFILE": "the app image's Dockerfile, relative to APP_CONTEXT",
    "PYTHON_IMAGE": "the app image's base: an official python image (Debian trixie)",
    "NGINX_IMAGE": "the base of nginx's image: the official one",
    "APP_NGINX_IMAGE": "nginx's image as built here: NGINX_IMAGE plus the app's static files",
    "SECRETS_DIR": "the folder of the secret files (git-ignored): secret_key",
    "METRICS": "1: the app counts its requests for Prometheus (port 9102, never published)",
    "PROMETHEUS_IMAGE": "Prometheus' image: the official one (an LTS release)",
    "NGINX_EXPORTER_IMAGE": "the NGINX Prometheus exporter's image: the official one",
    "PROMETHEUS_PUBLISH": "the host address:port of Prometheus' query API and graphs: loopback",
    "POSTGRES_IMAGE": "PostgreSQL's image: the official one (a data volume is bound to its major)",
    "REDIS_IMAGE": "Redis' image: the official one",
}
SERVICES_FILE = ROOT / "shared/compose/services.yaml"  # the service templates every stack extends
ENV_FILE = "app.env"  # where an export keeps APP_ENV's settings
PLUMBING = ("APP_ENV_SHA256", "FAULT_ROUTES")  # make's and the tests' settings (drop_plumbing)
# shared/<folder>/ that an export keeps as <folder>/ (LOG_FORMAT=json; METRICS; DB, QUEUE, WORKER)
SAME_FOLDER = ("json-logs", "metrics", "prometheus", "postgres", "redis", "worker")
PUBLISH_WHY = (
    "the host address:port nginx is published on: the host's loopback by default; e.g. "
    "0.0.0.0:80 to serve the network"
)


class ExportError(ValueError):
    """An export that cannot be made; the message says what to fix."""


def split_mount(entry: str) -> list[str]:
    """A short-syntax mount "source:target[:mode]" split at its colons, not at those inside a
    ${VAR:-default}."""
    parts, depth, current = [], 0, ""
    for char in entry:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def mount_target(entry) -> str:
    if isinstance(entry, str):
        parts = split_mount(entry)
        return parts[1] if len(parts) > 1 else parts[0]
    return entry.get("target", "")


def tag_of(node) -> str | None:
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", None) if tag is not None else None
    return value if isinstance(value, str) else None


def merge(base, override):
    """Compose's merge of `override` onto `base` (extends, and files given with -f)."""
    if tag_of(override) == "!reset":
        return None
    if tag_of(override) == "!override":
        return untag(override)
    if isinstance(base, CommentedMap) and isinstance(override, CommentedMap):
        out = CommentedMap()
        for source in (base, override):
            for key in source:
                value = source[key]
                if key in out and source is override:
                    merged = merge_key(key, out[key], value)
                    if merged is None:
                        del out[key]
                        continue
                    out[key] = merged
                else:
                    if tag_of(value) == "!reset":
                        continue
                    out[key] = untag(value)
                if key in source.ca.items:
                    out.ca.items[key] = source.ca.items[key]
        return out
    return untag(override)


def merge_key(key: str, base, override):
    if key in MERGED_BY and isinstance(base, list) and isinstance(override, list):
        if tag_of(override) in ("!reset", "!override"):
            return merge(base, override)
        keyed = {MERGED_BY[key](e): i for i, e in enumerate(base)}
        out = CommentedSeq(base)
        out.ca.items.update(base.ca.items)
        for i, entry in enumerate(override):
            at = keyed.get(MERGED_BY[key](entry))
            if at is None:
                out.append(entry)
                if i in override.ca.items:
                    out.ca.items[len(out) - 1] = override.ca.items[i]
            else:
                out[at] = entry
                if i in override.ca.items:
                    out.ca.items[at] = override.ca.items[i]
        return out
    return merge(base, override)


def plain(node):
    """A node as plain data, for comparing values whatever their key order and comments."""
    return json.loads(json.dumps(untag(node), sort_keys=True, default=str))


def fill(shell: CommentedMap, source: CommentedMap) -> None:
    """Fill a skeleton's empty mapping with `source`'s keys, comments included (the mapping
    keeps its identity: merge keys refer to it)."""
    shell.fa.set_block_style()
    for key in source:
        shell[key] = source[key]
        copy_comment(source, shell, key)


def dedent_comments(node) -> None:
    """Every full-line comment inside `node` two columns to the left."""
    if isinstance(node, (CommentedMap, CommentedSeq)):
        for item in node.ca.items.values():
            for token in item:
                for one in token if isinstance(token, list) else [token]:
                    if one is not None and hasattr(one, "value"):
                        one.value = one.value.replace("\n  ", "\n")
        for value in node.values() if isinstance(node, CommentedMap) else node:
            dedent_comments(value)


def copy_comment(source: CommentedMap, target: CommentedMap, key) -> None:
    if key in source.ca.items:
        target.ca.items[key] = source.ca.items[key]


def untag(node):
    """The value without Compose's merge tags (a plain mapping, sequence or scalar)."""
    tag = tag_of(node)
    if tag not in ("!reset", "!override"):
        return node
    if isinstance(node, TaggedScalar):
        return node.value
    return CommentedMap(node) if isinstance(node, dict) else CommentedSeq(node)


@dataclass
class Export:
    stack: str
    dest: Path
    app: apps.App
    overlays: list[Path]
    allowed_ips: str = ""  # the allow-list overlay's default list (ALLOWED_IPS at export)
    yaml: YAML = field(default_factory=lambda: YAML())
    files: dict[Path, str] = field(default_factory=dict)  # source -> path inside DEST
    baked: list[str] = field(default_factory=list)  # what single-container.Dockerfile copies
    parsed: dict[Path, CommentedMap] = field(default_factory=dict)  # load()'s cache

    @property
    def with_metrics(self) -> bool:
        """Exported with METRICS=1's overlays (stackctl.stacks.metrics_overlays)."""
        return any(p.name.endswith("metrics.yaml") for p in self.overlays)

    @property
    def with_db(self) -> bool:
        """Exported with DB=postgres: its backup tool comes along (postgres/db.sh)."""
        return any(kind == "DB" for kind, _ in self.app.services)

    def __post_init__(self):
        self.yaml.preserve_quotes = True
        self.yaml.width = 4096
        self.yaml.indent(mapping=2, sequence=4, offset=2)

    # ---- where each file goes ----
    def place(self, source: Path) -> str:
        """The path inside DEST of a repository file (copied there), or the relative path from
        DEST to a file of the app's folder (which stays where it is)."""
        source = source.resolve()
        if source == ROOT:
            return "."
        if source == self.app.folder or self.app.folder in source.parents:
            if self.app.is_demo:
                inside = "app/" + str(source.relative_to(self.app.folder))
                return self.keep(self.app.folder, "app", inside.rstrip("/."))
            return os.path.relpath(source, self.dest)
        if source == apps.SECRETS or apps.SECRETS in source.parents:
            return "secrets/" + source.name if source != apps.SECRETS else "secrets"
        if source == ROOT / "certs":
            return "certs"
        relative = source.relative_to(ROOT)
        parts = relative.parts
        if parts[:2] == ("shared", "nginx"):
            inside = "nginx/" + "/".join(parts[2:])
        elif parts[:2] == ("shared", "uwsgi"):
            inside = "uwsgi/" + "/".join(parts[2:])
        elif parts[0] == "shared" and parts[1] in SAME_FOLDER:
            inside = "/".join(parts[1:])
        elif parts[:2] in (("shared", "docker"), ("shared", "certbot")):
            inside = "docker/" + "/".join(parts[2:])
        elif relative.as_posix() == "scripts/db.sh":  # make backup / restore's tool
            inside = "postgres/db.sh"
        elif parts[0] == "stacks" and source.name == "default.conf":
            inside = "nginx/default.conf"
        elif parts[0] == "stacks" and source.suffix == ".ini":
            inside = "uwsgi/" + source.name
        elif parts[0] == "stacks" and source.name.startswith("prometheus"):
            inside = "prometheus/" + source.name  # the pair's list of app servers to scrape
        elif parts[0] == "stacks" and source.name == "gunicorn.conf.py":
            inside = "gunicorn/gunicorn.conf.py"
        elif parts[0] == "stacks":
            inside = "docker/" + source.name
        else:
            raise ExportError(f"{relative}: no place for it in an export (stackctl/export.py)")
        return self.keep(source, inside, inside)

    def keep(self, source: Path, inside_root: str, inside: str) -> str:
        self.files[source] = inside_root
        return inside

    def path_value(self, value: str, folder: Path) -> str:
        """A path as a compose file writes it (relative to `folder`, maybe behind a
        ${VAR:-default}), rewritten for DEST."""
        match = VARIABLE.match(value)
        if match:
            if match["name"] == "APP_CONTEXT":  # the app's folder, wherever the default points
                default = self.place(self.app.folder)
                default = default if default.startswith(".") else "./" + default
            else:
                default = self.path_value(match["default"], folder) if match["default"] else ""
            return f"${{{match['name']}{match['op']}{default}}}{match['rest']}"
        if not value or value.startswith(("/", "$")):
            return value
        rest = ""
        if "/${" in value:  # e.g. ../app/${APP_STATIC:-static}: the folder part only
            value, rest = value.split("/${", 1)
            rest = "/${" + rest
        placed = self.place((folder / value).resolve())
        return (placed if placed.startswith(".") else "./" + placed) + rest

    def rewrite_service(self, service: CommentedMap, folder: Path) -> CommentedMap:
        """Every path of a service, relative to `folder` (its file's), rewritten for DEST."""
        build = service.get("build")
        # an overlay's build with neither (only args: the demo's APP_REQUIREMENTS) keeps the
        # context and Dockerfile of the file it merges into
        if isinstance(build, CommentedMap) and ("context" in build or "dockerfile" in build):
            context_raw = str(build.get("context", "."))
            context = self.path_value(context_raw, folder)
            if "dockerfile" in build:
                dockerfile = str(build["dockerfile"])
                match = VARIABLE.match(dockerfile)
                plain = match["default"] if match else dockerfile
                context_dir = self.resolve(context_raw, folder)
                placed = self.place((context_dir / plain).resolve())
                context_placed = self.resolve(context, self.dest)
                relative = os.path.relpath(self.dest / placed, context_placed)
                build["dockerfile"] = (
                    f"${{{match['name']}{match['op']}{relative}}}" if match else relative
                )
            build["context"] = context
        for i, entry in enumerate(service.get("volumes") or []):
            if isinstance(entry, str) and ":" in entry:
                source, *rest = split_mount(entry)
                if source.startswith((".", "/", "$")):
                    service["volumes"][i] = ":".join([self.path_value(source, folder), *rest])
        return service

    def resolve(self, value: str, folder: Path) -> Path:
        match = VARIABLE.match(value)
        if match:
            value = match["default"] + match["rest"]
        return (folder / value).resolve()

    # ---- the compose file ----
    def load(self, path: Path) -> CommentedMap:
        """A compose file, parsed once (services.yaml is extended by every service)."""
        if path not in self.parsed:
            text = path.read_text()
            if path.suffix == ".json":  # APP_SECRETS' generated file, in the others' block style
                block = YAML(typ="safe", pure=True)
                block.default_flow_style = False
                buffer = io.StringIO()
                block.dump(json.loads(text), buffer)
                text = buffer.getvalue()
            self.parsed[path] = self.yaml.load(text)
        return self.parsed[path]

    def service(self, path: Path, name: str) -> CommentedMap:
        """A service with its `extends` chain merged in, its paths rewritten for DEST."""
        document = self.load(path)
        own = copy.deepcopy(document["services"][name])
        extends = own.pop("extends", None)
        own = self.rewrite_service(own, path.parent)
        if not extends:
            return own
        if isinstance(extends, str):  # `extends: app`: a service of the same file
            return merge(self.service(path, extends), own)
        base_file = (path.parent / extends["file"]).resolve() if "file" in extends else path
        return merge(self.service(base_file, extends["service"]), own)

    def included(self, path: Path) -> list[Path]:
        """The files a compose file `include`s (short or long syntax), as paths."""
        entries = self.load(path).get("include") or []
        return [
            (path.parent / (entry if isinstance(entry, str) else entry["path"])).resolve()
            for entry in entries
        ]

    def secret_files(self, secrets: CommentedMap, folder: Path) -> CommentedMap:
        """A `secrets:` block with each file rewritten for DEST (relative to `folder`)."""
        secrets = copy.deepcopy(secrets)
        for secret in secrets.values():
            if secret and "file" in secret:
                source = Path(str(secret["file"]))
                if source.is_absolute() and apps.SECRETS in source.parents:
                    secret["file"] = f"./secrets/{source.name}"  # APP_SECRETS' own
                else:
                    secret["file"] = self.path_value(str(source), folder)
        return secrets

    def compose(self) -> CommentedMap:
        stack_file = ROOT / "stacks" / self.stack / "compose.yaml"
        out = CommentedMap()
        out["name"] = self.stack if self.app.is_demo else apps.slug(self.app.folder.name)
        services = CommentedMap()
        top: dict = {}
        # `include`d files first (shared/compose/app-common.yaml: release, app-data, secrets),
        # their paths relative to themselves, as Compose resolves them; then the stack's own
        for path in [*self.included(stack_file), stack_file]:
            layer = self.load(path)
            for name in layer.get("services") or {}:
                services[name] = self.service(path, name)
                if name in layer["services"].ca.items:
                    services.ca.items[name] = layer["services"].ca.items[name]
            self.merge_top(top, layer, path.parent)
        for overlay in self.overlays:
            layer = self.load(overlay)
            for name in layer.get("services") or {}:
                merged = self.service(overlay, name)
                services[name] = merge(services[name], merged) if name in services else merged
            # an overlay's relative paths resolve from the stack's folder (the first file's)
            self.merge_top(top, layer, stack_file.parent)
        out["services"] = services
        for key, value in top.items():
            if value is not None:
                out[key] = value
        self.set_defaults(out)
        for service in services.values():
            self.drop_plumbing(service)
        self.share_app_template(out)
        self.trim_comments(out)
        return out

    def drop_plumbing(self, service: CommentedMap) -> None:
        """What only `make` and the tests set, which a folder run by `docker compose` never uses:
        APP_ENV's hash (make's trigger to recreate the app), the demo app's fault routes, and the
        overlays' packages when none is on."""
        environment = service.get("environment")
        if isinstance(environment, dict):
            for key in PLUMBING:
                environment.pop(key, None)
        args = (service.get("build") or {}).get("args")
        if isinstance(args, dict) and not self.app.feature_packages:
            args.pop("FEATURE_PACKAGES", None)

    def share_app_template(self, out: CommentedMap) -> None:
        """Write once what the app image's services (release, the app servers, a worker) share:
        services.yaml's `app` becomes `x-app: &app`, each of them `<<: *app` plus what it sets
        otherwise; a mapping it extends (environment, healthcheck) merges `*app-<key>` likewise.
        YAML merges are shallow, so a key a service changes is written whole, as it runs."""
        template = self.service(SERVICES_FILE, "app")
        self.set_defaults(template)
        self.drop_plumbing(template)
        dedent_comments(template)  # a service's keys (4 spaces in) become x-app's (2)
        services = out["services"]
        group = [
            name
            for name, service in services.items()
            if "build" in service and plain(service.get("image")) == plain(template["image"])
        ]
        if len(group) < 2:
            return
        # what every one of them has: a key one lacks cannot come from the template
        shared = [k for k in template if all(k in services[name] for name in group)]
        nested = {  # service -> the mappings it extends rather than replaces
            name: [
                k
                for k in shared
                if isinstance(template[k], dict)
                and plain(services[name][k]) != plain(template[k])
                and isinstance(services[name][k], dict)
                and all(key in services[name][k] for key in template[k])
            ]
            for name in group
        }
        anchored = sorted({k for keys in nested.values() for k in keys})
        # ruamel.yaml builds merge keys when it loads them: a skeleton, filled in below
        skeleton = "x-app: &app\n" + "".join(
            f"  {k}: {'&app-' + k + ' ' if k in anchored else ''}{{}}\n" for k in shared
        )
        skeleton += "services:\n" + "".join(
            f"  {name}:\n    <<: *app\n"
            + "".join(f"    {k}:\n      <<: *app-{k}\n" for k in nested[name])
            for name in group
        )
        loaded = YAML().load(skeleton)
        shell = loaded["x-app"]
        for key in shared:
            if key in anchored:
                fill(shell[key], template[key])  # the mapping the services' merges refer to
            else:
                shell[key] = template[key]
            copy_comment(template, shell, key)
        written: dict[str, str] = {}  # a service's data -> the first name it was written under
        for name in group:
            service, new = services[name], loaded["services"][name]
            item = services.ca.items.get(name)
            if item and len(item) > 3:
                item[3] = None  # a comment of the anchor the service came from, not of it
            same = written.setdefault(json.dumps(plain(service), sort_keys=True), name)
            if same != name:  # app2, as app1 is (the pair's two servers): a YAML alias
                services[name] = services[same]
                services[same].yaml_set_anchor(same, always_dump=True)
                continue
            for key in service:
                if key in nested[name]:
                    for inner in service[key]:
                        if plain(service[key][inner]) != plain(template[key].get(inner)):
                            new[key][inner] = service[key][inner]
                            copy_comment(service[key], new[key], inner)
                elif key not in shared or plain(service[key]) != plain(template[key]):
                    new[key] = service[key]
                    copy_comment(service, new, key)
            services[name] = new
        out.insert(list(out).index("services"), "x-app", shell)
        out.yaml_set_comment_before_after_key(
            "x-app",
            before="what every container of the app image shares: `<<: *app` merges it in (YAML)",
        )

    def merge_top(self, top: dict, layer: CommentedMap, folder: Path) -> None:
        """Merge one file's top-level volumes, secrets and networks into `top`, its secret files'
        relative paths resolved from `folder`."""
        for key in ("volumes", "secrets", "networks"):
            if layer.get(key):
                value = self.secret_files(layer[key], folder) if key == "secrets" else layer[key]
                top[key] = merge(top.get(key) or CommentedMap(), value)

    def trim_comments(self, node) -> None:
        """Keep each key's own comment (its line, and lines right under it, e.g. the why of
        the next mount); drop what follows a blank line: a header of the next block in the
        file it came from, which lands elsewhere once merged."""
        if isinstance(node, (CommentedMap, CommentedSeq)):
            for item in node.ca.items.values():
                for token in item:
                    for one in token if isinstance(token, list) else [token]:
                        if one is not None and hasattr(one, "value") and "\n\n" in one.value:
                            one.value = one.value.split("\n\n", 1)[0] + "\n"
            for value in node.values() if isinstance(node, CommentedMap) else node:
                self.trim_comments(value)

    def set_defaults(self, node) -> None:
        """Every ${VAR:-default} of an app setting defaults to this app's value, so that a bare
        `docker compose up` in DEST serves it (.env can still change each)."""
        values = self.app.compose_env()
        values.pop("APP_CONTEXT")
        values.pop("APP_DOCKERFILE")
        values.pop("SECRETS_DIR")
        # APP_ENV's file is copied beside compose.yaml (git-ignored), never named by its path
        values["APP_ENV"] = f"./{ENV_FILE}" if self.app.env_file else "/dev/null"
        if self.allowed_ips:
            values["ALLOWED_IPS"] = self.allowed_ips

        def fix(text: str) -> str:
            def swap(match: re.Match) -> str:
                name = match["name"]
                if name in values:
                    op = match["op"] if "-" in match["op"] else ":-"  # ${VAR:?...}: now a default
                    return f"${{{name}{op}{values[name]}}}"
                return match[0]

            return re.sub(REFERENCE, swap, text)

        if isinstance(node, dict):
            for key in node:
                if isinstance(node[key], str):
                    node[key] = (
                        type(node[key])(fix(node[key]))
                        if not isinstance(node[key], TaggedScalar)
                        else node[key]
                    )
                else:
                    self.set_defaults(node[key])
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, str):
                    node[i] = type(value)(fix(value))
                else:
                    self.set_defaults(value)

    # ---- the folder ----
    def single_container_dockerfile(self, source: Path) -> str:
        """single-container.Dockerfile with each COPY source at its place in DEST."""
        lines = []
        for line in source.read_text().splitlines():
            words = line.split()
            if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
                sources = [
                    self.place(ROOT / w) + ("/" if w.endswith("/") else "") for w in words[1:-1]
                ]
                self.baked.extend(s.rstrip("/") for s in sources)
                line = " ".join(["COPY", *sources, words[-1]])
            lines.append(line)
        return "\n".join(lines) + "\n"

    def env_example(self, compose_text: str) -> str:
        """Every ${VAR} of compose.yaml with its default and why (its line's comment)."""
        whys = {**OTHER_WHYS, **{name: why for name, (_, _, why) in apps.SETTINGS.items()}}
        seen: dict[str, tuple[str, str]] = {}
        for line in compose_text.splitlines():
            comment = line.split(" # ", 1)[1].strip() if " # " in line else ""
            for match in re.finditer(REFERENCE, line):
                seen.setdefault(match["name"], (match["default"], whys.get(match["name"], comment)))
        out = [
            "# Settings of this deployment: copy to .env (docker compose reads it) and uncomment",
            "# what you change. Each line: the default, then why (Compose drops ` # ...`).",
            "",
        ]
        for name in sorted(seen):
            default, why = seen[name]
            if name.endswith("_PUBLISH") and name not in OTHER_WHYS:
                why = PUBLISH_WHY
            why = f"# {why or 'see compose.yaml'}"
            # an empty value's why goes above it: Compose would read ` # ...` as the value
            out += [f"# {name}={default}".ljust(40) + f" {why}"] if default else [why, f"# {name}="]
        return "\n".join(out) + "\n"

    def env_file_example(self) -> str:
        """APP_ENV's keys, without their values (a settings file may hold credentials)."""
        keys = apps.read_env_file(self.app.env_file, str(self.app.env_file), {})
        return (
            f"# Your app's settings: copy to {ENV_FILE} and fill in. Every app container reads it\n"
            "# (app-env.sh exports it): KEY=VALUE a line, the value as written, no quotes.\n"
            + "".join(f"{key}=\n" for key in keys)
        )

    def readme(self) -> str:
        included = [
            p.relative_to(ROOT).as_posix() for p in self.overlays if apps.SECRETS not in p.parents
        ] or ["none"]
        app = (
            "the demo app (copied into app/)"
            if self.app.is_demo
            else (
                f"your app at {self.place(self.app.folder)} (relative to this folder; the build "
                "context: it stays where it is)"
            )
        )
        server = app_server_line(self.stack)
        secret_files = ", ".join(f"`{name}`" for name in self.app.secret_files)
        settings = (
            f"- `{ENV_FILE}`: your app's own settings (a copy of APP_ENV's file; git-ignored; its\n"
            f"  keys are in `{ENV_FILE}.example`), exported in every app container by app-env.sh.\n"
            if self.app.env_file
            else ""
        )
        json_logs = ""
        if self.app.json_logs:
            json_logs = (
                "- `json-logs/`: LOG_FORMAT=json: the module the app servers import before the"
                "\n  app (flask_stacks_logging.py), uWSGI's or Gunicorn's part, nginx's log_format"
                "\n  json.\n"
            )
        metrics = ""
        if self.with_metrics:
            metrics = (
                "- `metrics/`: the request counter the app servers import, and their and nginx's"
                "\n  parts of METRICS (mounted into them only while METRICS is on).\n"
                "- `prometheus/`: Prometheus' config, alert rules and the app servers it scrapes;"
                "\n  its query API and graphs on http://127.0.0.1:9090/ (PROMETHEUS_PUBLISH).\n"
            )
        services = ""
        if self.app.services or self.app.worker:
            services = (
                "- `postgres/`, `redis/`, `worker/`: the services beside the app (DB, QUEUE,"
                "\n  WORKER; flask-stacks' docs/services.md): PostgreSQL's role for the app, Redis'"
                "\n  config, the RQ worker's healthcheck."
            )
            if self.with_db:
                services += (
                    "\n  `postgres/db.sh backup` writes a dump to backups/ (git-ignored);"
                    "\n  `postgres/db.sh restore backups/<file> [force]` loads one into a new"
                    "\n  database."
                )
            services += "\n"
        return f"""# {self.stack}: exported by flask-stacks

Serves {app} the way the `{self.stack}` stack does, with nothing outside this folder but
the app. Overlays included: {", ".join(included)}.

    docker compose up --build --wait     build and start, wait until healthy
    docker compose run --rm release sh -c 'flask --app <module> init-db'   a one-off command
    docker compose down                  stop; the app's data (volume app-data) stays
    docker compose down --volumes        stop and DELETE the data

What to edit:
- `.env` (copy `.env.example`): the app's module, static folder, health path, data folder,
  release command, published ports. Defaults are this export's.
{settings}- `secrets/`: {secret_files}, made at export with random bytes where missing;
  replace each with your own value if you have one. The folder is git-ignored (`.gitignore`);
  each file reaches the app as /run/secrets/<name>, named by <NAME>_FILE (and as <NAME> for
  the names in SECRETS_AS_ENV).
- {server}

Files:
- `compose.yaml`: every service, flattened (no `extends`), with its why on each line.
- `docker/Dockerfile`, `docker/Dockerfile.dockerignore`: the app image (your app's folder is
  the build context; the ignore file decides what of it is sent).
- `docker/healthcheck.py`, `docker/release.py`, `docker/app-env.sh`, `docker/secrets-env.sh`:
  mounted into the app containers: the healthcheck, the release step (runs APP_RELEASE_CMD,
  then checks that APP_MODULE loads), your settings file and the secrets as variables.
- `nginx/`: nginx.conf, the server block (default.conf), the snippets and start scripts, and
  nginx's image (`Dockerfile`: the app's static folder, APP_STATIC, copied out of the app
  image by `static-folder.py`, so files inside an installed package are served too).
{json_logs}{metrics}{services}"""

    def drop_unused_snippets(self, outputs: dict[str, str | Path]) -> None:
        """nginx's snippets folder is mounted whole: an export keeps only the snippets its
        configs include (a uWSGI stack has no use for proxy-params.conf)."""
        folder = self.files.get(ROOT / "shared/nginx/snippets")
        if folder is None:
            return
        snippets = [name for name in outputs if name.startswith(f"{folder}/")]
        others = "".join(text_of(outputs[n]) for n in outputs if n not in snippets)
        for name in snippets:
            if f"snippets/{Path(name).name}" not in others:
                del outputs[name]

    def write(self, force: bool) -> list[str]:
        """Write the folder; returns the files written. Refuses to overwrite without force."""
        compose = self.compose()
        header = (
            f"# {self.stack}, exported by flask-stacks (`make export`): a folder that runs alone.\n"
            "# Settings: .env.example. Files: README.md.\n"
        )
        from io import StringIO

        buffer = StringIO()
        self.yaml.dump(compose, buffer)
        compose_text = header + buffer.getvalue()
        outputs: dict[str, str | Path] = {"compose.yaml": compose_text}
        outputs[".env.example"] = self.env_example(compose_text)
        outputs["README.md"] = self.readme()
        outputs[".gitignore"] = (
            "# the secrets, the app's settings and the local .env stay on this machine\n"
            f"secrets/\n.env\n{ENV_FILE}\n"
            + (
                "# the database's dumps (postgres/db.sh backup)\n/backups/\n"
                if self.with_db
                else ""
            )
        )
        if self.app.env_file:
            outputs[ENV_FILE] = self.app.env_file
            outputs[f"{ENV_FILE}.example"] = self.env_file_example()
        self.place(ROOT / "shared/docker/Dockerfile.dockerignore")  # beside the Dockerfile
        if self.with_db:
            self.place(ROOT / "scripts/db.sh")
        generated = {
            source: self.single_container_dockerfile(source)  # records what it copies
            for source in list(self.files)
            if source.name == "single-container.Dockerfile"
        }
        for source, inside in sorted(self.files.items()):
            if source.is_dir():
                for path in sent_by_build(source) or sorted(source.rglob("*")):
                    if path.is_file() and "__pycache__" not in path.parts:
                        outputs[f"{inside}/{path.relative_to(source)}"] = path
            elif source in generated:
                outputs[inside] = generated[source]
            else:
                outputs[inside] = source
        self.drop_unused_snippets(outputs)
        if generated:
            outputs["docker/single-container.Dockerfile.dockerignore"] = (
                "# the image's build context is this folder: send only what it copies\n*\n"
                + "".join(f"!{name}\n" for name in sorted(set(self.baked)))
            )
        existing = [name for name in outputs if (self.dest / name).exists()]
        if existing and not force:
            raise ExportError(
                f"DEST={self.dest} already has {', '.join(sorted(existing)[:8])}"
                f"{' ...' if len(existing) > 8 else ''}: nothing was written. FORCE=1 overwrites "
                "them (secrets/ is never overwritten)"
            )
        for name, content in outputs.items():
            target = self.dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copy2(content, target)
            else:
                target.write_text(content)
        apps.ensure_secrets(self.dest / "secrets", self.app.secret_files)
        return sorted([*outputs, *(f"secrets/{name}" for name in self.app.secret_files)])


def text_of(content: str | Path) -> str:
    return content.read_text(errors="ignore") if isinstance(content, Path) else content


def sent_by_build(folder: Path) -> list[Path]:
    """A build context of this repository's (nginx's image: shared/nginx/): its Dockerfile and
    ignore file, and the files that ignore file lets through (`*`, then one `!name` a line), so
    that an export holds what the build uses, not the folder's other files (the overlays'
    scripts). [] for a folder without Dockerfile.dockerignore."""
    ignore = folder / "Dockerfile.dockerignore"
    if not ignore.is_file():
        return []
    lines = [line.strip() for line in ignore.read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if lines[:1] != ["*"] or not all(line.startswith("!") for line in lines[1:]):
        raise ExportError(f"{ignore.relative_to(ROOT)}: expected `*`, then `!name` lines only")
    return [folder / "Dockerfile", ignore, *(folder / line[1:] for line in lines[1:])]


def app_server_line(stack: str) -> str:
    folder = ROOT / "stacks" / stack
    if (folder / "uwsgi.ini").exists():
        return (
            "`uwsgi/uwsgi.ini` and `uwsgi/base.ini`: uWSGI's settings (workers, limits, timeouts)."
        )
    if (folder / "gunicorn.conf.py").exists():
        return "`gunicorn/gunicorn.conf.py`: Gunicorn's settings (workers, timeouts)."
    return "`compose.yaml`'s command: the development server (never in production)."


def export(
    stack: str,
    dest: str,
    tls: bool,
    acme: bool,
    force: bool,
    env=None,
    metrics: bool = False,
    allowed_ips: str = "",
) -> Export:
    """Check the request, then write DEST; ExportError / apps.AppError say what to fix.
    `allowed_ips` (ALLOWED_IPS): the allow-list overlay, with it as the default list."""
    # METRICS as the export's flag says (its package goes into the image with its files)
    app = dataclasses.replace(apps.from_settings(env), metrics=metrics)
    if re.search(r"[${}\s\\]", allowed_ips.replace(" ", "")):
        raise ExportError(
            f"ALLOWED_IPS={allowed_ips!r}: only addresses and CIDRs separated by ';', "
            'e.g. ALLOWED_IPS="10.0.0.0/8;192.0.2.7"'
        )
    if not dest:
        raise ExportError("DEST is empty: e.g. make export STACK=... DEST=../my-deploy")
    target = Path(dest).expanduser().resolve()
    if target == ROOT or ROOT in target.parents:
        raise ExportError(
            f"DEST={dest} is inside this repository: export to a folder of your own project, "
            "e.g. DEST=../myproject/deploy"
        )
    if target.exists() and not target.is_dir():
        raise ExportError(f"DEST={dest} is a file, not a folder")
    stack_dir = ROOT / "stacks" / stack
    if not (stack_dir / "compose.yaml").is_file():
        raise ExportError(f"STACK={stack!r} is not a stack")
    try:
        overlays = feature_overlays(
            stack,
            tls=tls,
            acme=acme,
            allow_list=bool(allowed_ips),
            json_logs=app.json_logs,
            metrics=metrics,
        )
    except OverlayError as error:
        raise ExportError(str(error)) from None
    overlays.extend(app.service_overlays())  # DB, QUEUE, WORKER
    secrets_overlay = app.secrets_overlay(stack)  # APP_SECRETS beyond secret_key, the services'
    if secrets_overlay:
        overlays.append(secrets_overlay)
    job = Export(stack=stack, dest=target, app=app, overlays=overlays, allowed_ips=allowed_ips)
    job.write(force)
    return job
