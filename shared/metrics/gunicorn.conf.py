"""METRICS=1 in Gunicorn (docs/metrics.md), mounted into /etc/gunicorn/conf.d/ by the stack's
compose.metrics.yaml; gunicorn.conf.py runs it. Every worker counts its requests (importing the
module hooks Flask's request signals, in the master before the workers fork); the workers'
counters are added up and served on port 9102 of the compose network by a thread of the
master, started once it is ready, so the forked workers do not have the thread."""

import sys

sys.path.insert(0, "/opt/flask-stacks/metrics")  # where the overlay mounts the module

import flask_stacks_metrics  # noqa: E402

if flask_stacks_metrics.enabled():

    def when_ready(server):
        flask_stacks_metrics.start_in_background()
