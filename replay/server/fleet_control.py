"""The fleet's control API under /replay/fleet: load a fleet, move its one anchor, act as a VM.

Errors have the control API's one shape (replay.server.middlewares). A fleet posted here names
its traces by name only (control clients never reach files outside the dataset); resolving and
reading them runs in a thread, so loading never stalls a running replay.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from replay.core.fleet import FleetPlan, FleetTrace, parse_fleet, plan_fleet
from replay.core.speed import parse_speed
from replay.core.timeline import Trace
from replay.errors import ReplayError, TraceNotFoundError
from replay.playback.fleet import Fleet, FleetOptions
from replay.playback.fleet_members import VmReplay
from replay.playback.fleet_status import fleet_status, vm_detail
from replay.server.control import body_of, options_from
from replay.server.keys import FLEET, REGISTRY
from replay.server.middlewares import ControlError, json_response
from replay.store.fleet import load_fleet_trace

routes = web.RouteTableDef()


def fleet_of(request: web.Request) -> Fleet:
    fleet = request.app[FLEET].fleet
    if fleet is None:
        raise ControlError(404, "no fleet (POST /replay/fleet loads one; serve --fleet FILE)")
    return fleet


def vm_of(request: web.Request) -> tuple[Fleet, VmReplay]:
    fleet = fleet_of(request)
    name = request.match_info["vm"]
    vm = fleet.vms.get(name)
    if vm is None:
        raise ControlError(404, f"no VM {name!r} in the fleet (GET /replay/fleet lists them)")
    return fleet, vm


def fleet_options(body: dict[str, Any]) -> FleetOptions:
    """Fleet options from a control request body (the session options that apply, and more)."""
    if "resources" in body:
        raise ControlError(400, "'resources' does not apply to a fleet: its file names the VMs")
    session = options_from(body)
    rate_limit = body.get("rate_limit")
    if rate_limit is not None and (
        isinstance(rate_limit, bool) or not isinstance(rate_limit, int) or rate_limit < 1
    ):
        raise ControlError(400, "'rate_limit' must be an integer >= 1 (requests per second)")
    return FleetOptions(
        speed=session.speed,
        loop=session.loop,
        start=session.start,
        approval_delay_s=session.approval_delay_s,
        recorded_approvals=session.recorded_approvals,
        rate_limit=rate_limit,
    )


@routes.get("/replay/fleet")
async def get_fleet(request: web.Request) -> web.Response:
    return json_response(fleet_status(fleet_of(request)))


@routes.post("/replay/fleet")
async def load_fleet(request: web.Request) -> web.Response:
    """Play a fleet: {"fleet": {"group": [...], "vm": [...]}, "speed": ..., ...}."""
    body = await body_of(request)
    if "fleet" not in body:
        raise ControlError(400, '\'fleet\' is required: {"group": [...], "vm": [...]}')
    spec = parse_fleet(body["fleet"], "fleet")
    options = fleet_options(body)
    registry = request.app[REGISTRY]

    def resolve(name: str) -> Trace | FleetTrace:
        """A trace of the dataset by name, else a fleet trace by name (never a path)."""
        try:
            return registry.trace(name)
        except TraceNotFoundError as missing:
            try:
                return load_fleet_trace(registry.traces_dir, name)
            except ReplayError:
                raise missing from None

    plan: FleetPlan = await asyncio.to_thread(plan_fleet, spec, resolve)
    fleet = request.app[FLEET].load(plan, options)
    return json_response(fleet_status(fleet), 201)


@routes.delete("/replay/fleet")
async def delete_fleet(request: web.Request) -> web.Response:
    fleet = fleet_of(request)
    request.app[FLEET].clear()
    return json_response({"deleted": fleet.name})


@routes.post("/replay/fleet/pause")
async def pause(request: web.Request) -> web.Response:
    fleet = fleet_of(request)
    fleet.pause()
    return json_response(fleet_status(fleet))


@routes.post("/replay/fleet/resume")
async def resume(request: web.Request) -> web.Response:
    fleet = fleet_of(request)
    fleet.resume()
    return json_response(fleet_status(fleet))


@routes.post("/replay/fleet/step")
async def step(request: web.Request) -> web.Response:
    fleet = fleet_of(request)
    fleet.step()
    return json_response(fleet_status(fleet))


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControlError(400, f"{key!r} has the wrong type: {value!r}")
    return float(value)


@routes.post("/replay/fleet/seek")
async def seek(request: web.Request) -> web.Response:
    fleet = fleet_of(request)
    body = await body_of(request)
    if body.get("next") is True:
        fleet.step()
    else:
        offset = _number(body, "offset_s")
        if offset is None:
            raise ControlError(400, "give 'offset_s' (trace seconds) or 'next': true")
        fleet.seek(offset)
    return json_response(fleet_status(fleet))


@routes.post("/replay/fleet/advance")
async def advance(request: web.Request) -> web.Response:
    fleet = fleet_of(request)
    body = await body_of(request)
    fleet.advance(_number(body, "seconds"))
    return json_response(fleet_status(fleet))


@routes.post("/replay/fleet/speed")
async def set_speed(request: web.Request) -> web.Response:
    fleet = fleet_of(request)
    body = await body_of(request)
    speed = body.get("speed")
    if isinstance(speed, bool) or not isinstance(speed, int | float | str):
        raise ControlError(400, f"'speed' is required: a number or '60x', got {speed!r}")
    fleet.set_speed(parse_speed(speed))
    return json_response(fleet_status(fleet))


@routes.get("/replay/fleet/vms/{vm}")
async def get_vm(request: web.Request) -> web.Response:
    fleet, vm = vm_of(request)
    return json_response(vm_detail(fleet, vm))


@routes.post("/replay/fleet/vms/{vm}/approve")
async def approve(request: web.Request) -> web.Response:
    """Approve as a VM: {"event_ids": [...]}; starts the events for all their Resources."""
    fleet, vm = vm_of(request)
    body = await body_of(request)
    ids = body.get("event_ids")
    if not isinstance(ids, list) or not all(isinstance(e, str) for e in ids):
        raise ControlError(400, "'event_ids' must be a list of EventId strings")
    unknown = fleet.approve(vm, ids)
    if unknown:
        raise ControlError(400, f"{vm.name} cannot see EventId {', '.join(unknown)}")
    return json_response(vm_detail(fleet, vm))


@routes.get("/replay/fleet/vms/{vm}/documents")
async def documents(request: web.Request) -> web.Response:
    _, vm = vm_of(request)
    return web.Response(
        body=b"[" + b",".join(vm.documents) + b"]",
        content_type="application/json",
        charset="utf-8",
    )


ROUTES = list(routes)
