"""The pure core: a trace as IMDS documents at offsets (standard library only; no I/O, no clock).

Offsets are seconds of trace time counted from the episode's start. A document is the JSON
object that GET /metadata/scheduledevents returned, kept exactly as it was seen.
"""

from __future__ import annotations

import bisect
import calendar
import contextlib
import email.utils
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property, lru_cache
from typing import Any

from replay.errors import InvalidTraceError

Document = Mapping[str, Any]

EVENT_KEYS = (
    "EventId",
    "EventStatus",
    "EventType",
    "ResourceType",
    "Resources",
    "NotBefore",
    "Description",
    "EventSource",
    "DurationInSeconds",
)
EVENT_TYPES = frozenset({"Freeze", "Reboot", "Redeploy", "Preempt", "Terminate"})
EVENT_STATUSES = frozenset({"Scheduled", "Started"})
EVENT_SOURCES = frozenset({"Platform", "User"})
RESOURCE_TYPES = frozenset({"VirtualMachine"})


class Origin(StrEnum):
    """Where a trace came from."""

    captured = "captured"
    reference = "reference"
    synthetic = "synthetic"


ORIGINS = tuple(o.value for o in Origin)


_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_IMDS_TIME = re.compile(r"[A-Z][a-z]{2}, (\d\d) ([A-Z][a-z]{2}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT")


@lru_cache(maxsize=8192)  # a NotBefore repeats in every document of its event
def parse_rfc1123(text: str) -> datetime:
    """Parse an IMDS NotBefore (`Mon, 11 Apr 2022 22:26:58 GMT`) into an aware UTC datetime."""
    exact = _IMDS_TIME.fullmatch(text)  # IMDS's own form, 15x quicker than the general parser
    if exact is not None and exact[2] in _MONTHS:
        day, _, year, hour, minute, second = exact.groups()
        with contextlib.suppress(ValueError):  # e.g. 31 Feb: the general parser says why
            return datetime(
                int(year),
                _MONTHS[exact[2]],
                int(day),
                int(hour),
                int(minute),
                int(second),
                tzinfo=UTC,
            )
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not an RFC 1123 time: {text!r}") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"RFC 1123 time without a zone: {text!r}")
    return parsed.astimezone(UTC)


def format_rfc1123(moment: datetime) -> str:
    """Render an aware datetime as IMDS does, in GMT, whole seconds."""
    return email.utils.format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def events_of(document: Document) -> list[Mapping[str, Any]]:
    """The Events array of a document."""
    events: list[Mapping[str, Any]] = document.get("Events", [])
    return events


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One document and the offset (trace seconds) at which it was first seen."""

    offset_s: float
    document: Document

    @property
    def incarnation(self) -> int:
        value: int = self.document["DocumentIncarnation"]
        return value

    @property
    def events(self) -> list[Mapping[str, Any]]:
        return events_of(self.document)


@dataclass(frozen=True, slots=True)
class Approval:
    """A POST the capturing VM sent: the offset (trace seconds) and the EventIds it approved."""

    offset_s: float
    event_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """When one event's states were first seen, in trace seconds (None: never)."""

    event_id: str
    first_seen_s: float
    scheduled_s: float | None
    started_s: float | None
    gone_s: float | None
    not_before_s: float | None
    """NotBefore as first shown while Scheduled, placed on the trace's axis."""
    approved_s: float | None
    event: Mapping[str, Any]
    """The event as first seen."""


@dataclass(frozen=True)
class Trace:
    """One maintenance episode: documents at increasing offsets, approvals, and provenance."""

    name: str
    scenario: str
    snapshots: tuple[Snapshot, ...]
    approvals: tuple[Approval, ...] = ()
    started_at: datetime | None = None
    """Wall-clock time of offset 0 (aware UTC), which places NotBefore on the trace's axis."""
    origin: str = "captured"
    source: Mapping[str, Any] = field(default_factory=dict)
    """Where the trace came from (capture metadata, generator parameters)."""

    @cached_property
    def offsets(self) -> tuple[float, ...]:
        return tuple(s.offset_s for s in self.snapshots)

    @property
    def duration_s(self) -> float:
        """Offset of the last document, in trace seconds."""
        return self.snapshots[-1].offset_s if self.snapshots else 0.0

    def index_at(self, offset_s: float) -> int:
        """Index of the document current at offset_s (the first one before offset 0)."""
        return max(bisect.bisect_right(self.offsets, offset_s) - 1, 0)

    def document_at(self, offset_s: float) -> Document:
        """The document a VM polling at offset_s (trace seconds) would see."""
        return self.snapshots[self.index_at(offset_s)].document

    def next_offset_after(self, offset_s: float) -> float | None:
        """Offset of the first document after offset_s, or None when none follows."""
        i = bisect.bisect_right(self.offsets, offset_s)
        return self.offsets[i] if i < len(self.offsets) else None

    @cached_property
    def event_ids(self) -> tuple[str, ...]:
        """Every EventId in order of first appearance."""
        seen: dict[str, None] = {}
        for snap in self.snapshots:
            for event in snap.events:
                seen.setdefault(event["EventId"], None)
        return tuple(seen)

    @property
    def event_count(self) -> int:
        return len(self.event_ids)

    def not_before_offset(self, not_before: str) -> float | None:
        """Place a NotBefore on the trace's axis (trace seconds); None if empty or unplaceable."""
        if not not_before or self.started_at is None:
            return None
        return (parse_rfc1123(not_before) - self.started_at).total_seconds()

    @cached_property
    def lifecycles(self) -> dict[str, Lifecycle]:
        """Every event's first-seen times by state, keyed by EventId, in order of appearance."""
        first: dict[str, Mapping[str, Any]] = {}
        seen: dict[str, float] = {}
        scheduled: dict[str, float] = {}
        started: dict[str, float] = {}
        gone: dict[str, float] = {}
        not_before: dict[str, float | None] = {}
        present: set[str] = set()
        for snap in self.snapshots:
            now_present = set()
            for event in snap.events:
                eid = event["EventId"]
                now_present.add(eid)
                if eid not in seen:
                    seen[eid], first[eid] = snap.offset_s, event
                status = event["EventStatus"]
                if status == "Scheduled" and eid not in scheduled:
                    scheduled[eid] = snap.offset_s
                    not_before[eid] = self.not_before_offset(event["NotBefore"])
                elif status == "Started" and eid not in started:
                    started[eid] = snap.offset_s
            for eid in present - now_present:
                gone.setdefault(eid, snap.offset_s)
            present = now_present
        approved: dict[str, float] = {}
        for approval in self.approvals:
            for eid in approval.event_ids:
                approved.setdefault(eid, approval.offset_s)
        return {
            eid: Lifecycle(
                event_id=eid,
                first_seen_s=seen[eid],
                scheduled_s=scheduled.get(eid),
                started_s=started.get(eid),
                gone_s=gone.get(eid),
                not_before_s=not_before.get(eid),
                approved_s=approved.get(eid),
                event=first[eid],
            )
            for eid in seen
        }


def event_problems(event: Any, where: str) -> Iterator[str]:
    """Say what is wrong with one event, if anything."""
    if not isinstance(event, Mapping):
        yield f"{where}: an event must be a JSON object, got {type(event).__name__}"
        return
    missing = [k for k in EVENT_KEYS if k not in event]
    if missing:
        yield f"{where}: missing {', '.join(missing)}"
        return
    extra = sorted(set(event) - set(EVENT_KEYS))
    if extra:
        yield f"{where}: unknown keys {', '.join(extra)}"
    allowed = {
        "EventStatus": EVENT_STATUSES,
        "EventType": EVENT_TYPES,
        "EventSource": EVENT_SOURCES,
        "ResourceType": RESOURCE_TYPES,
    }
    for key, values in allowed.items():
        if event[key] not in values:
            yield f"{where}: {key} {event[key]!r} is not one of {', '.join(sorted(values))}"
    if not isinstance(event["EventId"], str) or not event["EventId"]:
        yield f"{where}: EventId must be a non-empty string"
    resources = event["Resources"]
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        yield f"{where}: Resources must be a list of strings"
    if not isinstance(event["Description"], str):
        yield f"{where}: Description must be a string"
    duration = event["DurationInSeconds"]
    if isinstance(duration, bool) or not isinstance(duration, int) or duration < -1:
        yield f"{where}: DurationInSeconds must be an integer >= -1, got {duration!r}"
    not_before = event["NotBefore"]
    if not isinstance(not_before, str):
        yield f"{where}: NotBefore must be a string"
    elif not_before:
        try:
            parse_rfc1123(not_before)
        except ValueError as exc:
            yield f"{where}: NotBefore {exc}"
    elif event["EventStatus"] == "Scheduled":
        yield f"{where}: a Scheduled event needs a NotBefore"


def document_problems(document: Any, where: str) -> Iterator[str]:
    """Say what is wrong with one document, if anything."""
    if not isinstance(document, Mapping):
        yield f"{where}: a document must be a JSON object"
        return
    incarnation = document.get("DocumentIncarnation")
    if isinstance(incarnation, bool) or not isinstance(incarnation, int):
        yield f"{where}: DocumentIncarnation must be an integer, got {incarnation!r}"
    events = document.get("Events")
    if not isinstance(events, list):
        yield f"{where}: Events must be a list"
        return
    ids = []
    for i, event in enumerate(events):
        yield from event_problems(event, f"{where} event {i}")
        if isinstance(event, Mapping):
            ids.append(event.get("EventId"))
    if len(set(map(str, ids))) != len(ids):
        yield f"{where}: an EventId appears twice"


def trace_problems(trace: Trace) -> Iterator[str]:
    """Every rule of a timeline the trace breaks, in order of appearance."""
    snaps = trace.snapshots
    if not snaps:
        yield "the trace has no documents"
        return
    if trace.origin not in ORIGINS:
        yield f"origin {trace.origin!r} is not one of {', '.join(ORIGINS)}"
    previous: Snapshot | None = None
    for i, snap in enumerate(snaps):
        where = f"document {i} (offset {snap.offset_s:g} s)"
        problems = list(document_problems(snap.document, where))
        if problems:
            yield from problems
            return
        if not math.isfinite(snap.offset_s):
            yield f"{where}: offset is not a finite number"
        if previous is None:
            if snap.offset_s != 0:
                yield f"{where}: the first document must be at offset 0"
            if snap.events:
                yield f"{where}: a trace must start with an empty Events array"
        else:
            if snap.offset_s <= previous.offset_s:
                yield f"{where}: offsets must increase (previous {previous.offset_s:g} s)"
            changed = snap.events != previous.events
            if snap.incarnation < previous.incarnation:
                yield f"{where}: DocumentIncarnation went back from {previous.incarnation}"
            elif changed and snap.incarnation == previous.incarnation:
                yield f"{where}: Events changed but DocumentIncarnation stayed {snap.incarnation}"
            elif not changed and snap.incarnation != previous.incarnation:
                yield f"{where}: DocumentIncarnation changed but Events did not"
            elif not changed:
                yield f"{where}: repeats the previous document (a trace keeps changes only)"
        previous = snap
    if snaps[-1].events:
        yield f"document {len(snaps) - 1}: a trace must end with an empty Events array"
    for j, approval in enumerate(trace.approvals):
        if not 0 <= approval.offset_s <= trace.duration_s:
            yield f"approval {j}: offset {approval.offset_s:g} s is outside the trace"


def validate(trace: Trace) -> Trace:
    """Return the trace unchanged, or raise InvalidTraceError naming its first problem."""
    for problem in trace_problems(trace):
        raise InvalidTraceError(problem)
    return trace
