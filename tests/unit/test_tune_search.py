"""`make tune`'s variants still apply to the files the repository ships: a passage it replaces
that was edited away would stop a 15-minute search at its start, or, unchecked, measure the
shipped configuration under another name."""

import importlib.util
import json
import sys

import pytest

from harness.compose import ROOT

sys.path.insert(0, str(ROOT / "scripts"))  # tune imports bench, as `python scripts/tune.py` does
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
        expected = (ROOT / shipped).read_text()
        for path, old, new in variant.edits:
            if path == shipped:
                assert expected.count(old) == 1
                expected = expected.replace(old, new)
        assert edited == expected and mode == "ro"


def test_a_passage_no_longer_shipped_stops_the_search_with_what_to_update(tmp_path):
    gone = tune.Variant("gone", edits=(("shared/nginx/nginx.conf", "worker_processes 7;", ""),))
    with pytest.raises(SystemExit, match="no longer has this passage once; update scripts/tune.py"):
        tune.overlay("nginx-uwsgi-socket", gone, tmp_path / "variant")


def test_the_smoke_run_names_variants_that_exist():
    for stack, names in tune.SMOKE.items():
        assert set(names) <= {v.name for v in tune.SEARCH[stack]}, stack
