"""`make tune`: the parameter search behind the app servers' and nginx's settings, on this machine.

Method (written into every report):
- Each variant is a stack started with one change on top of what the repository ships (the
  variant "shipped": none); one app server's variants run side by side with the ceiling (nginx
  answering `return 200` itself), then the next server's.
- wrk loads GET / on each variant's nginx container address (no docker-proxy: the production
  path of `make bench`) at each connection count, after a 1 s warm-up; REPEAT rounds, each
  visiting every variant in turn, reported as median (min-max); CPU µs per request per
  container from the cgroups, as in `make bench`.
- A change is made the way a user would make it: uWSGI options on its command line after
  `--ini` (uWSGI applies them after the ini's, so they win), Gunicorn's GUNICORN_CMD_ARGS
  (which overrides gunicorn.conf.py), and nginx directives by a copy of the shipped file with
  the one directive's line replaced, mounted over it. A directive is matched by its words,
  not its comment or alignment; one no longer in the file (or in it twice) is refused.
  Each variant's server processes are counted in its container, so the report shows that a
  change took effect.
- Results: bench/results/tune-<time>.json and .md, copied to tune-latest.*. What was chosen
  from them, and why, is in docs/benchmark.md.
wrk shares the cores with the stacks: compare variants within one run, not across machines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.bench import (
    CEILING,
    CONTAINER,
    Target,
    TargetPlan,
    Workload,
    add_run_options,
    check_run_options,
    cpu_column,
    machine_info,
    measure,
    median,
    ratio,
    run_facts,
    spread,
    start_targets,
    tree_state,
)
from harness.compose import ROOT, StackError, ephemeral_ports, stop_stacks
from harness.resource_usage import NoAccounting

UWSGI_COMMAND = ["uwsgi", "--ini", "/etc/uwsgi/uwsgi.ini"]  # shared/compose/services.yaml's
# where each file a variant may edit is mounted in the nginx container
MOUNTED = {
    "shared/nginx/nginx.conf": "/etc/nginx/nginx.conf",
    "shared/nginx/access-log.conf": "/etc/nginx/access-log.conf",
    "shared/nginx/snippets/server-defaults.conf": "/etc/nginx/snippets/server-defaults.conf",
    "shared/nginx/snippets/uwsgi-params.conf": "/etc/nginx/snippets/uwsgi-params.conf",
    "stacks/nginx-gunicorn-gevent/default.conf": "/etc/nginx/conf.d/default.conf",
    "stacks/nginx-uwsgi-tcp/default.conf": "/etc/nginx/conf.d/default.conf",
}
SERVER_DEFAULTS = "shared/nginx/snippets/server-defaults.conf"
SECURITY_HEADERS = (  # server-defaults.conf's
    "add_header X-Content-Type-Options nosniff always;",
    "add_header X-Frame-Options DENY always;",
    "add_header Referrer-Policy strict-origin-when-cross-origin always;",
)
GEVENT_CONF = "stacks/nginx-gunicorn-gevent/default.conf"
GUNICORN_PROXY = "location / { > proxy_pass http://app:8000;"  # as in /ws/ and /events


@dataclass(frozen=True)
class Variant:
    name: str  # as the report shows it
    server_args: tuple[str, ...] = ()  # uWSGI options / Gunicorn command-line settings
    # (file as in MOUNTED, directive, replacement lines), each applied to a copy of the shipped
    # file: the one line whose directive (what precedes its comment, spacing aside) it is
    edits: tuple[tuple[str, str, str], ...] = ()
    stack: str | None = None  # another stack, as it ships, for comparison; None: the search's


def upstream(name: str, server: str, requests: int = 1000) -> str:
    """An upstream block with a keep-alive pool, put before a default.conf's server block."""
    return (
        f"upstream {name} {{\n    server {server};\n    keepalive 32;\n"
        f"    keepalive_requests {requests};\n}}\nserver {{"
    )


def code(line: str) -> str:
    """A config line's directive: what precedes its comment (` #`, or `#` first), its words
    joined by one space. nginx's and sh's comments both start so in these files."""
    if line.lstrip().startswith("#"):
        return ""
    return " ".join(line.split(" #", 1)[0].split())


def code_lines(text: str) -> list[str]:
    return [c for c in map(code, text.splitlines()) if c]


def matches(text: str, directive: str) -> list[int]:
    """The lines (0-based) whose directive is `directive`; "BLOCK > DIRECTIVE" (e.g.
    `location / { > proxy_pass http://app:8000;`) only those directly inside that block."""
    lines = [code(line) for line in text.splitlines()]
    block, _, directive = directive.rpartition(" > ")
    if not block:
        return [i for i, line in enumerate(lines) if line == directive]
    found = []
    for start in (i for i, line in enumerate(lines) if line == block):
        depth = 0
        for i in range(start, len(lines)):
            if depth == 1 and lines[i] == directive:
                found.append(i)
            depth += lines[i].count("{") - lines[i].count("}")
            if depth <= 0:
                break
    return found


def apply_edit(text: str, directive: str, new: str, path: str) -> str:
    """`text` with the one line whose directive is `directive` replaced by `new`'s lines,
    indented as that line was ("" deletes it); stops the search if there is not one."""
    lines = text.splitlines(keepends=True)
    where = matches(text, directive)
    if len(where) != 1:
        raise SystemExit(
            f"tune: {path} has this directive {len(where)} times, not once; "
            f"update scripts/tune.py: {directive}"
        )
    line = lines[where[0]]
    indent = line[: len(line) - len(line.lstrip())]
    lines[where[0]] = "".join(f"{indent}{n}\n" for n in new.splitlines())
    return "".join(lines)


KEEPALIVE = 'proxy_set_header Connection "";'  # nginx's default "close" would end each one
TCP_CONF = "stacks/nginx-uwsgi-tcp/default.conf"
UWSGI_PARAMS = "include snippets/uwsgi-params.conf;"
UWSGI_PASS = "uwsgi_pass app:3031;"  # noqa: S105 (a pass, not a password)


ACCESS_LOG = "access_log /dev/stdout main buffer=64k flush=1s if=$loggable;"  # access-log.conf's
# What each server's search tries. uWSGI's list carries nginx's too (one set of nginx files
# serves every stack); Gunicorn's adds its own worker sizing and nginx's upstream keep-alive.
SEARCH: dict[str, list[Variant]] = {
    "nginx-uwsgi-socket": [
        Variant("shipped"),
        Variant("uWSGI processes = 2 (one per core)", ("--processes", "2")),
        Variant("uWSGI processes = 8", ("--processes", "8")),
        Variant("uWSGI processes = 2, threads = 2", ("--processes", "2", "--threads", "2")),
        Variant("uWSGI thunder-lock", ("--thunder-lock",)),
        Variant("uWSGI offload-threads = 2", ("--offload-threads", "2")),
        Variant(
            "nginx worker_processes 1",
            edits=(("shared/nginx/nginx.conf", "worker_processes auto;", "worker_processes 1;"),),
        ),
        Variant(
            "nginx access log unbuffered",
            edits=(
                (
                    "shared/nginx/access-log.conf",
                    ACCESS_LOG,
                    ACCESS_LOG.replace(" buffer=64k flush=1s", ""),
                ),
            ),
        ),
        Variant(
            "nginx access log off",
            edits=(("shared/nginx/access-log.conf", ACCESS_LOG, "access_log off;"),),
        ),
        Variant(
            "nginx without the three security headers",
            edits=tuple((SERVER_DEFAULTS, header, "") for header in SECURITY_HEADERS),
        ),
        Variant(
            "nginx uwsgi_buffering off",
            edits=(
                (
                    "shared/nginx/snippets/uwsgi-params.conf",
                    "uwsgi_read_timeout 35s;",
                    "uwsgi_read_timeout 35s;\nuwsgi_buffering off;",
                ),
            ),
        ),
    ],
    "nginx-gunicorn-gevent": [
        Variant("shipped"),
        Variant("Gunicorn workers = 1", ("--workers", "1")),
        Variant("Gunicorn workers = 3", ("--workers", "3")),
        Variant("Gunicorn workers = 4", ("--workers", "4")),
        Variant("Gunicorn worker_connections = 100", ("--worker-connections", "100")),
        *(
            Variant(
                f"nginx upstream keepalive 32, keepalive_requests {requests}",
                edits=(
                    (GEVENT_CONF, "server {", upstream("gunicorn", "app:8000", requests)),
                    (
                        GEVENT_CONF,
                        GUNICORN_PROXY,
                        f"proxy_pass http://gunicorn;\n{KEEPALIVE}",
                    ),
                ),
            )
            for requests in (1000, 100)
        ),
        Variant(
            "nginx proxy_buffering off",
            edits=(
                (
                    GEVENT_CONF,
                    GUNICORN_PROXY,
                    "proxy_pass http://app:8000;\nproxy_buffering off;",
                ),
            ),
        ),
    ],
    # the uwsgi protocol opens a connection per request: against a unix socket, and against
    # HTTP/1.1 to uWSGI (its http11-socket) with and without nginx's keep-alive pool
    "nginx-uwsgi-tcp": [
        Variant("shipped"),
        Variant("nginx-uwsgi-socket as shipped (a unix socket)", stack="nginx-uwsgi-socket"),
        *(
            Variant(
                f"HTTP/1.1 to uWSGI's http11-socket, {how}",
                ("--http11-socket", ":9000"),
                (
                    (TCP_CONF, "server {", upstream("uwsgi_http", "app:9000")),
                    (TCP_CONF, UWSGI_PARAMS, "include snippets/proxy-params.conf;" + extra),
                    (TCP_CONF, UWSGI_PASS, f"proxy_pass {to};"),
                ),
            )
            for how, extra, to in (
                ("a connection per request", "", "http://app:9000"),
                ("nginx keep-alive 32", "\n" + KEEPALIVE, "http://uwsgi_http"),
            )
        ),
    ],
}
SMOKE = {  # one variant of each kind of change besides the shipped one: the harness, not figures
    "nginx-uwsgi-socket": ["shipped", "uWSGI processes = 2 (one per core)", "nginx access log off"],
    "nginx-gunicorn-gevent": ["shipped", "Gunicorn workers = 1"],
}


def edited_file(path: str, edits: list[tuple[str, str]], out: Path) -> Path:
    """A copy of the shipped file with each directive's line replaced; a directive that is not
    (or not once) in the file stops the search: the variant would measure nothing."""
    text = (ROOT / path).read_text()
    for directive, new in edits:
        text = apply_edit(text, directive, new, path)
    copy = out / Path(path).name
    copy.write_text(text)
    copy.chmod(0o755 if path.endswith(".sh") else 0o644)  # nginx (uid 101) reads it
    return copy


def overlay(stack: str, variant: Variant, out: Path) -> tuple[Path, ...]:
    """The compose overlay that makes the variant's change (none for the shipped one), with
    its edited files, in `out` (the variant's own folder)."""
    out.mkdir(mode=0o755)  # nginx (uid 101) reads the edited files through their mounts
    services: dict[str, dict] = {}
    if variant.server_args:
        services["app"] = (
            {"command": [*UWSGI_COMMAND, *variant.server_args]}
            if "uwsgi" in stack
            else {"environment": {"GUNICORN_CMD_ARGS": " ".join(variant.server_args)}}
        )
    by_file: dict[str, list[tuple[str, str]]] = {}
    for path, old, new in variant.edits:
        by_file.setdefault(path, []).append((old, new))
    if by_file:
        services["nginx"] = {
            "volumes": [
                f"{edited_file(path, edits, out)}:{MOUNTED[path]}:ro"
                for path, edits in by_file.items()
            ]
        }
    if not services:
        return ()
    file = out / "overlay.json"
    file.write_text(json.dumps({"services": services}))  # JSON is YAML: compose reads it
    return (file,)


def in_container(target: Target, service: str, script: str) -> str:
    return target.stack.compose("exec", "-T", service, "sh", "-c", script, check=False).stdout


def check_applied(target: Target, variant: Variant) -> None:
    """The change reached the running containers: the server's command line or environment
    holds the settings, each edited file's mount holds its replacement. A variant that would
    measure the shipped configuration under another name stops the search."""
    seen = {
        "app": in_container(target, "app", "tr '\\0' ' ' </proc/1/cmdline; cat /proc/1/environ"),
        **{
            path: in_container(target, "nginx", f"cat {MOUNTED[path]}")
            for path, _, _ in variant.edits
        },
    }
    missing = [("app", arg) for arg in variant.server_args if arg not in seen["app"]]
    for path, directive, new in variant.edits:
        mounted = code_lines(seen[path])
        missing += [(path, line) for line in code_lines(new) if line not in mounted]
        # a directive removed or rewritten is gone from the file too
        if directive.rpartition(" > ")[2] not in code_lines(new) and matches(seen[path], directive):
            missing.append((path, f"no {directive!r}"))
    if missing:
        raise SystemExit(f"tune: {variant.name}: not applied in its containers: {missing}")


def server_processes(target: Target) -> dict[str, int]:
    """How many processes of its server each container runs (uwsgi, gunicorn, nginx): a
    changed worker count shows here."""
    counts = {}
    for service, name in (("app", "uwsgi"), ("app", "gunicorn"), ("nginx", "nginx")):
        out = target.stack.compose(
            "exec", "-T", service, "sh", "-c", "cat /proc/[0-9]*/comm", check=False
        ).stdout.split()
        if name in out:
            counts[f"{service} ({name})"] = out.count(name)
    return counts


def search(stack: str, variants: list[Variant], args: argparse.Namespace, out: Path) -> dict:
    """Start the stack's variants and the ceiling side by side, measure them in interleaved
    rounds, take them down; the figures per variant."""
    labels = [v.name for v in variants]
    targets = {
        CEILING: TargetPlan(
            "bench-ceiling", ROOT / "bench/ceiling/compose.yaml", True, ("nginx", 8080)
        )
    }
    targets.update(
        {
            v.name: TargetPlan(
                v.stack or stack, None, False, None, overlay(stack, v, out / f"{stack}-{i}")
            )
            for i, v in enumerate(variants)
        }
    )
    workloads = [
        Workload("GET /", "/", c, [CEILING, *labels], CONTAINER) for c in args.connection_counts
    ]
    running: dict[str, Target] = {}
    try:
        start_targets(targets, running)
        for v in variants:
            check_applied(running[v.name], v)
        processes = {label: server_processes(running[label]) for label in labels}
        for round_ in range(args.repeat):
            for w in workloads:
                for label in w.labels:
                    print(
                        f"{stack} round {round_ + 1}/{args.repeat}: {label} at {w.connections}",
                        file=sys.stderr,
                    )
                    run = measure(running[label], w, args.duration, not args.smoke)
                    del run["cpu_us"]["docker-proxy"]  # none on this path: make bench shows it
                    w.runs.setdefault(label, []).append(run)
    finally:
        try:
            stop_stacks(target.stack for target in running.values())
        except StackError as error:
            raise SystemExit(f"tune: {error}") from None
    return {
        "stack": stack,
        "variants": [
            {"name": v.name, "server_args": v.server_args, "edits": v.edits} for v in variants
        ],
        "processes": processes,
        "workloads": [{"connections": w.connections, "runs": w.runs} for w in workloads],
    }


def report(data: dict) -> str:
    m = data["machine"]
    lines = [
        f"`{data['command']}`, {data['started']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, kernel {m['kernel']}, Docker {m['docker']}, "
        f"{m['wrk']}; commit {m['git']}. {data['duration']} s per run; median (min-max) of "
        f"{data['repeat']} rounds; GET / to each nginx container's address.",
    ]
    for s in data["searches"]:
        lines += [
            "",
            f"### {s['stack']}",
            "",
            "| variant | conns | req/s | × ceiling | × shipped | p50 ms | p99 ms | non-2xx "
            "| socket errors | CPU µs/request per container | server processes |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for w in s["workloads"]:
            ceiling = median(w["runs"][CEILING], "rps")
            shipped = median(w["runs"]["shipped"], "rps")
            for label, runs in w["runs"].items():
                processes = ", ".join(f"{k} {n}" for k, n in s["processes"].get(label, {}).items())
                rps = median(runs, "rps")
                lines.append(
                    f"| {label} | {w['connections']} | {spread([r['rps'] for r in runs])} "
                    f"| {ratio(rps, ceiling)} | {ratio(rps, shipped) if label != CEILING else '-'} "
                    f"| {spread([r['p50'] for r in runs], '{:.1f}')} "
                    f"| {spread([r['p99'] for r in runs], '{:.1f}')} "
                    f"| {sum(r['non2xx'] for r in runs)} | {sum(r['errors'] for r in runs)} "
                    f"| {cpu_column(runs)} | {processes} |"
                )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (or SERVERS, DURATION, CONNECTIONS, REPEAT, OUT from make), checked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--servers",
        default=os.environ.get("SERVERS", ""),
        help=f"comma-separated stacks whose server is searched; default: {','.join(SEARCH)}",
    )
    add_run_options(
        parser,
        "search",
        "1 s runs, no warm-ups, 16 connections, once, a few variants: checks the harness",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.connections, args.repeat = 1, "16", 1
    args.names = [s for s in args.servers.split(",") if s] or list(SMOKE if args.smoke else SEARCH)
    unknown = sorted(set(args.names) - set(SEARCH))
    if unknown:
        raise SystemExit(f"tune: no search for {unknown}; choose from {list(SEARCH)}")
    check_run_options(args, "tune")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("tune: wrk is missing: run `make setup` (Debian: apt-get install wrk)")
    machine = machine_info()
    machine["git"] = tree_state(machine["git"], args.allow_dirty)
    os.environ.update(ephemeral_ports("bench/*/compose.yaml"))
    started = datetime.datetime.now(datetime.UTC)
    searches = []
    with tempfile.TemporaryDirectory(prefix="fs-tune-") as tmp:
        out = Path(tmp)
        out.chmod(0o755)  # nginx (uid 101) reads the edited files through their mounts
        try:
            for stack in args.names:
                variants = SEARCH[stack]
                if args.smoke:
                    variants = [v for v in variants if v.name in SMOKE.get(stack, ["shipped"])]
                searches.append(search(stack, variants, args, out))
        except NoAccounting as error:
            raise SystemExit(f"tune: {error}") from None
    command = "make tune (smoke)" if args.smoke else "make tune"
    data = {**run_facts(command, started, machine, args, __doc__), "searches": searches}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / started.strftime("tune-%Y%m%d-%H%M%S")
    markdown = report(data)
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown)
    for suffix in (".json", ".md"):
        shutil.copyfile(stem.with_suffix(suffix), args.out / f"tune-latest{suffix}")
    print(__doc__)
    print(markdown)
    print(f"tune: wrote {stem}.json and .md (and {args.out}/tune-latest.*)")
    failures = sum(
        r["non2xx"] + r["errors"]
        for s in searches
        for w in s["workloads"]
        for label, runs in w["runs"].items()
        if label != CEILING
        for r in runs
    )
    # a variant's errors are a finding (the report shows them), but not in the smoke run
    return 1 if args.smoke and failures else 0


if __name__ == "__main__":
    sys.exit(main())
