"""Push routes: every session's new documents over WebSocket and Server-Sent Events.

A subscriber gets the current document on connect, then one message per new document, sent
when the session's ticker (scheduled on the session's anchor) sees it become current. The
writes themselves are replay.server.fanout's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiohttp import WSMsgType, web
from aiohttp_sse import sse_response

from replay.server.fanout import (
    SSE_EVENT,
    Connection,
    Fanout,
    Publisher,
    sse_chunk,
    text_frame,
)
from replay.server.keys import FANOUT_POOL, FANOUTS, REGISTRY
from replay.server.middlewares import control_error


@contextlib.contextmanager
def subscribed(
    request: web.Request, conn: Connection, source: Publisher, name: str, key: str
) -> Iterator[Connection]:
    """Add a connection to the Fanout of source's name (FANOUTS[key]) for the block."""
    fanouts = request.app[FANOUTS]
    fanout = fanouts.get(key)
    if fanout is None:
        fanout = fanouts[key] = Fanout(source, name, request.app.get(FANOUT_POOL))
    fanout.add(conn)
    try:
        yield conn
    finally:
        if fanout.remove(conn) and fanouts.get(key) is fanout:
            del fanouts[key]


def _missing(request: web.Request) -> web.Response | None:
    """The 404 answer when the session does not exist, else None."""
    name = request.match_info["session"]
    if request.app[REGISTRY].get(name) is None:
        return control_error(404, f"no session {name!r} (GET /replay/sessions lists them)")
    return None


async def websocket(request: web.Request) -> web.StreamResponse:
    """GET /s/{session}/stream: one text message per new document."""
    missing = _missing(request)
    if missing is not None:
        return missing
    name = request.match_info["session"]
    return await stream_websocket(request, request.app[REGISTRY], name, name)


async def stream_websocket(
    request: web.Request, source: Publisher, name: str, key: str
) -> web.StreamResponse:
    """A WebSocket that gets source's name's current document, then each new one."""
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    transport = None if ws.compress else request.transport
    assert transport is None or isinstance(transport, asyncio.Transport)
    with subscribed(request, Connection(transport, text_frame), source, name, key) as conn:

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
    name = request.match_info["session"]
    return await stream_events(request, request.app[REGISTRY], name, name)


async def stream_events(
    request: web.Request, source: Publisher, name: str, key: str
) -> web.StreamResponse:
    """Server-Sent Events: source's name's current document, then each new one."""
    async with sse_response(request) as sse:
        # a chunked, uncompressed response (HTTP/1.1) takes direct writes; others the queue
        direct = sse.chunked and not sse.compression
        transport = request.transport if direct else None
        assert transport is None or isinstance(transport, asyncio.Transport)
        with subscribed(request, Connection(transport, sse_chunk), source, name, key) as conn:
            while sse.is_connected():
                await sse.send((await conn.queue.get()).decode(), event=SSE_EVENT)
    return sse


ROUTES = [
    web.get("/s/{session}/stream", websocket),
    web.get("/s/{session}/events", events),
]
