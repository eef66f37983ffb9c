"""The demo app's use of the services beside it (docs/services.md), registered only when they
are on: DATABASE_URL (DB=postgres) adds /notes, REDIS_URL (QUEUE=redis) adds /jobs. Off, this
module is never imported and its dependencies (requirements-services.txt) are not installed.

Settings (from the overlays, never typed by hand):
DATABASE_URL            postgresql://app@postgres:5432/app: no password in it
DATABASE_PASSWORD_FILE  the password, a secret file (added to the URL's parameters here)
REDIS_URL               redis://redis:6379/0: no password in it
REDIS_PASSWORD_FILE     its password, a secret file
DB_POOL_SIZE            connections each app server process keeps at most (default 1 where a
                        process serves one request at a time, uWSGI's; 5 in a gevent worker,
                        whose requests wait on the database side by side)
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from flask import Blueprint, Flask, request
from werkzeug.exceptions import BadRequest, NotFound

MAX_NOTE_BYTES = 10_000
MAX_JOB_SECONDS = 60.0  # a job's own run time; the worker's stop grace covers it (worker.yaml)
JOB_TIMEOUT = 120  # RQ stops a job running longer than this (seconds)
NOTES_TABLE = """
CREATE TABLE IF NOT EXISTS notes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""


def secret(variable: str) -> str:
    """The content of the secret file `variable` names, stripped; a clear error without one."""
    path = os.environ.get(variable, "")
    if not path:
        raise RuntimeError(f"{variable} is not set: the overlay sets it to the secret's file")
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise RuntimeError(f"{variable}={path}: cannot read it ({error.strerror})") from error


def database_conninfo() -> str:
    """DATABASE_URL with the password from DATABASE_PASSWORD_FILE, as libpq parameters (the
    password never becomes part of a URL that could be logged)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(os.environ["DATABASE_URL"], password=secret("DATABASE_PASSWORD_FILE"))


@functools.cache
def redis_connection():
    """The process's Redis client for REDIS_URL, authenticated with REDIS_PASSWORD_FILE's
    password: one pool of connections, which redis-py re-makes in a forked child."""
    from redis import Redis

    return Redis.from_url(os.environ["REDIS_URL"], password=secret("REDIS_PASSWORD_FILE"))


def default_pool_size() -> int:
    """1 connection per process that serves one request at a time; 5 under gevent (its
    monkey-patched sockets: many requests per process), which psycopg 3 yields to by itself."""
    try:
        from gevent import monkey
    except ImportError:
        return 1
    return 5 if monkey.is_module_patched("socket") else 1


class _Pool:
    """A connection pool per process, opened at its first use: uWSGI imports the app in its
    master and forks the workers, which must not share the master's connections."""

    def __init__(self, size: int):
        self.size, self.pid, self.pool = size, None, None

    def get(self):
        if self.pid != os.getpid():
            from psycopg_pool import ConnectionPool

            self.pool = ConnectionPool(
                database_conninfo(),
                min_size=0,  # nothing opened until a request needs it
                max_size=self.size,
                timeout=2,  # a request waits at most 2 s for a connection: then 503, not a pile-up
                check=ConnectionPool.check_connection,  # one the server dropped is replaced
                open=True,
            )
            self.pid = os.getpid()
        return self.pool


def unavailable(detail: str):
    """503 in the app's JSON error shape, with Retry-After: the service is away, not broken."""
    body = {"error": "Service Unavailable", "status": 503, "detail": detail}
    return body, 503, {"Retry-After": "2"}


def create_migrate_command(app: Flask, pool: _Pool) -> None:
    @app.cli.command("migrate")
    def migrate():
        """Create the demo's table if missing (the release step runs it: APP_RELEASE_CMD)."""
        with pool.get().connection() as connection:
            connection.execute(NOTES_TABLE)
        print("migrate: table notes is there")


def register(app: Flask) -> None:
    """Add the routes of the services that are on (their variables set). A password file that
    cannot be read stops the app at start (the release step shows it), not at a request."""
    if os.environ.get("DATABASE_URL"):
        secret("DATABASE_PASSWORD_FILE")
        _register_database(app)
    if os.environ.get("REDIS_URL"):
        secret("REDIS_PASSWORD_FILE")
        _register_queue(app)


def _register_database(app: Flask) -> None:
    import psycopg
    import psycopg_pool

    pool = _Pool(int(os.environ.get("DB_POOL_SIZE") or default_pool_size()))
    notes = Blueprint("notes", __name__)
    create_migrate_command(app, pool)

    @notes.post("/notes")
    def add_note():
        body = request.get_data(as_text=True)
        if not body or len(body.encode()) > MAX_NOTE_BYTES:
            raise BadRequest(f"a note is 1 to {MAX_NOTE_BYTES} bytes of text in the request body")
        with pool.get().connection() as connection:  # committed when the block ends
            note_id = connection.execute(
                "INSERT INTO notes (body) VALUES (%s) RETURNING id", (body,)
            ).fetchone()[0]
        return {"id": note_id, "body": body}, 201

    @notes.get("/notes/<int:note_id>")
    def get_note(note_id: int):
        with pool.get().connection() as connection:
            row = connection.execute("SELECT body FROM notes WHERE id = %s", (note_id,)).fetchone()
        if row is None:
            raise NotFound(f"no note {note_id}")
        return {"id": note_id, "body": row[0]}

    @notes.errorhandler(psycopg.OperationalError)
    @notes.errorhandler(psycopg_pool.PoolTimeout)
    def database_away(error):
        app.logger.warning("the database is not answering: %s", error)
        return unavailable("the database is not answering; try again shortly")

    app.register_blueprint(notes)


def slow_sum(numbers: list[int], seconds: float) -> int:
    """The demo's job: the sum of `numbers`, after `seconds` of work (sleeping)."""
    import time

    time.sleep(seconds)
    return sum(numbers)


def _register_queue(app: Flask) -> None:
    from redis.exceptions import RedisError
    from rq import Queue, Retry
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    jobs = Blueprint("jobs", __name__)

    def queue() -> Queue:
        return Queue("default", connection=redis_connection())

    @jobs.post("/jobs")
    def enqueue():
        payload = request.get_json(silent=True) or {}
        numbers, seconds = payload.get("numbers"), payload.get("seconds", 0)
        if not isinstance(numbers, list) or not all(type(n) is int for n in numbers):
            raise BadRequest('send JSON {"numbers": [1, 2, 3], "seconds": 0.5}')
        if type(seconds) not in (int, float) or not 0 <= seconds <= MAX_JOB_SECONDS:
            raise BadRequest(f"seconds must be a number from 0 to {MAX_JOB_SECONDS:g}")
        # a job whose worker died is run again (at least once: docs/services.md)
        job = queue().enqueue(
            slow_sum, numbers, seconds, job_timeout=JOB_TIMEOUT, retry=Retry(max=3),
            result_ttl=3600,
        )  # fmt: skip
        return {"id": job.id, "status": job.get_status()}, 202

    @jobs.get("/jobs/<job_id>")
    def job_status(job_id: str):
        try:
            job = Job.fetch(job_id, connection=redis_connection())
        except NoSuchJobError:
            raise NotFound(f"no job {job_id}") from None
        status = job.get_status()
        return {"id": job.id, "status": status, "result": job.return_value()}

    @jobs.errorhandler(RedisError)
    def queue_away(error):
        app.logger.warning("the queue is not answering: %s", error)
        return unavailable("the queue is not answering; try again shortly")

    app.register_blueprint(jobs)
