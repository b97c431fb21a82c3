"""Playback's edges, exactly: control verbs at their bounds, the registry, the ticker's push.

Found by mutation testing (scripts/mutation): each test pins a behaviour that a one-token
change of replay/playback went unnoticed by every other test.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from replay.clock import FakeClock
from replay.core.faults import FaultPlan, FaultWindow
from replay.core.imds import LATEST_VERSION
from replay.core.reference import reference_trace
from replay.errors import ReplayError
from replay.playback.anchor import Anchor, Start, State
from replay.playback.anchored import MAX_ADVANCE_S
from replay.playback.rounds import RoundOptions, Rounds, ScheduleCache, round_event_id
from replay.playback.session import Session, SessionOptions
from replay.playback.ticker import Pushed, push_message
from tests.helpers import simple_trace

RUN_WALL = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)


def test_an_anchor_maps_positions_and_instants_both_ways() -> None:
    anchor = Anchor(mono=500.0, wall=RUN_WALL, pos=120.0, speed=4.0, running=True)
    assert anchor.position(510.0) == 160.0
    assert anchor.mono_of(200.0) == 520.0
    assert anchor.wall_of(200.0) == RUN_WALL + timedelta(seconds=20)
    assert anchor.wall_of_mono(503.0) == RUN_WALL + timedelta(seconds=3)
    assert anchor.wall_of_mono(499.0) == RUN_WALL - timedelta(seconds=1)
    held = Anchor(mono=500.0, wall=RUN_WALL, pos=120.0, speed=4.0, running=False)
    assert held.position(510.0) == 120.0


# -- the control verbs at their bounds ------------------------------------------------------

V = LATEST_VERSION


def now_session(clock: FakeClock, **options: Any) -> Session:
    return Session("s", simple_trace(), clock, SessionOptions(start=Start.now, **options))


def incarnation(session: Session) -> int:
    return session.current(V).incarnation


def test_rebase_restarts_only_an_unserved_running_now_session() -> None:
    clock = FakeClock(wall=RUN_WALL)
    fresh, served, paused = now_session(clock), now_session(clock), now_session(clock)
    waiting = Session("w", simple_trace(), clock, SessionOptions())
    clock.advance(5)
    served.poll(V)
    paused.pause()
    for session in (fresh, served, paused, waiting):
        session.rebase()
    assert (fresh.state, fresh.position()) == (State.running, 0.0)
    assert fresh.wall_of(0) == RUN_WALL + timedelta(seconds=5)
    assert (served.state, served.position()) == (State.running, 5.0)
    assert (paused.state, paused.position()) == (State.paused, 5.0)
    assert (waiting.state, waiting.position()) == (State.waiting, 0.0)


def test_speed_must_be_positive() -> None:
    session = now_session(FakeClock())
    for speed in (0, -1):
        with pytest.raises(ReplayError) as bad:
            session.set_speed(speed)
        assert str(bad.value) == f"speed must be positive, got {speed}"
    with pytest.raises(ReplayError, match="speed must be positive, got 0"):
        now_session(FakeClock(), speed=0)
    session.set_speed(0.001)
    assert session.speed == 0.001


def test_seek_takes_any_offset_of_the_trace_and_keeps_the_round() -> None:
    clock = FakeClock()
    session = now_session(clock, loop=True)
    clock.advance(1500)  # round 2, 100 s in
    session.seek(50)
    assert session.position() == 1450
    session.seek(0)
    assert session.position() == 1400
    session.seek(700)
    assert session.position() == 2100
    for offset in (-0.5, 700.5):
        with pytest.raises(ReplayError) as bad:
            session.seek(offset)
        assert str(bad.value) == f"offset {offset:g} s is outside the trace (0 to 700 s)"
    session.pause()
    session.seek(20)
    assert session.state is State.paused
    waiting = Session("w", simple_trace(), clock, SessionOptions())
    waiting.seek(20)
    assert (waiting.state, waiting.position()) == (State.running, 20.0)


def test_advance_moves_by_its_bounds_and_clamps_only_a_replay_that_ends() -> None:
    clock = FakeClock()
    waiting = Session("w", simple_trace(), clock, SessionOptions())
    assert waiting.advance(0) == 0 and waiting.state is State.paused
    assert waiting.advance(10_000) == 700
    assert waiting.advance() == 700  # no transition left: where it stands
    looping = now_session(clock, loop=True)
    assert looping.advance(MAX_ADVANCE_S) == MAX_ADVANCE_S
    assert looping.state is State.running
    for seconds in (-1, MAX_ADVANCE_S * 1.5):
        with pytest.raises(ReplayError) as bad:
            looping.advance(seconds)
        assert str(bad.value) == "advance takes 0 to 1e+09 trace seconds at a time"
    waiting = Session("w", simple_trace(), clock, SessionOptions())
    assert waiting.step() == 10 and waiting.state is State.paused
    stepping = Session("v", simple_trace(), clock, SessionOptions(start=Start.virtual))
    assert stepping.advance() == 10 and stepping.state is State.virtual


# -- approvals --------------------------------------------------------------------------------


def test_an_approval_is_logged_as_one_json_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    session = now_session(clock)
    clock.advance(60)
    with caplog.at_level(logging.INFO, logger="imds_replay"):
        assert session.approve(["E1"]) == []
    lines = [orjson.loads(r.getMessage()) for r in caplog.records]
    assert {"event": "approval", "session": "s", "event_id": "E1", "offset_s": 60.0} in lines


def test_an_injected_fault_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    session = now_session(clock)
    session.faults = FaultPlan([FaultWindow(30, 60, "delay_ms", 250)])
    clock.advance(45)
    with caplog.at_level(logging.INFO, logger="imds_replay"):
        assert session.draw_fault() == FaultWindow(30, 60, "delay_ms", 250)
    line = {"event": "fault", "session": "s", "fault": "delay 250 ms", "offset_s": 45.0}
    assert [orjson.loads(r.getMessage()) for r in caplog.records] == [line]
    assert session.fault_counts == {"delay 250 ms": 1}


def test_a_change_an_approval_pushes_past_the_end_gives_way_to_the_next_round() -> None:
    """canceled-maintenance vanishes at 510 s; approved at 400 s with a 200 s delay, its start
    (600 s) lies past the round's end: the next change is the next round's first."""
    clock = FakeClock()
    trace = reference_trace("canceled-maintenance")
    options = SessionOptions(start=Start.now, loop=True, approval_delay_s=200)
    session = Session("c", trace, clock, options)
    clock.advance(400)
    assert session.approve([trace.event_ids[0]]) == []
    assert session.next_transition() == 510 + 30
    clock.advance(1020)  # round 2, 400 s in: nothing approved there
    assert session.next_transition() == 1020 + 510


def test_each_transition_is_logged_as_one_json_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    session = now_session(clock, speed=2)
    with caplog.at_level(logging.INFO, logger="imds_replay"):
        clock.advance(5.25)
        session.announce(clock.now() - 0.25)
        session.pause()
    lines = [orjson.loads(r.getMessage()) for r in caplog.records]
    assert lines == [
        {
            "event": "transition",
            "session": "s",
            "offset_s": 10.5,
            "incarnation": 2,
            "lateness_ms": 250.0,
        },
    ]


def test_an_approval_that_adds_a_change_moves_every_later_round_on() -> None:
    clock = FakeClock()
    session = now_session(clock, loop=True, approval_delay_s=30)
    clock.advance(60)
    session.schedule(1)  # built before the approval, from round 0 as it was
    assert session.approve(["E1"]) == []  # NotBefore moves: one more change in round 0
    seen = []
    for _ in range(12):  # up to 830 s: round 1, E1 Scheduled again
        seen.append(incarnation(session))
        clock.advance(70)
    # Round 0 played 1, 2, 3 (the new NotBefore), 4 (Started), 5 (gone); round 1 goes on.
    assert seen == [3, 4, *[5] * 8, 6, 6]


def test_the_next_round_counts_on_from_an_approved_round_never_built_before() -> None:
    trace = simple_trace()
    rounds = Rounds(trace, RoundOptions(approval_delay_s=30), ScheduleCache())
    assert rounds.approve(1, 60, "E1")
    assert rounds.last_incarnation(1) == 8  # 4..7 as played, and the new NotBefore
    assert rounds.schedule(2).transitions[0].incarnation == 8
    assert rounds.last_incarnation(4) == 8 + 3 * 3
    plain = Rounds(trace, RoundOptions(), ScheduleCache())
    assert plain.last_incarnation(3) == 4 + 3 * 3
    assert plain.held() == [0]


def test_a_looping_session_started_late_counts_its_rounds() -> None:
    clock = FakeClock()
    session = now_session(clock, loop=True)
    clock.advance(1050)  # round 1, 350 s in: the first document it builds
    assert incarnation(session) == 5


def test_after_an_approval_a_looping_round_ends_early_and_polls_still_answer() -> None:
    clock = FakeClock()
    session = now_session(clock, loop=True)
    clock.advance(60)
    session.approve(["E1"])  # Started now, gone at 150 s instead of 700 s
    clock.advance(100)
    assert session.poll(V).incarnation == 4
    assert session.poll(V).incarnation == 4
    clock.advance(540)  # round 1
    assert session.poll(V).incarnation == 4
    assert session.next_transition() == 710


# -- the poll path -----------------------------------------------------------------------------


def test_a_poll_at_the_instant_of_a_change_sees_the_change() -> None:
    clock = FakeClock()
    session = now_session(clock)
    assert session.poll(V).incarnation == 1
    clock.advance(10)
    assert session.poll(V).incarnation == 2


def test_served_documents_count_states_not_api_versions() -> None:
    clock = FakeClock()
    session = now_session(clock)
    clock.advance(20)
    first = session.poll(V)
    session.poll("2019-01-01")
    assert list(session.documents) == [first.body]


def test_repeated_polls_of_one_state_are_answered_without_rendering_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    for options in ({}, {"loop": True}):
        session = now_session(clock, **options)
        clock.advance(720 if options else 20)  # round 1 when looping
        renders: list[str] = []
        original = session._current

        def counting(version: str, original: Any = original, renders: Any = renders) -> Any:
            renders.append(version)
            return original(version)

        monkeypatch.setattr(session, "_current", counting)
        for _ in range(3):
            session.poll(V)
            clock.advance(1)
        assert renders == [V]
        session.current(V)
        assert renders == [V]
        session.poll("2019-01-01")
        assert renders == [V, "2019-01-01"]


# -- the end, the ticker and push messages ---------------------------------------------------


def test_a_finished_replay_holds_the_end_of_its_wall_time() -> None:
    clock = FakeClock(wall=RUN_WALL)
    session = now_session(clock, speed=4)
    clock.advance(200)  # past the end (175 s of wall time)
    session.finish()
    assert session.position() == 700
    message = orjson.loads(session.message_now())
    assert message == {
        "document": orjson.loads(session.current(V).body),
        "at": (RUN_WALL + timedelta(seconds=175)).isoformat(),
    }
    clock.advance(10)
    assert session.position() == 700
    assert session.wall_of(700) == RUN_WALL + timedelta(seconds=175)


def test_push_message_wraps_the_document_bytes() -> None:
    at = datetime(2026, 3, 14, 9, 26, 53, 250_000, tzinfo=UTC)
    assert push_message(b'{"a":1}', at) == (
        b'{"document":{"a":1},"at":"2026-03-14T09:26:53.250000+00:00"}'
    )


async def yield_to_tasks(clock: FakeClock) -> None:
    for _ in range(6):
        await clock.sleep_until(clock.now())


async def test_the_ticker_pushes_at_the_deadline_and_says_how_late_it_woke() -> None:
    clock = FakeClock(wall=RUN_WALL)
    session = now_session(clock, speed=60, loop=True)
    pushed: list[Pushed] = []
    session.subscribers.add(pushed.append)
    session.start_ticker()
    await yield_to_tasks(clock)
    # A microsecond past the first transition (exactly at it, the float position can still
    # be a hair before it, and the ticker waits for it).
    clock.advance(10 / 60 + 1e-6)
    await yield_to_tasks(clock)
    assert [orjson.loads(p.body)["DocumentIncarnation"] for p in pushed] == [2]
    assert pushed[0].at == RUN_WALL + timedelta(seconds=10 / 60)
    assert 0 <= pushed[0].lateness_s < 2e-6
    clock.advance(600 / 60 + 0.25)  # a wake-up 250 ms late
    await yield_to_tasks(clock)
    assert [orjson.loads(p.body)["DocumentIncarnation"] for p in pushed] == [2, 3]
    assert pushed[1].at == RUN_WALL + timedelta(seconds=610 / 60)
    assert abs(pushed[1].lateness_s - 0.25) < 2e-6
    assert pushed[1].message == push_message(pushed[1].body, pushed[1].at)
    clock.advance(100 / 60)  # into round 1 (waking late: what is current then is pushed)
    await yield_to_tasks(clock)
    assert [orjson.loads(p.body)["DocumentIncarnation"] for p in pushed] == [2, 3, 5]
    assert orjson.loads(pushed[-1].body)["Events"][0]["EventId"] == round_event_id("t1", 1, "E1")
    session.stop()
    assert not session.ticker.running
    session.start_ticker()
    assert session.ticker.running
    session.stop()


def test_a_new_subscriber_first_gets_the_current_document() -> None:
    clock = FakeClock(wall=RUN_WALL)
    session = now_session(clock, speed=2)
    clock.advance(10)
    assert session.message_now() == push_message(
        session.current(V).body, RUN_WALL + timedelta(seconds=10)
    )
