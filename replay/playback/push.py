"""Outbound push: replay a trace to a WebSocket server or as webhook POSTs.

The trace plays in a local session on its own anchor; each new document is sent the moment it
becomes current. Webhook deliveries retry with exponential backoff; a summary says how it went.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from replay.clock import Clock
from replay.core.timeline import Trace
from replay.errors import ReplayError
from replay.playback.anchor import Start, State
from replay.playback.session import Session, SessionOptions
from replay.playback.ticker import Pushed


@dataclass
class PushReport:
    """What happened to each document: delivered, failed after retries, retried attempts."""

    delivered: int = 0
    failed: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)


def check_target(url: str) -> str:
    """The kind of target ('ws' or 'http'), or a ReplayError naming what is wrong."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("ws", "wss"):
        return "ws"
    if scheme in ("http", "https"):
        return "http"
    raise ReplayError(f"--to {url!r}: use a ws://, wss://, http:// or https:// URL")


async def push_trace(
    trace: Trace,
    to: str,
    *,
    clock: Clock,
    speed: float = 1.0,
    loop: bool = False,
    attempts: int = 5,
    backoff_s: float = 0.5,
    timeout_s: float = 10.0,
) -> PushReport:
    """Replay a trace to `to` until it ends (or forever with loop); return the delivery report."""
    kind = check_target(to)
    queue: asyncio.Queue[Pushed | None] = asyncio.Queue()
    session = Session("push", trace, clock, SessionOptions(speed=speed, loop=loop, start=Start.now))
    report = PushReport()

    def listen(pushed: Pushed) -> None:
        queue.put_nowait(pushed)

    session.subscribers.add(listen)
    first = session.message_now()
    session.start_ticker()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            if kind == "ws":
                ws = await http.ws_connect(to)
            message: bytes | None = first
            while message is not None:
                if ws is not None:
                    await _send_ws(ws, message, report)
                else:
                    await _post(http, to, message, report, clock, attempts, backoff_s)
                message = await _next(queue, session)
        finally:
            session.stop()
            if ws is not None:
                await ws.close()
    return report


async def _next(queue: asyncio.Queue[Pushed | None], session: Session) -> bytes | None:
    """The next message, or None once the replay has finished and everything was sent."""
    while True:
        if queue.empty() and session.state is State.finished:
            return None
        try:
            pushed = await asyncio.wait_for(queue.get(), timeout=0.25)
        except TimeoutError:
            continue  # check for the end of the replay again
        if pushed is not None:
            return pushed.message


async def _send_ws(ws: aiohttp.ClientWebSocketResponse, message: bytes, report: PushReport) -> None:
    try:
        await ws.send_str(message.decode())
        report.delivered += 1
    except (aiohttp.ClientError, ConnectionError) as exc:
        report.failed += 1
        report.errors.append(f"websocket: {exc}")
        raise ReplayError(f"the WebSocket server went away: {exc}") from exc


async def _post(
    http: aiohttp.ClientSession,
    url: str,
    message: bytes,
    report: PushReport,
    clock: Clock,
    attempts: int,
    backoff_s: float,
) -> None:
    headers = {"Content-Type": "application/json"}
    problem = ""
    for attempt in range(attempts):
        if attempt:
            report.retries += 1
            await clock.sleep_until(clock.now() + backoff_s * 2 ** (attempt - 1))
        try:
            async with http.post(url, data=message, headers=headers) as resp:
                if resp.status < 300:
                    report.delivered += 1
                    return
                problem = f"HTTP {resp.status}"
                if 400 <= resp.status < 500 and resp.status not in (408, 429):
                    break  # the receiver refuses this message; retrying will not help
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
    report.failed += 1
    report.errors.append(f"{url}: {problem}")
