"""`imds-replay push`: a trace replayed outbound to a WebSocket server or a webhook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web

from replay.clock import SystemClock
from replay.errors import ReplayError
from replay.playback.push import check_target, push_trace
from replay.store.dataset import load_trace


async def test_push_to_a_websocket_server_sends_every_document_in_order(
    aiohttp_server: Any, traces_dir: Path
) -> None:
    received: list[dict[str, Any]] = []

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                received.append(orjson.loads(msg.data))
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    server = await aiohttp_server(app)
    trace = load_trace(traces_dir, "spot-eviction")  # 120 s of trace: 0.5 s at 240x
    report = await push_trace(
        trace, f"ws://127.0.0.1:{server.port}/ws", clock=SystemClock(), speed=240
    )
    assert report.delivered == 4 and report.failed == 0
    assert [m["document"]["DocumentIncarnation"] for m in received] == [1, 2, 3, 4]
    assert [[e["EventStatus"] for e in m["document"]["Events"]] for m in received] == [
        [],
        ["Scheduled"],
        ["Started"],
        [],
    ]


async def test_webhook_push_retries_with_backoff_and_reports_failures(
    aiohttp_server: Any, traces_dir: Path
) -> None:
    calls: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())["document"]
        calls.append(doc["DocumentIncarnation"])
        if doc["DocumentIncarnation"] == 2 and calls.count(2) < 3:
            return web.Response(status=503)  # flaky twice, then fine
        if doc["DocumentIncarnation"] == 3:
            return web.Response(status=500)  # always broken
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    trace = load_trace(traces_dir, "spot-eviction")
    report = await push_trace(
        trace,
        f"http://127.0.0.1:{server.port}/hook",
        clock=SystemClock(),
        speed=240,
        attempts=3,
        backoff_s=0.001,
    )
    assert (report.delivered, report.failed) == (3, 1)
    assert report.retries == 2 + 2
    assert calls == [1, 2, 2, 2, 3, 3, 3, 4]
    assert "HTTP 500" in report.errors[0]


@pytest.mark.parametrize("url", ["ftp://x", "localhost:80", ""])
def test_push_target_must_be_ws_or_http(url: str) -> None:
    with pytest.raises(ReplayError, match="ws://"):
        check_target(url)
