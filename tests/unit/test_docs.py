"""The READMEs tell the truth about the stacks: every stack documented, files and ports real.

Held to this: the stacks committed to git. A new stack directory is brought up and checked by
the other tests as soon as it exists; it must be documented before it is committed.
"""

import re
import subprocess

import pytest

from harness.compose import ROOT, STACKS, publish_var

README = (ROOT / "README.md").read_text()
TRACKED = subprocess.run(
    ["git", "ls-files", "stacks/*/compose.yaml"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=True,
).stdout.split()
DOCUMENTED = [stack for stack in STACKS if f"stacks/{stack}/compose.yaml" in TRACKED]


def default_publish(stack: str) -> str:
    """The default `127.0.0.1:PORT` of a stack's published port, from its compose file."""
    compose = (ROOT / "stacks" / stack / "compose.yaml").read_text()
    match = re.search(r"\$\{" + publish_var(stack) + r":-([0-9.]+:[0-9]+)\}", compose)
    assert match, f"{stack}: compose.yaml publishes no port through ${{{publish_var(stack)}:-...}}"
    return match.group(1)


@pytest.mark.parametrize("stack", DOCUMENTED)
def test_stack_is_in_the_top_readme_with_its_port(stack):
    row = next(
        (line for line in README.splitlines() if f"[{stack}](stacks/{stack}/)" in line), None
    )
    assert row, f"README.md's stack table lacks {stack}"
    port = default_publish(stack).rsplit(":", 1)[1]
    assert f"| {port} |" in row, f"README.md gives {stack} another port than {port}: {row}"


@pytest.mark.parametrize("stack", DOCUMENTED)
def test_stack_readme_names_real_files_and_its_url(stack):
    folder = ROOT / "stacks" / stack
    readme = (folder / "README.md").read_text()
    files = re.search(r"^## Files\n(.*?)^## ", readme, flags=re.MULTILINE | re.DOTALL)
    assert files, f"stacks/{stack}/README.md has no '## Files' section"
    for name in re.findall(r"^\| `([^`]+)` \|", files.group(1), flags=re.MULTILINE):
        assert (folder / name).exists(), (
            f"stacks/{stack}/README.md names {name}, which does not exist"
        )
    assert f"http://{default_publish(stack)}/" in readme, f"{stack}: README shows another URL"
    assert f"make up STACK={stack}" in readme


def test_readme_is_a_landing_page_linking_every_docs_page():
    assert len(README.encode()) < 12 * 1024, "README.md grew past 12 KB: move reference to docs/"
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in README, f"README.md does not link docs/{page.name}"


@pytest.mark.parametrize(
    "doc",
    ["README.md", "CONTRIBUTING.md"]
    + [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("docs/*.md"))]
    + [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("stacks/*/README.md"))],
)
def test_relative_links_resolve(doc):
    path = ROOT / doc
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
        assert (path.parent / target).exists(), f"{doc} links {target}, which does not exist"


def test_checklist_names_tests_that_exist():
    """Every test the production checklist says asserts a point is a test in the file it
    links, and every row names one: the checklist claims nothing no test asserts."""
    checklist = ROOT / "docs/production-checklist.md"
    rows = [r for r in checklist.read_text().splitlines() if r.startswith("| ") and "---" not in r]
    for row in rows[1:]:  # after the header
        cited = re.findall(r"\[`(test_\w+|tests/\w+\.py)`\]\(([^)]+)\)", row.rsplit(" | ", 1)[1])
        assert cited or "config only" in row, f"a checklist row names no test: {row[:80]}"
        for name, link in cited:
            source = (checklist.parent / link).read_text()
            if name.startswith("test_"):
                defined = f"def {name}(" in source or f"    {name} = " in source  # or bound
                assert defined, f"checklist cites {name}, not in {link}"


def tracked(*pathspecs: str) -> list[str]:
    return subprocess.run(
        ["git", "ls-files", *pathspecs], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()


# what the repository's history, not a user, would recognise: plans and steps of our own
HISTORY = re.compile(
    r"\bissue ?#?\d+|\b(first|second|third) round\b|\bprototype\b|\bseeds?\b|\(target\)", re.I
)
PRODUCT = ("README.md", "CONTRIBUTING.md", "docs", "stacks", "shared")


def test_no_history_in_the_product():
    """What a user reads and copies speaks of what is, not of how we got here: no issue
    numbers, rounds, prototypes, seeds or targets (a test may note where a scenario came from)."""
    found = [
        f"{path}:{number}: {line.strip()}"
        for path in tracked(*PRODUCT)
        if (ROOT / path).suffix not in (".png", ".json")
        for number, line in enumerate((ROOT / path).read_text().splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert not found, "\n".join(found)


# a measured figure: a rate, a latency percentile with its value, CPU per request
FIGURE = re.compile(r"\d[\d,.]*k? ?(req/s|messages/s)|p99[ :=]*\d|\d ?µs", re.I)


def test_configs_and_readmes_link_the_measurements_instead_of_retyping_them():
    """Figures live in bench/results (written by `make bench` and `make tune`) and in the
    tests' recorded table; a config or README that retyped one would fall out of date."""
    found = [
        f"{path}:{number}: {line.strip()}"
        for path in tracked("README.md", "stacks", "shared")
        if (ROOT / path).suffix not in (".png", ".json")
        for number, line in enumerate((ROOT / path).read_text().splitlines(), 1)
        if FIGURE.search(line)
    ]
    assert not found, "\n".join(found)
