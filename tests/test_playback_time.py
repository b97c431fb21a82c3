"""Playback's time at its edges: virtual time, positions at an instant, tiny and idle loops,
recorded approvals with a delay. Found by mutation testing (scripts/mutation)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from replay.clock import FakeClock
from replay.core.imds import LATEST_VERSION
from replay.core.timeline import Approval
from replay.playback.anchor import Start
from replay.playback.session import IDLE_TRACE, Session, SessionOptions
from tests.helpers import event, simple_trace, trace_of

V = LATEST_VERSION


def now_session(clock: FakeClock, **options: Any) -> Session:
    return Session("s", simple_trace(), clock, SessionOptions(start=Start.now, **options))


def test_virtual_time_shows_notbefore_on_the_traces_own_clock() -> None:
    for speed, shown in (
        (1, "Tue, 01 Jul 2025 00:10:10 GMT"),
        (2, "Tue, 01 Jul 2025 00:05:05 GMT"),
    ):
        session = Session(
            "v", simple_trace(), FakeClock(), SessionOptions(speed=speed, start=Start.virtual)
        )
        assert session.position() == 0.0
        assert session.step() == 10
        assert orjson.loads(session.current(V).body)["Events"][0]["NotBefore"] == shown


def test_position_at_an_instant_and_clamped_at_the_end() -> None:
    clock = FakeClock()
    session = now_session(clock, speed=2)
    assert session.position(clock.now() + 5) == 10.0
    clock.advance(400)
    assert session.position() == 700
    assert session.current(V).incarnation == 4


def test_current_at_the_instant_of_a_change_sees_the_change() -> None:
    clock = FakeClock()
    session = now_session(clock)
    session.poll(V)
    clock.advance(10)
    assert session.current(V).incarnation == 2


def test_a_trace_of_one_document_or_under_a_second_loops_or_holds() -> None:
    clock = FakeClock()
    idle = Session("i", IDLE_TRACE, clock, SessionOptions(start=Start.now, loop=True))
    short = trace_of([(0, []), (0.25, [event()]), (0.5, [])])
    tiny = Session("t", short, clock, SessionOptions(start=Start.now, loop=True))
    clock.advance(1.3)  # round 2, 0.3 s in
    assert idle.current(V).incarnation == 1 and idle.next_transition() is None
    assert (tiny.split(tiny.position())[0], tiny.current(V).incarnation) == (2, 6)


def test_recorded_approvals_keep_the_delay_and_the_clients_own_approvals() -> None:
    e2 = event("E2", not_before_s=900)
    trace = replace(
        trace_of(
            [
                (0, []),
                (10, [event(not_before_s=610), e2]),
                (610, [event(status="Started"), e2]),
                (700, [e2]),
                (900, [event("E2", status="Started")]),
                (1000, []),
            ]
        ),
        approvals=(Approval(100, ("E1",)),),
    )
    clock = FakeClock()
    options = SessionOptions(start=Start.now, recorded_approvals=True, approval_delay_s=30)
    session = Session("r", trace, clock, options)
    clock.advance(120)  # the recorded approval at 100 s starts E1 at 130 s
    statuses = {
        e["EventId"]: e["EventStatus"] for e in orjson.loads(session.current(V).body)["Events"]
    }
    assert statuses == {"E1": "Scheduled", "E2": "Scheduled"}
    assert session.approve(["E2"]) == []  # E2 starts at 150 s
    clock.advance(40)
    statuses = {
        e["EventId"]: e["EventStatus"] for e in orjson.loads(session.current(V).body)["Events"]
    }
    assert statuses == {"E1": "Started", "E2": "Started"}
