"""A session's status JSON, whole: what the control API, the page and ReplayClient read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from replay.clock import FakeClock
from replay.core.faults import FaultPlan, FaultWindow
from replay.core.imds import LATEST_VERSION
from replay.playback.anchor import Start
from replay.playback.rounds import round_event_id
from replay.playback.session import Session, SessionOptions
from replay.playback.status import session_status
from tests.helpers import event, simple_trace

RUN_WALL = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)


def nb(seconds: float) -> str:
    """NotBefore of a replay started at RUN_WALL, `seconds` of wall time in."""
    moment = RUN_WALL + timedelta(seconds=seconds)
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


def shown(event_id: str, status: str, not_before: str, resources: list[str]) -> dict[str, Any]:
    """An event as the newest api-version shows it."""
    return {**event(event_id, status), "NotBefore": not_before, "Resources": resources}


def test_status_of_a_session_waiting_for_its_first_request() -> None:
    session = Session("s", simple_trace(), FakeClock(wall=RUN_WALL), SessionOptions(speed=60))
    assert session_status(session) == {
        "name": "s",
        "trace": "t1",
        "scenario": "host-maintenance",
        "origin": "captured",
        "state": "waiting",
        "speed": 60,
        "loop": False,
        "round": 0,
        "position_s": 0.0,
        "duration_s": 700.0,
        "wall_duration_s": 700 / 60,
        "incarnation": 1,
        "next_transition": {"offset_s": 10.0, "round": 0, "in_s": None, "at": None},
        "resources": None,
        "approvals": [],
        "document": {"DocumentIncarnation": 1, "Events": []},
        "faults": {"windows": 0, "injected": {}},
        "computed_at": RUN_WALL.isoformat(),  # the server's wall clock when it answered
    }
    assert not session.documents  # reading it served nothing


def test_status_of_a_running_looping_session_with_approvals_and_faults() -> None:
    clock = FakeClock(wall=RUN_WALL)
    options = SessionOptions(speed=60, loop=True, resources=("web-1",), start=Start.now)
    session = Session("s", simple_trace(), clock, options)
    session.faults = FaultPlan([FaultWindow(0, 100, "status", 500), FaultWindow(0, 1, "drop")])
    clock.advance(1)  # 60 s of trace: E1 Scheduled, NotBefore at 610 s = 10.17 s of wall time
    assert session.draw_fault() is not None
    status = session_status(session)
    assert status["state"] == "running" and status["loop"] is True
    assert (status["round"], status["position_s"], status["incarnation"]) == (0, 60.0, 2)
    assert status["next_transition"] == {
        "offset_s": 610.0,
        "round": 0,
        "in_s": (610 - 60) / 60,
        "at": (RUN_WALL + timedelta(seconds=610 / 60)).isoformat(),
    }
    assert status["resources"] == ["web-1"]
    assert status["document"] == {
        "DocumentIncarnation": 2,
        "Events": [shown("E1", "Scheduled", nb(10), ["web-1"])],
    }
    assert status["faults"] == {"windows": 2, "injected": {"status 500": 1}}

    assert session.approve(["E1"]) == []
    status = session_status(session)
    assert status["approvals"] == [{"event_id": "E1", "round": 0, "offset_s": 60.0}]
    assert status["incarnation"] == 3
    assert status["document"]["Events"] == [shown("E1", "Started", "", ["web-1"])]
    # Started at 60 s, so every later change comes 550 s early: gone at 150 s.
    assert status["next_transition"]["offset_s"] == 150.0

    clock.advance(12)  # 780 s: round 1 at 80 s, E1 Scheduled again under a fresh EventId
    status = session_status(session)
    fresh = round_event_id("t1", 1, "E1")
    assert (status["round"], status["position_s"], status["incarnation"]) == (1, 80.0, 5)
    assert status["document"]["Events"] == [shown(fresh, "Scheduled", nb(1310 / 60), ["web-1"])]
    assert status["next_transition"]["round"] == 1
    assert status["next_transition"]["offset_s"] == 610.0
    assert status["approvals"] == [{"event_id": "E1", "round": 0, "offset_s": 60.0}]


def test_status_of_paused_and_finished_sessions_has_no_wall_time_for_the_next_change() -> None:
    clock = FakeClock(wall=RUN_WALL)
    session = Session("s", simple_trace(), clock, SessionOptions(speed=2, start=Start.now))
    clock.advance(5)
    session.pause()
    status = session_status(session)
    assert (status["state"], status["position_s"], status["speed"]) == ("paused", 10.0, 2)
    assert status["next_transition"] == {"offset_s": 610.0, "round": 0, "in_s": None, "at": None}
    session.set_speed(4)
    assert session_status(session)["wall_duration_s"] == 175.0
    session.seek(700)
    session.finish()
    status = session_status(session)
    assert (status["state"], status["position_s"], status["next_transition"]) == (
        "finished",
        700.0,
        None,
    )
    assert status["document"] == {"DocumentIncarnation": 4, "Events": []}
    assert session.current(LATEST_VERSION).incarnation == 4
