"""A WSGI app whose import leaves a non-daemon thread running while uWSGI forks its workers, as
limits' in-memory storage does for 10 ms (ihatemoney's rate limits) and an SDK's exporter does
for its life (tests/test_nginx_uwsgi_tcp.py)."""

import threading

threading.Timer(3, lambda: None).start()  # ends in the master 3 s later; the workers fork before


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
