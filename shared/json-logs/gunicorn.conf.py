"""LOG_FORMAT=json in Gunicorn (docs/logs.md), mounted into /etc/gunicorn/conf.d/ by the stack's
compose.json-logs.yaml; gunicorn.conf.py runs it. The app's records as JSON lines (imported here,
before Gunicorn loads the app), and Gunicorn's error log too; its access log stays off."""

import flask_stacks_logging  # on the image's PYTHONPATH, where the overlay mounts it

logger_class = flask_stacks_logging.gunicorn_logger_class()
