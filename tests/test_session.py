"""Properties of a replay session at any speed: nothing early, NotBefore never after Started."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.clock import FakeClock
from replay.core.timeline import Trace, parse_rfc1123
from replay.playback.anchor import Start
from replay.playback.session import Session, SessionOptions
from replay.playback.status import session_status
from tests.helpers import simple_trace
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


@settings(max_examples=100, deadline=None)
@given(trace=traces(), approve=st.lists(st.booleans(), min_size=12, max_size=12))
def test_stepping_through_every_transition_incarnation_grows_exactly_when_events_change(
    trace: Trace, approve: list[bool]
) -> None:
    session = Session("v", trace, FakeClock(), SessionOptions(start=Start.virtual))
    last = orjson.loads(session.current("2020-07-01").body)
    for wants in approve:
        if wants and last["Events"]:
            session.approve([e["EventId"] for e in last["Events"]])
        elif session.step() is None:
            break
        doc = orjson.loads(session.current("2020-07-01").body)
        if doc["Events"] == last["Events"]:
            assert doc["DocumentIncarnation"] == last["DocumentIncarnation"]
        else:
            assert doc["DocumentIncarnation"] > last["DocumentIncarnation"]
        last = doc


def test_recorded_approvals_play_only_when_asked() -> None:
    from replay.core.timeline import Approval
    from tests.helpers import event, trace_of

    trace = trace_of(
        [(0, []), (10, [event(not_before_s=610)]), (610, [event(status="Started")]), (700, [])],
        approvals=(Approval(100, ("E1",)),),
    )
    for recorded, started_at in ((True, 100), (False, 610)):
        clock = FakeClock()
        options = SessionOptions(start=Start.now, recorded_approvals=recorded)
        session = Session("r", trace, clock, options)
        clock.advance(started_at - 0.001)
        assert (
            orjson.loads(session.current("2020-07-01").body)["Events"][0]["EventStatus"]
            == "Scheduled"
        )
        clock.advance(0.002)
        assert (
            orjson.loads(session.current("2020-07-01").body)["Events"][0]["EventStatus"]
            == "Started"
        )
        # the rest of the timeline follows, shifted by the same amount
        clock.advance(90)
        assert orjson.loads(session.current("2020-07-01").body)["Events"] == []


def test_approving_a_cancelled_event_just_before_the_end_still_finishes() -> None:
    from replay.core.reference import reference_trace

    clock = FakeClock()
    session = Session(
        "c", reference_trace("canceled-maintenance"), clock, SessionOptions(start=Start.now)
    )
    clock.advance(509.5)
    doc = orjson.loads(session.current("2020-07-01").body)
    assert session.approve([doc["Events"][0]["EventId"]]) == []
    assert session.next_transition() is None or session.next_transition() <= 510  # type: ignore[operator]
    clock.advance(1)
    assert orjson.loads(session.current("2020-07-01").body)["Events"] == []


def looping(trace: Trace, clock: FakeClock, name: str = "p") -> Session:
    """A session playing trace at 60x from now, round after round."""
    return Session(name, trace, clock, SessionOptions(speed=60, start=Start.now, loop=True))


def test_a_looping_session_remembers_only_the_newest_documents(monkeypatch: Any) -> None:
    import replay.playback.session

    monkeypatch.setattr(replay.playback.session, "DOCUMENTS_KEPT", 5)
    clock = FakeClock()
    trace = simple_trace()
    session = looping(trace, clock)
    served = []
    for _ in range(40):  # several loop rounds, one poll per document
        served.append(session.poll("2020-07-01").body)
        nxt = session.next_transition()
        assert nxt is not None
        clock.advance((nxt - session.position()) / 60 + 1e-6)
    assert list(session.documents) == served[-5:]
    assert len(set(served)) == len(served)  # each poll saw a new state


@settings(max_examples=60, deadline=None)
@given(
    trace=traces(),
    moves=st.lists(
        st.tuples(st.floats(0, 2.5, allow_nan=False), st.booleans()), min_size=1, max_size=30
    ),
)
def test_letting_go_of_old_rounds_changes_no_document(
    trace: Trace, moves: list[tuple[float, bool]]
) -> None:
    """A looping session that forgets finished rounds serves what one remembering all does."""
    clock = FakeClock()
    forgetting, remembering = looping(trace, clock, "a"), looping(trace, clock, "b")
    remembering.rounds._settle = lambda rnd: None  # type: ignore[method-assign]
    round_s = max(trace.duration_s, 1) / 60
    for rounds, approve in moves:
        clock.advance(rounds * round_s)
        doc = forgetting.current("2020-07-01").body
        assert doc == remembering.current("2020-07-01").body
        ids = [e["EventId"] for e in orjson.loads(doc)["Events"] if e["EventStatus"] == "Scheduled"]
        if approve and ids:
            assert forgetting.approve(ids) == remembering.approve(ids) == []
            assert forgetting.current("2020-07-01") == remembering.current("2020-07-01")
    settled = forgetting.rounds._settled
    if settled is not None:  # nothing of a settled round is kept
        held = [*forgetting.rounds.held(), *forgetting.rounds.approvals_held()]
        assert all(r > settled[0] for r in held)


def test_a_looping_session_remembers_only_its_newest_event_ids(monkeypatch: Any) -> None:
    import replay.playback.rounds

    monkeypatch.setattr(replay.playback.rounds, "SERVED_IDS_KEPT", 2)
    clock = FakeClock()
    trace = simple_trace()
    session = looping(trace, clock)
    ids_by_round = []
    for _ in range(3):
        session.step()
        doc = orjson.loads(session.current("2020-07-01").body)
        ids_by_round.append(doc["Events"][0]["EventId"])
        clock.advance(trace.duration_s / 60)  # the same point of the next round
    assert len(set(ids_by_round)) == 3
    assert session_status(session)["round"] == 3
    # kept: round 3's (served by approve's look at the current document) and round 2's
    assert session.approve([ids_by_round[2]]) == []  # remembered, its round over: no change
    assert session.approve([ids_by_round[1]]) == [ids_by_round[1]]  # forgotten: unknown


async def test_a_ticker_that_wakes_after_the_end_still_pushes_the_last_document() -> None:
    clock = FakeClock()
    trace = simple_trace()
    session = Session("p", trace, clock, SessionOptions(speed=60, start=Start.now))
    pushed: list[int] = []
    session.subscribers.add(lambda p: pushed.append(orjson.loads(p.body)["DocumentIncarnation"]))
    session.start_ticker()
    clock.advance(trace.duration_s / 60 + 1)  # the loop stalled before the ticker first ran
    await clock.run_for(0.01)
    assert pushed == [trace.snapshots[-1].incarnation]
    assert session_status(session)["state"] == "finished"
