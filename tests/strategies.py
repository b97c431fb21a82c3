"""Hypothesis strategies shared by the tests: random valid traces."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import strategies as st

from replay.core.timeline import Approval, Snapshot, Trace, format_rfc1123
from tests.helpers import T0

text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)


@st.composite
def traces(draw: st.DrawFn, max_events: int = 4, whole_seconds: bool = False) -> Trace:
    """Random valid traces: overlapping events, every field, odd Unicode, approvals."""
    n_events = draw(st.integers(1, max_events))
    gap = st.integers(1, 5000) if whole_seconds else st.floats(0.001, 5000, allow_nan=False)
    gaps = draw(st.lists(gap, min_size=3 * n_events, max_size=3 * n_events))
    events = []
    for i in range(n_events):
        events.append(
            {
                "EventId": str(draw(st.uuids())).upper() + f"-{i}",
                "EventStatus": "Scheduled",
                "EventType": draw(
                    st.sampled_from(["Freeze", "Reboot", "Redeploy", "Preempt", "Terminate"])
                ),
                "ResourceType": "VirtualMachine",
                "Resources": draw(st.lists(text, max_size=3)),
                "NotBefore": format_rfc1123(T0 + timedelta(seconds=draw(st.integers(0, 10**5)))),
                "Description": draw(text),
                "EventSource": draw(st.sampled_from(["Platform", "User"])),
                "DurationInSeconds": draw(st.integers(-1, 10**6)),
            }
        )
    # Each event appears, then may start, then vanishes; the document changes at every step.
    offset, incarnation = 0.0, draw(st.integers(0, 10**9))
    snaps = [Snapshot(0.0, {"DocumentIncarnation": incarnation, "Events": []})]
    live: list[dict[str, Any]] = []
    actions = [(kind, e) for kind in ("add", "start", "drop") for e in events]
    order = draw(st.permutations(range(len(actions))))
    done: set[str] = set()
    for k, step in zip(order, gaps, strict=False):
        kind, ev = actions[k]
        eid = ev["EventId"]
        here = any(e["EventId"] == eid for e in live)
        if kind == "add" and eid not in done and not here:
            live.append(ev)
        elif kind == "start" and here:
            live = [
                {**e, "EventStatus": "Started", "NotBefore": ""} if e["EventId"] == eid else e
                for e in live
            ]
        elif kind == "drop" and here:
            live = [e for e in live if e["EventId"] != eid]
            done.add(eid)
        else:
            continue
        offset += step
        incarnation += 1
        snaps.append(Snapshot(offset, {"DocumentIncarnation": incarnation, "Events": list(live)}))
    if live:
        offset += 1
        snaps.append(Snapshot(offset, {"DocumentIncarnation": incarnation + 1, "Events": []}))
    approvals = tuple(
        Approval(draw(st.floats(0, offset)), (e["EventId"],)) for e in events if draw(st.booleans())
    )
    return Trace(
        name=draw(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)),
        scenario=draw(st.sampled_from(["live-migration", "other-freeze"])),
        snapshots=tuple(snaps),
        approvals=approvals,
        started_at=draw(st.one_of(st.none(), st.just(T0))),
        origin=draw(st.sampled_from(["captured", "reference", "synthetic"])),
        source={"host": draw(text)},
    )
