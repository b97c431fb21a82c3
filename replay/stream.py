"""Push routes: every session's new documents over WebSocket and Server-Sent Events.

A subscriber gets the current document on connect, then one message per new document, sent
when the session's ticker (scheduled on the session's anchor) sees it become current.

All connections of one session name form a Fanout, the session's one listener. A push encodes
the message once per wire format and writes it straight to every socket that has nothing
waiting (replay.fanout spreads those writes over the CPUs). A connection with a backlog, or
one that negotiated compression (aiohttp's writer keeps that state), gets the message through
its own bounded queue and sender task instead, which drops the oldest when it overflows.
Waking one task per connection for every push cost as much CPU again as the writes
(benchmarks/push_fanout.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import struct
from collections.abc import Callable, Iterator

from aiohttp import WSMsgType, web
from aiohttp_sse import sse_response

from replay.fanout import offer_all
from replay.registry import SessionRegistry
from replay.session import Pushed

QUEUE_LIMIT = 256
"""Messages a slow subscriber may fall behind by before the oldest are dropped."""


@functools.lru_cache(maxsize=8)
def text_frame(message: bytes) -> bytes:
    """A message as one unmasked WebSocket text frame."""
    n = len(message)
    if n < 126:
        return bytes((0x81, n)) + message
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + message
    return struct.pack("!BBQ", 0x81, 127, n) + message


SSE_EVENT = "document"


@functools.lru_cache(maxsize=8)
def sse_chunk(message: bytes) -> bytes:
    """A message as one Server-Sent Event in one HTTP/1.1 chunk, as aiohttp-sse writes it."""
    event = b"event: " + SSE_EVENT.encode() + b"\r\ndata: " + message + b"\r\n\r\n"
    return b"%x\r\n" % len(event) + event + b"\r\n"


BUSY = -2
"""What Connection.offer answers when something is waiting before the frame (or no socket)."""
FAILED = -1
"""What Connection.offer answers when the socket refused the bytes (reset, closed)."""


class Connection:
    """One subscriber: its socket, its wire format, and its queue for when it falls behind."""

    def __init__(self, transport: asyncio.Transport | None, encode: Callable[[bytes], bytes]):
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.dropped = 0
        self.encode = encode
        sock = None if transport is None else transport.get_extra_info("socket")
        self.transport = None if sock is None else transport
        """None: every message goes through the queue (compression, no socket)."""
        self.fd: int = -1 if sock is None else sock.fileno()

    def offer(self, frame: bytes) -> int:
        """Write a frame straight to the socket if it lands right after everything before it.

        Returns the bytes written (the socket may take fewer, or none, when full), BUSY when
        a backlog or a closing transport means the frame must take the queue, or FAILED.
        Called from replay.fanout's threads while the loop waits, so it only reads state.
        """
        transport = self.transport
        if (
            transport is None
            or not self.queue.empty()
            or transport.is_closing()
            or transport.get_write_buffer_size()
        ):
            return BUSY
        try:
            return os.write(self.fd, frame)
        except BlockingIOError:
            return 0
        except OSError:
            return FAILED

    def put(self, message: bytes) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(message)


class Fanout:
    """The connections subscribed to one session name, grouped by wire format."""

    def __init__(self, registry: SessionRegistry, name: str) -> None:
        self.registry = registry
        self.name = name
        self.groups: dict[Callable[[bytes], bytes], dict[Connection, None]] = {}
        """Connections by encoder, each group in the order they subscribed."""
        self._unsubscribe: Callable[[], None] | None = None

    def add(self, conn: Connection) -> None:
        session = self.registry.get(self.name)
        assert session is not None
        conn.put(session.message_now())
        self.groups.setdefault(conn.encode, {})[conn] = None
        if self._unsubscribe is None:
            self._unsubscribe = self.registry.subscribe(self.name, self.push)

    def remove(self, conn: Connection) -> bool:
        """Drop a connection; True when it was the last one."""
        group = self.groups.get(conn.encode, {})
        if conn in group:
            del group[conn]
            if not group:
                del self.groups[conn.encode]
        if self.groups or self._unsubscribe is None:
            return not self.groups
        self._unsubscribe()
        self._unsubscribe = None
        return True

    def push(self, pushed: Pushed) -> None:
        for encode, group in list(self.groups.items()):
            frame = encode(pushed.message)
            conns = list(group)
            for conn, n in zip(conns, offer_all(conns, frame), strict=True):
                if n == len(frame):
                    continue
                if n == BUSY:
                    conn.put(pushed.message)
                elif conn.transport is not None and n == FAILED:
                    conn.transport.abort()  # reset or closed under us; the route sees it end
                elif conn.transport is not None:
                    conn.transport.write(frame[n:])  # the rest, in order, as the socket drains


FANOUTS = web.AppKey("fanouts", dict[str, Fanout])


@contextlib.contextmanager
def subscribed(request: web.Request, conn: Connection) -> Iterator[Connection]:
    """Add a connection to its session's Fanout for the duration of the block."""
    fanouts = request.app[FANOUTS]
    name = request.match_info["session"]
    fanout = fanouts.get(name)
    if fanout is None:
        fanout = fanouts[name] = Fanout(_registry(request), name)
    fanout.add(conn)
    try:
        yield conn
    finally:
        if fanout.remove(conn) and fanouts.get(name) is fanout:
            del fanouts[name]


def _registry(request: web.Request) -> SessionRegistry:
    from replay.server import REGISTRY

    return request.app[REGISTRY]


def _missing(request: web.Request) -> web.Response | None:
    """The 401 or 404 answer when the stream cannot be opened, else None."""
    from replay.control import check_token, control_error

    denied = check_token(request)
    if denied is not None:
        return denied
    name = request.match_info["session"]
    if _registry(request).get(name) is None:
        return control_error(404, f"no session {name!r} (GET /replay/sessions lists them)")
    return None


async def websocket(request: web.Request) -> web.StreamResponse:
    """GET /s/{session}/stream: one text message per new document."""
    missing = _missing(request)
    if missing is not None:
        return missing
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    transport = None if ws.compress else request.transport
    assert transport is None or isinstance(transport, asyncio.Transport)
    with subscribed(request, Connection(transport, text_frame)) as conn:

        async def send() -> None:
            while True:
                await ws.send_str((await conn.queue.get()).decode())

        sender = asyncio.create_task(send())
        try:
            async for msg in ws:  # the client says nothing we need; this notices it leaving
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    return ws


async def events(request: web.Request) -> web.StreamResponse:
    """GET /s/{session}/events: the same messages as Server-Sent Events."""
    missing = _missing(request)
    if missing is not None:
        return missing
    async with sse_response(request) as sse:
        # a chunked, uncompressed response (HTTP/1.1) takes direct writes; others the queue
        direct = sse.chunked and not sse.compression
        transport = request.transport if direct else None
        assert transport is None or isinstance(transport, asyncio.Transport)
        with subscribed(request, Connection(transport, sse_chunk)) as conn:
            while sse.is_connected():
                await sse.send((await conn.queue.get()).decode(), event=SSE_EVENT)
    return sse


ROUTES = [
    web.get("/s/{session}/stream", websocket),
    web.get("/s/{session}/events", events),
]
