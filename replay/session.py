"""A replay session: a trace played at a speed through one anchor, with approvals and loops.

Trace time maps to wall time through one anchor: `pos = anchor_pos + (now - anchor_mono) *
speed`. Pause, resume, seek, speed changes and loops re-anchor; nothing accumulates sleeps.
A polled document is computed from the anchor at request time; the only timer is the ticker,
which wakes at each transition to log it and push it to subscribers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import zlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from replay.clock import SPIN_S, Clock
from replay.errors import ReplayError
from replay.faults import FaultPlan, FaultWindow
from replay.imds import render
from replay.reference import event_id_for
from replay.schedule import Schedule, Transition, build_schedule
from replay.timeline import Snapshot, Trace

log = logging.getLogger("imds_replay")

SHARED_SCHEDULES_MAX = 1024
_SHARED_SCHEDULES: dict[
    tuple[int, tuple[tuple[float, str, int], ...], float, int | None], tuple[Trace, Schedule]
] = {}
"""Built schedules by (id of the trace, approvals, delay, first incarnation). A schedule is a
pure, immutable function of those, so sessions playing the same trace share it instead of each
building and keeping its own every round. An entry holds its trace, so the id stays unique.
A round with a client's approvals is that session's alone: its schedule is not shared."""


@functools.lru_cache(maxsize=16_384)
def _round_event_id(trace_name: str, rnd: int, original: str) -> str:
    """The fresh EventId of an event in a later loop round (the same for every session)."""
    return event_id_for(f"{trace_name}/round-{rnd}/{original}")


SERVED_IDS_KEPT = 256
"""EventIds a session remembers having served (the newest): approving an older one is
approving an unknown EventId. A looping trace serves fresh ones every round."""
APPROVALS_KEPT = 256
"""The approvals a session lists in its status (the newest)."""
DOCUMENTS_KEPT = 256
"""The served documents a session remembers (GET .../documents): a test's whole story, while
a server left looping for days stays the same size."""
MAX_ADVANCE_S = 1e9
"""The longest move forward in one advance (trace seconds, about 31 years)."""
VIRTUAL_EPOCH = datetime(2025, 7, 1, tzinfo=UTC)
"""Wall time of offset 0 in virtual time when a trace does not know its own."""
IDLE_TRACE = Trace(
    name="(idle)",
    scenario="idle",
    snapshots=(Snapshot(0.0, {"DocumentIncarnation": 1, "Events": []}),),
    origin="reference",
)


class Start(StrEnum):
    first_request = "first-request"
    """The replay clock starts at the first IMDS request, as the real service enables itself."""
    now = "now"
    virtual = "virtual"
    """Trace time moves only when told to (seek, step, advance)."""


class State(StrEnum):
    waiting = "waiting"
    running = "running"
    paused = "paused"
    virtual = "virtual"
    finished = "finished"


@dataclass(frozen=True, slots=True)
class Served:
    """A rendered answer: body bytes, its ETag and incarnation."""

    body: bytes
    etag: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class Pushed:
    """A transition as the ticker saw it: what became current, and how late the wake-up was."""

    session: str
    body: bytes
    at: datetime
    lateness_s: float
    message: bytes
    """What push clients receive: {"document": {...}, "at": "<ISO time>"}."""


def push_message(body: bytes, at: datetime) -> bytes:
    """{"document": {...}, "at": "<ISO time>"} without parsing the document again."""
    return b'{"document":' + body + b',"at":' + orjson.dumps(at.isoformat()) + b"}"


@dataclass
class SessionOptions:
    speed: float = 1.0
    loop: bool = False
    resources: tuple[str, ...] | None = None
    start: Start = Start.first_request
    approval_delay_s: float = 0.0
    """Trace seconds between an approval and the event's start."""
    recorded_approvals: bool = False
    """Play the approvals the capturing VM sent, instead of waiting for this client's."""
    first_incarnation: int | None = None


@dataclass
class Approved:
    event_id: str
    round: int
    offset_s: float


@dataclass
class Session:
    """One trace replaying for one client (or many), independent of every other session."""

    name: str
    trace: Trace
    clock: Clock
    options: SessionOptions = field(default_factory=SessionOptions)
    subscribers: set[Callable[[Pushed], None]] = field(default_factory=set)
    """Called with every new document the moment it becomes current (shared per session name)."""

    def __post_init__(self) -> None:
        if self.options.speed <= 0:
            raise ReplayError(f"speed must be positive, got {self.options.speed}")
        self.speed = self.options.speed
        self.duration_s = self.trace.duration_s
        self.looping = self.options.loop and self.duration_s > 0
        self._anchor_mono: float = self.clock.now()
        self._anchor_wall: datetime = self.clock.wall()
        self._anchor_pos = 0.0
        self.state = State.waiting
        self.approvals: deque[Approved] = deque(maxlen=APPROVALS_KEPT)
        self._round_approvals: dict[int, list[tuple[float, str, int]]] = {}
        self._batches = len(self.trace.approvals)  # recorded approvals are batches 0..n-1
        self._schedules: dict[int, Schedule] = {}
        self._settled: tuple[int, int] | None = None
        """(round, its last incarnation) of the newest round whose schedule was let go: what
        later rounds count from once that round's approvals are forgotten."""
        self._served_ids: dict[str, tuple[int, str]] = {}
        self._cache: dict[tuple[int, int, str], Served] = {}
        self._fast: tuple[float, str, Served] | None = None
        """(monotonic instant it stays current until, api-version, answer): the poll path's
        shortcut. Whatever clears _cache (re-anchoring, approvals) must drop it too."""
        self.documents: deque[bytes] = deque(maxlen=DOCUMENTS_KEPT)
        self._last_served: tuple[int, int] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._last_pushed: tuple[int, int] | None = None
        self.transitions_seen = 0
        self.faults: FaultPlan | None = None
        """A playbook of failures in trace-time windows, loaded by the user."""
        self.warm_until: float | None = None
        """Monotonic instant until which IMDS requests wait, like a service enabling itself."""
        self.fault_counts: Counter[str] = Counter()
        if self.options.start is Start.now:
            self._set_anchor(0.0, State.running)
        elif self.options.start is Start.virtual:
            self._set_anchor(0.0, State.virtual)

    # -- time ------------------------------------------------------------------------------
    def _set_anchor(self, pos: float, state: State) -> None:
        self._anchor_mono = self.clock.now()
        if state is State.virtual:
            # Virtual time is the trace's own: NotBefore shows as captured, the same every run.
            base = self.trace.started_at or VIRTUAL_EPOCH
            self._anchor_wall = base + timedelta(seconds=pos / self.speed)
        else:
            self._anchor_wall = self.clock.wall()
        self._anchor_pos = pos
        self.state = state
        self._cache.clear()
        self._fast = None
        self._reschedule()
        self._announce()

    def position(self, now: float | None = None) -> float:
        """Trace seconds since the session's start, across loop rounds."""
        if self.state is not State.running:
            return self._anchor_pos
        t = self.clock.now() if now is None else now
        pos = self._anchor_pos + (t - self._anchor_mono) * self.speed
        return pos if self.looping else min(pos, self.duration_s)

    def split(self, pos: float) -> tuple[int, float]:
        """(round, offset in the round) of a position."""
        if not self.looping:
            return 0, min(pos, self.duration_s)
        rnd = int(pos // self.duration_s)
        return rnd, pos - rnd * self.duration_s

    def wall_of(self, pos: float) -> datetime:
        """The wall time at which the replay reaches a position (trace seconds)."""
        return self._anchor_wall + timedelta(seconds=(pos - self._anchor_pos) / self.speed)

    def mono_of(self, pos: float) -> float:
        """The monotonic instant at which a running replay reaches a position."""
        return self._anchor_mono + (pos - self._anchor_pos) / self.speed

    def touch(self) -> None:
        """An IMDS request arrived: a session waiting for its first request starts now."""
        if self.state is State.waiting:
            self._set_anchor(0.0, State.running)

    def poll(self, version: str) -> Served:
        """An IMDS GET: touch(), then the current document (the server's hot path)."""
        fast = self._fast
        if fast is not None and self.clock.now() < fast[0] and fast[1] == version:
            return fast[2]  # _fast is only kept once started: touch() would do nothing
        self.touch()
        return self.current(version)

    # -- control ---------------------------------------------------------------------------
    def pause(self) -> None:
        if self.state is State.running:
            self._set_anchor(self.position(), State.paused)

    def resume(self) -> None:
        """Let trace time run again; a finished replay starts over from the beginning."""
        if self.state is State.finished:
            self._set_anchor(0.0, State.running)
        elif self.state in (State.paused, State.virtual, State.waiting):
            self._set_anchor(self._anchor_pos, State.running)

    def rebase(self) -> None:
        """Start a `now` session's clock again if nobody has polled it yet (server start-up)."""
        if self.options.start is Start.now and self.state is State.running and not self.documents:
            self._set_anchor(0.0, State.running)

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ReplayError(f"speed must be positive, got {speed}")
        pos = self.position()
        self.speed = speed
        self._set_anchor(pos, self.state)

    def seek(self, offset_s: float) -> None:
        """Move to an offset (trace seconds) of the current round."""
        if not 0 <= offset_s <= self.duration_s:
            raise ReplayError(
                f"offset {offset_s:g} s is outside the trace (0 to {self.duration_s:g} s)"
            )
        rnd, _ = self.split(self.position())
        pos = rnd * self.duration_s + offset_s
        moving = self.state in (State.waiting, State.finished)
        self._set_anchor(pos, State.running if moving else self.state)

    def next_transition(self) -> float | None:
        """Position (trace seconds, across rounds) of the next change of document."""
        pos = self.position()
        rnd, off = self.split(pos)
        nxt = self.schedule(rnd).next_offset_after(off)
        if nxt is not None and nxt <= self.duration_s:
            return rnd * self.duration_s + nxt
        # An approval near the end can schedule a change past it: the replay ends first.
        if self.looping:
            following = self.schedule(rnd + 1)
            later = following.next_offset_after(0.0)
            return (rnd + 1) * self.duration_s + later if later is not None else None
        return None

    def step(self) -> float | None:
        """Jump to the next transition; a waiting session becomes paused there."""
        nxt = self.next_transition()
        if nxt is None:
            return None
        state = State.paused if self.state is State.waiting else self.state
        self._set_anchor(nxt, state)
        return nxt

    def advance(self, seconds: float | None = None) -> float:
        """Move trace time forward by seconds, or to the next transition; return the position."""
        if seconds is None:
            return self.step() or self.position()
        if not 0 <= seconds <= MAX_ADVANCE_S:
            # Far beyond, positions lose their precision and incarnations their 64 bits.
            raise ReplayError(f"advance takes 0 to {MAX_ADVANCE_S:g} trace seconds at a time")
        pos = self.position() + seconds
        if not self.looping:
            pos = min(pos, self.duration_s)
        self._set_anchor(pos, State.paused if self.state is State.waiting else self.state)
        return pos

    # -- schedule and rendering ------------------------------------------------------------
    def schedule(self, rnd: int) -> Schedule:
        """The transitions of one round, with this round's approvals applied."""
        cached = self._schedules.get(rnd)
        if cached is not None:
            return cached
        first = self.options.first_incarnation
        if rnd > 0:
            first = self._last_incarnation(rnd - 1)
        built = self._build(self._round_approvals.get(rnd, ()), first)
        old = [r for r in self._schedules if r < rnd - 1]
        if old:
            self._settle(max(old))
        self._schedules[rnd] = built
        return built

    def _settle(self, rnd: int) -> None:
        """Let go of the schedules and approvals of round rnd and those before it: a replay only
        moves forward through its rounds, so a server looping for days keeps two rounds of
        them, not all."""
        self._settled = (rnd, self._schedules[rnd].transitions[-1].incarnation)
        for r in [r for r in self._schedules if r <= rnd]:
            del self._schedules[r]
        for r in [r for r in self._round_approvals if r <= rnd]:
            del self._round_approvals[r]

    def _build(self, approvals: Sequence[tuple[float, str, int]], first: int | None) -> Schedule:
        """A round's schedule from its own approvals (and the recorded ones, if played)."""
        own = bool(approvals)
        approvals = list(approvals)
        if self.options.recorded_approvals:
            recorded = enumerate(self.trace.approvals)
            approvals += [(a.offset_s, e, batch) for batch, a in recorded for e in a.event_ids]
        key = (id(self.trace), tuple(approvals), self.options.approval_delay_s, first)
        shared = None if own else _SHARED_SCHEDULES.get(key)
        if shared is not None and shared[0] is self.trace:
            return shared[1]
        built = build_schedule(
            self.trace, approvals, delay_s=self.options.approval_delay_s, first_incarnation=first
        )
        if own:
            return built
        if len(_SHARED_SCHEDULES) >= SHARED_SCHEDULES_MAX:
            del _SHARED_SCHEDULES[next(iter(_SHARED_SCHEDULES))]  # the oldest
        _SHARED_SCHEDULES[key] = (self.trace, built)
        return built

    def _last_incarnation(self, rnd: int) -> int:
        """The last incarnation of a round, without building (or recursing through) every round
        before it: a round without approvals of its own adds the same count as any other."""
        below = [r for r in self._schedules if r <= rnd]
        last: int | None = None
        if below:
            base = max(below)
        elif self._settled is not None and self._settled[0] <= rnd:
            base, last = self._settled
        else:
            base = 0
        if any(base < r <= rnd for r in self._round_approvals):
            for r in range(base + 1, rnd + 1):
                self.schedule(r)
            base, last = rnd, None
        if last is None:
            last = self.schedule(base).transitions[-1].incarnation
        if base == rnd:
            return last
        plain = self._build((), None).transitions
        return last + (rnd - base) * (plain[-1].incarnation - plain[0].incarnation)

    def event_id(self, rnd: int, original: str) -> str:
        """The EventId served in a round: the trace's own in round 0, fresh ones after."""
        served = original if rnd == 0 else _round_event_id(self.trace.name, rnd, original)
        ids = self._served_ids
        if served not in ids:
            ids[served] = (rnd, original)
            if len(ids) > SERVED_IDS_KEPT:
                del ids[next(iter(ids))]  # the first served of them
        return served

    def _state_key(self) -> tuple[int, int]:
        """(round, transition index) of the document current now."""
        rnd, off = self.split(self.position())
        return rnd, self.schedule(rnd).index_at(off)

    def current(self, version: str, *, record: bool = True) -> Served:
        """The document a client of this api-version sees now (cached per state)."""
        fast = self._fast
        if fast is not None and self.clock.now() < fast[0] and fast[1] == version:
            return fast[2]  # nothing changes before fast[0]: the answer of the last poll stands
        now = self.clock.now()
        rnd, off = self.split(self.position(now))
        sched = self.schedule(rnd)
        index = sched.index_at(off)
        key = (rnd, index, version)
        served = self._cache.get(key)
        if served is None:
            if self._cache and next(iter(self._cache))[0] != rnd:
                self._cache.clear()
            served = self._render(rnd, sched.transitions[index], version)
            self._cache[key] = served
        if record and self._last_served != (rnd, index):
            self._last_served = (rnd, index)
            self.documents.append(served.body)
        keep = self._last_served == (rnd, index) and self.state is not State.waiting
        self._fast = (self._current_until(rnd, off, sched), version, served) if keep else None
        return served

    def _current_until(self, rnd: int, off: float, sched: Schedule) -> float:
        """Monotonic instant at which the document at (round, offset) stops being current."""
        if self.state is not State.running:
            return math.inf  # only re-anchoring moves a stopped replay, and that drops _fast
        nxt = sched.next_offset_after(off)
        if self.looping:
            nxt = self.duration_s if nxt is None else min(nxt, self.duration_s)
        elif nxt is None:
            return math.inf
        return self.mono_of(rnd * self.duration_s + nxt)

    def _render(self, rnd: int, transition: Transition, version: str) -> Served:
        base = rnd * self.duration_s
        body = render(
            transition,
            version,
            event_id=lambda eid: self.event_id(rnd, eid),
            wall_of=lambda offset: self.wall_of(base + offset),
            resources=self.options.resources,
        )
        return Served(
            body, f'"{transition.incarnation}-{zlib.crc32(body):08x}"', transition.incarnation
        )

    def approve(self, event_ids: Sequence[str]) -> list[str]:
        """Approve served EventIds; return the unknown ones (then nothing is approved)."""
        self.current("2020-07-01")  # make sure every id served so far is known
        unknown = [e for e in event_ids if e not in self._served_ids]
        if unknown:
            return unknown
        pos = self.position()
        rnd, off = self.split(pos)
        changed = False
        for served in event_ids:
            event_rnd, original = self._served_ids[served]
            if event_rnd != rnd:
                continue  # a finished round: that event is long gone
            before = self.schedule(rnd)
            state = before.state_of(original, off)
            if state is None or state.status != "Scheduled":
                continue  # already Started or not shown: approving again changes nothing
            self._round_approvals.setdefault(rnd, []).append((off, original, self._batches))
            self.approvals.append(Approved(served, rnd, off))
            log.info(
                "%s",
                orjson.dumps(
                    {"event": "approval", "session": self.name, "event_id": served, "offset_s": off}
                ).decode(),
            )
            self._schedules.pop(rnd, None)
            changed = True
        self._batches += 1
        if changed:
            for later in [r for r in self._schedules if r > rnd]:
                del self._schedules[later]
            self._cache.clear()
            self._fast = None
            self._reschedule()
            self._announce()
        return []

    # -- the ticker: logs and pushes each transition on time ----------------------------------
    def _reschedule(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self.state is not State.running:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # started again by the server when its loop runs
        self._ticker = loop.create_task(self._tick(), name=f"ticker:{self.name}")

    def start_ticker(self) -> None:
        """Start the transition timer (called once the event loop runs)."""
        if self._ticker is None:
            self._reschedule()

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _tick(self) -> None:
        while self.state is State.running:
            nxt = self.next_transition()
            if nxt is None:
                self._announce()  # the end came while this ticker was late: push it still
                self.state = State.finished
                self._anchor_pos = self.duration_s
                return
            deadline = self.mono_of(nxt)
            self._prepare(nxt)
            if self.subscribers:  # somebody waits for this push: no wake-up latency
                await self.clock.sleep_until(deadline - SPIN_S)
                await self.clock.spin_until(deadline)
            else:
                await self.clock.sleep_until(deadline)
            self.transitions_seen += 1
            self._announce(deadline)

    def _prepare(self, pos: float) -> None:
        """Before a transition's deadline, do the pure work its document needs: the schedule
        of its round and, in later rounds, the fresh EventIds (0.1-0.2 ms that would else
        come between the deadline and the push)."""
        rnd, off = self.split(pos)
        sched = self.schedule(rnd)
        if rnd:
            for state in sched.transitions[sched.index_at(off)].events:
                _round_event_id(self.trace.name, rnd, state.event_id)

    def _announce(self, deadline: float | None = None) -> None:
        """Push and log the current document if it is new (deadline: when it became current)."""
        key = self._state_key()
        if key == self._last_pushed:
            return
        self._last_pushed = key
        served = self.current("2020-07-01", record=False)
        lateness = 0.0 if deadline is None else self.clock.now() - deadline
        if self.subscribers:
            at = self.wall_of(self.position()) if deadline is None else self.wall_of_mono(deadline)
            pushed = Pushed(self.name, served.body, at, lateness, push_message(served.body, at))
            for subscriber in list(self.subscribers):
                subscriber(pushed)
        if log.isEnabledFor(logging.INFO):  # thousands of sessions: no JSON nobody logs
            log.info(
                "%s",
                orjson.dumps(
                    {
                        "event": "transition",
                        "session": self.name,
                        "offset_s": self.split(self.position())[1],
                        "incarnation": served.incarnation,
                        "lateness_ms": round(lateness * 1000, 3),
                    }
                ).decode(),
            )

    def message_now(self) -> bytes:
        """The push message of the current document (what a new subscriber gets first)."""
        served = self.current("2020-07-01", record=False)
        return push_message(served.body, self.wall_of(self.position()))

    def wall_of_mono(self, t: float) -> datetime:
        """The wall time of a monotonic instant, on this session's anchor."""
        return self._anchor_wall + timedelta(seconds=t - self._anchor_mono)

    # -- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Everything a control client needs to know about the session, as JSON values."""
        pos = self.position()
        rnd, off = self.split(pos)
        served = self.current("2020-07-01")
        nxt = self.next_transition()
        next_info = None
        if nxt is not None:
            next_info = {
                "offset_s": self.split(nxt)[1],
                "round": self.split(nxt)[0],
                "in_s": (nxt - pos) / self.speed if self.state is State.running else None,
                "at": self.wall_of(nxt).isoformat() if self.state is State.running else None,
            }
        return {
            "name": self.name,
            "trace": self.trace.name,
            "scenario": self.trace.scenario,
            "origin": self.trace.origin,
            "state": self.state.value,
            "speed": self.speed,
            "loop": self.looping,
            "round": rnd,
            "position_s": off,
            "duration_s": self.duration_s,
            "wall_duration_s": self.duration_s / self.speed,
            "incarnation": served.incarnation,
            "next_transition": next_info,
            "resources": list(self.options.resources) if self.options.resources else None,
            "approvals": [
                {"event_id": a.event_id, "round": a.round, "offset_s": a.offset_s}
                for a in self.approvals
            ],
            "document": orjson.loads(served.body),
            "faults": {
                "windows": len(self.faults.windows) if self.faults else 0,
                "injected": dict(self.fault_counts),
            },
        }

    def draw_fault(self) -> FaultWindow | None:
        """The playbook's fault for a request now (by trace offset), counted and logged."""
        if self.faults is None:
            return None
        offset = self.split(self.position())[1]
        window = self.faults.draw(offset)
        if window is not None:
            self.count_fault(window.describe(), offset)
        return window

    def count_fault(self, kind: str, offset_s: float | None = None) -> None:
        """Count an injected failure in the status and log it as a JSON line."""
        self.fault_counts[kind] += 1
        line = {"event": "fault", "session": self.name, "fault": kind, "offset_s": offset_s}
        log.info("%s", orjson.dumps(line).decode())
