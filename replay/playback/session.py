"""A replay session: a trace played at a speed through one anchor, with approvals and loops.

Session answers IMDS polls and approvals; its anchor and the control verbs that move it are
Anchored's (replay.playback.anchored, shared with the fleet). A polled document is computed
from the anchor at request time; its rounds' schedules live in replay.playback.rounds and its
timer in replay.playback.ticker.
"""

from __future__ import annotations

import functools
import zlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from replay.clock import Clock
from replay.core.faults import FaultPlan, FaultWindow
from replay.core.imds import LATEST_VERSION, render
from replay.core.instance import InstanceIdentity, identity_for, vm_name
from replay.core.schedule import Schedule, Transition
from replay.core.timeline import Snapshot, Trace
from replay.errors import ReplayError
from replay.playback.anchor import Start, State
from replay.playback.anchored import Anchored
from replay.playback.rounds import RoundOptions, Rounds, ScheduleCache, round_event_id
from replay.playback.ticker import Pushed, Ticker, log_line, logging_on, push_message

APPROVALS_KEPT = 256
"""The approvals a session lists in its status (the newest)."""
DOCUMENTS_KEPT = 256
"""The served documents a session remembers (GET .../documents): a test's whole story, while
a server left looping for days stays the same size."""
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


def this_round(
    cache: dict[tuple[int, int, str], Served],
    key: tuple[int, int, str],
    render: Callable[..., Served],
    *args: object,
) -> Served:
    """The document cached under (round, transition index, api-version), rendered on a miss;
    a new round drops the previous round's documents."""
    served = cache.get(key)
    if served is None:
        if cache and next(iter(cache))[0] != key[0]:
            cache.clear()
        served = cache[key] = render(*args)
    return served


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
class Session(Anchored):
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
        self.start_anchor(self.options.start)

    @functools.cached_property
    def identity(self) -> InstanceIdentity:
        """Who the VM is in /metadata/instance, made on first use (most sessions never ask)."""
        vm = vm_name(self.options.resources, self.trace)
        return self.options.identity or identity_for(vm, seed=f"{self.trace.name}/{self.name}")

    # -- what Anchored asks of a session ---------------------------------------------------
    def _forget(self) -> None:
        self._cache.clear()
        self._fast = None

    def _next_offset(self, rnd: int, off: float) -> float | None:
        return self.schedule(rnd).next_offset_after(off)

    @property
    def virtual_start(self) -> datetime | None:
        return self.trace.started_at

    @property
    def served_any(self) -> bool:
        return bool(self.documents)

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

    # -- control (pause, resume, seek, step, advance, set_speed: Anchored's) ------------
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
        transition = sched.transitions[index]
        return this_round(self._cache, key, self._render, rnd, transition, version), rnd, index

    def _current_until(self, rnd: int, index: int) -> float:
        """Monotonic instant at which transition index of round rnd stops being current."""
        return self.until(self.schedule(rnd).offsets, rnd, index)

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
