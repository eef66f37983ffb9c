"""DB=postgres, QUEUE=redis and WORKER=... (docs/services.md) with the demo app, on every production
stack: its notes (PostgreSQL) and jobs (Redis, the RQ worker) through nginx, the data kept by a
restart, the services on the stack's network only. On SERVICES_FAULTS_STACK, the faults and the
tools: PostgreSQL killed under writes (every write answered 2xx is there after; 503 meanwhile;
the app recovers by itself), Redis killed with jobs queued (they run afterwards), a worker stopped
mid-job (the job completes), the release step waiting for the database, make backup / restore."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid

import pytest
import requests

from harness.compose import (
    ROOT,
    STACKS,
    Stack,
    docker_time,
    nginx_in_front,
    start_stack,
    stop_stack,
)  # fmt: skip
from harness.traffic import wait_for
from stackctl.stacks import feature_overlays

PRODUCTION_STACKS = [s for s in STACKS if nginx_in_front(s)]
SERVICES_FAULTS_STACK = "nginx-uwsgi-socket"
SETTINGS = {
    "DB": "postgres",
    "QUEUE": "redis",
    # a killed worker's job is re-queued within ~2 min, not ~10 (docs/services.md)
    "WORKER": "rq worker -c flask_stacks.rq_settings --maintenance-interval 30 --worker-ttl 45",
    "APP_RELEASE_CMD": "flask --app wsgi:application migrate",
}


def pytest_generate_tests(metafunc):
    """Every check on every production stack; the faults' and the tools' (FAULTS) on one."""
    if "stack" in metafunc.fixturenames:
        names = (
            [SERVICES_FAULTS_STACK] if metafunc.function.__name__ in FAULTS else PRODUCTION_STACKS
        )
        metafunc.parametrize("stack", names, indirect=True, scope="module")


@pytest.fixture(scope="module")
def stack(request, images) -> Stack:
    """The stack with the three overlays on, the demo app using them; always taken down."""
    # LOG_FORMAT=json on the faults' stack: the worker logs as the app servers do
    log_format = "json" if request.param == SERVICES_FAULTS_STACK else "text"
    json_logs = feature_overlays(request.param, json_logs=log_format == "json")
    started = start_stack(
        request.param, overlays=json_logs, env={**SETTINGS, "LOG_FORMAT": log_format}
    )
    try:
        yield started
    finally:
        stop_stack(started)


@pytest.fixture
def base_url(stack: Stack) -> str:
    """Asked per test: a restart of the stack gives nginx a new host port."""
    return stack.base_url()


def add_note(base_url: str, body: str, timeout: float = 10) -> requests.Response:
    return requests.post(f"{base_url}/notes", data=body.encode(), timeout=timeout)


def run_job(base_url: str, numbers: list[int], seconds: float = 0) -> str:
    answer = requests.post(
        f"{base_url}/jobs", json={"numbers": numbers, "seconds": seconds}, timeout=10
    )
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def job(base_url: str, job_id: str) -> dict:
    answer = requests.get(f"{base_url}/jobs/{job_id}", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_finished(base_url: str, job_id: str, timeout: float) -> dict:
    wait_for(
        lambda: job(base_url, job_id)["status"] == "finished", timeout, f"job {job_id} finished"
    )
    return job(base_url, job_id)


def test_notes_are_written_and_read_back_through_nginx(stack, base_url):
    """A note POSTed through nginx is in PostgreSQL: read back by id, from another request."""
    body = f"note {uuid.uuid4()}"
    answer = add_note(base_url, body)
    assert answer.status_code == 201, answer.text
    note = answer.json()["id"]
    again = requests.get(f"{base_url}/notes/{note}", timeout=10)
    assert (again.status_code, again.json()["body"]) == (200, body)
    missing = requests.get(f"{base_url}/notes/999999999", timeout=10)
    assert missing.status_code == 404 and missing.json()["status"] == 404
    empty = add_note(base_url, "")
    assert empty.status_code == 400 and "1 to" in empty.json()["detail"]


def test_a_job_enqueued_through_nginx_is_run_by_the_worker(stack, base_url):
    """The worker (the app's image, its settings and secrets) runs the job; its result is read
    back through nginx. A bad job is refused with what to send."""
    job_id = run_job(base_url, [1, 2, 39])
    assert wait_finished(base_url, job_id, timeout=30)["result"] == 42
    bad = requests.post(f"{base_url}/jobs", json={"numbers": "1,2"}, timeout=10)
    assert bad.status_code == 400 and "numbers" in bad.json()["detail"]


def test_services_are_healthy_and_on_the_stack_network_only(stack):
    """postgres, redis and the worker pass their healthchecks; none is published on the host;
    the worker's healthcheck finds it in Redis (rq-health)."""
    published = {service for service, _ in stack.published()}
    assert not published & {"postgres", "redis", "worker"}, stack.published()
    for service in ("postgres", "redis", "worker"):
        health = stack.health(service)
        assert health == "healthy", f"{service}: {health}"
    # healthy is 3 failures in a row away: one probe slowed by a busy machine is not the point
    passing = [p for p in stack.inspect("worker")["State"]["Health"]["Log"] if p["ExitCode"] == 0]
    assert passing and "queues default" in passing[-1]["Output"], passing


def test_no_password_in_any_environment_or_command(stack):
    """The passwords are in secret files only: not in any container's `docker inspect` (its
    environment and command), DATABASE_URL and REDIS_URL carry none."""
    secrets_dir = ROOT / "secrets"
    passwords = [
        (secrets_dir / name).read_text().strip()
        for name in ("database_password", "postgres_password", "redis_password")
    ]
    for service in (*stack.app_services(), "worker", "postgres", "redis"):
        inspected = repr(stack.inspect(service)["Config"])
        assert not [p for p in passwords if p in inspected], f"{service}: a password in its config"


# ---- the faults and the tools, on one stack: they hold on the others by the same files ----
FAULTS = {
    "test_postgres_killed_under_writes_loses_no_answered_write",
    "test_redis_killed_with_jobs_queued_runs_them_afterwards",
    "test_a_worker_stopped_mid_job_finishes_it_first",
    "test_a_killed_workers_job_is_run_again",
    "test_the_worker_logs_json_lines_like_the_app_servers",
    "test_the_release_step_ran_after_the_database_was_healthy",
    "test_backup_then_restore_brings_back_what_was_written",
}


def crash(stack: Stack, service: str) -> float:
    """SIGKILL the service's PID 1 from the host, as a crash would (`docker kill` would mark it
    stopped by hand, and Docker would not restart it); Docker restarts it (restart:
    unless-stopped). Returns when."""
    pid = stack.inspect(service)["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


class Writer:
    """POSTs /notes one after another in a thread (each body unique), keeping every answer."""

    def __init__(self, base_url: str, limit: float = 90):
        self.base_url, self.answers = base_url, []
        self._stop, self._deadline = threading.Event(), time.monotonic() + limit
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            n += 1
            body, at = f"write {n} {uuid.uuid4().hex}", time.monotonic()
            try:
                answer = add_note(self.base_url, body, timeout=10)
                status, data = answer.status_code, answer.json()
                retry = answer.headers.get("Retry-After")
            except (requests.RequestException, ValueError) as error:
                status, data, retry = None, repr(error), None
            self.answers.append((at, body, status, data, retry))
            self._stop.wait(0.05)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)

    def count(self, status: int, after: float = 0.0) -> int:
        return sum(1 for at, _, s, _, _ in list(self.answers) if s == status and at >= after)


@pytest.mark.timed
def test_postgres_killed_under_writes_loses_no_answered_write(stack, base_url, record):
    """PostgreSQL killed (SIGKILL) during a stream of writes: Docker restarts it, the app
    reconnects by itself (its containers not restarted), and every write answered 201 is in the
    database (a commit is on disk before its answer: fsync and synchronous_commit are
    PostgreSQL's defaults). Then stopped for longer than a request waits for a connection (2 s):
    the app answers 503 (JSON, Retry-After), and 201 again once it is started."""
    app = stack.app_services()[0]
    started = stack.inspect(app)["State"]["StartedAt"]
    restarts = stack.inspect("postgres")["RestartCount"]
    with Writer(base_url) as writer:
        wait_for(lambda: writer.count(201) >= 20, 30, "20 writes answered before the kill")
        crash(stack, "postgres")

        def restarted() -> bool:
            count = stack.inspect("postgres")["RestartCount"]
            return count > restarts and stack.health("postgres") == "healthy"

        wait_for(restarted, 90, "PostgreSQL restarted by Docker and healthy")
        back = time.monotonic()
        wait_for(lambda: writer.count(201, back) >= 20, 30, "20 writes answered after the restart")
        stack.compose("stop", "postgres", timeout=60)
        try:
            away = time.monotonic()
            wait_for(lambda: writer.count(503, away) >= 3, 30, "503s while the database is away")
        finally:
            stack.compose("start", "postgres", timeout=120)
        wait_for(lambda: stack.health("postgres") == "healthy", 90, "PostgreSQL started, healthy")
        again = time.monotonic()
        wait_for(lambda: writer.count(201, again) >= 20, 30, "20 writes answered once it is back")
    answers = writer.answers
    unexpected = [a for a in answers if a[2] not in (201, 503)]
    assert not unexpected, f"answers neither 201 nor 503: {unexpected[:5]}"
    unavailable = [a for a in answers if a[2] == 503]
    assert all(a[3]["status"] == 503 and a[4] for a in unavailable), unavailable[:3]
    lost = []
    for _, body, status, data, _ in answers:
        if status == 201:
            read = requests.get(f"{base_url}/notes/{data['id']}", timeout=10)
            if read.status_code != 200 or read.json()["body"] != body:
                lost.append((data["id"], read.status_code))
    assert not lost, f"answered 201, then not in the database: {lost[:5]}"
    assert stack.inspect(app)["State"]["StartedAt"] == started, "the app server was restarted"
    written = sum(1 for a in answers if a[2] == 201)
    record(
        stack, "PostgreSQL kill -9, then stopped",
        f"answered {written} writes, lost 0 / 503 while stopped {len(unavailable)}",
    )  # fmt: skip


def test_redis_killed_with_jobs_queued_runs_them_afterwards(stack, base_url):
    """Jobs queued while the worker is stopped, then Redis killed (SIGKILL) and restarted by
    Docker: the append-only file had them (written before each answer), and the worker, started
    again, runs every one."""
    stack.compose("stop", "worker", timeout=180)
    try:
        jobs = {run_job(base_url, [n, n]): 2 * n for n in range(10)}
        time.sleep(1.5)  # appendfsync everysec: on the disk too, not only in the kernel's cache
        crash(stack, "redis")
        wait_for(lambda: stack.health("redis") == "healthy", 60, "Redis restarted and healthy")
    finally:
        stack.compose("start", "worker", timeout=120)
    for job_id, total in jobs.items():
        assert wait_finished(base_url, job_id, timeout=60)["result"] == total


def test_a_worker_stopped_mid_job_finishes_it_first(stack, base_url, record):
    """`docker compose stop` sends SIGTERM: RQ's warm shutdown lets the running job finish (the
    stop grace covers the job limit), then the worker exits by itself, not by the grace's
    SIGKILL; the result is there. The worker's log shows that the stop came while the job ran.
    (No bound on the stop's time: RQ's exit waits up to 60 s for its pubsub thread,
    docs/services.md; the exit code tells a SIGKILL.)"""
    # 15 s: on two busy cores a poll through nginx can take seconds, and the stop must reach
    # the worker while the job runs
    job_id = run_job(base_url, [20, 22], seconds=15)

    def started() -> bool:
        status = job(base_url, job_id)["status"]
        assert status in ("queued", "started"), f"the job is {status} before the stop"
        return status == "started"

    wait_for(started, 60, "the job started")
    since, began = time.time(), time.monotonic()
    try:
        stack.compose("stop", "worker", timeout=180)
        took = time.monotonic() - began
        assert job(base_url, job_id)["status"] == "finished", job(base_url, job_id)
        assert job(base_url, job_id)["result"] == 42
        exited = stack.inspect("worker")["State"]
        assert exited["ExitCode"] != 137 and not exited["OOMKilled"], exited
        lines = stack.logs("worker", since=since).splitlines()
        asked = [i for i, line in enumerate(lines) if "warm shut down requested" in line]
        done = [i for i, line in enumerate(lines) if "Job OK" in line and job_id in line]
        assert asked and done and asked[0] < done[0], (
            "the worker's log does not show the stop asked while the job ran (warm shut down "
            "requested, then Job OK):\n" + "\n".join(lines[-20:])
        )
    finally:
        stack.compose("start", "worker", timeout=120)
    record(stack, "worker stopped mid-job", f"job finished, worker exited after {took:.1f} s")


def test_the_release_step_ran_after_the_database_was_healthy(stack):
    """The release step (the migrations) started only after PostgreSQL's real server (not the
    one initdb runs on the new volume and stops) accepted connections, and succeeded at once:
    no crash loop while the database initialises (Compose's depends_on: service_healthy)."""
    logs = stack.compose("logs", "--timestamps", "--no-color", "--no-log-prefix", "postgres").stdout
    ready = [line.split()[0] for line in logs.splitlines() if "ready to accept connections" in line]
    assert len(ready) >= 2, f"initdb's server and the real one, each ready once:\n{logs[-2000:]}"
    (release,) = stack.containers("release")
    state = json.loads(subprocess.run(
        ["docker", "inspect", release], capture_output=True, text=True, check=True
    ).stdout)[0]["State"]  # fmt: skip
    assert (state["Status"], state["ExitCode"]) == ("exited", 0), state
    assert docker_time(state["StartedAt"]) > docker_time(ready[-1]), (state["StartedAt"], ready)
    assert "migrate: table notes is there" in stack.logs("release")
    for service in (*stack.app_services(), "worker"):
        assert stack.inspect(service)["RestartCount"] == 0, f"{service} was restarted"


def test_backup_then_restore_brings_back_what_was_written(stack, base_url):
    """make backup writes a dump that pg_restore reads; notes written after it are gone after
    make restore, those before are back; restore refuses a database with tables without FORCE=1
    (exit 2, saying so), and with it first backs up what it replaces."""
    before = add_note(base_url, "before the backup").json()["id"]
    dump = stack.db("backup")
    assert dump.returncode == 0, dump.stderr
    dumps = [ROOT / re.match(r"backup: (\S+) ", dump.stdout)[1]]
    try:
        after = add_note(base_url, "after the backup").json()["id"]
        refused = stack.db("restore", str(dumps[0]))
        assert refused.returncode == 2 and "FORCE=1" in refused.stderr, refused.stderr
        restored = stack.db("restore", str(dumps[0]), "force")
        assert restored.returncode == 0, restored.stderr
        saved = re.search(r"backup of the database being replaced: (\S+)", restored.stdout)
        assert saved, f"no backup of what the restore replaced:\n{restored.stdout}"
        dumps.append(ROOT / saved[1])
        url = stack.base_url()
        read = requests.get(f"{url}/notes/{before}", timeout=10)
        assert read.json()["body"] == "before the backup"
        assert requests.get(f"{url}/notes/{after}", timeout=10).status_code == 404
    finally:
        for path in dumps:
            path.unlink(missing_ok=True)


def test_a_killed_workers_job_is_run_again(stack, base_url, record):
    """The worker killed (SIGKILL: no warm shutdown) mid-job: Docker restarts it, and RQ
    re-queues the abandoned job once its execution's heartbeat has expired (at most
    job_monitoring_interval + 60 s), at the next maintenance (30 s here): at least once."""
    job_id = run_job(base_url, [40, 2], seconds=5)
    wait_for(lambda: job(base_url, job_id)["status"] == "started", 20, "the job started")
    killed = crash(stack, "worker")
    result = wait_finished(base_url, job_id, timeout=180)
    took = time.monotonic() - killed
    assert result["result"] == 42
    record(
        stack, "worker kill -9 mid-job", f"the job ran again, finished {took:.0f} s after the kill"
    )


def test_the_worker_logs_json_lines_like_the_app_servers(stack, base_url):
    """LOG_FORMAT=json: the worker's records (RQ's own and the job's) are JSON lines."""
    job_id = run_job(base_url, [1, 1])
    wait_finished(base_url, job_id, timeout=30)
    lines = [line for line in stack.logs("worker").splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line[line.index("{") :]))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    assert any(r.get("logger", "").startswith("rq") and job_id in r["message"] for r in records)


# last: `down` and `up` give nginx a new host port and the services new containers
def test_notes_and_jobs_outlive_a_restart_of_the_stack(stack, base_url):
    """`docker compose down` (as make down: volumes kept) and `up`: the note and the finished
    job's result are still there."""
    note = add_note(base_url, "kept").json()["id"]
    job_id = run_job(base_url, [2, 3])
    wait_finished(base_url, job_id, timeout=30)
    stack.compose("down", "--timeout", "40", timeout=120)
    stack.up()
    url = stack.base_url()
    assert requests.get(f"{url}/notes/{note}", timeout=10).json()["body"] == "kept"
    assert job(url, job_id)["result"] == 5
