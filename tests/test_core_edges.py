"""The core's edges, exactly: boundaries, whole error messages, the instance document.

Found by mutation testing (scripts/mutation): each test pins a behaviour that a one-token
change of the core went unnoticed by every other test.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from replay.core.faults import (
    FaultPlan,
    FaultWindow,
    PlaybookError,
    RateLimiter,
    load_playbook,
    parse_playbook,
)
from replay.core.imds import error_body, parse_start_requests, render
from replay.core.reference import reference_table, reference_trace
from replay.core.schedule import EventState, Schedule, Transition, build_schedule
from replay.core.speed import parse_speed
from replay.core.timeline import Approval, Snapshot, Trace, trace_problems
from replay.errors import ReplayError, SpeedError
from tests.helpers import T0, event, simple_trace, trace_of


def message(error: pytest.ExceptionInfo[BaseException]) -> str:
    return str(error.value)


# -- imds -----------------------------------------------------------------------------------


def test_error_bodies_and_start_requests() -> None:
    assert orjson.loads(error_body("Not found")) == {"error": "Not found"}
    assert orjson.loads(error_body("bad", versions=True)) == {
        "error": "bad",
        "newest-versions": ["2020-07-01", "2019-08-01", "2019-04-01"],
    }
    assert parse_start_requests(b'{"StartRequests": [{"EventId": "A"}, {"EventId": "B"}]}') == [
        "A",
        "B",
    ]
    assert parse_start_requests(b'{"StartRequests": []}') == []
    assert parse_start_requests(b'{"StartRequests": [1]}') is None


# -- speed ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "speed"),
    [(0.001, 0.001), (1_000_000, 1_000_000), ("0.1%", 0.001), ("1000000x", 1_000_000), (7, 7)],
)
def test_speed_bounds_are_inclusive(text: Any, speed: float) -> None:
    assert parse_speed(text) == speed


def test_speed_errors_say_what_is_understood() -> None:
    with pytest.raises(SpeedError) as bad:
        parse_speed("fast")
    assert message(bad) == (
        "speed 'fast' is not understood; use a factor like 60 or 60x, 'dev' (= 60), "
        "or a percentage like 200%"
    )
    with pytest.raises(SpeedError) as slow:
        parse_speed("0.0009")
    assert message(slow) == "speed '0.0009' must be at least 0.001x and at most 1000000x"
    for text in ("1000001", "0.09%", None):
        with pytest.raises(SpeedError):
            parse_speed(text)  # type: ignore[arg-type]


# -- faults ---------------------------------------------------------------------------------


def test_playbook_boundaries() -> None:
    windows = parse_playbook(
        [
            {"from_s": 0, "to_s": 0.5, "delay_ms": 600_000},
            {"from_s": 1, "to_s": 2, "delay_ms": 0.5, "probability": 0},
            {"from_s": 1, "to_s": 2, "drop": True, "probability": 1},
        ]
    )
    assert [(w.from_s, w.value, w.probability) for w in windows] == [
        (0, 600_000, 1),
        (1, 0.5, 0),
        (1, 0, 1),
    ]
    refused = [
        ({"from_s": 2, "to_s": 2, "drop": True}, "needs 0 <= from_s < to_s, got 2 and 2"),
        ({"from_s": -1, "to_s": 2, "drop": True}, "needs 0 <= from_s < to_s, got -1 and 2"),
        ({"from_s": 0, "to_s": 1, "delay_ms": 0}, "'delay_ms' must be above 0 and at most 600000"),
        ({"from_s": 0, "to_s": 1, "delay_ms": 600_001}, "'delay_ms' must be above 0"),
        ({"from_s": 0, "to_s": 1, "drop": True, "probability": "1"}, "'probability' must be a"),
        ({"from_s": 0, "to_s": 1, "drop": True, "probability": -0.1}, "'probability' must be from"),
        ({"from_s": 0, "to_s": True, "drop": True}, "'to_s' must be a number of seconds, got True"),
        ({"from_s": 0, "to_s": 1, "delay_ms": "5"}, "'delay_ms' must be a number of seconds"),
        ({"from_s": 0, "to_s": 1, "a": 1, "b": 2, "drop": True}, "unknown keys a, b"),
        ({"from_s": 0, "to_s": 1}, "give exactly one of status, delay_ms, drop, truncate"),
        ({"from_s": 0, "to_s": 1, "status": True}, "'status' must be one of 410, 429, 500, 503"),
    ]
    for window, problem in refused:
        with pytest.raises(PlaybookError) as bad:
            parse_playbook([window], "f.json")
        assert message(bad).startswith(f"f.json: window 0: {problem}"), message(bad)
    with pytest.raises(PlaybookError) as bad:
        parse_playbook([{"from_s": 0, "to_s": 1, "drop": True, "probability": "x"}], "f.json")
    assert message(bad) == "f.json: window 0: 'probability' must be a number from 0 to 1"


def test_load_playbook_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_bytes(b'[{"from_s": 1, "to_s": 2, "status": 503}]')
    assert load_playbook(path) == (FaultWindow(1, 2, "status", 503),)
    path.write_bytes(b"[{")
    with pytest.raises(PlaybookError) as bad:
        load_playbook(path)
    assert message(bad).startswith(f"{path}: not JSON: ")
    path.write_bytes(b"[1]")
    with pytest.raises(PlaybookError) as bad:
        load_playbook(path)
    assert message(bad) == f"{path}: window 0: must be an object"
    with pytest.raises(PlaybookError) as bad:
        load_playbook(tmp_path / "missing.json")
    assert message(bad) == (
        f"{tmp_path / 'missing.json'}: cannot read the playbook: No such file or directory"
    )


def test_fault_descriptions_and_certain_draws() -> None:
    assert FaultWindow(0, 1, "status", 503).describe() == "status 503"
    assert FaultWindow(0, 1, "delay_ms", 250).describe() == "delay 250 ms"
    assert FaultWindow(0, 1, "truncate").describe() == "truncate"
    # probability 1 never consults the generator, 0 never fires: the draws that follow agree
    plan, twin = FaultPlan([FaultWindow(0, 1, "drop", probability=1)]), FaultPlan([], seed=0)
    assert all(plan.draw(0.5) is not None for _ in range(50))
    assert plan._rng.random() == twin._rng.random()
    never = FaultPlan([FaultWindow(0, 1, "drop", probability=0.0)])
    assert all(never.draw(0.5) is None for _ in range(200))


def test_rate_limiter_edges() -> None:
    with pytest.raises(ReplayError) as bad:
        RateLimiter(0)
    assert message(bad) == "--rate-limit must be at least 1 request per second, got 0"
    one = RateLimiter(1)
    assert one.allow("a", 10.0) and not one.allow("a", 10.5)
    assert not one.allow("a", 10.999)
    assert one.allow("a", 11.0)  # exactly a second later the first has left the window
    # A full table forgets the clients idle for a second before it takes a new one.
    small = RateLimiter(1, max_clients=2)
    assert small.allow("a", 0.0) and small.allow("b", 0.5)
    assert small.allow("c", 1.0)  # "a" (idle 1 s) goes, "b" stays
    assert sorted(small._seen) == ["b", "c"]
    assert not small.allow("b", 1.2)  # its window was kept
    assert small.allow("d", 1.2) and sorted(small._seen) == ["b", "c", "d"]


# -- timeline rules -------------------------------------------------------------------------


def problems(trace: Trace) -> list[str]:
    return list(trace_problems(trace))


def test_every_rule_of_a_timeline_has_its_exact_message() -> None:
    base = simple_trace()
    snaps = base.snapshots
    assert problems(Trace("t", "s", ())) == ["the trace has no documents"]
    assert problems(Trace("t", "s", snaps, origin="found")) == [
        "origin 'found' is not one of captured, reference, synthetic"
    ]
    same_offset = Snapshot(10.0, {**snaps[2].document})
    assert problems(Trace("t", "s", (*snaps[:2], same_offset, snaps[3]))) == [
        "document 2 (offset 10 s): offsets must increase (previous 10 s)"
    ]
    unfinished = trace_of([(0, []), (10, [event()])])
    assert problems(unfinished) == ["document 1: a trace must end with an empty Events array"]
    odd = {**event(), "Extra": 1, "Zed": 2}
    assert problems(trace_of([(0, []), (10, [odd]), (20, [])])) == [
        "document 1 (offset 10 s) event 0: unknown keys Extra, Zed"
    ]
    missing = {k: v for k, v in event().items() if k not in ("Resources", "NotBefore")}
    assert problems(trace_of([(0, []), (10, [missing]), (20, [])])) == [
        "document 1 (offset 10 s) event 0: missing Resources, NotBefore"
    ]
    assert problems(trace_of([(0, []), (10, [5]), (20, [])])) == [  # type: ignore[list-item]
        "document 1 (offset 10 s) event 0: an event must be a JSON object, got int"
    ]
    wrong = {**event(), "EventType": "Nap", "ResourceType": "Disk"}
    assert problems(trace_of([(0, []), (10, [wrong]), (20, [])])) == [
        "document 1 (offset 10 s) event 0: EventType 'Nap' is not one of "
        "Freeze, Preempt, Reboot, Redeploy, Terminate",
        "document 1 (offset 10 s) event 0: ResourceType 'Disk' is not one of VirtualMachine",
    ]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"EventId": ""}, "EventId must be a non-empty string"),
        ({"EventId": 7}, "EventId must be a non-empty string"),
        ({"Resources": "vm-0"}, "Resources must be a list of strings"),
        ({"Resources": [1]}, "Resources must be a list of strings"),
        ({"DurationInSeconds": -2}, "DurationInSeconds must be an integer >= -1, got -2"),
        ({"DurationInSeconds": True}, "DurationInSeconds must be an integer >= -1, got True"),
        ({"DurationInSeconds": 1.5}, "DurationInSeconds must be an integer >= -1, got 1.5"),
    ],
)
def test_one_bad_field_is_named(change: dict[str, Any], problem: str) -> None:
    bad = {**event(), **change}
    assert problems(trace_of([(0, []), (10, [bad]), (20, [])])) == [
        f"document 1 (offset 10 s) event 0: {problem}"
    ]


def test_a_boolean_incarnation_is_not_an_integer() -> None:
    snaps = simple_trace().snapshots
    bad = Snapshot(10.0, {**snaps[1].document, "DocumentIncarnation": True})
    assert problems(Trace("t", "s", (snaps[0], bad, *snaps[2:]))) == [
        "document 1 (offset 10 s): DocumentIncarnation must be an integer, got True"
    ]


def test_a_playbook_error_names_its_source_and_window() -> None:
    with pytest.raises(PlaybookError) as bad:
        parse_playbook({})
    assert message(bad) == "playbook: a playbook is a JSON list of windows"
    with pytest.raises(PlaybookError) as bad:
        parse_playbook([{"from_s": "a", "to_s": 1, "drop": True}], "f.json")
    assert message(bad) == "f.json: window 0: 'from_s' must be a number of seconds, got 'a'"


# -- schedules: approvals at their edges -----------------------------------------------------


def doc_at(schedule: Schedule, offset_s: float) -> list[tuple[str, str, float | None]]:
    return [(s.event_id, s.status, s.not_before_s) for s in schedule.at(offset_s).events]


MOVED_NOTICE = trace_of(  # E1's NotBefore moves from 600 to 650 at 100 s; Started at 650
    [
        (0, []),
        (10, [event(not_before_s=600)]),
        (100, [event(not_before_s=650)]),
        (650, [event(status="Started")]),
        (700, []),
    ]
)


def test_without_a_wall_clock_start_notbefore_falls_back_to_the_start_or_the_end() -> None:
    started = replace(MOVED_NOTICE, started_at=None)
    assert doc_at(build_schedule(started), 20) == [("E1", "Scheduled", 650)]
    cancelled = replace(
        trace_of(
            [
                (0, []),
                (10, [event(not_before_s=600)]),
                (100, [event(not_before_s=900)]),
                (500, []),
            ]
        ),
        started_at=None,
    )
    assert doc_at(build_schedule(cancelled), 20) == [("E1", "Scheduled", 500)]


def test_an_approval_at_the_offset_the_event_appears_starts_it() -> None:
    schedule = build_schedule(simple_trace(), [(10.0, "E1", 0)])
    assert doc_at(schedule, 10) == [("E1", "Started", None)]
    assert doc_at(schedule, 99.9) == [("E1", "Started", None)]
    assert doc_at(schedule, 100) == []


def test_an_approval_half_a_second_before_the_start_still_moves_it() -> None:
    schedule = build_schedule(simple_trace(), [(609.5, "E1", 0)])
    assert doc_at(schedule, 609.5) == [("E1", "Started", None)]
    assert doc_at(schedule, 699.5) == []


def test_approvals_before_the_event_or_after_it_change_nothing() -> None:
    trace = simple_trace()
    plain = build_schedule(trace)
    assert build_schedule(trace, [(5.0, "E1", 0)]) == plain
    assert build_schedule(trace, [(650.0, "E1", 0), (700.0, "E1", 1)]) == plain


def test_an_approved_event_whose_notice_would_have_moved_stays_started() -> None:
    schedule = build_schedule(MOVED_NOTICE, [(50.0, "E1", 0)])
    assert doc_at(schedule, 50) == [("E1", "Started", None)]
    assert doc_at(schedule, 99.9) == [("E1", "Started", None)]  # not Scheduled again at 100
    assert doc_at(schedule, 100) == []  # 50 s after the start, as in the trace


def test_an_approved_cancelled_event_is_started_until_it_vanished_or_a_second_at_least() -> None:
    e2 = event("E2", not_before_s=1500)
    trace = trace_of([(0, []), (10, [event(not_before_s=900)]), (500, []), (700, [e2]), (800, [])])
    now = build_schedule(trace, [(100.0, "E1", 0)])
    assert doc_at(now, 100) == doc_at(now, 499.9) == [("E1", "Started", None)]
    assert doc_at(now, 500) == []
    late = build_schedule(trace, [(400.0, "E1", 0)], delay_s=150)
    assert doc_at(late, 400) == [("E1", "Scheduled", 550)]
    assert doc_at(late, 549.9) == [("E1", "Scheduled", 550)]
    assert doc_at(late, 550) == doc_at(late, 550.9) == [("E1", "Started", None)]
    assert doc_at(late, 551) == []


def test_a_delay_under_a_second_still_shows_its_notbefore() -> None:
    schedule = build_schedule(simple_trace(), [(100.0, "E1", 0)], delay_s=0.5)
    assert doc_at(schedule, 100) == [("E1", "Scheduled", 100.5)]
    assert doc_at(schedule, 100.5) == [("E1", "Started", None)]


def test_a_reference_trace_is_named_after_its_scenario() -> None:
    table = reference_table()
    assert [row.scenario for row in table.values()] == list(table)
    assert table["live-migration"].first_seen_status == "Scheduled"  # the table's default
    assert table["host-failure"].first_seen_status == "Started"
    trace = reference_trace("spot-eviction")
    assert (trace.name, trace.scenario, trace.origin) == (
        "spot-eviction",
        "spot-eviction",
        "reference",
    )
    assert trace.source == {
        "table": "replay/core/scenarios.json",
        "row_origin": table["spot-eviction"].origin,
    }


def test_an_approval_at_the_last_offset_is_inside_the_trace() -> None:
    trace = replace(simple_trace(), approvals=(Approval(700.0, ("E1",)),))
    assert problems(trace) == []
    late = replace(simple_trace(), approvals=(Approval(700.5, ("E1",)),))
    assert problems(late) == ["approval 0: offset 700.5 s is outside the trace"]


def test_an_older_api_version_hides_new_event_types_and_shows_the_rest() -> None:
    preempt = EventState({**event("P1"), "EventType": "Preempt"}, "Scheduled", 100.0)
    freeze = EventState(event("F1"), "Started", None)
    shown = render(
        Transition(0.0, 7, (preempt, freeze)),
        "2017-08-01",
        event_id=str,
        wall_of=lambda offset: T0,
        resources=None,
    )
    assert [e["EventId"] for e in orjson.loads(shown)["Events"]] == ["F1"]
