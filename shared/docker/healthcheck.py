#!/usr/bin/env python3
"""Container healthcheck: GET $HEALTH_PATH (default /healthz) of the app server; exit 0 on 2xx.

    healthcheck http://127.0.0.1:8000 | uwsgi:///run/uwsgi/uwsgi.sock | uwsgi://127.0.0.1:3031

uWSGI behind nginx speaks only the uwsgi protocol (no curl for it): this sends the request
nginx's uwsgi_pass would (https://uwsgi-docs.readthedocs.io/en/latest/Protocol.html).
"""

import os
import socket
import struct
import sys
from urllib.parse import urlsplit

TIMEOUT = 3.0
PATH = os.environ.get("HEALTH_PATH") or "/healthz"


def healthy(status_line: str) -> int:
    """0 for a 2xx status line (a redirect is not followed: not healthy), else 1, saying why."""
    status = status_line.split(" ")[1:2]
    if status and status[0].startswith("2"):
        return 0
    print(f"unhealthy: HEALTH_PATH={PATH} answered {status_line!r}, not 2xx", file=sys.stderr)
    return 1


def uwsgi_packet(variables: dict[str, str]) -> bytes:
    """A uwsgi request: header (modifier1=0, size, modifier2=0), then length-prefixed vars."""
    body = b"".join(
        struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
        for k, v in ((k.encode(), v.encode()) for k, v in variables.items())
    )
    return struct.pack("<BHB", 0, len(body), 0) + body


def check_uwsgi(url) -> int:
    if url.hostname:
        sock = socket.create_connection((url.hostname, url.port or 3031), timeout=TIMEOUT)
        server_name, server_port = url.hostname, str(url.port or 3031)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(url.path)
        server_name, server_port = "localhost", "0"
    with sock:
        sock.sendall(
            uwsgi_packet(
                {
                    "REQUEST_METHOD": "GET",
                    "PATH_INFO": PATH,
                    "REQUEST_URI": PATH,
                    "QUERY_STRING": "",
                    "SERVER_NAME": server_name,
                    "SERVER_PORT": server_port,
                    "SERVER_PROTOCOL": "HTTP/1.1",
                    "REMOTE_ADDR": "127.0.0.1",
                    "HTTP_HOST": "localhost",
                }
            )
        )
        status_line = sock.makefile("rb").readline().decode("latin-1").strip()
    print(status_line)
    return healthy(status_line)


def check_http(url) -> int:
    import http.client  # here: Docker runs each probe anew, and most ask uwsgi://

    kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    connection = kind(url.hostname, url.port, timeout=TIMEOUT)
    try:
        connection.request("GET", url.path.rstrip("/") + PATH)
        response = connection.getresponse()  # a 3xx is the answer: http.client follows none
        print(response.status, response.read(200).decode(errors="replace").strip())
    except http.client.HTTPException as error:  # not HTTP (a uWSGI socket, say), or cut short
        print(f"unhealthy: {error!r}", file=sys.stderr)
        return 1
    return healthy(f"HTTP/{response.version / 10} {response.status} {response.reason}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    if not PATH.startswith("/"):
        print(
            f"HEALTH_PATH={PATH!r} must be a path starting with /, e.g. /healthz", file=sys.stderr
        )
        return 2
    url = urlsplit(argv[1])
    try:
        if url.scheme == "uwsgi":
            return check_uwsgi(url)
        if url.scheme in ("http", "https"):
            return check_http(url)
    except (OSError, ValueError) as error:  # refused, timed out, a port out of range
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    print(
        f"unsupported URL {argv[1]!r}: use http://, uwsgi:///socket/path or uwsgi://host:port",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
