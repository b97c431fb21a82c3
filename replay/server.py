"""make_app: the aiohttp application serving IMDS routes and the control API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType

from aiohttp import hdrs, web

from replay import imds
from replay.clock import Clock
from replay.registry import DEFAULT, SessionRegistry
from replay.session import Session

REGISTRY = web.AppKey("registry", SessionRegistry)
CLOCK = web.AppKey("clock", Clock)
MAX_BODY = 64 * 1024
HEADERS = {"Content-Type": imds.CONTENT_TYPE}
INSTANCE_VERSIONS = (
    *imds.VERSIONS,
    "2017-04-02",
    "2017-10-01",
    "2017-12-01",
    "2018-02-01",
    "2018-04-02",
    "2018-10-01",
    "2019-02-01",
    "2019-03-11",
    "2019-06-01",
    "2019-06-04",
    "2019-11-01",
    "2020-06-01",
    "2020-09-01",
    "2020-10-01",
    "2020-12-01",
    "2021-01-01",
    "2021-02-01",
    "2021-03-01",
    "2021-05-01",
    "2021-10-01",
    "2021-11-01",
    "2021-11-15",
    "2021-12-13",
    "2023-07-01",
    "2023-11-15",
    "2024-03-15",
    "2025-04-07",
)
INSTANCE_VERSION_SET = frozenset(INSTANCE_VERSIONS)
SIMPLE_QUERIES: dict[str, Mapping[str, str]] = {
    f"api-version={v}": MappingProxyType({"api-version": v}) for v in INSTANCE_VERSIONS
}
"""The usual query strings, already parsed: the poll path skips parsing them again."""
POLL_TARGETS = {f"/metadata/scheduledevents?{q}": p for q, p in SIMPLE_QUERIES.items()}
"""The same for whole request targets of the default session (no split at "?" either)."""
log = logging.getLogger("imds_replay")


def imds_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=imds.error_body(message), headers=HEADERS)


def _query(request: web.Request) -> Mapping[str, str]:
    """request.query; `?api-version=<version>` (nearly every request) from SIMPLE_QUERIES."""
    return SIMPLE_QUERIES.get(request.raw_path.partition("?")[2]) or request.query


def _session(request: web.Request) -> Session | None:
    return request.app[REGISTRY].sessions.get(request.match_info.get("session", DEFAULT))


async def scheduled_events(request: web.Request) -> web.StreamResponse:
    """GET: the current document; POST: StartRequests. Exactly as IMDS answers."""
    # The poll path: each call and property read costs throughput (benchmarks/README.md), so
    # _query and _session are inlined and each request attribute is read once.
    method, headers, info = request.method, request.headers, request.match_info
    if method not in ("GET", "POST"):
        return imds_error(405, imds.ERR_METHOD)
    version = imds.check_request(headers, POLL_TARGETS.get(request.raw_path) or _query(request))
    if isinstance(version, imds.Rejection):
        return web.Response(status=version.status, body=version.body, headers=HEADERS)
    registry = info.current_app[REGISTRY]
    session = registry.sessions.get(info.get("session", DEFAULT))
    if session is None:
        return imds_error(404, imds.ERR_NOT_FOUND)
    if registry.rate_limiter is not None or session.faults or session.warm_until is not None:
        failure = await _unhappy(request, registry, session)
        if failure is not None:
            return failure
    if method == "POST":
        session.touch()
        return await _start_requests(request, session)
    served = session.poll(version)
    if headers.get(hdrs.IF_NONE_MATCH) == served.etag:
        return web.Response(status=304, headers={"ETag": served.etag})
    return web.Response(
        body=served.body, headers={"Content-Type": imds.CONTENT_TYPE, "ETag": served.etag}
    )


FAULT_MESSAGES = {
    410: "Gone. The service is being enabled; retry shortly",
    429: imds.ERR_TOO_MANY,
    500: "Internal server error",
    503: "Service unavailable",
}


async def _unhappy(
    request: web.Request, registry: SessionRegistry, session: Session
) -> web.StreamResponse | None:
    """Failure modes asked for (rate limit, warm-up, playbook): an answer, or None to go on."""
    clock = registry.clock
    limiter = registry.rate_limiter
    if limiter is not None and not limiter.allow(request.remote or "-", clock.now()):
        session.count_fault("rate limit 429")
        return imds_error(429, imds.ERR_TOO_MANY)
    if session.warm_until is not None:
        # Like a service enabling itself: the first requests are answered slowly, not refused.
        if clock.now() < session.warm_until:
            session.count_fault("warm-up wait")
            await clock.sleep_until(session.warm_until)
        session.warm_until = None
    session.touch()  # fault windows are in trace time: the replay clock must be running
    window = session.draw_fault()
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
    body = session.current(imds.VERSIONS[-1]).body
    response = web.StreamResponse(headers={"Content-Type": imds.CONTENT_TYPE})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if transport is not None:
        transport.abort()
    raise ConnectionResetError("fault playbook: body truncated")


async def _start_requests(request: web.Request, session: Session) -> web.Response:
    # IMDS parses the body as JSON whatever the Content-Type says.
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return imds_error(413, f"Request body too large (limit {MAX_BODY} bytes)")
    ids = imds.parse_start_requests(body)
    if ids is None:
        return imds_error(400, imds.ERR_BODY)
    unknown = session.approve(ids)
    if unknown:
        return imds_error(400, f"Bad request. Unknown EventId: {', '.join(unknown)}")
    return web.Response(status=200, headers=HEADERS)


async def instance(request: web.Request) -> web.Response:
    """A minimal instance metadata document whose compute.name is the first resource."""
    if request.method != "GET":
        return imds_error(405, imds.ERR_METHOD)
    version = imds.check_request(request.headers, _query(request), INSTANCE_VERSION_SET)
    if isinstance(version, imds.Rejection):
        return web.Response(status=version.status, body=version.body, headers=HEADERS)
    session = _session(request)
    if session is None:
        return imds_error(404, imds.ERR_NOT_FOUND)
    resources = session.options.resources or _trace_resources(session)
    return web.Response(body=imds.instance_document(resources[0]), headers=HEADERS)


def _trace_resources(session: Session) -> tuple[str, ...]:
    for snap in session.trace.snapshots:
        for event in snap.events:
            if event["Resources"]:
                return tuple(event["Resources"])
    return ("vm-0",)


async def not_found(request: web.Request) -> web.Response:
    if request.path.startswith("/replay/"):
        from replay.control import control_error

        return control_error(404, f"no control route {request.method} {request.path}")
    return imds_error(404, imds.ERR_NOT_FOUND)


def make_app(registry: SessionRegistry, *, clock: Clock) -> web.Application:
    """The server: IMDS routes for every session, the control API under /replay/."""
    from replay.control import CONTROL_ROUTES
    from replay.static import ROUTES as PAGE_ROUTES
    from replay.stream import FANOUTS
    from replay.stream import ROUTES as STREAM_ROUTES

    app = web.Application(client_max_size=MAX_BODY)
    app[REGISTRY] = registry
    app[CLOCK] = clock
    app[FANOUTS] = {}
    app.router.add_route("*", "/metadata/scheduledevents", scheduled_events)
    app.router.add_route("*", "/s/{session}/metadata/scheduledevents", scheduled_events)
    app.router.add_route("*", "/metadata/instance", instance)
    app.router.add_route("*", "/s/{session}/metadata/instance", instance)
    app.router.add_routes(CONTROL_ROUTES)
    app.router.add_routes(STREAM_ROUTES)
    app.router.add_routes(PAGE_ROUTES)  # the control page at / (replay/static/)
    app.router.add_route("*", r"/{tail:[\s\S]*}", not_found)  # also paths with %0A in them
    app.cleanup_ctx.append(_tickers)
    return app


async def _tickers(app: web.Application) -> AsyncIterator[None]:
    registry = app[REGISTRY]
    registry.start_all()
    yield
    registry.stop_all()
