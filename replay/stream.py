"""Push routes: every session's new documents over WebSocket and Server-Sent Events.

A subscriber gets the current document on connect, then one message per new document, sent
when the session's ticker (scheduled on the session's anchor) sees it become current.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import struct

from aiohttp import WSMsgType, web
from aiohttp_sse import sse_response

from replay.registry import SessionRegistry
from replay.session import Pushed

QUEUE_LIMIT = 256
"""Messages a slow subscriber may fall behind by before the oldest are dropped."""


class Subscription:
    """A bounded queue of push messages for one connection; the oldest go when it overflows."""

    def __init__(self, registry: SessionRegistry, name: str) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.dropped = 0
        session = registry.get(name)
        assert session is not None
        self.put(session.message_now())
        self._unsubscribe = registry.subscribe(name, self.push)

    def push(self, pushed: Pushed) -> None:
        self.put(pushed.message)

    def put(self, message: bytes) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(message)

    def close(self) -> None:
        self._unsubscribe()


@functools.lru_cache(maxsize=8)
def text_frame(message: bytes) -> bytes:
    """A message as one unmasked WebSocket text frame (built once per push, for every socket)."""
    n = len(message)
    if n < 126:
        return bytes((0x81, n)) + message
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + message
    return struct.pack("!BBQ", 0x81, 127, n) + message


class SocketSubscription(Subscription):
    """A WebSocket subscriber whose pushes the ticker writes to the socket itself.

    Waking one sender task per connection for every push cost as much CPU again as the writes
    (benchmarks/push_fanout.py). The queue and its task remain for the first message, for a
    subscriber with a backlog (then the oldest are dropped as before) and for connections that
    negotiated compression, which aiohttp's writer keeps the state of.
    """

    def __init__(
        self, registry: SessionRegistry, name: str, ws: web.WebSocketResponse, request: web.Request
    ) -> None:
        self.ws = ws
        self.transport = None if ws.compress else request.transport
        super().__init__(registry, name)

    def push(self, pushed: Pushed) -> None:
        transport = self.transport
        if (
            transport is not None
            and self.queue.empty()
            and not self.ws.closed
            and not transport.is_closing()
            and transport.get_write_buffer_size() == 0
        ):
            transport.write(text_frame(pushed.message))
        else:
            self.put(pushed.message)


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
    sub = SocketSubscription(_registry(request), request.match_info["session"], ws, request)

    async def send() -> None:
        while True:
            await ws.send_str((await sub.queue.get()).decode())

    sender = asyncio.create_task(send())
    try:
        async for msg in ws:  # the client says nothing we need; this notices it leaving
            if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
    finally:
        sub.close()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    return ws


async def events(request: web.Request) -> web.StreamResponse:
    """GET /s/{session}/events: the same messages as Server-Sent Events."""
    missing = _missing(request)
    if missing is not None:
        return missing
    sub = Subscription(_registry(request), request.match_info["session"])
    try:
        async with sse_response(request) as sse:
            while sse.is_connected():
                await sse.send((await sub.queue.get()).decode(), event="document")
    finally:
        sub.close()
    return sse


ROUTES = [
    web.get("/s/{session}/stream", websocket),
    web.get("/s/{session}/events", events),
]
