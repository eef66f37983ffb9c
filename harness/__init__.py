"""The test and measurement harness of flask-stacks, shared by the tests, `make bench` and
`make swarm-up`: start and stop a stack's compose project (`compose`), send bounded traffic
(`traffic`), run wrk (`wrk`), inject faults into app servers (`faults`), read containers' CPU
and memory (`resource_usage`), and the HTTPS helpers (`tls`).

Installed into .venv in editable mode by scripts/setup.sh, so tools import it as `harness`
without touching sys.path; the tests' fixtures (tests/conftest.py) are built on it.
"""
