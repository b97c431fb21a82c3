"""The IMDS one VM sees: one session's IMDS routes on a socket of its own, optionally observed.

`imds-replay run` accepts a handler's connections on a socket that lives in the handler's
network namespace (169.254.169.254:80). The app here serves that socket: every request goes to
the run's session, exactly as through the main app's IMDS routes (the same handlers, so ETags,
faults and rate limits apply), and nothing else of the server (no control API, no page). An
observer, when given, sees each request and its answer: what a run's report is made of. The
main app does not carry this middleware, so its poll path pays nothing for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from replay.core import imds as wire
from replay.core.schedule import Schedule
from replay.playback.registry import SessionRegistry
from replay.playback.session import Session
from replay.server import imds
from replay.server.keys import REGISTRY
from replay.server.middlewares import Handler


@dataclass(frozen=True, slots=True)
class Shown:
    """An event in a document the VM was answered: its round, the trace's EventId, status."""

    round: int
    event_id: str
    status: str


@dataclass(frozen=True, slots=True)
class Approving:
    """An event the VM asked to start, as it stood just before the request."""

    round: int
    event_id: str
    """The trace's EventId."""
    status: str | None
    """Scheduled or Started; None when it was not in the document any more."""
    notice_left_s: float | None
    """Trace seconds from the request to the NotBefore the event was last shown with."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One IMDS request of the VM and its answer."""

    at: float
    """Monotonic seconds when answered."""
    position_s: float
    """The session's position then (trace seconds, across loop rounds)."""
    method: str
    path: str
    status: int
    """The HTTP status; 0 when the connection was dropped instead (a fault playbook's)."""
    api_version: str | None
    metadata: bool
    """Whether `Metadata: true` was sent."""
    forwarded_for: bool
    shown: tuple[Shown, ...] = ()
    """The events of a Scheduled Events document answered with 200."""
    approving: tuple[Approving, ...] = ()
    """The events of a StartRequests answered with 200."""


Observer = Callable[[Observation], None]


def pin(session_name: str, observer: Observer | None) -> Middleware:
    """Middleware: every request is for session_name; the observer sees each answer.

    The observer is called soon after the answer is sent, not before: what it reads from a
    document is parsed off the answer's path (and once per distinct document).
    """
    parsed: dict[str, Any] = {"body": None, "shown": ()}

    @web.middleware
    async def vm(request: web.Request, handler: Handler) -> web.StreamResponse:
        request.match_info["session"] = session_name  # what /s/{session}/ routes would set
        if observer is None:
            return await handler(request)
        registry = request.app[REGISTRY]
        session = registry.sessions.get(session_name)
        post = request.method == "POST"
        before = _before_approval(session) if post else None
        status = 0
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            session = registry.sessions.get(session_name)
            if session is not None:
                headers = request.headers
                seen = Observation(
                    at=session.clock.now(),
                    position_s=session.position(),
                    method=request.method,
                    path=request.path,
                    status=status,
                    api_version=request.query.get("api-version"),
                    metadata=headers.get(imds.METADATA, "").lower() == "true",
                    forwarded_for=imds.X_FORWARDED_FOR in headers,
                )
                events = status == 200 and request.path.endswith("/scheduledevents")
                body = response.body if isinstance(response, web.Response) else None
                if events and post and before is not None and before[0] is session:
                    approving = _approving(session, await request.read(), before)
                    observer(dataclasses.replace(seen, approving=approving))
                elif events and not post and isinstance(body, bytes):
                    loop = asyncio.get_running_loop()
                    loop.call_soon(_deliver, observer, seen, session, body, parsed)
                else:
                    observer(seen)

    return vm


def _deliver(
    observer: Observer, seen: Observation, session: Session, body: bytes, parsed: dict[str, Any]
) -> None:
    """The observer's call for a document answered (after the answer went out)."""
    if body is not parsed["body"]:  # a polled document repeats the same bytes object
        parsed["body"], parsed["shown"] = body, _shown(session, body)
    observer(dataclasses.replace(seen, shown=parsed["shown"]))


_Before = tuple[Session, int, float, Schedule]


def _before_approval(session: Session | None) -> _Before | None:
    """The schedule and position just before a POST: what the approved events looked like."""
    if session is None:
        return None
    rnd, offset = session.split(session.position())
    return session, rnd, offset, session.schedule(rnd)


def _shown(session: Session, body: bytes) -> tuple[Shown, ...]:
    served = session.rounds.served_ids
    found = []
    for event in orjson.loads(body)["Events"]:
        rnd, original = served.get(event["EventId"], (-1, event["EventId"]))
        found.append(Shown(rnd, original, event["EventStatus"]))
    return tuple(found)


def _approving(session: Session, body: bytes, before: _Before) -> tuple[Approving, ...]:
    _, rnd, offset, schedule = before
    served = session.rounds.served_ids
    now = schedule.index_at(offset)
    found = []
    for served_id in wire.parse_start_requests(body) or []:
        event_rnd, original = served.get(served_id, (-1, served_id))
        if event_rnd != rnd:
            found.append(Approving(event_rnd, original, None, None))
            continue
        status, not_before = None, None
        for index, transition in enumerate(schedule.transitions[: now + 1]):
            for state in transition.events:
                if state.event_id == original:
                    if state.not_before_s is not None:
                        not_before = state.not_before_s  # the last NotBefore it was shown with
                    if index == now:
                        status = state.status
        left = None if not_before is None else not_before - offset
        found.append(Approving(rnd, original, status, left))
    return tuple(found)


def make_vm_app(
    registry: SessionRegistry, session_name: str, observer: Observer | None = None
) -> web.Application:
    """IMDS for one VM: session_name's routes at the real paths, observed when asked."""
    app = web.Application(client_max_size=imds.MAX_BODY, middlewares=[pin(session_name, observer)])
    app[REGISTRY] = registry
    app.router.add_routes([r for r in imds.ROUTES if not r.path.startswith("/s/")])
    app.router.add_routes([imds.CATCH_ALL])
    return app
