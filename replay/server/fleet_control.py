"""The fleet's control API under /replay/fleet: load a fleet, move its one anchor, act as a VM.

Errors have the control API's one shape (replay.server.middlewares). A fleet posted here names
its traces by name only (control clients never reach files outside the dataset); resolving and
reading them runs in a thread, so loading never stalls a running replay.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from replay.core.faults import parse_playbook
from replay.core.fleet import FleetPlan, FleetTrace, parse_fleet, plan_fleet
from replay.core.timeline import Trace
from replay.errors import ReplayError, TraceNotFoundError
from replay.playback.fleet import Fleet, FleetOptions
from replay.playback.fleet_members import VmReplay
from replay.playback.fleet_status import fleet_status, vm_detail
from replay.server.control import options_from
from replay.server.keys import FLEET, REGISTRY
from replay.server.middlewares import ControlError, json_response
from replay.server.verbs import body_of, documents_response, field, playbook_of, verb_routes
from replay.store.fleet import load_fleet_trace

routes = web.RouteTableDef()
MAX_WARM_UP_S = 3600.0
"""The longest warm-up a control client may ask for (wall seconds)."""


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
    faults = body.get("faults")
    warm_up_s = field(body, "warm_up_s", (int, float), 0.0)
    if not 0 <= warm_up_s <= MAX_WARM_UP_S:
        raise ControlError(400, f"'warm_up_s' must be 0 to {MAX_WARM_UP_S:g} seconds")
    return FleetOptions(
        speed=session.speed,
        loop=session.loop,
        start=session.start,
        approval_delay_s=session.approval_delay_s,
        recorded_approvals=session.recorded_approvals,
        rate_limit=rate_limit,
        faults=None if faults is None else parse_playbook(faults, "'faults'"),
        fault_seed=field(body, "fault_seed", int, 0),
        warm_up_s=float(warm_up_s),
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


@routes.put("/replay/fleet/faults")
async def load_faults(request: web.Request) -> web.Response:
    """Give every VM a fault playbook (each its own draws): a list of windows, or {playbook,
    seed}. It replaces the playbooks the fleet file gave."""
    fleet = fleet_of(request)
    fleet.set_faults(*await playbook_of(request))
    return json_response(fleet_status(fleet))


@routes.delete("/replay/fleet/faults")
async def clear_faults(request: web.Request) -> web.Response:
    fleet = fleet_of(request)
    fleet.set_faults(None)
    return json_response(fleet_status(fleet))


@routes.put("/replay/fleet/vms/{vm}/faults")
async def load_vm_faults(request: web.Request) -> web.Response:
    """Give one VM a fault playbook: a list of windows, or {playbook, seed}."""
    fleet, vm = vm_of(request)
    vm.set_faults(*await playbook_of(request))
    return json_response(vm_detail(fleet, vm))


@routes.delete("/replay/fleet/vms/{vm}/faults")
async def clear_vm_faults(request: web.Request) -> web.Response:
    fleet, vm = vm_of(request)
    vm.set_faults(None)
    return json_response(vm_detail(fleet, vm))


@routes.get("/replay/fleet/vms/{vm}/documents")
async def documents(request: web.Request) -> web.Response:
    return documents_response(vm_of(request)[1].documents)


ROUTES = [*routes, *verb_routes("/replay/fleet", fleet_of, fleet_status)]
