"""A 24-hour trace replayed at 3600x: does the last transition fire on time, and the end?

Usage: .venv/bin/python benchmarks/long_trace.py [--events N] [--speed X] [--hours H]

Builds a valid trace in memory with replay.core.timeline: `--events` (6) events spread over
86,400 s, each Scheduled with 15 minutes of notice, Started at its NotBefore and gone 5 minutes
later; the last one is gone at exactly 86,400 s, so the trace's final transition is its end.
Replays it through SessionRegistry.create on the real clock (SystemClock), started now, at
3600x: 24 s of wall time. A subscriber records every push the session's ticker makes
(Pushed.lateness_s) and when; right after the final push it records when the session reports
`finished`, and checks status() there. Before the end it checks that the session is still
running (not finished early), and it compares every NotBefore served to the one the anchor
gives (wall time of the anchor + NotBefore offset / speed, in whole seconds).

Prints each transition (trace offset, scheduled wall offset, lateness), then the final
transition's lateness (goal: <= 2 ms), when `finished` was reported relative to the schedule,
the lateness of the first and last transitions (the anchor does not drift), and the checks.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from replay.clock import SystemClock
from replay.core.timeline import Snapshot, Trace, format_rfc1123, parse_rfc1123, validate
from replay.playback.anchor import Start, State
from replay.playback.registry import SessionRegistry
from replay.playback.session import Session, SessionOptions
from replay.playback.ticker import Pushed

ROOT = Path(__file__).resolve().parent.parent
STARTED_AT = datetime(2025, 7, 1, tzinfo=UTC)
TYPES = ("Freeze", "Reboot", "Redeploy")


def event(i: int, status: str, not_before_s: float | None) -> dict[str, Any]:
    not_before = ""
    if status == "Scheduled" and not_before_s is not None:
        not_before = format_rfc1123(STARTED_AT + timedelta(seconds=not_before_s))
    return {
        "EventId": f"00000000-0000-4000-8000-{i:012d}",
        "EventStatus": status,
        "EventType": TYPES[i % len(TYPES)],
        "ResourceType": "VirtualMachine",
        "Resources": ["vm-0"],
        "NotBefore": not_before,
        "Description": "Host server is undergoing maintenance.",
        "EventSource": "Platform",
        "DurationInSeconds": 5 if i % len(TYPES) == 0 else -1,
    }


def day_trace(events: int, duration_s: float) -> Trace:
    """`events` maintenance events over duration_s; the last one is gone at its very end."""
    spacing = duration_s / events
    steps: list[tuple[float, list[dict[str, Any]]]] = [(0.0, [])]
    for i in range(events):
        scheduled_s = (i + 1) * spacing - 1200
        started_s = scheduled_s + 900
        steps.append((scheduled_s, [event(i, "Scheduled", started_s)]))
        steps.append((started_s, [event(i, "Started", None)]))
        steps.append((started_s + 300, []))
    snapshots = tuple(
        Snapshot(offset, {"DocumentIncarnation": n + 1, "Events": docs})
        for n, (offset, docs) in enumerate(steps)
    )
    trace = Trace(
        name="day",
        scenario="host-maintenance",
        snapshots=snapshots,
        started_at=STARTED_AT,
        origin="synthetic",
        source={"generator": "benchmarks/long_trace.py"},
    )
    return validate(trace)


@dataclass
class Record:
    pushes: list[tuple[float, float, bytes]] = field(default_factory=list)
    """(lateness_s, monotonic time of the push, body) per push."""
    finished_at: float | None = None
    status_at_end: dict[str, Any] | None = None


async def run(args: argparse.Namespace) -> None:
    clock = SystemClock()
    trace = day_trace(args.events, args.hours * 3600)
    registry = SessionRegistry(ROOT / "traces", clock)
    registry.add_trace(trace)
    offsets = [s.offset_s for s in trace.snapshots]
    print(
        f"trace {trace.name}: {len(trace.snapshots)} documents, {args.events} events over "
        f"{trace.duration_s:,.0f} s; at {args.speed:g}x that is {trace.duration_s / args.speed:g} s"
    )
    record = Record()
    loop = asyncio.get_running_loop()

    def on_finished(session: Session) -> None:
        record.finished_at = clock.now()
        record.status_at_end = session.status()

    anchored_lo = clock.now()
    session = registry.create("day", trace, SessionOptions(speed=args.speed, start=Start.now))
    anchored_hi = clock.now()
    anchor_wall = session.wall_of(0.0)

    def on_push(pushed: Pushed) -> None:
        record.pushes.append((pushed.lateness_s, clock.now(), pushed.body))
        if len(record.pushes) == len(offsets) - 1:
            loop.call_soon(on_finished, session)  # after the ticker's step: it ends right there

    session.subscribers.add(on_push)
    end_lo = anchored_lo + trace.duration_s / args.speed
    end_hi = anchored_hi + trace.duration_s / args.speed

    # Before the end: still running, not yet at the end of the trace.
    await clock.sleep_until(end_lo - 0.05)
    before = session.status()
    early_finish = before["state"] != "running" or before["position_s"] >= trace.duration_s
    not_before_bad = check_not_before(record, trace, anchor_wall, args.speed)
    await clock.sleep_until(end_hi + 0.5)
    registry.stop_all()

    print(f"{'#':>3} {'offset_s':>9} {'due_s':>9} {'pushed_s':>9} {'lateness_ms':>12}")
    for i, (lateness, at, _) in enumerate(record.pushes):
        due = offsets[i + 1] / args.speed
        pushed = at - anchored_lo
        print(f"{i + 1:3d} {offsets[i + 1]:9.0f} {due:9.4f} {pushed:9.4f} {lateness * 1e3:12.3f}")
    late = [p[0] for p in record.pushes]
    complete = len(record.pushes) == len(offsets) - 1
    final = late[-1] if complete else float("nan")
    print(
        f"transitions pushed: {len(record.pushes)} of {len(offsets) - 1}; lateness first "
        f"{late[0] * 1e3:.3f} ms, last {final * 1e3:.3f} ms, max {max(late) * 1e3:.3f} ms"
    )
    if record.finished_at is not None and record.status_at_end is not None:
        end = record.status_at_end
        print(
            f"finished reported {(record.finished_at - end_hi) * 1e3:.3f} to "
            f"{(record.finished_at - end_lo) * 1e3:.3f} ms after the scheduled end "
            f"(the anchor is known to within {(anchored_hi - anchored_lo) * 1e3:.3f} ms); "
            f"status: state {end['state']}, position {end['position_s']:g} s of "
            f"{end['duration_s']:g}, next transition {end['next_transition']}, "
            f"incarnation {end['incarnation']}"
        )
    else:
        print("the session never reported finished")
    print(
        f"50 ms before the end: state {before['state']}, position {before['position_s']:.1f} s; "
        f"NotBefore values differing from the anchor's: {not_before_bad}"
    )
    finished_ok = (
        record.status_at_end is not None
        and record.status_at_end["state"] == State.finished.value
        and record.status_at_end["position_s"] == trace.duration_s
        and record.status_at_end["next_transition"] is None
    )
    checks = [
        ("final transition within 2 ms", complete and final <= 0.002),
        ("finished at the end, not before", finished_ok and not early_finish),
        ("NotBefore as scheduled", not_before_bad == 0),
    ]
    print("goals: " + "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks))


def check_not_before(record: Record, trace: Trace, anchor_wall: datetime, speed: float) -> int:
    """Count pushed NotBefore values other than anchor wall time + trace NotBefore / speed."""
    scheduled = {
        e["EventId"]: e["NotBefore"]
        for snap in trace.snapshots
        for e in snap.events
        if e["EventStatus"] == "Scheduled"
    }
    bad = 0
    for _, _, body in record.pushes:
        for served in orjson.loads(body)["Events"]:
            if served["EventStatus"] != "Scheduled":
                continue
            offset_s = (parse_rfc1123(scheduled[served["EventId"]]) - STARTED_AT).total_seconds()
            expected = format_rfc1123(anchor_wall + timedelta(seconds=offset_s / speed))
            bad += served["NotBefore"] != expected
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6)
    parser.add_argument("--speed", type=float, default=3600.0)
    parser.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
