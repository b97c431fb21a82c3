"""A fleet's status as JSON values: the anchor, each group's events, each VM's state."""

from __future__ import annotations

from typing import Any

import orjson

from replay.core.rollout import Rollout
from replay.playback.anchor import State
from replay.playback.fleet import Fleet
from replay.playback.fleet_members import GroupReplay, VmReplay


def fleet_status(fleet: Fleet) -> dict[str, Any]:
    """Everything a control client (or the page) needs about a fleet, as JSON values.

    Reading it is not an IMDS request: it neither starts a waiting fleet nor counts as served.
    """
    pos = fleet.position()
    rnd, off = fleet.split(pos)
    nxt = fleet.next_transition()
    running = fleet.state is State.running
    next_info = None
    if nxt is not None:
        nxt_round, nxt_offset = fleet.split(nxt)
        next_info = {
            "offset_s": nxt_offset,
            "round": nxt_round,
            "in_s": (nxt - pos) / fleet.speed if running else None,
        }
    groups = [group_status(fleet, g) for g in fleet.groups.values()]
    return {
        "name": fleet.name,
        "state": fleet.state.value,
        "speed": fleet.speed,
        "loop": fleet.looping,
        "round": rnd,
        "position_s": off,
        "duration_s": fleet.duration_s,
        "wall_duration_s": fleet.duration_s / fleet.speed,
        "next_transition": next_info,
        "approval_delay_s": fleet.options.approval_delay_s,
        "rate_limit": fleet.options.rate_limit,
        "warm_up_s": fleet.options.warm_up_s,
        "groups": groups,
        "vms": [vm_status(fleet, vm, groups_by_name(groups)) for vm in fleet.vms.values()],
        "approvals": [
            {
                "vm": a.vm,
                "group": a.group,
                "event_id": a.event_id,
                "round": a.round,
                "offset_s": a.offset_s,
            }
            for a in fleet.approvals
        ],
    }


def groups_by_name(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in groups}


def group_status(fleet: Fleet, group: GroupReplay) -> dict[str, Any]:
    """A group: its plan, its fault domains' VMs, its documents and the events they show."""
    plan = group.plan
    members = [vm for timeline in group.distinct() for vm in timeline.vms]
    if isinstance(plan, Rollout):
        trace, gap_s = plan.source.name, plan.gap_s
        domains = [(w.fault_domain, list(w.resources)) for w in plan.waves]
    else:
        trace, gap_s = plan.source.name, None
        by_domain: dict[int, list[str]] = {}
        for vm in sorted(members, key=lambda v: v.identity.fault_domain):
            by_domain.setdefault(vm.identity.fault_domain, []).append(vm.name)
        domains = list(by_domain.items())
    documents = [
        orjson.loads(fleet.served(t, fleet.status_version)[0].body) for t in group.distinct()
    ]
    events: dict[str, Any] = {}
    for document in documents:
        for event in document["Events"]:
            events.setdefault(event["EventId"], event)
    return {
        "name": group.name,
        "trace": trace,
        "rollout": plan.rollout,
        "gap_s": gap_s,
        "duration_s": group.duration_s,
        "fault_domains": [{"fault_domain": fd, "vms": vms} for fd, vms in domains],
        "incarnation": documents[0]["DocumentIncarnation"],
        "document": documents[0],
        # every event any VM of the group sees now (a fleet trace has a document per VM)
        "events": list(events.values()),
    }


def vm_status(
    fleet: Fleet, vm: VmReplay, groups: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A VM: who it is and what it sees now (its group's events, whether they affect it)."""
    identity = vm.identity
    shared = vm.group is not None and isinstance(vm.group.plan, Rollout)
    if shared and groups is not None and vm.group is not None and vm.group.name in groups:
        document: dict[str, Any] = groups[vm.group.name]["document"]
    else:
        document = orjson.loads(fleet.current(vm, fleet.status_version).body)
    return {
        "name": vm.name,
        "address": identity.address,
        "group": identity.group,
        "fault_domain": identity.fault_domain,
        "vm_id": identity.vm_id,
        "incarnation": document["DocumentIncarnation"],
        "events": [
            {
                "event_id": e["EventId"],
                "status": e["EventStatus"],
                "affects": vm.name in e["Resources"],
            }
            for e in document["Events"]
        ],
        "polls": vm.polls,
        "approvals": vm.approvals,
        "refused": vm.refused,
        "faults": {
            "windows": len(vm.faults.windows) if vm.faults else 0,
            "injected": dict(vm.fault_counts),
        },
    }


def vm_detail(fleet: Fleet, vm: VmReplay) -> dict[str, Any]:
    """A VM's status with its whole current document."""
    status = vm_status(fleet, vm)
    status["document"] = orjson.loads(fleet.current(vm, fleet.status_version).body)
    return status
