"""The IMDS routes: Scheduled Events and instance metadata, answered exactly as IMDS does."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import NamedTuple

from aiohttp import hdrs, web
from multidict import istr

from replay.core import imds, instance
from replay.playback.registry import DEFAULT, SessionRegistry
from replay.playback.session import Session
from replay.server.failures import imds_error, inject
from replay.server.keys import REGISTRY
from replay.server.middlewares import control_error, imds_route

MAX_BODY = 64 * 1024
HEADERS = {"Content-Type": imds.CONTENT_TYPE}
SIMPLE_QUERIES: dict[str, Mapping[str, str]] = {
    f"api-version={v}": MappingProxyType({"api-version": v}) for v in imds.INSTANCE_VERSIONS
}
"""The usual query strings, already parsed: the poll path skips parsing them again."""
POLL_TARGETS = {f"/metadata/scheduledevents?{q}": p for q, p in SIMPLE_QUERIES.items()}
"""The same for whole request targets of the default session (no split at "?" either)."""
log = logging.getLogger("imds_replay")

# istr: a CIMultiDict looks these up without case-folding the name on every request.
METADATA = istr("Metadata")
X_FORWARDED_FOR = istr("X-Forwarded-For")


class Rejection(NamedTuple):
    """An IMDS error answer: status and body."""

    status: int
    body: bytes


def check_request(
    headers: Mapping[str, str],
    query: Mapping[str, str],
    versions: Collection[str] = imds.VERSION_SET,
) -> str | Rejection:
    """The api-version of a valid IMDS request (headers case-insensitive), or its 400 answer."""
    if X_FORWARDED_FOR in headers:
        return Rejection(400, imds.error_body(imds.ERR_FORWARDED))
    if headers.get(METADATA, "").lower() != "true":
        return Rejection(400, imds.error_body(imds.ERR_METADATA))
    version = query.get("api-version")
    if not version:
        return Rejection(400, imds.error_body(imds.ERR_NO_VERSION, versions=True))
    if version not in versions:
        return Rejection(400, imds.error_body(imds.ERR_BAD_VERSION, versions=True))
    return version


def query_of(request: web.Request) -> Mapping[str, str]:
    """request.query; `?api-version=<version>` (nearly every request) from SIMPLE_QUERIES."""
    return SIMPLE_QUERIES.get(request.raw_path.partition("?")[2]) or request.query


def _session(request: web.Request) -> Session | None:
    return request.app[REGISTRY].sessions.get(request.match_info.get("session", DEFAULT))


@imds_route
async def scheduled_events(request: web.Request) -> web.StreamResponse:
    """GET: the current document; POST: StartRequests. Exactly as IMDS answers."""
    # The poll path: each call and property read costs throughput (benchmarks/README.md), so
    # query_of and _session are inlined and each request attribute is read once.
    method, headers, info = request.method, request.headers, request.match_info
    if method not in ("GET", "POST"):
        return imds_error(405, imds.ERR_METHOD)
    version = check_request(headers, POLL_TARGETS.get(request.raw_path) or query_of(request))
    if isinstance(version, Rejection):
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
        return await start_requests(request, session.approve)
    served = session.poll(version)
    if headers.get(hdrs.IF_NONE_MATCH) == served.etag:
        return web.Response(status=304, headers={"ETag": served.etag})
    return web.Response(
        body=served.body, headers={"Content-Type": imds.CONTENT_TYPE, "ETag": served.etag}
    )


async def _unhappy(
    request: web.Request, registry: SessionRegistry, session: Session
) -> web.StreamResponse | None:
    """Failure modes asked for (rate limit, warm-up, playbook): an answer, or None to go on."""
    limiter = registry.rate_limiter
    if limiter is not None and not limiter.allow(request.remote or "-", registry.clock.now()):
        session.count_fault("rate limit 429")
        return imds_error(429, imds.ERR_TOO_MANY)
    return await inject(request, registry.clock, session)


async def start_requests(
    request: web.Request, approve: Callable[[list[str]], list[str]]
) -> web.Response:
    """A StartRequests POST: approve(EventIds) answers the unknown ones (then IMDS's 400)."""
    # IMDS parses the body as JSON whatever the Content-Type says.
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return imds_error(413, f"Request body too large (limit {MAX_BODY} bytes)")
    ids = imds.parse_start_requests(body)
    if ids is None:
        return imds_error(400, imds.ERR_BODY)
    unknown = approve(ids)
    if unknown:
        return imds_error(400, f"Bad request. Unknown EventId: {', '.join(unknown)}")
    return web.Response(status=200, headers=HEADERS)


@imds_route
async def instance_metadata(request: web.Request) -> web.Response:
    """Instance metadata, any sub-path (array elements by index), format=json or text."""
    session = _session(request)
    return answer_instance(request, None if session is None else session.identity)


def answer_instance(
    request: web.Request, identity: instance.InstanceIdentity | None
) -> web.Response:
    """Instance metadata of a VM (None: no such VM, IMDS's 404), as IMDS answers."""
    if request.method != "GET":
        return imds_error(405, imds.ERR_METHOD)
    query = query_of(request)
    version = check_request(request.headers, query, imds.INSTANCE_VERSION_SET)
    if isinstance(version, Rejection):
        return web.Response(status=version.status, body=version.body, headers=HEADERS)
    if identity is None:
        return imds_error(404, imds.ERR_NOT_FOUND)
    fmt = query.get("format") or "json"
    if fmt not in instance.FORMATS:
        return imds_error(400, imds.ERR_FORMAT)
    found = instance.answer(identity, request.match_info["tail"], fmt)
    if found is None:
        return imds_error(404, imds.ERR_NOT_FOUND)
    body, content_type = found
    return web.Response(body=body, headers={"Content-Type": content_type})


@imds_route
async def metadata_versions(request: web.Request) -> web.Response:
    """The api-versions instance metadata accepts (no api-version needed to ask)."""
    if request.method != "GET":
        return imds_error(405, imds.ERR_METHOD)
    if X_FORWARDED_FOR in request.headers:
        return imds_error(400, imds.ERR_FORWARDED)
    if request.headers.get(METADATA, "").lower() != "true":
        return imds_error(400, imds.ERR_METADATA)
    return web.Response(body=instance.versions_body(imds.INSTANCE_VERSIONS), headers=HEADERS)


@imds_route
async def not_found(request: web.Request) -> web.Response:
    """Any other path: IMDS's 404, or the control error shape under /replay/."""
    if request.path.startswith("/replay/"):
        return control_error(404, f"no control route {request.method} {request.path}")
    return imds_error(404, imds.ERR_NOT_FOUND)


ROUTES = [
    web.route("*", "/metadata/scheduledevents", scheduled_events),
    web.route("*", "/s/{session}/metadata/scheduledevents", scheduled_events),
    web.route("*", "/metadata/instance{tail:(/.*)?}", instance_metadata),
    web.route("*", "/s/{session}/metadata/instance{tail:(/.*)?}", instance_metadata),
    web.route("*", "/metadata/versions", metadata_versions),
    web.route("*", "/s/{session}/metadata/versions", metadata_versions),
]
CATCH_ALL = web.route("*", r"/{tail:[\s\S]*}", not_found)  # also paths with %0A in them
"""The last route: every path nobody else answers."""
