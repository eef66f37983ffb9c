"""RQ's settings for the demo's worker: WORKER='rq worker -c flask_stacks.rq_settings'
(docs/services.md). RQ reads REDIS_HOST, REDIS_PORT, REDIS_DB and REDIS_PASSWORD from this
module; they come from REDIS_URL and the secret file REDIS_PASSWORD_FILE (QUEUE=redis sets both),
so that the password is in no command line, URL or log.
"""

import contextlib
import os
from urllib.parse import urlsplit

# LOG_FORMAT=json: the root logger writes JSON lines, as the app servers' do; RQ then adds no
# handler of its own (it only does when none is effective). Its overlay mounts the module on the
# image's PYTHONPATH (shared/json-logs/worker.yaml); text logs: no such module, RQ's own handler.
with contextlib.suppress(ImportError):
    import flask_stacks_logging  # noqa: F401

from flask_stacks.services import secret

_url = urlsplit(os.environ["REDIS_URL"])
REDIS_HOST = _url.hostname
REDIS_PORT = _url.port or 6379
REDIS_DB = int(_url.path.lstrip("/") or 0)
REDIS_PASSWORD = secret("REDIS_PASSWORD_FILE")
QUEUES = ["default"]  # the queue /jobs enqueues on
