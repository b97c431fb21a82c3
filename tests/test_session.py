"""Properties of a replay session at any speed: nothing early, NotBefore never after Started."""

from __future__ import annotations

from datetime import datetime

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.clock import FakeClock
from replay.session import Session, SessionOptions, Start
from replay.timeline import Trace, parse_rfc1123
from tests.strategies import traces


@settings(max_examples=150, deadline=None)
@given(
    trace=traces(),
    speed=st.sampled_from([0.5, 1, 7.3, 60, 3600]),
    polls=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=40),
    approve_at=st.one_of(st.none(), st.integers(0, 39)),
)
def test_nothing_is_served_early_and_started_never_precedes_notbefore(
    trace: Trace, speed: float, polls: list[float], approve_at: int | None
) -> None:
    clock = FakeClock()
    session = Session("p", trace, clock, SessionOptions(speed=speed, start=Start.now))
    wall_duration = trace.duration_s / speed
    elapsed = 0.0
    shown_not_before: dict[str, datetime] = {}
    approved: set[str] = set()
    for i, fraction in enumerate(sorted(polls)):
        target = fraction * wall_duration * 1.1
        if target > elapsed:
            clock.advance(target - elapsed)
            elapsed = target
        doc = orjson.loads(session.current("2020-07-01").body)
        if not approved:
            # Before any approval the served document is the trace's own at this position.
            position = elapsed * speed
            index = trace.index_at(position)
            assert trace.snapshots[index].offset_s <= position + 1e-9
            assert doc["DocumentIncarnation"] == trace.snapshots[index].incarnation
        for event in doc["Events"]:
            eid = event["EventId"]
            if event["EventStatus"] == "Scheduled":
                shown_not_before[eid] = parse_rfc1123(event["NotBefore"])
            elif eid in shown_not_before and eid not in approved:
                assert clock.wall() >= shown_not_before[eid]
        if approve_at == i and doc["Events"]:
            ids = [e["EventId"] for e in doc["Events"] if e["EventStatus"] == "Scheduled"]
            assert session.approve(ids) == []
            approved.update(ids)
            for eid in ids:
                assert session.schedule(0).state_of(eid, session.position()).status == "Started"  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None)
@given(
    trace=traces(),
    speed=st.sampled_from([1, 60]),
    approvals=st.lists(st.integers(0, 30), max_size=5),
)
def test_incarnation_never_goes_back_and_names_one_content(
    trace: Trace, speed: float, approvals: list[int]
) -> None:
    clock = FakeClock()
    session = Session("p", trace, clock, SessionOptions(speed=speed, start=Start.now))
    step = trace.duration_s / speed / 30
    last: dict[str, object] | None = None
    for i in range(32):
        doc = orjson.loads(session.current("2020-07-01").body)
        if last is not None:
            # A poller may miss changes between polls, so: never back, and same number, same events.
            assert doc["DocumentIncarnation"] >= last["DocumentIncarnation"]  # type: ignore[operator]
            if doc["DocumentIncarnation"] == last["DocumentIncarnation"]:
                assert doc["Events"] == last["Events"]
        last = doc
        if i in approvals and doc["Events"]:
            session.approve([e["EventId"] for e in doc["Events"]])
            after = orjson.loads(session.current("2020-07-01").body)
            if after["Events"] != doc["Events"]:
                assert after["DocumentIncarnation"] > doc["DocumentIncarnation"]
            last = after
        clock.advance(step)
