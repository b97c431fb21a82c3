"""A replay session: a trace played at a speed through one anchor, with approvals and loops.

Session keeps the anchor (replay.playback.anchor), answers IMDS polls and takes the control
verbs. A polled document is computed from the anchor at request time; its rounds' schedules
live in replay.playback.rounds and its timer in replay.playback.ticker.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from replay.clock import Clock
from replay.core.faults import FaultPlan, FaultWindow
from replay.core.imds import LATEST_VERSION, render
from replay.core.instance import InstanceIdentity, identity_for, vm_name
from replay.core.schedule import Schedule, Transition
from replay.core.timeline import Snapshot, Trace
from replay.errors import ReplayError
from replay.playback.anchor import VIRTUAL_EPOCH, Anchor, Start, State
from replay.playback.rounds import RoundOptions, Rounds, ScheduleCache, round_event_id
from replay.playback.ticker import Pushed, Ticker, log_line, logging_on, push_message

APPROVALS_KEPT = 256
"""The approvals a session lists in its status (the newest)."""
DOCUMENTS_KEPT = 256
"""The served documents a session remembers (GET .../documents): a test's whole story, while
a server left looping for days stays the same size."""
MAX_ADVANCE_S = 1e9
"""The longest move forward in one advance (trace seconds, about 31 years)."""
IDLE_TRACE = Trace(
    name="(idle)",
    scenario="idle",
    snapshots=(Snapshot(0.0, {"DocumentIncarnation": 1, "Events": []}),),
    origin="reference",
)


@dataclass(frozen=True, slots=True)
class Served:
    """A rendered answer: body bytes, its ETag and incarnation."""

    body: bytes
    etag: str
    incarnation: int


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
    identity: InstanceIdentity | None = None
    """Who the VM is in /metadata/instance; derived from the name the events use if None."""


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
    schedules: ScheduleCache = field(default_factory=ScheduleCache)
    """Schedules shared with other sessions (the registry's)."""

    status_version = LATEST_VERSION
    """The api-version that status, push and the page see documents in."""

    def __post_init__(self) -> None:
        if self.options.speed <= 0:
            raise ReplayError(f"speed must be positive, got {self.options.speed}")
        self.speed = self.options.speed
        self.duration_s = self.trace.duration_s
        self.looping = self.options.loop and self.duration_s > 0
        self.anchor = Anchor(self.clock.now(), self.clock.wall(), 0.0, self.speed, False)
        self.state = State.waiting
        self.approvals: deque[Approved] = deque(maxlen=APPROVALS_KEPT)
        options = self.options
        self.rounds = Rounds(
            self.trace,
            RoundOptions(
                options.approval_delay_s, options.recorded_approvals, options.first_incarnation
            ),
            self.schedules,
        )
        self._cache: dict[tuple[int, int, str], Served] = {}
        self._fast: tuple[float, str, Served] | None = None
        """(monotonic instant it stays current until, api-version, answer): the poll path's
        shortcut. Whatever clears _cache (re-anchoring, approvals) must drop it too."""
        self.documents: deque[bytes] = deque(maxlen=DOCUMENTS_KEPT)
        """The documents IMDS clients were served, each distinct state once, in order."""
        self._last_served: tuple[int, int] | None = None
        self._last_pushed: tuple[int, int] | None = None
        self.ticker = Ticker(self, self.name)
        self.faults: FaultPlan | None = None
        """A playbook of failures in trace-time windows, loaded by the user."""
        self.warm_until: float | None = None
        """Monotonic instant until which IMDS requests wait, like a service enabling itself."""
        self.fault_counts: Counter[str] = Counter()
        if self.options.start is Start.now:
            self._set_anchor(0.0, State.running)
        elif self.options.start is Start.virtual:
            self._set_anchor(0.0, State.virtual)

    @functools.cached_property
    def identity(self) -> InstanceIdentity:
        """Who the VM is in /metadata/instance, made on first use (most sessions never ask)."""
        vm = vm_name(self.options.resources, self.trace)
        return self.options.identity or identity_for(vm, seed=f"{self.trace.name}/{self.name}")

    # -- time ------------------------------------------------------------------------------
    def _set_anchor(self, pos: float, state: State) -> None:
        now = self.clock.now()
        if state is State.virtual:
            # Virtual time is the trace's own: NotBefore shows as captured, the same every run.
            base = self.trace.started_at or VIRTUAL_EPOCH
            wall = base + timedelta(seconds=pos / self.speed)
        else:
            wall = self.clock.wall()
        self.anchor = Anchor(now, wall, pos, self.speed, state is State.running)
        self.state = state
        self._cache.clear()
        self._fast = None
        self.ticker.restart()
        self.announce()

    def position(self, now: float | None = None) -> float:
        """Trace seconds since the session's start, across loop rounds."""
        pos = self.anchor.position(self.clock.now() if now is None else now)
        return pos if self.looping else min(pos, self.duration_s)

    def split(self, pos: float) -> tuple[int, float]:
        """(round, offset in the round) of a position."""
        if not self.looping:
            return 0, min(pos, self.duration_s)
        rnd = int(pos // self.duration_s)
        return rnd, pos - rnd * self.duration_s

    def wall_of(self, pos: float) -> datetime:
        """The wall time at which the replay reaches a position (trace seconds)."""
        return self.anchor.wall_of(pos)

    def mono_of(self, pos: float) -> float:
        """The monotonic instant at which a running replay reaches a position."""
        return self.anchor.mono_of(pos)

    def touch(self) -> None:
        """An IMDS request arrived: a session waiting for its first request starts now."""
        if self.state is State.waiting:
            self._set_anchor(0.0, State.running)

    def poll(self, version: str) -> Served:
        """An IMDS GET: touch(), then the current document, counted as served."""
        fast = self._fast
        if fast is not None and self.clock.now() < fast[0] and fast[1] == version:
            return fast[2]  # _fast is only kept once served and started: nothing to record
        self.touch()
        served, rnd, index = self._current(version)
        if self._last_served != (rnd, index):
            self._last_served = (rnd, index)
            self.documents.append(served.body)
        if self.state is not State.waiting:
            self._fast = (self._current_until(rnd, index), version, served)
        return served

    # -- control ---------------------------------------------------------------------------
    def pause(self) -> None:
        if self.state is State.running:
            self._set_anchor(self.position(), State.paused)

    def resume(self) -> None:
        """Let trace time run again; a finished replay starts over from the beginning."""
        if self.state is State.finished:
            self._set_anchor(0.0, State.running)
        elif self.state in (State.paused, State.virtual, State.waiting):
            self._set_anchor(self.anchor.pos, State.running)

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

    def next_transition(self, after_s: float | None = None) -> float | None:
        """Position (trace seconds, across rounds) of the next change of document."""
        pos = self.position()
        rnd, off = self.split(pos if after_s is None else max(pos, after_s))
        nxt = self.schedule(rnd).next_offset_after(off)
        if nxt is not None and nxt <= self.duration_s:
            return rnd * self.duration_s + nxt
        # An approval near the end can schedule a change past it: the replay ends first.
        if self.looping:
            later = self.schedule(rnd + 1).next_offset_after(0.0)
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

    def approve(self, event_ids: Sequence[str]) -> list[str]:
        """Approve served EventIds; return the unknown ones (then nothing is approved)."""
        self.current(LATEST_VERSION)  # make sure every id served so far is known
        unknown = [e for e in event_ids if e not in self.rounds.served_ids]
        if unknown:
            return unknown
        rnd, off = self.split(self.position())
        changed = False
        for served in event_ids:
            event_rnd, original = self.rounds.served_ids[served]
            if event_rnd != rnd:
                continue  # a finished round: that event is long gone
            if self.rounds.approve(rnd, off, original):
                self.approvals.append(Approved(served, rnd, off))
                log_line(event="approval", session=self.name, event_id=served, offset_s=off)
                changed = True
        self.rounds.end_batch(rnd if changed else None)
        if changed:
            self._cache.clear()
            self._fast = None
            self.ticker.restart()
            self.announce()
        return []

    # -- documents -------------------------------------------------------------------------
    def schedule(self, rnd: int) -> Schedule:
        """The transitions of one round, with this round's approvals applied."""
        return self.rounds.schedule(rnd)

    def current(self, version: str) -> Served:
        """The document a client of this api-version would see now (not counted as served)."""
        fast = self._fast
        if fast is not None and self.clock.now() < fast[0] and fast[1] == version:
            return fast[2]  # nothing changes before fast[0]: the answer of the last poll stands
        return self._current(version)[0]

    def _current(self, version: str, pos: float | None = None) -> tuple[Served, int, int]:
        rnd, off = self.split(self.position() if pos is None else pos)
        sched = self.schedule(rnd)
        index = sched.index_at(off)
        key = (rnd, index, version)
        served = self._cache.get(key)
        if served is None:
            if self._cache and next(iter(self._cache))[0] != rnd:
                self._cache.clear()
            served = self._render(rnd, sched.transitions[index], version)
            self._cache[key] = served
        return served, rnd, index

    def _current_until(self, rnd: int, index: int) -> float:
        """Monotonic instant at which transition index of round rnd stops being current."""
        if self.state is not State.running:
            return math.inf  # only re-anchoring moves a stopped replay, and that drops _fast
        offsets = self.schedule(rnd).offsets
        nxt = offsets[index + 1] if index + 1 < len(offsets) else None
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
            event_id=lambda eid: self.rounds.event_id(rnd, eid),
            wall_of=lambda offset: self.wall_of(base + offset),
            resources=self.options.resources,
        )
        return Served(
            body, f'"{transition.incarnation}-{zlib.crc32(body):08x}"', transition.incarnation
        )

    # -- what the ticker drives --------------------------------------------------------------
    def start_ticker(self) -> None:
        """Start the transition timer (called once the event loop runs)."""
        if not self.ticker.running:
            self.ticker.restart()

    def stop(self) -> None:
        self.ticker.stop()

    def finish(self) -> None:
        """The replay reached its end: hold the last document."""
        self.state = State.finished
        self.anchor = Anchor(
            self.clock.now(), self.wall_of(self.duration_s), self.duration_s, self.speed, False
        )

    def prepare(self, pos: float) -> None:
        """Before a transition's deadline, do the pure work its document needs: the schedule
        of its round and, in later rounds, the fresh EventIds (0.1-0.2 ms that would else
        come between the deadline and the push)."""
        rnd, off = self.split(pos)
        sched = self.schedule(rnd)
        if rnd:
            for state in sched.transitions[sched.index_at(off)].events:
                round_event_id(self.trace.name, rnd, state.event_id)

    def announce(self, deadline: float | None = None, at_s: float | None = None) -> None:
        """Push and log the current document if it is new (deadline: when it became current;
        at_s: its position, so that float rounding of now cannot leave it unannounced)."""
        pos = self.position() if at_s is None else max(self.position(), at_s)
        served, rnd, index = self._current(self.status_version, pos)
        if (rnd, index) == self._last_pushed:
            return
        self._last_pushed = (rnd, index)
        lateness = 0.0 if deadline is None else self.clock.now() - deadline
        if self.subscribers:
            at = self.wall_of(pos) if deadline is None else self.anchor.wall_of_mono(deadline)
            pushed = Pushed(self.name, served.body, at, lateness, push_message(served.body, at))
            for subscriber in list(self.subscribers):
                subscriber(pushed)
        if logging_on():
            log_line(
                event="transition",
                session=self.name,
                offset_s=self.split(pos)[1],
                incarnation=served.incarnation,
                lateness_ms=round(lateness * 1000, 3),
            )

    def message_now(self) -> bytes:
        """The push message of the current document (what a new subscriber gets first)."""
        served = self.current(self.status_version)
        return push_message(served.body, self.wall_of(self.position()))

    # -- failures on request -----------------------------------------------------------------
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
        log_line(event="fault", session=self.name, fault=kind, offset_s=offset_s)
