"""WebSockets by the hundred from one asyncio loop (the `websockets` library's client): held
open idle, or echoing as fast as the server answers. Shared by tests/test_long_lived.py and
`make bench`, so that both count the same way."""

from __future__ import annotations

import asyncio
import resource
import time

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from harness import machine_load
from harness.traffic import percentile

HANDSHAKES_AT_ONCE = 50  # nginx's listen backlog is 511: a thousand SYNs at once would overflow it


def allow_open_files(count: int) -> None:
    """Let this process hold `count` more sockets (raise the soft limit up to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 1024  # and what the process already has open
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            raise RuntimeError(f"{count} sockets need an open-files limit of {wanted}: ulimit -n")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def open_sockets(url: str, count: int, **options) -> list[ClientConnection]:
    """`count` WebSockets, each proven by one echo; all or none (the opened ones are closed if
    one fails, and the error is raised)."""
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)

    async def open_one(number: int) -> ClientConnection:
        async with gate:
            ws = await connect(url, open_timeout=30, **options)
            await ws.send(f"open {number}")
            answer = await asyncio.wait_for(ws.recv(), 10)
            assert answer == f"open {number}", f"socket {number} echoed {answer!r}"
            return ws

    opened = await asyncio.gather(*(open_one(n) for n in range(count)), return_exceptions=True)
    sockets = [ws for ws in opened if isinstance(ws, ClientConnection)]
    if len(sockets) < count:
        await close_all(sockets)
        error = next(e for e in opened if isinstance(e, BaseException))
        raise RuntimeError(f"{count - len(sockets)} of {count} WebSockets not opened") from error
    return sockets


async def close_all(sockets: list[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def handshake_status(url: str) -> int:
    """The HTTP status of one more handshake: 101 if it opened (and it is closed again)."""
    try:
        ws = await connect(url, open_timeout=10)
    except InvalidStatus as error:
        return error.response.status_code
    await ws.close()
    return 101


async def echo_all(sockets: list[ClientConnection], tag: str) -> list[tuple[int, str]]:
    """Every socket sends one message and waits for its echo: the sockets that failed, with
    what they got instead."""

    async def one(number: int, ws: ClientConnection) -> str | None:
        try:
            await ws.send(f"{tag} {number}")
            answer = await asyncio.wait_for(ws.recv(), 10)
        except Exception as error:  # noqa: BLE001 - reported, with the socket's number
            return repr(error)
        return None if answer == f"{tag} {number}" else repr(answer)

    answers = await asyncio.gather(*(one(n, ws) for n, ws in enumerate(sockets)))
    return [(n, answer) for n, answer in enumerate(answers) if answer is not None]


async def echo_rate(url: str, connections: int, seconds: float, size: int = 64) -> dict:
    """`connections` WebSockets each sending a `size`-byte text message and waiting for its
    echo, back to back, for `seconds`: messages echoed per second and round-trip percentiles.
    A load: it runs alone on the machine (harness.machine_load)."""
    with machine_load.exclusive(f"{connections} WebSockets echoing at {url}"):
        return await _echo_rate(url, connections, seconds, size)


async def _echo_rate(url: str, connections: int, seconds: float, size: int) -> dict:
    sockets = await open_sockets(url, connections)
    message = "x" * size
    times: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def loop(ws: ClientConnection) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                await ws.send(message)
                await asyncio.wait_for(ws.recv(), 10)
            except Exception:  # noqa: BLE001 - counted; the socket is done
                errors += 1
                return
            times.append(time.monotonic() - sent)

    started = time.monotonic()
    try:
        await asyncio.gather(*(loop(ws) for ws in sockets))
    finally:
        await close_all(sockets)
    elapsed = time.monotonic() - started

    def ms(share: float) -> float:
        return percentile(times, share) * 1000 if times else 0.0

    return {
        "messages": len(times),
        "rate": len(times) / elapsed,
        "p50": ms(0.5),
        "p99": ms(0.99),
        "errors": errors,
    }
