"""Reference timelines built from the published scenario table (replay/core/scenarios.json).

These are not captures: each is the timeline a VM would see if every phase lasted exactly the
table's median (or documented minimum) and the VM polled once when each state began.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

import orjson

from replay.core.timeline import Snapshot, Trace, format_rfc1123, validate

REFERENCE_STARTED_AT = datetime(2025, 7, 1, tzinfo=UTC)
"""Wall time of offset 0 for every reference trace (the month the mock's medians describe)."""
LEAD_IN_S = 30.0
"""Seconds of empty document before the event appears, so a poller sees the quiet state first."""
REFERENCE_RESOURCES = ("vm-0",)
ID_NAMESPACE = uuid.UUID("6f1d5c0e-7a51-4d0b-9a55-1d2f3b8c4e77")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One row of the reference table; phases in trace seconds (None: the phase never happens)."""

    scenario: str
    event_type: str
    event_source: str
    duration_in_seconds: int
    description: str
    notice_s: float | None
    scheduled_s: float | None
    started_s: float | None
    removed_while_scheduled_after_s: float | None
    first_seen_status: str
    origin: str

    @property
    def total_s(self) -> float:
        """First seen to gone, in trace seconds."""
        if self.removed_while_scheduled_after_s is not None:
            return self.removed_while_scheduled_after_s
        return (self.scheduled_s or 0.0) + (self.started_s or 0.0)


def _row(raw: Mapping[str, Any]) -> Scenario:
    return Scenario(
        scenario=raw["scenario"],
        event_type=raw["EventType"],
        event_source=raw["EventSource"],
        duration_in_seconds=raw["DurationInSeconds"],
        description=raw["Description"],
        notice_s=raw["notice_s"],
        scheduled_s=raw["scheduled_s"],
        started_s=raw["started_s"],
        removed_while_scheduled_after_s=raw.get("removed_while_scheduled_after_s"),
        first_seen_status=raw.get("first_seen_status", "Scheduled"),
        origin=raw["origin"],
    )


@cache
def reference_table() -> dict[str, Scenario]:
    """The reference scenarios by name, in the table's order."""
    raw = orjson.loads(resources.files("replay.core").joinpath("scenarios.json").read_bytes())
    return {row["scenario"]: _row(row) for row in raw["scenarios"]}


def dev_speed() -> float:
    """The speed factor called 'dev' (every wait divided by it)."""
    raw = orjson.loads(resources.files("replay.core").joinpath("scenarios.json").read_bytes())
    return float(raw["dev_speed"])


def event_id_for(seed: str) -> str:
    """A deterministic, IMDS-shaped EventId (upper-case UUID) for a seed string."""
    return str(uuid.uuid5(ID_NAMESPACE, seed)).upper()


def make_event(
    row: Scenario,
    event_id: str,
    status: str,
    not_before: datetime | None,
    resources: tuple[str, ...],
) -> dict[str, Any]:
    """One event of a scenario, with every documented key in the service's order."""
    return {
        "EventId": event_id,
        "EventStatus": status,
        "EventType": row.event_type,
        "ResourceType": "VirtualMachine",
        "Resources": list(resources),
        "NotBefore": format_rfc1123(not_before) if not_before and status == "Scheduled" else "",
        "Description": row.description,
        "EventSource": row.event_source,
        "DurationInSeconds": row.duration_in_seconds,
    }


def reference_trace(name: str) -> Trace:
    """The reference timeline of one scenario, named after it."""
    row = reference_table()[name]
    eid = event_id_for(f"reference/{name}")
    appear = LEAD_IN_S
    docs: list[tuple[float, list[dict[str, Any]]]] = [(0.0, [])]
    if row.first_seen_status == "Started":
        docs.append((appear, [make_event(row, eid, "Started", None, REFERENCE_RESOURCES)]))
        docs.append((appear + (row.started_s or 0.0), []))
    else:
        not_before = REFERENCE_STARTED_AT + timedelta(seconds=appear + (row.notice_s or 0.0))
        docs.append((appear, [make_event(row, eid, "Scheduled", not_before, REFERENCE_RESOURCES)]))
        if row.removed_while_scheduled_after_s is not None:
            docs.append((appear + row.removed_while_scheduled_after_s, []))
        else:
            start = appear + (row.scheduled_s or 0.0)
            docs.append((start, [make_event(row, eid, "Started", None, REFERENCE_RESOURCES)]))
            docs.append((start + (row.started_s or 0.0), []))
    snapshots = tuple(
        Snapshot(offset, {"DocumentIncarnation": i + 1, "Events": events})
        for i, (offset, events) in enumerate(docs)
    )
    return validate(
        Trace(
            name=name,
            scenario=name,
            snapshots=snapshots,
            started_at=REFERENCE_STARTED_AT,
            origin="reference",
            source={"table": "replay/core/scenarios.json", "row_origin": row.origin},
        )
    )
