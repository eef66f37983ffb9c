"""`make tune`'s variants still apply to the files the repository ships: a passage it replaces
that was edited away would stop a 15-minute search at its start, or, unchecked, measure the
shipped configuration under another name."""

import importlib.util
import json
import sys

import pytest

from harness.compose import ROOT

spec = importlib.util.spec_from_file_location("tune", ROOT / "scripts/tune.py")
tune = importlib.util.module_from_spec(spec)
sys.modules["tune"] = tune  # dataclasses look their module up there
spec.loader.exec_module(tune)

VARIANTS = [(stack, v) for stack, variants in tune.SEARCH.items() for v in variants]


@pytest.mark.parametrize(("stack", "variant"), VARIANTS, ids=[v.name for _, v in VARIANTS])
def test_each_variant_changes_what_it_names_and_nothing_else(stack, variant, tmp_path):
    files = tune.overlay(stack, variant, tmp_path / "variant")
    if not (variant.server_args or variant.edits):
        assert files == ()  # the shipped configuration, or another stack as it ships
        return
    (file,) = files
    services = json.loads(file.read_text())["services"]
    if variant.server_args:
        app = services["app"]
        if "uwsgi" in stack:  # options after the ini's win
            assert app["command"] == [*tune.UWSGI_COMMAND, *variant.server_args]
        else:
            assert app["environment"] == {"GUNICORN_CMD_ARGS": " ".join(variant.server_args)}
    for mount in services.get("nginx", {}).get("volumes", []):
        copy, target, mode = mount.split(":")
        shipped = next(p for p, _, _ in variant.edits if tune.MOUNTED[p] == target)
        edited = (tmp_path / "variant" / copy.rsplit("/", 1)[1]).read_text()
        original = (ROOT / shipped).read_text()
        edits = [(d, new) for p, d, new in variant.edits if p == shipped]
        replaced = set()
        for directive, new in edits:  # each directive there once, then gone; its replacement in
            (line,) = tune.matches(original, directive)
            replaced.add(line)
            if directive.rpartition(" > ")[2] not in tune.code_lines(new):
                assert tune.matches(edited, directive) == [], directive
            assert all(c in tune.code_lines(edited) for c in tune.code_lines(new)), new
        # nothing else changed: the shipped file's other directives are all still there
        kept = [tune.code(c) for i, c in enumerate(original.splitlines()) if i not in replaced]
        assert all(c in tune.code_lines(edited) for c in kept if c) and mode == "ro"


def test_a_reworded_comment_or_realigned_line_changes_nothing():
    """The directive is matched by its words: a comment added, reworded or removed, or the
    line's spacing changed, gives the same edited file's directives."""
    shipped = "events {}\nhttp {\n    uwsgi_read_timeout 35s;    # why, as shipped\n}\n"
    reworded = "events {}\nhttp {\n    uwsgi_read_timeout   35s; # another why\n}\n"
    bare = "events {}\nhttp {\n\tuwsgi_read_timeout 35s;\n}\n"
    new = "uwsgi_read_timeout 35s;\nuwsgi_buffering off;"
    directive = "uwsgi_read_timeout 35s;"
    edited = [tune.apply_edit(t, directive, new, "x") for t in (shipped, reworded, bare)]
    assert len({tuple(tune.code_lines(e)) for e in edited}) == 1
    assert tune.code_lines(edited[0]) == [
        "events {}",
        "http {",
        "uwsgi_read_timeout 35s;",
        "uwsgi_buffering off;",
        "}",
    ]
    assert "    uwsgi_buffering off;\n" in edited[0]  # indented as the line it replaced
    # a block's own directive: only the one inside it
    conf = "location / {\n  proxy_pass http://a;\n}\nlocation /ws/ {\n  proxy_pass http://a;\n}\n"
    assert tune.matches(conf, "proxy_pass http://a;") == [1, 4]
    assert tune.matches(conf, "location /ws/ { > proxy_pass http://a;") == [4]
    # a commented-out line is not the directive
    assert tune.code_lines("# uwsgi_read_timeout 35s;\n") == []


def test_a_directive_no_longer_shipped_stops_the_search_with_what_to_update(tmp_path):
    gone = tune.Variant("gone", edits=(("shared/nginx/nginx.conf", "worker_processes 7;", ""),))
    with pytest.raises(SystemExit, match="0 times, not once; update scripts/tune.py"):
        tune.overlay("nginx-uwsgi-socket", gone, tmp_path / "variant")


def test_the_smoke_run_names_variants_that_exist():
    for stack, names in tune.SMOKE.items():
        assert set(names) <= {v.name for v in tune.SEARCH[stack]}, stack
