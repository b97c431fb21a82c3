"""What a replay serves: a trace's documents as transitions, reshaped by approvals (pure core).

A trace is decomposed into one track per event (its states over trace time). Approving a
Scheduled event pulls the rest of its track earlier: it starts `delay_s` after the approval and
every later state follows, shifted by the same amount. Until the first approval the schedule is
the trace's own documents and incarnations, exactly; after it, each change gets the next
incarnation. Standard library only, no clock.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from replay.timeline import Trace

Event = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EventState:
    """One event as served: the captured event, its status and NotBefore on the trace's axis."""

    event: Event
    status: str
    not_before_s: float | None
    """NotBefore in trace seconds, never after the start in this schedule; None once Started."""

    @property
    def event_id(self) -> str:
        value: str = self.event["EventId"]
        return value


@dataclass(frozen=True, slots=True)
class Transition:
    """From offset_s (trace seconds) on, the document has this incarnation and these events."""

    offset_s: float
    incarnation: int
    events: tuple[EventState, ...]


@dataclass(frozen=True, slots=True)
class Change:
    offset_s: float
    state: Event | None
    """The event as captured from here on; None: gone."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """The transitions of one round of a replay, sorted by offset."""

    transitions: tuple[Transition, ...]
    offsets: tuple[float, ...]

    def index_at(self, offset_s: float) -> int:
        """Index of the transition current at offset_s (trace seconds)."""
        return max(bisect.bisect_right(self.offsets, offset_s) - 1, 0)

    def at(self, offset_s: float) -> Transition:
        return self.transitions[self.index_at(offset_s)]

    def next_offset_after(self, offset_s: float) -> float | None:
        i = bisect.bisect_right(self.offsets, offset_s)
        return self.offsets[i] if i < len(self.offsets) else None

    def state_of(self, event_id: str, offset_s: float) -> EventState | None:
        """The event's state at offset_s, or None if it is not in the document then."""
        for state in self.at(offset_s).events:
            if state.event_id == event_id:
                return state
        return None


def tracks_of(trace: Trace) -> dict[str, list[Change]]:
    """Each event's changes of state over trace time, in order of first appearance."""
    tracks: dict[str, list[Change]] = {}
    present: dict[str, Event] = {}
    for snap in trace.snapshots:
        now = {e["EventId"]: e for e in snap.events}
        for eid, event in now.items():
            if present.get(eid) != event:
                tracks.setdefault(eid, []).append(Change(snap.offset_s, event))
        for eid in present.keys() - now.keys():
            tracks[eid].append(Change(snap.offset_s, None))
        present = now
    return tracks


def _fallback_not_before(track: Sequence[Change]) -> float | None:
    """Where NotBefore cannot be placed (no wall-clock start): the start, else the end."""
    for change in track:
        if change.state is not None and change.state["EventStatus"] == "Started":
            return change.offset_s
    return track[-1].offset_s if track[-1].state is None else None


def _states(trace: Trace, track: Sequence[Change]) -> list[tuple[float, EventState | None]]:
    """A track as served states: NotBefore placed on the axis and never after the start."""
    start = next(
        (c.offset_s for c in track if c.state is not None and c.state["EventStatus"] == "Started"),
        math.inf,
    )
    fallback = _fallback_not_before(track)
    out: list[tuple[float, EventState | None]] = []
    for change in track:
        if change.state is None:
            out.append((change.offset_s, None))
            continue
        status = change.state["EventStatus"]
        nb: float | None = None
        if status == "Scheduled":
            placed = trace.not_before_offset(change.state["NotBefore"])
            nb = placed if placed is not None else fallback
            nb = min(nb, start) if nb is not None else (start if start < math.inf else None)
        out.append((change.offset_s, EventState(change.state, status, nb)))
    return out


def _approve(
    states: list[tuple[float, EventState | None]], at_s: float, delay_s: float
) -> list[tuple[float, EventState | None]]:
    """The event's states after an approval at at_s: Started at at_s + delay_s, rest shifted."""
    before = [(o, s) for o, s in states if o <= at_s]
    current = before[-1][1] if before else None
    if current is None or current.status != "Scheduled":
        return states  # not Scheduled now: nothing to start (already Started, gone, or not yet)
    start_at = at_s + delay_s
    later = [(o, s) for o, s in states if o > at_s]
    started = next((i for i, (_, s) in enumerate(later) if s and s.status == "Started"), None)
    if started is not None:
        shift = later[started][0] - start_at
        if shift <= 0:
            return states  # it starts by then anyway
        tail = [(o - shift, s) for o, s in later[started:]]
    else:
        # It never started in the trace (cancelled): it starts now and ends when it vanished.
        gone = next((o for o, s in later if s is None), None)
        begun = EventState(current.event, "Started", None)
        tail = [
            (start_at, begun),
            (max(gone if gone is not None else start_at, start_at + 1), None),
        ]
    if delay_s > 0:
        # While it waits to start, its NotBefore says when that will be.
        before.append((at_s, EventState(current.event, "Scheduled", start_at)))
    return before + tail


def build_schedule(
    trace: Trace,
    approvals: Sequence[tuple[float, str]] = (),
    *,
    delay_s: float = 0.0,
    first_incarnation: int | None = None,
) -> Schedule:
    """One round's transitions: the trace's documents, reshaped by (offset_s, EventId) approvals."""
    base = trace.snapshots[0].incarnation
    shift = 0 if first_incarnation is None else first_incarnation - base
    tracks = {eid: _states(trace, t) for eid, t in tracks_of(trace).items()}
    order = list(tracks)
    first_approval = math.inf
    for at_s, eid in sorted(approvals):
        if eid in tracks:
            approved = _approve(tracks[eid], at_s, delay_s)
            if approved is not tracks[eid]:
                tracks[eid] = approved
                first_approval = min(first_approval, at_s)

    transitions: list[Transition] = []
    for snap in trace.snapshots:
        if snap.offset_s > first_approval:
            break
        states = tuple(_state_at(tracks[e["EventId"]], snap.offset_s) for e in snap.events)
        transitions.append(
            Transition(snap.offset_s, snap.incarnation + shift, tuple(s for s in states if s))
        )
    if first_approval < math.inf:
        times = sorted({o for t in tracks.values() for o, _ in t if o >= first_approval})
        for offset in times:
            events = tuple(
                s for s in (_state_at(tracks[e], offset) for e in order) if s is not None
            )
            if transitions and events == transitions[-1].events:
                continue
            if transitions and offset == transitions[-1].offset_s:
                last = transitions.pop()
                transitions.append(Transition(offset, last.incarnation, events))
                continue
            incarnation = transitions[-1].incarnation + 1 if transitions else base + shift
            transitions.append(Transition(offset, incarnation, events))
    return Schedule(tuple(transitions), tuple(t.offset_s for t in transitions))


def _state_at(
    states: Sequence[tuple[float, EventState | None]], offset_s: float
) -> EventState | None:
    current: EventState | None = None
    for o, s in states:
        if o > offset_s:
            break
        current = s
    return current
