"""make_app: the aiohttp application serving IMDS routes and the control API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType

from aiohttp import web

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
SIMPLE_QUERIES: dict[str, Mapping[str, str]] = {
    f"api-version={v}": MappingProxyType({"api-version": v}) for v in INSTANCE_VERSIONS
}
"""The usual query strings, already parsed: the poll path skips parsing them again."""
log = logging.getLogger("imds_replay")


def imds_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=imds.error_body(message), headers=HEADERS)


def _query(request: web.Request) -> Mapping[str, str]:
    """request.query; `?api-version=<version>` (nearly every request) from SIMPLE_QUERIES."""
    return SIMPLE_QUERIES.get(request.raw_path.partition("?")[2]) or request.query


def _session(request: web.Request) -> Session | None:
    return request.app[REGISTRY].get(request.match_info.get("session", DEFAULT))


async def scheduled_events(request: web.Request) -> web.StreamResponse:
    """GET: the current document; POST: StartRequests. Exactly as IMDS answers."""
    if request.method not in ("GET", "POST"):
        return imds_error(405, imds.ERR_METHOD)
    version = imds.check_request(request.headers, _query(request))
    if isinstance(version, imds.Rejection):
        return web.Response(status=version.status, body=version.body, headers=HEADERS)
    session = _session(request)
    if session is None:
        return imds_error(404, imds.ERR_NOT_FOUND)
    session.touch()
    if request.method == "POST":
        return await _start_requests(request, session)
    served = session.current(version)
    if request.headers.get("If-None-Match") == served.etag:
        return web.Response(status=304, headers={"ETag": served.etag})
    return web.Response(
        body=served.body, headers={"Content-Type": imds.CONTENT_TYPE, "ETag": served.etag}
    )


async def _start_requests(request: web.Request, session: Session) -> web.Response:
    # IMDS parses the body as JSON whatever the Content-Type says.
    body = await request.read()
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
    version = imds.check_request(request.headers, _query(request), INSTANCE_VERSIONS)
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
    from replay.stream import ROUTES as STREAM_ROUTES

    app = web.Application(client_max_size=MAX_BODY)
    app[REGISTRY] = registry
    app[CLOCK] = clock
    app.router.add_route("*", "/metadata/scheduledevents", scheduled_events)
    app.router.add_route("*", "/s/{session}/metadata/scheduledevents", scheduled_events)
    app.router.add_route("*", "/metadata/instance", instance)
    app.router.add_route("*", "/s/{session}/metadata/instance", instance)
    app.router.add_routes(CONTROL_ROUTES)
    app.router.add_routes(STREAM_ROUTES)
    app.router.add_routes(PAGE_ROUTES)  # the control page at / (replay/static/)
    app.router.add_route("*", "/{tail:.*}", not_found)
    app.cleanup_ctx.append(_tickers)
    return app


async def _tickers(app: web.Application) -> AsyncIterator[None]:
    registry = app[REGISTRY]
    registry.start_all()
    yield
    registry.stop_all()
