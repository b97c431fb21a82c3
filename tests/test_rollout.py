"""A group's rollout: per fault domain (fresh EventIds, its VMs, one after another) or together."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from replay.core.rollout import Rollout, plan_rollout
from replay.core.schedule import Schedule
from replay.core.timeline import Trace
from tests.helpers import event, simple_trace, trace_of
from tests.strategies import traces

SIX = [(f"web-{i}", i // 3) for i in range(6)]  # web-0..2 in fault domain 0, web-3..5 in 1


def shown(schedule: Schedule) -> list[tuple[float, int, list[tuple[str, str, tuple[str, ...]]]]]:
    return [
        (
            t.offset_s,
            t.incarnation,
            [(s.event_id, s.status, tuple(s.event["Resources"])) for s in t.events],
        )
        for t in schedule.transitions
    ]


def test_each_fault_domain_gets_its_own_event_after_the_one_before_is_gone() -> None:
    # simple_trace: Scheduled at 10 s, Started at 610 s, gone at 700 s
    rollout = plan_rollout("web", simple_trace(), SIX, "fault-domain", gap_s=120)
    fd0, fd1 = (wave.trace.event_ids[0] for wave in rollout.waves)
    assert fd0 != fd1 and "E1" not in (fd0, fd1)
    zero, one = ("web-0", "web-1", "web-2"), ("web-3", "web-4", "web-5")
    assert shown(rollout.schedule()) == [
        (0.0, 1, []),
        (10.0, 2, [(fd0, "Scheduled", zero)]),
        (610.0, 3, [(fd0, "Started", zero)]),
        (700.0, 4, []),
        (820.0, 5, [(fd1, "Scheduled", one)]),  # 120 s after fault domain 0's event is gone
        (1420.0, 6, [(fd1, "Started", one)]),
        (1510.0, 7, []),
    ]
    assert rollout.duration_s == 1510.0


def test_notbefore_moves_with_its_fault_domain() -> None:
    rollout = plan_rollout("web", simple_trace(), SIX, "fault-domain", gap_s=120)
    scheduled = [s for t in rollout.schedule().transitions for s in t.events if s.not_before_s]
    assert [s.not_before_s for s in scheduled] == [610.0, 1420.0]
    static = [e["NotBefore"] for s in rollout.trace.snapshots for e in s.events if e["NotBefore"]]
    assert static == ["Tue, 01 Jul 2025 00:10:10 GMT", "Tue, 01 Jul 2025 00:23:40 GMT"]


def test_together_is_one_event_naming_every_vm() -> None:
    rollout = plan_rollout("web", simple_trace(), SIX, "together", gap_s=120)
    (eid,) = rollout.trace.event_ids
    everyone = tuple(name for name, _ in SIX)
    assert shown(rollout.schedule()) == [
        (0.0, 1, []),
        (10.0, 2, [(eid, "Scheduled", everyone)]),
        (610.0, 3, [(eid, "Started", everyone)]),
        (700.0, 4, []),
    ]


def test_fault_domains_go_in_ascending_order_with_their_vms_in_file_order() -> None:
    members = [("c", 2), ("a", 0), ("b", 2), ("d", 0)]
    rollout = plan_rollout("g", simple_trace(), members, "fault-domain")
    assert [(w.fault_domain, w.resources) for w in rollout.waves] == [
        (0, ("a", "d")),
        (2, ("c", "b")),
    ]


def test_a_trace_with_several_events_keeps_them_in_every_fault_domain() -> None:
    two = trace_of(
        [
            (0.0, []),
            (10.0, [event("A", not_before_s=100)]),
            (20.0, [event("A", not_before_s=100), event("B", not_before_s=200)]),
            (100.0, [event("A", "Started"), event("B", not_before_s=200)]),
            (150.0, [event("B", not_before_s=200)]),
            (200.0, [event("B", "Started")]),
            (250.0, []),
        ]
    )
    rollout = plan_rollout("g", two, [("x", 0), ("y", 1)], "fault-domain", gap_s=50)
    first, second = rollout.waves
    assert len(first.ids) == len(second.ids) == 2 and not first.ids & second.ids
    appear = {
        s.event_id: t.offset_s for t in reversed(rollout.schedule().transitions) for s in t.events
    }
    assert sorted(appear.values()) == [10.0, 20.0, 300.0, 310.0]  # gone at 250, + 50; + 10


def test_an_approval_starts_the_event_and_the_next_fault_domain_follows_early() -> None:
    rollout = plan_rollout("web", simple_trace(), SIX, "fault-domain", gap_s=120)
    fd0 = rollout.waves[0].trace.event_ids[0]
    fd1 = rollout.waves[1].trace.event_ids[0]
    after = shown(rollout.schedule([(100.0, fd0, 0)]))
    zero, one = ("web-0", "web-1", "web-2"), ("web-3", "web-4", "web-5")
    assert after == [
        (0.0, 1, []),
        (10.0, 2, [(fd0, "Scheduled", zero)]),
        (100.0, 3, [(fd0, "Started", zero)]),
        (190.0, 4, []),
        (310.0, 5, [(fd1, "Scheduled", one)]),
        (910.0, 6, [(fd1, "Started", one)]),
        (1000.0, 7, []),
    ]


def test_an_approval_in_the_second_fault_domain_lands_on_its_own_axis() -> None:
    rollout = plan_rollout("web", simple_trace(), SIX, "fault-domain", gap_s=0.1)
    fd1 = rollout.waves[1].trace.event_ids[0]
    scheduled_at = next(
        t.offset_s
        for t in rollout.schedule().transitions
        if t.events and t.events[0].event_id == fd1
    )
    # approving right at the change that showed it (a step lands there exactly)
    approved = rollout.schedule([(scheduled_at, fd1, 0)])
    assert approved.state_of(fd1, scheduled_at).status == "Started"  # type: ignore[union-attr]


def test_an_approval_at_the_change_that_showed_it_keeps_what_was_served_there() -> None:
    rollout = plan_rollout("web", simple_trace(), SIX, "fault-domain", gap_s=120)
    fd0 = rollout.waves[0].trace.event_ids[0]
    zero = ("web-0", "web-1", "web-2")
    head = shown(rollout.schedule([(10.0, fd0, 0)]))[:4]
    assert head == [
        (0.0, 1, []),
        (10.0, 2, [(fd0, "Scheduled", zero)]),  # served before the approval
        (10.0, 3, [(fd0, "Started", zero)]),  # what is current from the approval on
        (100.0, 4, []),
    ]


def waves_in_order(rollout: Rollout, schedule: Schedule) -> None:
    """Each wave's events appear only gap_s after the wave before has none left."""
    present: list[list[int]] = [[] for _ in rollout.waves]
    for index, t in enumerate(schedule.transitions):
        for s in t.events:
            present[rollout.wave_of(s.event_id) or 0].append(index)
    offsets = schedule.offsets
    for k in range(1, len(rollout.waves)):
        if present[k - 1] and present[k]:
            assert min(present[k]) > max(present[k - 1])
            gone = offsets[max(present[k - 1]) + 1]
            assert offsets[min(present[k])] - gone >= rollout.gap_s - 1e-6


@settings(max_examples=150, deadline=None)
@given(
    trace=traces(),
    domains=st.lists(st.integers(0, 3), min_size=1, max_size=6),
    gap_s=st.sampled_from([0.0, 0.5, 120.0]),
    together=st.booleans(),
    pick=st.integers(0, 10**6),
    delay_s=st.sampled_from([0.0, 5.0]),
)
def test_approvals_never_change_the_past_and_waves_stay_in_order(
    trace: Trace, domains: list[int], gap_s: float, together: bool, pick: int, delay_s: float
) -> None:
    members = [(f"vm-{i}", fd) for i, fd in enumerate(domains)]
    rollout = plan_rollout("g", trace, members, "together" if together else "fault-domain", gap_s)
    plain = rollout.schedule(delay_s=delay_s)
    # Without approvals the schedule is the group's static trace, document for document.
    assert [(t.offset_s, t.incarnation) for t in plain.transitions] == [
        (s.offset_s, s.incarnation) for s in rollout.trace.snapshots
    ]
    waves_in_order(rollout, plain)
    scheduled = [
        (t.offset_s, s.event_id)
        for t in plain.transitions
        for s in t.events
        if s.status == "Scheduled"
    ]
    if not scheduled:
        return
    at, eid = scheduled[pick % len(scheduled)]
    approved = rollout.schedule([(at, eid, 0)], delay_s=delay_s)
    before = [t for t in plain.transitions if t.offset_s < at]
    assert list(approved.transitions[: len(before)]) == before
    incarnations = [t.incarnation for t in approved.transitions]
    assert incarnations == sorted(set(incarnations))
    assert approved.transitions[-1].events == ()
    waves_in_order(rollout, approved)
