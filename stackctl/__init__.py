"""The tools behind `make up`, `make run`, `make export` and `make swarm-up`: your app's
settings checked and turned into compose variables (`apps`), a stack exported as a folder that
runs alone (`export`), and the facts about the stacks both read (`stacks`).

The product's side: the test and measurement harness (harness/) imports from here, never the
other way round. Installed into .venv in editable mode by scripts/setup.sh; `scripts/app.py`
imports it from the repository without .venv (make's `env` step needs the standard library
only).
"""
