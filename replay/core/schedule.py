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

from replay.core.timeline import Trace

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


Key = tuple[float, int]
"""(offset_s, seq): seq orders changes at one offset; the trace's own are 0, an approval's later."""
States = list[tuple[Key, EventState | None]]


def _states(trace: Trace, track: Sequence[Change]) -> States:
    """A track as served states: NotBefore placed on the axis and never after the start."""
    start = next(
        (c.offset_s for c in track if c.state is not None and c.state["EventStatus"] == "Started"),
        math.inf,
    )
    fallback = _fallback_not_before(track)
    out: States = []
    for change in track:
        key = (change.offset_s, 0)
        if change.state is None:
            out.append((key, None))
            continue
        status = change.state["EventStatus"]
        nb: float | None = None
        if status == "Scheduled":
            placed = trace.not_before_offset(change.state["NotBefore"])
            nb = placed if placed is not None else fallback
            nb = min(nb, start) if nb is not None else (start if start < math.inf else None)
        out.append((key, EventState(change.state, status, nb)))
    return out


def _approve(
    states: States, at_s: float, seq: int, delay_s: float, trace_end: float = math.inf
) -> States:
    """The event's states after an approval at at_s: Started at at_s + delay_s, rest shifted.

    Changes the approval makes carry its seq, so at the approval's own offset they come after
    what was already served there.
    """
    before = [(k, s) for k, s in states if k[0] <= at_s]
    current = before[-1][1] if before else None
    if current is None or current.status != "Scheduled":
        return states  # not Scheduled now: nothing to start (already Started, gone, or not yet)
    start_at = at_s + delay_s
    later = [(k, s) for k, s in states if k[0] > at_s]
    started = next((i for i, (_, s) in enumerate(later) if s and s.status == "Started"), None)
    if started is not None:
        shift = later[started][0][0] - start_at
        if shift <= 0:
            return states  # it starts by then anyway
        # The start lands on start_at exactly (o - shift can miss it by a rounding error).
        moved = [((k[0] - shift, seq), s) for k, s in later[started + 1 :]]
        tail = [((start_at, seq), later[started][1]), *moved]
    else:
        # It never started in the trace (cancelled): it starts now and ends when it vanished.
        gone = next((k[0] for k, s in later if s is None), start_at)
        begun = EventState(current.event, "Started", None)
        # Seen Started for a second where the trace leaves room, never past its end.
        end = max(gone, min(start_at + 1, trace_end))
        tail = [((start_at, seq), begun), ((end, seq), None)]
    if delay_s > 0:
        # While it waits to start, its NotBefore says when that will be.
        before.append(((at_s, seq), EventState(current.event, "Scheduled", start_at)))
    return before + tail


def build_schedule(
    trace: Trace,
    approvals: Sequence[tuple[float, str, int]] = (),
    *,
    delay_s: float = 0.0,
    first_incarnation: int | None = None,
) -> Schedule:
    """One round's transitions: the trace's documents reshaped by approvals.

    An approval is (offset_s, EventId, batch): approvals of one batch (one POST) act together,
    later batches after earlier ones at the same offset.
    """
    base = trace.snapshots[0].incarnation
    shift = 0 if first_incarnation is None else first_incarnation - base
    original = {eid: _states(trace, t) for eid, t in tracks_of(trace).items()}
    tracks = dict(original)
    first_approval = math.inf
    for at_s, eid, batch in sorted(approvals, key=lambda a: (a[0], a[2])):
        if eid in tracks:
            approved = _approve(tracks[eid], at_s, batch + 1, delay_s, trace.duration_s)
            if approved is not tracks[eid]:
                tracks[eid] = approved
                first_approval = min(first_approval, at_s)

    # Up to the first approval: the trace's own documents and incarnations, exactly.
    transitions: list[Transition] = []
    for snap in trace.snapshots:
        if snap.offset_s > first_approval:
            break
        states = (_state_at(original[e["EventId"]], (snap.offset_s, 0)) for e in snap.events)
        events = tuple(s for s in states if s is not None)
        transitions.append(Transition(snap.offset_s, snap.incarnation + shift, events))
    # From it on: composed from the reshaped tracks, each change the next incarnation. Several
    # transitions may share an offset; the schedule serves the last of them.
    if first_approval < math.inf:
        keys = sorted({k for t in tracks.values() for k, _ in t if k[0] >= first_approval})
        for key in keys:
            states = (_state_at(tracks[e], key) for e in tracks)
            events = tuple(s for s in states if s is not None)
            last = transitions[-1]
            if events != last.events:
                transitions.append(Transition(key[0], last.incarnation + 1, events))
    return Schedule(tuple(transitions), tuple(t.offset_s for t in transitions))


def _state_at(states: States, key: Key) -> EventState | None:
    current: EventState | None = None
    for k, s in states:
        if k > key:
            break
        current = s
    return current
