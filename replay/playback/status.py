"""A session's status as JSON values: what the control API, the page and ReplayClient show."""

from __future__ import annotations

from typing import Any

import orjson

from replay.playback.anchor import State
from replay.playback.session import Session


def session_status(session: Session) -> dict[str, Any]:
    """Everything a control client needs to know about a session, as JSON values.

    Reading it is not an IMDS request: it neither starts a waiting session nor counts as a
    served document. The page moves the replay on from `position_s`, `speed`, `state`,
    `duration_s`, `loop` and `next_transition.in_s` between two statuses, and counts down to
    NotBefore on the server's wall clock, which `computed_at` tells it.
    """
    pos = session.position()
    rnd, off = session.split(pos)
    served = session.current(session.status_version)
    nxt = session.next_transition()
    running = session.state is State.running
    next_info = None
    if nxt is not None:
        nxt_round, nxt_offset = session.split(nxt)
        next_info = {
            "offset_s": nxt_offset,
            "round": nxt_round,
            "in_s": (nxt - pos) / session.speed if running else None,
            "at": session.wall_of(nxt).isoformat() if running else None,
        }
    faults = session.faults
    return {
        "name": session.name,
        "trace": session.trace.name,
        "scenario": session.trace.scenario,
        "origin": session.trace.origin,
        "state": session.state.value,
        "speed": session.speed,
        "loop": session.looping,
        "round": rnd,
        "position_s": off,
        "duration_s": session.duration_s,
        "wall_duration_s": session.duration_s / session.speed,
        "incarnation": served.incarnation,
        "next_transition": next_info,
        "resources": list(session.options.resources) if session.options.resources else None,
        "approvals": [
            {"event_id": a.event_id, "round": a.round, "offset_s": a.offset_s}
            for a in session.approvals
        ],
        "document": orjson.loads(served.body),
        "computed_at": session.clock.wall().isoformat(),
        "faults": {
            "windows": len(faults.windows) if faults else 0,
            "injected": dict(session.fault_counts),
        },
    }
