"""Failure modes on the IMDS path, shared by a session's routes and a fleet VM's.

`inject` holds a request through its target's warm-up and then answers as the target's fault
playbook draws (a status, a delay, a dropped connection, a truncated body), or lets it go on.
The target is a Session, or one VM of a fleet (replay.playback.fleet_host.VmView): each keeps
its own warm-up, draws and counts. Rate limits are the caller's (per address, or per VM).
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from replay.clock import Clock
from replay.core import imds
from replay.core.faults import FaultWindow
from replay.playback.session import Served

FAULT_MESSAGES = {
    410: "Gone. The service is being enabled; retry shortly",
    429: imds.ERR_TOO_MANY,
    500: "Internal server error",
    503: "Service unavailable",
}
HEADERS = {"Content-Type": imds.CONTENT_TYPE}


class Faulty(Protocol):
    """An IMDS endpoint with failure modes: its warm-up and its playbook's draws."""

    warm_until: float | None
    """Monotonic instant until which requests wait (None: warm)."""

    def touch(self) -> None: ...
    def draw_fault(self) -> FaultWindow | None: ...
    def count_fault(self, kind: str, offset_s: float | None = None) -> None: ...
    def current(self, version: str) -> Served: ...


def imds_error(status: int, message: str) -> web.Response:
    """An IMDS error answer: the status and {"error": message}."""
    return web.Response(status=status, body=imds.error_body(message), headers=HEADERS)


async def inject(request: web.Request, clock: Clock, target: Faulty) -> web.StreamResponse | None:
    """Warm-up, then the playbook: an answer (or a broken connection), or None to go on."""
    if target.warm_until is not None:
        # Like a service enabling itself: the first requests are answered slowly, not refused.
        if clock.now() < target.warm_until:
            target.count_fault("warm-up wait")
            await clock.sleep_until(target.warm_until)
        target.warm_until = None
    target.touch()  # fault windows are in trace time: the replay clock must be running
    window = target.draw_fault()
    if window is None:
        return None
    if window.effect == "status":
        return imds_error(int(window.value), FAULT_MESSAGES[int(window.value)])
    if window.effect == "delay_ms":
        await clock.sleep_until(clock.now() + window.value / 1000)
        return None
    transport = request.transport
    if window.effect == "drop":
        if transport is not None:
            transport.abort()
        raise ConnectionResetError("fault playbook: connection dropped")
    # truncate: promise the whole document, send half of it, and hang up.
    body = target.current(imds.LATEST_VERSION).body
    response = web.StreamResponse(headers=HEADERS)
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if transport is not None:
        transport.abort()
    raise ConnectionResetError("fault playbook: body truncated")
