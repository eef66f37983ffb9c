"""The tools users run (`make up`, `make run`, `make export`, `make swarm-up`) import nothing of
the test harness: stackctl/ is the product, harness/ imports it, never the reverse."""

import subprocess
import sys

import pytest

from harness.compose import ROOT

LOADED = """
import runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_path({script!r}, run_name={run_name!r})
except SystemExit:
    pass
print(sorted(m for m in sys.modules if m == "harness" or m.startswith("harness.")))
"""


@pytest.mark.parametrize(
    ("script", "argv", "run_name"),
    [
        ("scripts/app.py", ["app.py", "env", "nginx-uwsgi-tcp"], "__main__"),  # make up, run
        ("scripts/app.py", ["app.py", "export", "no-such-stack", "/nonexistent"], "__main__"),
        ("scripts/swarm.py", ["swarm.py"], "swarm"),  # make swarm-up: what it imports
    ],
    ids=["up", "export", "swarm-up"],
)
def test_the_tools_import_nothing_of_the_harness(script, argv, run_name, tmp_path):
    code = LOADED.format(argv=argv, script=str(ROOT / script), run_name=run_name)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


def test_stackctl_imports_nothing_of_the_harness():
    sources = [p for p in (ROOT / "stackctl").rglob("*.py")]
    assert sources
    for path in sources:
        text = path.read_text()
        assert "from harness" not in text and "import harness" not in text, path
