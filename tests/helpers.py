"""Builders shared by the tests: small valid traces and events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from replay.core.timeline import Approval, Snapshot, Trace, format_rfc1123

T0 = datetime(2025, 7, 1, tzinfo=UTC)


def event(
    event_id: str = "E1",
    status: str = "Scheduled",
    *,
    not_before_s: float | None = 600.0,
    event_type: str = "Freeze",
    source: str = "Platform",
    duration: int = 5,
    resources: tuple[str, ...] = ("vm-0",),
    description: str = "Host server is undergoing maintenance.",
) -> dict[str, Any]:
    """An event; not_before_s is placed on the axis of a trace starting at T0."""
    nb = ""
    if status == "Scheduled" and not_before_s is not None:
        nb = format_rfc1123(T0 + timedelta(seconds=not_before_s))
    return {
        "EventId": event_id,
        "EventStatus": status,
        "EventType": event_type,
        "ResourceType": "VirtualMachine",
        "Resources": list(resources),
        "NotBefore": nb,
        "Description": description,
        "EventSource": source,
        "DurationInSeconds": duration,
    }


def trace_of(
    steps: list[tuple[float, list[dict[str, Any]]]],
    *,
    name: str = "t1",
    scenario: str = "host-maintenance",
    approvals: tuple[Approval, ...] = (),
    origin: str = "captured",
) -> Trace:
    """A trace from (offset_s, events) steps; incarnations count up from 1."""
    snaps = tuple(
        Snapshot(offset, {"DocumentIncarnation": i + 1, "Events": events})
        for i, (offset, events) in enumerate(steps)
    )
    return Trace(
        name=name,
        scenario=scenario,
        snapshots=snaps,
        approvals=approvals,
        started_at=T0,
        origin=origin,
    )


def simple_trace(name: str = "t1", scenario: str = "host-maintenance") -> Trace:
    """Empty, Scheduled at 10 s (NotBefore 610 s), Started at 610 s, gone at 700 s."""
    return trace_of(
        [
            (0.0, []),
            (10.0, [event(not_before_s=610)]),
            (610.0, [event(status="Started")]),
            (700.0, []),
        ],
        name=name,
        scenario=scenario,
    )
