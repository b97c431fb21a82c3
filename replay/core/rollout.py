"""A group's events rolled out over its VMs: per fault domain, or together (pure core).

Every VM of a group sees every event of the group; `Resources` names the VMs an event affects.

- `fault-domain`: each fault domain (in ascending order) is a *wave*: a copy of the trace's
  events with fresh EventIds and Resources naming that fault domain's VMs. Wave 0 plays on the
  trace's own timeline; wave k+1's first event appears `gap_s` trace seconds after wave k's last
  event is gone. Approvals reshape a wave (replay.core.schedule), so when one fault domain's
  maintenance finishes early the next one follows early too.
- `together`: one wave whose events name every VM of the group.

A rollout is data: `Rollout.schedule(approvals)` is the group's schedule, a pure function of
the approvals, in the same form a single trace's schedule has.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from replay.core.reference import event_id_for
from replay.core.schedule import EventState, Schedule, Transition, build_schedule
from replay.core.timeline import (
    Approval,
    Snapshot,
    Trace,
    format_rfc1123,
    parse_rfc1123,
    validate,
)
from replay.errors import ReplayError

ROLLOUTS = ("fault-domain", "together")
SNAP_S = 1e-6
"""An approval this close to a wave's change is at that change (shifts are sums of floats)."""

ApprovalKey = tuple[float, str, int]
"""(offset_s on the group's axis, EventId, batch), as replay.core.schedule takes them."""


@dataclass(frozen=True)
class Wave:
    """One fault domain's copy of the trace (on the trace's own axis)."""

    fault_domain: int | None
    """None for a group rolled out together."""
    resources: tuple[str, ...]
    trace: Trace
    first_s: float
    """Offset of its first event on its own axis (its duration when it has none)."""
    recorded: tuple[ApprovalKey, ...]
    """The trace's own approvals of this wave's events (own axis, batch = the trace's POST)."""
    ids: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Rollout:
    """A group's waves and its timeline without approvals (`trace`)."""

    group: str
    source: Trace
    rollout: str
    gap_s: float
    waves: tuple[Wave, ...]
    trace: Trace
    """The group's documents without approvals (validated): its duration, names, a static view."""

    @property
    def duration_s(self) -> float:
        return self.trace.duration_s

    @property
    def started_at(self) -> datetime | None:
        """Wall time of offset 0 (the trace's)."""
        return self.source.started_at

    def wave_of(self, event_id: str) -> int | None:
        """Index of the wave an EventId belongs to (None: not this group's)."""
        for i, wave in enumerate(self.waves):
            if event_id in wave.ids:
                return i
        return None

    def schedule(
        self,
        approvals: Sequence[ApprovalKey] = (),
        *,
        delay_s: float = 0.0,
        first_incarnation: int | None = None,
        recorded: bool = False,
    ) -> Schedule:
        """The group's transitions with approvals applied; each wave follows the one before.

        Incarnations count the group document's changes from the trace's first incarnation (or
        first_incarnation). An approval never changes what was served before it. An approval
        with a delay near a wave's end can move what follows past the group's duration, as in
        a single trace's schedule: the round ends first.
        """
        pieces: list[tuple[float, Schedule]] = []
        shift = 0.0
        for k, wave in enumerate(self.waves):
            if k:
                before_shift, before = pieces[-1]
                shift = before_shift + before.offsets[-1] + self.gap_s - wave.first_s
            own = [
                (_to_local(at - shift, wave.trace.offsets), eid, batch)
                for at, eid, batch in approvals
                if eid in wave.ids
            ]
            if recorded:
                own.extend(wave.recorded)
            pieces.append((shift, build_schedule(wave.trace, own, delay_s=delay_s)))
        first = self.trace.snapshots[0].incarnation
        return _merge(pieces, first if first_incarnation is None else first_incarnation)


def _to_local(offset_s: float, offsets: Sequence[float]) -> float:
    """An offset on a wave's own axis, snapped to the wave's change it was meant to be at."""
    i = bisect.bisect_left(offsets, offset_s - SNAP_S)
    if i < len(offsets) and abs(offsets[i] - offset_s) <= SNAP_S:
        return offsets[i]
    return offset_s


def _sweep(
    pieces: Sequence[tuple[float, Sequence[float]]], follows: Sequence[int] = ()
) -> list[tuple[float, list[int]]]:
    """Each point of the shifted pieces, with every piece's current index there (-1 before the
    piece begins).

    Pieces' changes at one offset make one point. A piece's own changes at one offset (an
    approval's, after what was served there) stay points of their own, in order, and a piece
    that starts where the piece before it ends (`follows[p]`: the rank of that end) comes
    after that end.
    """
    points = []
    for p, (shift, offsets) in enumerate(pieces):
        rank = 0
        end = pieces[p - 1][0] + pieces[p - 1][1][-1] if p else None
        for i, offset in enumerate(offsets):
            rank = rank + 1 if i and offsets[i - 1] == offset else 0
            at = shift + offset
            base = follows[p] if p < len(follows) and at == end else 0
            points.append((at, rank + base, p, i))
    points.sort()
    current = [-1] * len(pieces)
    out: list[tuple[float, list[int]]] = []
    for j, (at, rank, p, i) in enumerate(points):
        current[p] = i
        if j + 1 == len(points) or points[j + 1][:2] != (at, rank):
            out.append((at, list(current)))
    return out


def _end_rank(offsets: Sequence[float]) -> int:
    """How many changes before the last share its offset (an approval's end at a change)."""
    n = 0
    while n + 1 < len(offsets) and offsets[-2 - n] == offsets[-1]:
        n += 1
    return n


def _shifted(states: Iterable[EventState], shift: float) -> tuple[EventState, ...]:
    if not shift:
        return tuple(states)
    return tuple(
        EventState(s.event, s.status, None if s.not_before_s is None else s.not_before_s + shift)
        for s in states
    )


def _merge(pieces: Sequence[tuple[float, Schedule]], first_incarnation: int) -> Schedule:
    """One schedule from shifted wave schedules: each change of the whole the next incarnation."""
    cache: dict[tuple[int, int], tuple[EventState, ...]] = {}
    transitions: list[Transition] = []
    follows = [0, *(_end_rank(sched.offsets) for _, sched in pieces[:-1])]
    for at, indices in _sweep([(shift, sched.offsets) for shift, sched in pieces], follows):
        events: tuple[EventState, ...] = ()
        for p, i in enumerate(indices):
            if i < 0:
                continue
            key = (p, i)
            if key not in cache:
                shift, sched = pieces[p]
                cache[key] = _shifted(sched.transitions[i].events, shift)
            events += cache[key]
        if not transitions:
            transitions.append(Transition(at, first_incarnation, events))
        elif events != transitions[-1].events:
            transitions.append(Transition(at, transitions[-1].incarnation + 1, events))
    return Schedule(tuple(transitions), tuple(t.offset_s for t in transitions))


def _wave(group: str, source: Trace, fault_domain: int | None, resources: tuple[str, ...]) -> Wave:
    scope = group if fault_domain is None else f"{group}/fd-{fault_domain}"
    ids = {eid: event_id_for(f"{scope}/{eid}") for eid in source.event_ids}

    def copy(event: Mapping[str, Any]) -> dict[str, Any]:
        return {**event, "EventId": ids[event["EventId"]], "Resources": list(resources)}

    snapshots = tuple(
        Snapshot(
            s.offset_s,
            {**s.document, "Events": [copy(e) for e in s.events]},
        )
        for s in source.snapshots
    )
    approvals = tuple(
        Approval(a.offset_s, tuple(ids[e] for e in a.event_ids if e in ids))
        for a in source.approvals
    )
    trace = Trace(
        name=f"{source.name}@{scope}",
        scenario=source.scenario,
        snapshots=snapshots,
        approvals=approvals,
        started_at=source.started_at,
        origin=source.origin,
        source=source.source,
    )
    first = next((s.offset_s for s in source.snapshots if s.events), source.duration_s)
    recorded = tuple(
        (a.offset_s, eid, batch) for batch, a in enumerate(approvals) for eid in a.event_ids
    )
    return Wave(fault_domain, resources, trace, first, recorded, frozenset(ids.values()))


def _static(group: str, rollout: str, source: Trace, waves: Sequence[Wave], gap_s: float) -> Trace:
    """The group's documents without approvals, NotBefore moved with each wave."""
    shifts = [0.0]
    for k in range(1, len(waves)):
        shifts.append(shifts[-1] + waves[k - 1].trace.duration_s + gap_s - waves[k].first_s)
    pieces = [(shift, wave.trace.offsets) for shift, wave in zip(shifts, waves, strict=True)]
    snapshots: list[Snapshot] = []
    incarnation = source.snapshots[0].incarnation
    for at, indices in _sweep(pieces):
        events = [
            _moved(event, shifts[p])
            for p, i in enumerate(indices)
            if i >= 0
            for event in waves[p].trace.snapshots[i].events
        ]
        if snapshots and events == snapshots[-1].events:
            continue
        if snapshots:
            incarnation += 1
        snapshots.append(Snapshot(at, {"DocumentIncarnation": incarnation, "Events": events}))
    approvals = tuple(
        Approval(a.offset_s + shift, a.event_ids)
        for shift, wave in zip(shifts, waves, strict=True)
        for a in wave.trace.approvals
    )
    return validate(
        Trace(
            name=f"{source.name}@{group}",
            scenario=source.scenario,
            snapshots=tuple(snapshots),
            approvals=tuple(sorted(approvals, key=lambda a: a.offset_s)),
            started_at=source.started_at,
            origin=source.origin,
            source={"group": group, "rollout": rollout, "trace": source.name, "gap_s": gap_s},
        )
    )


def _moved(event: Mapping[str, Any], shift: float) -> Mapping[str, Any]:
    if not shift or not event["NotBefore"]:
        return event
    moved = parse_rfc1123(event["NotBefore"]) + timedelta(seconds=shift)
    return {**event, "NotBefore": format_rfc1123(moved)}


def plan_rollout(
    group: str,
    trace: Trace,
    members: Sequence[tuple[str, int]],
    rollout: str = "fault-domain",
    gap_s: float = 0.0,
) -> Rollout:
    """A group's rollout of a trace over its members, (VM name, fault domain) in file order."""
    if rollout not in ROLLOUTS:
        raise ReplayError(f"rollout {rollout!r} is not one of {', '.join(ROLLOUTS)}")
    if not members:
        raise ReplayError(f"group {group!r} has no VMs")
    if not math.isfinite(gap_s) or gap_s < 0:
        raise ReplayError(f"gap_s must be a finite number >= 0, got {gap_s}")
    if rollout == "together":
        waves = [_wave(group, trace, None, tuple(name for name, _ in members))]
    else:
        domains = sorted({fd for _, fd in members})
        waves = [
            _wave(group, trace, fd, tuple(name for name, d in members if d == fd)) for fd in domains
        ]
    static = _static(group, rollout, trace, waves, gap_s)
    return Rollout(group, trace, rollout, gap_s, tuple(waves), static)
