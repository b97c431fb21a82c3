from __future__ import annotations

import email.utils
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.core.timeline import Approval, Snapshot, format_rfc1123, parse_rfc1123, validate
from replay.errors import InvalidTraceError
from tests.helpers import T0, event, simple_trace, trace_of


def test_rfc1123_round_trip_matches_imds_shape() -> None:
    text = "Mon, 11 Apr 2022 22:26:58 GMT"
    assert format_rfc1123(parse_rfc1123(text)) == text


@pytest.mark.parametrize(
    ("offset_s", "incarnation"),
    [(-5, 1), (0, 1), (9.999, 1), (10, 2), (609.9, 2), (610, 3), (700, 4), (10_000, 4)],
)
def test_document_at_returns_the_document_current_at_an_offset(
    offset_s: float, incarnation: int
) -> None:
    assert simple_trace().document_at(offset_s)["DocumentIncarnation"] == incarnation


def test_next_offset_after() -> None:
    trace = simple_trace()
    assert trace.next_offset_after(0) == 10
    assert trace.next_offset_after(10) == 610
    assert trace.next_offset_after(700) is None


def test_lifecycle_records_first_seen_times_and_notbefore_on_the_axis() -> None:
    trace = trace_of(
        [(0, []), (10, [event(not_before_s=610)]), (400, [event(status="Started")]), (700, [])],
        approvals=(Approval(399.5, ("E1",)),),
    )
    lc = trace.lifecycles["E1"]
    assert (lc.first_seen_s, lc.scheduled_s, lc.started_s, lc.gone_s) == (10, 10, 400, 700)
    assert lc.not_before_s == 610
    assert lc.approved_s == 399.5


def test_overlapping_events_each_get_a_lifecycle() -> None:
    a, b = event("A", not_before_s=900), event("B", not_before_s=950)
    trace = trace_of([(0, []), (10, [a]), (50, [a, b]), (60, [b]), (100, [])])
    assert trace.event_ids == ("A", "B")
    assert trace.lifecycles["A"].gone_s == 60
    assert trace.lifecycles["B"].gone_s == 100
    assert trace.lifecycles["B"].started_s is None


BAD = [
    ([(1, []), (10, [event()]), (20, [])], "first document must be at offset 0"),
    ([(0, [event()]), (20, [])], "must start with an empty Events array"),
    ([(0, []), (10, [event()])], "must end with an empty Events array"),
    ([(0, []), (10, [event()]), (5, [])], "offsets must increase"),
    ([(0, []), (10, [{**event(), "EventStatus": "Done"}]), (20, [])], "EventStatus 'Done'"),
    ([(0, []), (10, [{**event(), "EventType": "Nap"}]), (20, [])], "EventType 'Nap'"),
    (
        [(0, []), (10, [{k: v for k, v in event().items() if k != "Resources"}]), (20, [])],
        "missing Resources",
    ),
    ([(0, []), (10, [{**event(), "DurationInSeconds": -2}]), (20, [])], "DurationInSeconds"),
    ([(0, []), (10, [{**event(), "NotBefore": "tomorrow"}]), (20, [])], "RFC 1123"),
    ([(0, []), (10, [{**event(), "NotBefore": ""}]), (20, [])], "needs a NotBefore"),
    ([(0, []), (10, [event(), event()]), (20, [])], "appears twice"),
]


@pytest.mark.parametrize(("steps", "problem"), BAD)
def test_validate_names_the_first_problem(steps: list, problem: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidTraceError, match=problem):
        validate(trace_of(steps))


def test_incarnation_must_change_exactly_when_events_change() -> None:
    trace = simple_trace()
    snaps = list(trace.snapshots)
    same = Snapshot(snaps[2].offset_s, {**snaps[2].document, "DocumentIncarnation": 2})
    with pytest.raises(InvalidTraceError, match="Events changed but DocumentIncarnation stayed 2"):
        validate(replace(trace, snapshots=(snaps[0], snaps[1], same, snaps[3])))
    bumped = Snapshot(20.0, {**snaps[1].document, "DocumentIncarnation": 3})
    with pytest.raises(InvalidTraceError, match="DocumentIncarnation changed but Events did not"):
        validate(replace(trace, snapshots=(snaps[0], snaps[1], bumped)))
    back = Snapshot(800.0, {"DocumentIncarnation": 1, "Events": []})
    with pytest.raises(InvalidTraceError, match="went back"):
        validate(replace(trace, snapshots=(*snaps[:3], back)))


def test_valid_trace_passes() -> None:
    assert validate(simple_trace()).started_at == T0


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1)))
def test_imds_times_parse_as_the_general_rfc_parser_reads_them(moment: datetime) -> None:
    text = format_rfc1123(moment.replace(tzinfo=UTC))
    assert parse_rfc1123(text) == email.utils.parsedate_to_datetime(text)


@given(st.from_regex(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", fullmatch=True))
def test_near_imds_times_parse_or_fail_as_the_general_parser_does(text: str) -> None:
    try:
        expected: datetime | None = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        expected = None
    try:
        got: datetime | None = parse_rfc1123(text)
    except ValueError:
        got = None
    assert got == expected
