"""The promises a replay makes to a handler, checked exactly (each was once broken unnoticed).

NotBefore is the start mapped through the anchor, to the second: floor(anchor_wall +
(not_before_offset - anchor_trace) / speed). Approving an EventId of a finished loop round
changes nothing. During an approval delay NotBefore shows the coming start.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import orjson
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from replay.clock import FakeClock
from replay.core.imds import LATEST_VERSION
from replay.core.reference import reference_table, reference_trace
from replay.core.timeline import Trace, format_rfc1123, parse_rfc1123
from replay.playback.anchor import Start
from replay.playback.session import Session, SessionOptions
from replay.playback.status import session_status
from tests.helpers import event, simple_trace, trace_of

RUN_WALL = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
"""The replay's own wall clock at its start: a whole second, unrelated to the trace's T0."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SPEEDS = [0.5, 1, 7.3, 60, 3600]


def floor_wall(anchor_wall: datetime, seconds: Fraction) -> datetime:
    """floor(anchor_wall + seconds) to the whole second, computed exactly."""
    micros = (anchor_wall - EPOCH) // timedelta(microseconds=1)
    total = Fraction(micros, 10**6) + seconds
    return EPOCH + timedelta(seconds=math.floor(total))


def near_a_second(anchor_wall: datetime, seconds: Fraction) -> bool:
    """Within a millisecond of a whole second, where float rounding may fall either way."""
    micros = (anchor_wall - EPOCH) // timedelta(microseconds=1)
    frac = (Fraction(micros, 10**6) + seconds) % 1
    return min(frac, 1 - frac) < Fraction(1, 1000)


def events(session: Session) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = orjson.loads(session.current(LATEST_VERSION).body)["Events"]
    return found


def not_before(session: Session) -> datetime:
    (shown,) = events(session)
    assert shown["EventStatus"] == "Scheduled"
    return parse_rfc1123(shown["NotBefore"])


def scheduled_trace(scheduled_s: float, not_before_s: int, started_s: float) -> Trace:
    """Empty, then E1 Scheduled (NotBefore at not_before_s), Started, gone a minute later."""
    return trace_of(
        [
            (0.0, []),
            (scheduled_s, [event(not_before_s=not_before_s)]),
            (started_s, [event(status="Started")]),
            (started_s + 60, []),
        ]
    )


# -- NotBefore through the anchor ----------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    speed=st.one_of(st.sampled_from(SPEEDS), st.floats(0.01, 10_000)),
    scheduled_s=st.integers(1, 3600),
    notice_s=st.integers(1, 100_000),
    late_s=st.floats(0, 600),
    where=st.floats(0.01, 0.99),
    move=st.sampled_from(["start", "loop", "seek", "speed", "pause"]),
    rounds=st.integers(0, 3),
    before_s=st.floats(0, 5000),
    wall_us=st.integers(0, 999_999),
)
@example(  # 3000 s of notice at 60x: 50 s of wall time (3 % early would show 48 s)
    speed=60,
    scheduled_s=30,
    notice_s=3000,
    late_s=0,
    where=0.5,
    move="start",
    rounds=0,
    before_s=0,
    wall_us=0,
).via("NotBefore shown 3 % early")
def test_notbefore_is_the_anchor_mapping_of_its_offset_to_the_second(
    speed: float,
    scheduled_s: int,
    notice_s: int,
    late_s: float,
    where: float,
    move: str,
    rounds: int,
    before_s: float,
    wall_us: int,
) -> None:
    nb_s = scheduled_s + notice_s
    started_s = nb_s + late_s
    trace = scheduled_trace(scheduled_s, nb_s, started_s)
    clock = FakeClock(wall=RUN_WALL + timedelta(microseconds=wall_us))
    # Where the document is read: inside the Scheduled span (of a later round when looping).
    rnd = rounds if move == "loop" else 0
    target = rnd * trace.duration_s + scheduled_s + where * (started_s - scheduled_s)
    first_speed = speed if move != "speed" else speed * 3 + 1
    options = SessionOptions(speed=first_speed, start=Start.now, loop=move == "loop")
    session = Session("p", trace, clock, options)
    anchor_wall, anchor_trace = clock.wall(), Fraction(0)
    if move in ("start", "loop"):
        clock.advance(target / speed)
    elif move == "seek":
        clock.advance(before_s)  # anywhere, even past the end, then seek
        session.seek(target)
        anchor_wall, anchor_trace = clock.wall(), Fraction(target)
    elif move == "speed":
        clock.advance(target / first_speed)
        session.set_speed(speed)
        anchor_wall, anchor_trace = clock.wall(), Fraction(target)
    else:
        clock.advance(target / speed)
        session.pause()
        clock.advance(before_s)  # a paused replay shows the same NotBefore however long
        anchor_wall, anchor_trace = clock.wall() - timedelta(seconds=before_s), Fraction(target)
    nb_total = rnd * Fraction(trace.duration_s) + nb_s
    seconds = (nb_total - anchor_trace) / Fraction(speed)
    assume(not near_a_second(anchor_wall, seconds))
    assert not_before(session) == floor_wall(anchor_wall, seconds)


@pytest.mark.parametrize(
    ("speed", "shown"),
    [
        (1, "Sat, 14 Mar 2026 09:42:23 GMT"),  # 930 s after 09:26:53
        (7.3, "Sat, 14 Mar 2026 09:29:00 GMT"),  # 127.4 s
        (60, "Sat, 14 Mar 2026 09:27:08 GMT"),  # 15.5 s
        (3600, "Sat, 14 Mar 2026 09:26:53 GMT"),  # 0.26 s
    ],
)
def test_live_migration_notbefore_scales_with_speed(speed: float, shown: str) -> None:
    clock = FakeClock(wall=RUN_WALL)
    session = Session("p", reference_trace("live-migration"), clock, SessionOptions(speed=speed))
    session.poll(LATEST_VERSION)  # the first request starts the replay: anchor (RUN_WALL, 0)
    clock.advance(31 / speed)  # Scheduled at 30 s of trace, NotBefore at 930 s
    (shown_event,) = events(session)
    assert shown_event["NotBefore"] == shown


SCHEDULED_SCENARIOS = [
    name for name, row in reference_table().items() if row.scheduled_s is not None
]


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(SCHEDULED_SCENARIOS),
    speed=st.one_of(st.sampled_from(SPEEDS), st.floats(0.05, 5000)),
    wall_us=st.integers(0, 999_999),
)
def test_notbefore_is_never_earlier_than_the_real_start(
    name: str, speed: float, wall_us: int
) -> None:
    """In the reference traces NotBefore is the start: shown, it is the start's second."""
    trace = reference_trace(name)
    lc = trace.lifecycles[trace.event_ids[0]]
    assert lc.scheduled_s is not None and lc.started_s == lc.not_before_s
    clock = FakeClock(wall=RUN_WALL + timedelta(microseconds=wall_us))
    session = Session("p", trace, clock, SessionOptions(speed=speed, start=Start.now))
    start_mono = clock.now() + lc.started_s / speed
    clock.advance(lc.scheduled_s / speed + 1e-6)
    shown = not_before(session)
    margin = 1e-3
    clock.advance(start_mono - margin - clock.now())
    assert events(session)[0]["EventStatus"] == "Scheduled"
    before_start = clock.wall()
    clock.advance(2 * margin)
    assert events(session)[0]["EventStatus"] == "Started"
    after_start = clock.wall()
    assert shown <= after_start  # never after the start
    assert shown > before_start - timedelta(seconds=1)  # nor earlier than its second


# -- approvals -----------------------------------------------------------------------------


def test_approving_an_event_id_of_an_earlier_round_changes_nothing_now() -> None:
    trace = simple_trace()  # E1 Scheduled at 10 s, Started at 610 s, gone at 700 s
    clock = FakeClock()
    options = SessionOptions(speed=60, start=Start.now, loop=True)
    session, twin = Session("a", trace, clock, options), Session("b", trace, clock, options)
    clock.advance(20 / 60)  # round 0, E1 Scheduled
    (old,) = events(session)
    clock.advance(trace.duration_s / 60)  # the same point of round 1
    before = session.poll(LATEST_VERSION)
    (current,) = events(session)
    assert current["EventId"] != old["EventId"] and current["EventStatus"] == "Scheduled"

    assert session.approve([old["EventId"]]) == []
    after = session.current(LATEST_VERSION)
    assert (after.body, after.incarnation) == (before.body, before.incarnation)
    assert session_status(session)["approvals"] == []
    # ...nor later: the round plays on as if nothing had been approved.
    for _ in range(12):
        assert session.current(LATEST_VERSION) == twin.current(LATEST_VERSION)
        clock.advance(1.7)


def test_approving_old_and_current_ids_together_starts_only_the_current_one() -> None:
    trace = simple_trace()
    clock = FakeClock()
    session = Session("a", trace, clock, SessionOptions(speed=60, start=Start.now, loop=True))
    clock.advance(20 / 60)
    (old,) = events(session)
    clock.advance(trace.duration_s / 60)
    (current,) = events(session)
    incarnation = session.current(LATEST_VERSION).incarnation
    assert session.approve([old["EventId"], current["EventId"]]) == []
    (started,) = events(session)
    assert (started["EventId"], started["EventStatus"]) == (current["EventId"], "Started")
    assert session.current(LATEST_VERSION).incarnation == incarnation + 1
    approvals = session_status(session)["approvals"]
    assert [(a["event_id"], a["round"]) for a in approvals] == [(current["EventId"], 1)]


@pytest.mark.parametrize(
    ("speed", "delay_s", "approve_at_s"),
    [(60, 60, 130), (1, 30, 100.5), (7.3, 300, 42), (0.5, 5, 11), (0.5, 0.5, 11)],
)
def test_during_an_approval_delay_notbefore_shows_the_start(
    speed: float, delay_s: float, approve_at_s: float
) -> None:
    trace = simple_trace()  # E1 Scheduled at 10 s, Started at 610 s
    clock = FakeClock(wall=RUN_WALL)
    options = SessionOptions(speed=speed, start=Start.now, approval_delay_s=delay_s)
    session = Session("d", trace, clock, options)
    clock.advance(approve_at_s / speed)
    (shown,) = events(session)
    assert session.approve([shown["EventId"]]) == []
    start = floor_wall(RUN_WALL, (Fraction(approve_at_s) + Fraction(delay_s)) / Fraction(speed))
    approval = floor_wall(RUN_WALL, Fraction(approve_at_s) / Fraction(speed))
    assert start != approval  # so that the two cannot be mistaken
    assert not_before(session) == start
    clock.advance(delay_s / speed - 1e-3)
    assert not_before(session) == start
    clock.advance(2e-3)
    assert events(session)[0]["EventStatus"] == "Started"


def test_approval_delay_at_60x_shows_the_start_to_the_second() -> None:
    """Approved 130 s in (wall 2.17 s), starting 60 s later (wall 3.17 s): NotBefore :56."""
    clock = FakeClock(wall=RUN_WALL)
    options = SessionOptions(speed=60, start=Start.now, approval_delay_s=60)
    session = Session("d", simple_trace(), clock, options)
    clock.advance(130 / 60)
    assert session.approve([events(session)[0]["EventId"]]) == []
    assert events(session)[0]["NotBefore"] == "Sat, 14 Mar 2026 09:26:56 GMT"
    assert format_rfc1123(clock.wall()) == "Sat, 14 Mar 2026 09:26:55 GMT"
