"""The VM socket's app and the run report, on FakeClock: what `run` observes, exactly."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from replay.clock import FakeClock
from replay.playback.anchor import Start
from replay.playback.registry import DEFAULT, SessionRegistry
from replay.playback.session import SessionOptions
from replay.server.vm import Observation, Shown, make_vm_app
from replay.testing.report import (
    ROUNDS_KEPT,
    EventOutcome,
    Expectation,
    Requests,
    RunReport,
    Tally,
    build_report,
    judge,
)

URL = "/metadata/scheduledevents?api-version=2020-07-01"
H = {"Metadata": "true"}


@pytest.fixture
def seen() -> list[Observation]:
    return []


@pytest.fixture
async def vm(
    aiohttp_client: Any, registry: SessionRegistry, clock: FakeClock, seen: list[Observation]
) -> Any:
    """The VM socket's app pinned to session `vm-a`, playing live-migration at 60x from now."""
    options = SessionOptions(speed=60, start=Start.now)
    registry.create("vm-a", registry.trace("live-migration"), options)
    return await aiohttp_client(make_vm_app(registry, "vm-a", seen.append))


async def events_of(vm: Any) -> list[dict[str, Any]]:
    resp = await vm.get(URL, headers=H)
    assert resp.status == 200
    events: list[dict[str, Any]] = orjson.loads(await resp.read())["Events"]
    return events


async def approve(vm: Any, event_id: str) -> int:
    body = orjson.dumps({"StartRequests": [{"EventId": event_id}]})
    resp = await vm.post(URL, data=body, headers=H)
    return resp.status


def report(registry: SessionRegistry, seen: list[Observation], *expect: str) -> RunReport:
    expectations = [Expectation.parse(e) for e in expect]
    session = registry.sessions["vm-a"]
    return build_report(session, Tally.of(seen), expectations, exit_code=0, ended_by="exit")


async def test_requests_reach_the_pinned_session_and_nothing_else(
    vm: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    clock.advance(1)  # 60 trace seconds: the Freeze is Scheduled on vm-a, default stays idle
    assert [e["EventStatus"] for e in await events_of(vm)] == ["Scheduled"]
    name = await vm.get(
        "/metadata/instance/compute/name?api-version=2021-12-13&format=text", headers=H
    )
    assert await name.text() == "vm-0"
    assert (await vm.get("/s/default/metadata/scheduledevents", headers=H)).status == 404
    assert (await vm.get("/replay/sessions")).status == 404  # no control API for the VM
    assert not registry.sessions[DEFAULT].documents  # nothing reached the default session


async def test_detection_and_notice_left_are_in_trace_seconds(
    vm: Any, registry: SessionRegistry, clock: FakeClock, seen: list[Observation]
) -> None:
    assert await events_of(vm) == []
    clock.advance(1.5)  # trace 90 s: the Freeze appeared at 30 s, NotBefore at 930 s
    (event,) = await events_of(vm)
    clock.advance(0.5)  # trace 120 s
    assert await approve(vm, event["EventId"]) == 200
    assert [e["EventStatus"] for e in await events_of(vm)] == ["Started"]
    clock.advance(6)  # 300 trace s after the approval the event is gone
    assert await events_of(vm) == []
    (outcome,) = report(registry, seen, "approve", "recovered", "max-detection=60").events
    assert outcome.detected_after_s == pytest.approx(60.0)
    assert outcome.approved_notice_left_s == pytest.approx(810.0)
    assert (outcome.approved_while, outcome.recovered) == ("Scheduled", True)
    result = report(registry, seen, "approve", "recovered", "max-detection=59")
    assert [(e.name, e.ok) for e in result.expectations] == [
        ("approve", True),
        ("recovered", True),
        ("max-detection=59", False),
    ]
    assert result.expectations[2].why == f"Freeze {event['EventId']} was detected after 60 s"


async def test_an_approval_after_notbefore_is_late(
    vm: Any, registry: SessionRegistry, clock: FakeClock, seen: list[Observation]
) -> None:
    clock.advance(1)
    (event,) = await events_of(vm)
    clock.advance(15.4)  # trace 984 s: Started at 930 s, shown with no NotBefore now
    await approve(vm, event["EventId"])
    (outcome,) = report(registry, seen).events
    assert outcome.approved_while == "Started"
    assert outcome.approved_notice_left_s == pytest.approx(930 - 984)
    (approve_outcome,) = report(registry, seen, "approve").expectations
    assert approve_outcome.why == f"Freeze {event['EventId']} was approved only once Started"


async def test_requests_are_counted_by_status_version_and_header_mistakes(
    vm: Any, registry: SessionRegistry, seen: list[Observation]
) -> None:
    await vm.get(URL)
    await vm.get(URL, headers={**H, "X-Forwarded-For": "10.0.0.9"})
    await vm.get("/metadata/scheduledevents?api-version=2019-01-01", headers=H)
    await vm.get("/metadata/nothing-here", headers=H)
    requests = report(registry, seen).requests
    assert requests.by_status == {"200": 1, "400": 2, "404": 1}
    assert requests.api_versions == {"2019-01-01": 1, "2020-07-01": 2}
    assert (requests.missing_metadata, requests.forwarded_for) == (1, 1)
    assert requests.total == 4


def observation(at: float) -> Observation:
    return Observation(at, 0.0, "GET", "/x", 200, None, True, False)


@pytest.mark.parametrize(
    ("times", "peak"),
    [
        ([], 0),
        ([0.0], 1),
        ([0.0, 0.5, 0.99, 1.0, 1.5], 3),  # [0, 1) holds three; so do [0.5, 1.5] and [0.99, 1.99)
        ([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 2.0], 6),
    ],
)
def test_peak_per_second_is_the_most_in_any_one_second(times: list[float], peak: int) -> None:
    assert Tally.of([observation(t) for t in times]).requests.peak_per_second == peak


def outcome(**changes: Any) -> EventOutcome:
    return dataclasses.replace(
        EventOutcome("E1", "Freeze", 0, 1.0, 100.0, "Scheduled", recovered=True), **changes
    )


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (outcome(), None),
        (outcome(approved_while=None, approved_notice_left_s=None), "Freeze E1 was never approved"),
        (outcome(approved_notice_left_s=-4.5), "Freeze E1 was approved 4.5 s late"),
        (outcome(appeared=False), "Freeze E1: the run ended before it appeared"),
        (outcome(approved_while=None, for_this_vm=False), None),  # not ours to approve
        (outcome(approved_while=None, scheduled=False), None),  # never Scheduled
    ],
)
def test_expect_approve(event: EventOutcome, why: str | None) -> None:
    (result,) = judge([Expectation.parse("approve")], Requests(), [event])
    assert result.ok is (why is None)
    if why is not None:
        assert result.why == why


@pytest.mark.parametrize(
    ("ended_by", "exit_code", "ok", "status"),
    [
        ("exit", 0, True, 0),
        ("exit", 7, True, 7),
        ("exit", -15, True, 143),
        ("exit", 0, False, 3),
        ("grace", -15, True, 0),
        ("timeout", -9, True, 124),
        ("timeout", -9, False, 3),
        ("interrupt", -15, False, 130),
    ],
)
def test_run_status(ended_by: str, exit_code: int, ok: bool, status: int) -> None:
    expectations = (
        [] if ok else [judge([Expectation("no-errors")], Requests(by_status={"500": 1}), [])[0]]
    )
    run = RunReport(exit_code, ended_by, "t", 1.0, "vm-0", Requests(), [], expectations)
    assert run.run_status == status


def test_unknown_expectations_name_the_known_ones() -> None:
    with pytest.raises(Exception, match=r"unknown expectation 'fast'; use one of: approve, "):
        Expectation.parse("fast")
    assert Expectation.parse("max-detection=2.5").max_detection_s == 2.5


def test_a_tally_keeps_the_newest_rounds_only() -> None:
    tally = Tally()
    path = "/metadata/scheduledevents"
    for rnd in range(ROUNDS_KEPT + 44):
        shown = (Shown(rnd, "E1", "Scheduled"),)
        tally(Observation(float(rnd), rnd * 10.0, "GET", path, 200, None, True, False, shown))
    rounds = sorted({rnd for rnd, _ in tally.first_shown})
    assert len(rounds) == ROUNDS_KEPT and rounds[-1] == ROUNDS_KEPT + 43
    assert tally.requests.total == ROUNDS_KEPT + 44  # counts are all there


async def test_an_event_still_listed_when_the_run_ends_is_not_recovered(
    vm: Any, registry: SessionRegistry, clock: FakeClock, seen: list[Observation]
) -> None:
    clock.advance(1)
    (event,) = await events_of(vm)
    (outcome,) = report(registry, seen).events
    assert outcome.recovered is False
    (result,) = report(registry, seen, "recovered").expectations
    assert (
        result.why
        == f"Freeze {event['EventId']}: CMD fetched no document without it after it ended"
    )
