"""A fleet's IMDS routes: each request is the VM whose address it comes from, or /vm/{name}/.

- `BY_ADDRESS` (served first when the server plays a fleet file): /metadata/scheduledevents and
  /metadata/instance answer as the VM whose address request.remote is; an address the fleet
  does not know is a VM in no group (the empty document).
- `ROUTES` (always): /vm/{name}/metadata/... for clients that cannot choose their address,
  /vm/{name}/stream and /vm/{name}/events to push a VM's documents, /fleet/stream and
  /fleet/events to push the whole fleet's changes, and the page at /fleet.

Answers are IMDS's own, as in replay.server.imds.
"""

from __future__ import annotations

import dataclasses

from aiohttp import hdrs, web

from replay.core import imds, instance
from replay.core.fleet import VmIdentity
from replay.playback.fleet import Fleet
from replay.playback.fleet_host import VmView
from replay.playback.fleet_members import NO_GROUP, VmReplay
from replay.server import imds as imds_routes
from replay.server.failures import imds_error, inject
from replay.server.imds import (
    HEADERS,
    POLL_TARGETS,
    Rejection,
    answer_instance,
    check_request,
    query_of,
    start_requests,
)
from replay.server.keys import FLEET
from replay.server.middlewares import control_error, imds_route
from replay.server.page import NO_CACHE, STATIC_DIR
from replay.server.streams import stream_events, stream_websocket

MAPPED_V4 = "::ffff:"


def vm_at(fleet: Fleet, remote: str | None) -> VmReplay | None:
    """The VM whose address a request comes from (an IPv4 client of a dual-stack socket too)."""
    if remote is None:
        return None
    vm = fleet.by_address.get(remote)
    if vm is None and remote.startswith(MAPPED_V4):
        vm = fleet.by_address.get(remote.removeprefix(MAPPED_V4))
    return vm


@imds_route
async def events_by_address(request: web.Request) -> web.StreamResponse:
    """/metadata/scheduledevents of a fleet server: the document of the client's VM."""
    fleet = request.app[FLEET].fleet
    if fleet is None:  # the fleet was deleted: the default session answers, as on any server
        return await imds_routes.scheduled_events(request)
    return await _scheduled_events(request, fleet, vm_at(fleet, request.remote))


@imds_route
async def events_by_name(request: web.Request) -> web.StreamResponse:
    """/vm/{name}/metadata/scheduledevents: the VM's document, whatever the client's address."""
    fleet = request.app[FLEET].fleet
    vm = None if fleet is None else fleet.vms.get(request.match_info["name"])
    if fleet is None or vm is None:
        return imds_error(404, imds.ERR_NOT_FOUND)
    return await _scheduled_events(request, fleet, vm)


async def _scheduled_events(
    request: web.Request, fleet: Fleet, vm: VmReplay | None
) -> web.StreamResponse:
    method, headers = request.method, request.headers
    if method not in ("GET", "POST"):
        return imds_error(405, imds.ERR_METHOD)
    version = check_request(headers, POLL_TARGETS.get(request.raw_path) or query_of(request))
    if isinstance(version, Rejection):
        return web.Response(status=version.status, body=version.body, headers=HEADERS)
    limiter = fleet.rate_limiter
    if limiter is not None:
        who = vm.name if vm is not None else f"address {request.remote}"
        if not limiter.allow(who, fleet.clock.now()):
            if vm is not None:
                vm.refused += 1
                vm.count_fault("rate limit 429")
            return imds_error(429, imds.ERR_TOO_MANY)
    if vm is not None and (vm.faults is not None or vm.warm_until is not None):
        failure = await inject(request, fleet.clock, VmView(fleet, vm))
        if failure is not None:
            return failure
    if method == "POST":
        fleet.touch()
        if vm is None:
            return await start_requests(request, lambda ids: ids)  # it can see no EventId
        return await start_requests(request, lambda ids: fleet.approve(vm, ids))
    if vm is None:
        fleet.touch()
        served = NO_GROUP
    else:
        served = fleet.poll(vm, version)
    if headers.get(hdrs.IF_NONE_MATCH) == served.etag:
        return web.Response(status=304, headers={"ETag": served.etag})
    return web.Response(
        body=served.body, headers={"Content-Type": imds.CONTENT_TYPE, "ETag": served.etag}
    )


def instance_identity(identity: VmIdentity) -> instance.InstanceIdentity:
    """A fleet VM's instance identity: its own name, fault domain, vmId and scale set (group)."""
    base = instance.identity_for(identity.name, seed=identity.group)
    return dataclasses.replace(
        base,
        vm_id=identity.vm_id.lower(),
        scale_set=identity.group,
        fault_domain=identity.fault_domain,
        update_domain=identity.fault_domain,
    )


@imds_route
async def instance_by_address(request: web.Request) -> web.StreamResponse:
    fleet = request.app[FLEET].fleet
    vm = None if fleet is None else vm_at(fleet, request.remote)
    if vm is None:  # no fleet, or an address it does not know: the default session's answer
        return await imds_routes.instance_metadata(request)
    return _instance(request, vm)


@imds_route
async def instance_by_name(request: web.Request) -> web.StreamResponse:
    fleet = request.app[FLEET].fleet
    vm = None if fleet is None else fleet.vms.get(request.match_info["name"])
    if vm is None:
        return imds_error(404, imds.ERR_NOT_FOUND)
    return _instance(request, vm)


def _instance(request: web.Request, vm: VmReplay) -> web.Response:
    """Instance metadata of one VM: any sub-path, format=json or text, as IMDS answers."""
    return answer_instance(request, instance_identity(vm.identity))


def _no_vm(request: web.Request) -> web.Response | None:
    name = request.match_info["name"]
    if request.app[FLEET].vm(name) is None:
        return control_error(404, f"no VM {name!r} in the fleet (GET /replay/fleet lists them)")
    return None


async def vm_websocket(request: web.Request) -> web.StreamResponse:
    """GET /vm/{name}/stream: the VM's documents, one WebSocket text message each."""
    name = request.match_info["name"]
    missing = _no_vm(request)
    return missing or await stream_websocket(request, request.app[FLEET], name, f"vm:{name}")


async def vm_events(request: web.Request) -> web.StreamResponse:
    """GET /vm/{name}/events: the same as Server-Sent Events."""
    name = request.match_info["name"]
    missing = _no_vm(request)
    return missing or await stream_events(request, request.app[FLEET], name, f"vm:{name}")


async def fleet_websocket(request: web.Request) -> web.StreamResponse:
    """GET /fleet/stream: where the fleet is and what changed, one WebSocket message each (the
    page's stream): every current document first, then one message per change of a document
    or of the anchor; {"fleet": null} while no fleet plays."""
    return await stream_websocket(request, request.app[FLEET].watch, "fleet", WATCH_KEY)


async def fleet_events(request: web.Request) -> web.StreamResponse:
    """GET /fleet/events: the same as Server-Sent Events."""
    return await stream_events(request, request.app[FLEET].watch, "fleet", WATCH_KEY)


WATCH_KEY = "fleet:"
"""The fleet stream's fan-out (a session's is its name, a VM's vm:NAME; neither has a ':' at
the end)."""
FLEET_PAGE = STATIC_DIR / "fleet"
"""The fleet page's own files (a folder of its own: the session page's assets are the rest)."""


async def fleet_page(request: web.Request) -> web.StreamResponse:
    """GET /fleet: the fleet page (VMs by fault domain, shared events, approve as any VM)."""
    return web.FileResponse(FLEET_PAGE / "index.html", headers=NO_CACHE)


def _fleet_asset(name: str) -> web.RouteDef:
    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(FLEET_PAGE / name, headers=NO_CACHE)

    return web.get(f"/static/fleet/{name}", handler)


BY_ADDRESS = [
    web.route("*", "/metadata/scheduledevents", events_by_address),
    web.route("*", "/metadata/instance{tail:(/.*)?}", instance_by_address),
]
"""A fleet server's IMDS routes (added before the default session's, which they replace)."""
ROUTES = [
    web.route("*", "/vm/{name}/metadata/scheduledevents", events_by_name),
    web.route("*", "/vm/{name}/metadata/instance{tail:(/.*)?}", instance_by_name),
    web.get("/vm/{name}/stream", vm_websocket),
    web.get("/vm/{name}/events", vm_events),
    web.get("/fleet/stream", fleet_websocket),
    web.get("/fleet/events", fleet_events),
    web.get("/fleet", fleet_page),
    _fleet_asset("fleet.js"),
    _fleet_asset("fleet.css"),
]
