"""WSGI entry point: `wsgi:application` for uWSGI and Gunicorn, `wsgi:app` for `flask run`."""

import gc

from flask_stacks import create_app

application = app = create_app()

# uWSGI imports this once in its master and forks the workers from it. Without this, a worker's
# first full garbage collection writes to every object inherited from the master and so copies
# their pages: +4.5 MiB per process at once, seen by the memory test. Frozen objects are never
# collected or touched by the collector, so those pages stay shared.
gc.freeze()
