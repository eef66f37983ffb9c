#!/usr/bin/env python3
"""The RQ worker's healthcheck (shared/compose/worker.yaml, WORKER='rq worker ...'): exit 0 only
when a worker of this container (its hostname) is registered in Redis, which RQ keeps only while
the worker's heartbeat refreshes it, and is not suspended (`rq suspend`): it takes jobs.

Redis is the app's: REDIS_URL, and the password from REDIS_PASSWORD_FILE (QUEUE=redis gives both,
docs/services.md). rq and redis-py are the app image's (the worker needs them); nothing else.
"""

import os
import socket
import sys
from pathlib import Path

from redis import Redis
from rq import Worker
from rq.suspension import is_suspended


def main() -> int:
    password_file = os.environ.get("REDIS_PASSWORD_FILE")
    password = Path(password_file).read_text().strip() if password_file else None
    connection = Redis.from_url(
        os.environ["REDIS_URL"], password=password, socket_timeout=2, socket_connect_timeout=2
    )
    here = socket.gethostname()
    mine = [w for w in Worker.all(connection=connection) if w.hostname == here]
    if not mine:
        print(f"unhealthy: no RQ worker of this container ({here}) is registered in Redis")
        return 1
    if is_suspended(connection):
        print("unhealthy: the workers are suspended (rq suspend): no job is taken until rq resume")
        return 1
    for worker in mine:
        print(f"{worker.name}: {worker.get_state()}, queues {','.join(worker.queue_names())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
