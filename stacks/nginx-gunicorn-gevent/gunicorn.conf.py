"""Gunicorn for the nginx-gunicorn-gevent stack: gevent workers behind nginx.

Every setting: https://docs.gunicorn.org/en/stable/settings.html
"""

import glob
import multiprocessing
import os

import gevent

wsgi_app = os.environ["APP_MODULE"]  # "module:variable" or "module:factory()", set in the image

# Server socket
bind = "0.0.0.0:8000"  # the compose network only: compose publishes nginx, not this port
backlog = 4096  # pending connections: every one nginx can hold open to us (base.ini's listen)

# Worker processes
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count()))  # one per core
worker_class = "gevent"  # each worker serves many requests at once while they wait on I/O
# concurrent connections per worker, held WebSockets and event streams included (default.conf's
# limit_conn 1000). 100 serves short requests a little faster (make tune) but caps what one
# worker holds open at 100.
worker_connections = 1000
timeout = 30  # for gevent a heartbeat: a worker whose event loop is blocked 30 s is restarted
graceful_timeout = 30  # SIGTERM: in-flight requests get 30 s, inside compose's 35 s grace period
# No worker recycling: without preload (unsafe with gevent's monkey-patching) a new worker imports
# the app, and at load a count like 5000 recycles each worker every few seconds, each restart a
# latency spike (docs/benchmark.md). If your app leaks: e.g. 200000, max_requests_jitter 20000.
max_requests = 0
# heartbeat files on tmpfs: on overlayfs they can stall into WORKER TIMEOUT (gunicorn #1801);
# /dev/shm is the container's own, so S108's shared-temp-dir worry does not apply
worker_tmp_dir = "/dev/shm"  # noqa: S108


# SIGTERM (`docker compose stop`, a reload's old workers) only sets worker.alive = False; the worker
# then waits up to graceful_timeout for its connections, and cuts the WebSockets still open (1006)
# after 30 s. This greenlet tells the app at once (the named blinker signal the demo app listens
# to), which closes them with 1001, going away, and ends its event streams: clients reconnect.
# An app without blinker (Flask's own signals library; a WSGI app that is not Flask may lack it)
# has no listener either: nothing is sent.
def post_worker_init(worker):
    try:
        import blinker
    except ImportError:
        return

    def announce_stop():
        while worker.alive:
            gevent.sleep(0.5)
        blinker.signal("flask-stacks.server-stopping").send(worker)

    gevent.spawn(announce_stop)


# Request limits, matched to nginx's large_client_header_buffers 4 16k
limit_request_field_size = 16384  # one header up to 16 KB: an 8 KB cookie works (default 8190)
limit_request_line = 8190  # Gunicorn's maximum; longer request lines get 400

# Server mechanics
control_socket_disable = (
    True  # Gunicorn 27's control socket: unused here, and $HOME is not writable
)

# Proxy: this port is reachable only from the compose network, where nginx is the one client.
# The app's ProxyFix (PROXY_COUNT=1) decides the client address; this lets Gunicorn accept
# nginx's X-Forwarded-Proto too.
forwarded_allow_ips = "*"

# Logging: errors to stderr for `docker compose logs`. No access log: nginx logs every request
# with its request id and upstream time; Gunicorn's own costs a large share of its throughput.
errorlog = "-"

# Features switched on (METRICS=1, LOG_FORMAT=json): each mounts a settings file of its own
# here, run as part of this one; none by default
for _feature in sorted(glob.glob("/etc/gunicorn/conf.d/*.py")):
    with open(_feature) as _file:
        exec(compile(_file.read(), _feature, "exec"))  # noqa: S102 (the stack's own files)
