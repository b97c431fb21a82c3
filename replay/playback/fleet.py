"""A running fleet: one anchor for every VM, each group's rollout on it, approvals shared.

The fleet keeps one anchor (replay.playback.anchored): pause, seek, step, advance and speed move
every VM at once. A fleet round is as long as its longest group; a shorter group holds its
last (empty) document until the round ends, and a looping fleet starts every group again
together. A polled document is computed from the anchor at request time, as a Session does;
the ticker only pushes.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from replay.clock import Clock
from replay.core.faults import FaultWindow, RateLimiter
from replay.core.fleet import FleetPlan
from replay.core.imds import LATEST_VERSION, render
from replay.core.schedule import Transition
from replay.errors import ReplayError
from replay.playback.anchor import Start, State
from replay.playback.anchored import Anchored
from replay.playback.fleet_members import NO_GROUP, GroupReplay, Listener, Timeline, VmReplay
from replay.playback.rounds import RoundOptions, ScheduleCache
from replay.playback.session import APPROVALS_KEPT, Served, this_round
from replay.playback.ticker import Pushed, Ticker, log_line, push_message


@dataclass
class FleetOptions:
    speed: float = 1.0
    loop: bool = False
    start: Start = Start.first_request
    approval_delay_s: float = 0.0
    """Trace seconds between an approval and the event's start."""
    recorded_approvals: bool = False
    """Play the capture's own approvals in every fault domain's wave."""
    rate_limit: int | None = None
    """IMDS requests per second per VM; more get 429 (off when None)."""
    faults: Sequence[FaultWindow] | None = None
    """The fault playbook of every VM the fleet file gives none (each VM draws its own)."""
    fault_seed: int = 0
    warm_up_s: float = 0.0
    """Wall seconds from the fleet's start during which each VM's requests are held."""


@dataclass(frozen=True, slots=True)
class FleetApproval:
    """A POST that started events: who sent it, and where the fleet was."""

    vm: str
    group: str
    event_id: str
    round: int
    offset_s: float


class Fleet(Anchored):
    """Every VM of a fleet file, replayed on one anchor."""

    noun = "fleet"
    status_version = LATEST_VERSION
    """The api-version that status and push see documents in."""

    def __init__(
        self,
        plan: FleetPlan,
        clock: Clock,
        options: FleetOptions | None = None,
        listeners: dict[str, set[Listener]] | None = None,
        watchers: set[Listener] | None = None,
    ) -> None:
        self.options = options = options or FleetOptions()
        if options.speed <= 0:
            raise ReplayError(f"speed must be positive, got {options.speed}")
        self.name = plan.source
        self.plan = plan
        self.clock = clock
        self.speed = options.speed
        per_group = RoundOptions(options.approval_delay_s, options.recorded_approvals)
        cache = ScheduleCache()
        self.groups = {g.group: GroupReplay(g, per_group, cache) for g in plan.groups}
        self.timelines: list[Timeline] = [t for g in self.groups.values() for t in g.distinct()]
        self.duration_s = max(g.duration_s for g in self.groups.values())
        self.looping = options.loop and self.duration_s > 0
        self.listeners = {} if listeners is None else listeners
        """Push listeners by VM name (a server's host keeps them across fleets)."""
        self.vms: dict[str, VmReplay] = {}
        self.by_address: dict[str, VmReplay] = {}
        for identity in plan.identities:
            group = self.groups[identity.group]
            timeline = group.timelines[identity.name]
            heard = self.listeners.setdefault(identity.name, set())
            vm = VmReplay(identity, group, timeline, heard)
            vm.set_faults(plan.faults.get(vm.name, options.faults), options.fault_seed)
            if options.warm_up_s > 0:
                vm.warm_until = clock.now() + options.warm_up_s
            timeline.vms.append(vm)
            self.vms[vm.name] = vm
            self.by_address[identity.address] = vm
        self.watchers = set() if watchers is None else watchers
        """Listeners of the whole fleet (a server's host keeps them across fleets): each gets
        watch_message() whenever a document changes or the anchor moves."""
        self.subscribers: set[Listener] = set(self.watchers).union(
            *(vm.listeners for vm in self.vms.values())
        )
        """Every listener: the ticker stays awake before a transition when any exist."""
        self.approvals: deque[FleetApproval] = deque(maxlen=APPROVALS_KEPT)
        self.rate_limiter = RateLimiter(options.rate_limit) if options.rate_limit else None
        self.ticker = Ticker(self, "fleet")
        self._polled = False
        self._moved = False
        """The anchor moved since the watchers were last told."""
        self.start_anchor(options.start)

    # -- what the anchor asks of a replay ------------------------------------------------------
    def _forget(self) -> None:
        self._moved = True
        for timeline in self.timelines:
            timeline.forget()

    def _next_offset(self, rnd: int, off: float) -> float | None:
        found = [
            nxt
            for timeline in self.timelines
            if (nxt := timeline.schedule(rnd).next_offset_after(off)) is not None
        ]
        return min(found) if found else None

    @property
    def virtual_start(self) -> datetime | None:
        return self.plan.groups[0].started_at

    @property
    def served_any(self) -> bool:
        return self._polled

    # -- documents -------------------------------------------------------------------------
    def served(
        self, timeline: Timeline, version: str, pos: float | None = None
    ) -> tuple[Served, int, int]:
        """A timeline's document for an api-version now (or at a position), with its
        (round, index)."""
        rnd, off = self.split(self.position() if pos is None else pos)
        sched = timeline.schedule(rnd)
        index = sched.index_at(off)
        key = (rnd, index, version)
        transition = sched.transitions[index]
        served = this_round(
            timeline.rendered, key, self._render, timeline, rnd, transition, version
        )
        return served, rnd, index

    def current(self, vm: VmReplay, version: str) -> Served:
        """What a VM would see now (not counted as served)."""
        return NO_GROUP if vm.timeline is None else self.served(vm.timeline, version)[0]

    def poll(self, vm: VmReplay, version: str) -> Served:
        """An IMDS GET from a VM: touch(), then its current document, counted as served."""
        vm.polls += 1
        fast = vm.fast
        if fast is not None and self.clock.now() < fast[0] and fast[1] == version:
            return fast[2]
        self.touch()
        self._polled = True
        timeline = vm.timeline
        if timeline is None:
            return NO_GROUP
        served, rnd, index = self.served(timeline, version)
        if vm.last_served != (rnd, index):
            vm.last_served = (rnd, index)
            if not vm.documents or vm.documents[-1] != served.body:
                vm.documents.append(served.body)
        if self.state is not State.waiting:
            vm.fast = (self.until(timeline.schedule(rnd).offsets, rnd, index), version, served)
        return served

    def _render(self, timeline: Timeline, rnd: int, transition: Transition, version: str) -> Served:
        base = rnd * self.duration_s
        rounds = timeline.rounds
        body = render(
            transition,
            version,
            event_id=lambda eid: rounds.event_id(rnd, eid),
            wall_of=lambda offset: self.wall_of(base + offset),
            resources=None,
        )
        etag = f'"{transition.incarnation}-{_crc(body)}"'
        return Served(body, etag, transition.incarnation)

    def approve(self, vm: VmReplay, event_ids: Sequence[str]) -> list[str]:
        """A VM approves EventIds for its whole group; returns the ones it cannot see (then
        nothing is approved). Approving again, or an event already gone, changes nothing."""
        group, own = vm.group, vm.timeline
        if group is None or own is None:
            return list(event_ids)
        self.served(own, LATEST_VERSION)  # every EventId shown so far is known
        unknown = [e for e in event_ids if e not in own.rounds.served_ids]
        if unknown:
            return unknown
        rnd, off = self.split(self.position())
        changed: set[int] = set()
        for served in event_ids:
            event_rnd, original = own.rounds.served_ids[served]
            if event_rnd != rnd:
                continue  # a finished round: that event is long gone
            started = [t for t in group.distinct() if t.rounds.approve(rnd, off, original)]
            if started:
                changed.update(id(t) for t in started)
                self.approvals.append(FleetApproval(vm.name, group.name, served, rnd, off))
                log_line(event="approval", vm=vm.name, group=group.name, event_id=served)
        for timeline in group.distinct():
            timeline.rounds.end_batch(rnd if id(timeline) in changed else None)
            if id(timeline) in changed:
                timeline.forget()
        if changed:
            vm.approvals += 1
            self.ticker.restart()
            self.announce()
        return []

    # -- what the ticker drives --------------------------------------------------------------
    def prepare(self, pos: float) -> None:
        """Before a transition's deadline, build every group's schedule of its round."""
        rnd, _ = self.split(pos)
        for timeline in self.timelines:
            timeline.schedule(rnd)

    def announce(self, deadline: float | None = None, at_s: float | None = None) -> None:
        """Push each timeline whose document changed to its VMs' listeners, and log it
        (deadline: when it became current; at_s: its position, so that float rounding of now
        cannot leave it unannounced)."""
        pos = self.position() if at_s is None else max(self.position(), at_s)
        lateness = 0.0 if deadline is None else self.clock.now() - deadline
        at = self.wall_of(pos) if deadline is None else self.anchor.wall_of_mono(deadline)
        changed: list[tuple[Timeline, Served]] = []
        for timeline in self.timelines:
            served = self.served(timeline, self.status_version, pos)[0]
            if timeline.last_pushed == served.incarnation:
                continue
            timeline.last_pushed = served.incarnation
            changed.append((timeline, served))
            if any(vm.listeners for vm in timeline.vms):
                message = push_message(served.body, at)
                for vm in timeline.vms:
                    if vm.listeners:
                        pushed = Pushed(vm.name, served.body, at, lateness, message)
                        for listener in list(vm.listeners):
                            listener(pushed)
            log_line(
                event="transition",
                group=timeline.group,
                vms=len(timeline.vms),
                offset_s=self.split(pos)[1],
                incarnation=served.incarnation,
                lateness_ms=round(lateness * 1000, 3),
            )
        if self.watchers and (changed or self._moved):  # no message is built for nobody
            self._moved = False
            self.tell(self.watch_message(changed, at, pos), at, lateness)

    def finish(self) -> None:
        """The fleet reached its end: hold the last documents, and tell the watchers."""
        super().finish()
        if self.watchers:
            self.tell(self.watch_message([], self.anchor.wall, self.duration_s), self.anchor.wall)

    # -- the whole fleet's stream -----------------------------------------------------------
    def tell(self, message: bytes, at: datetime, lateness_s: float = 0.0) -> None:
        """Give the fleet's watchers a message."""
        if self.watchers:
            pushed = Pushed("fleet", message, at, lateness_s, message)
            for watcher in list(self.watchers):
                watcher(pushed)

    def watch_message(
        self, changed: Sequence[tuple[Timeline, Served]], at: datetime, pos: float | None = None
    ) -> bytes:
        """{"fleet", "state", "speed", "round", "position_s", "at", "documents": [{"group",
        "vms", "document"}]}: where the fleet is, and the documents that changed (with the VMs
        that see each)."""
        rnd, off = self.split(self.position() if pos is None else pos)
        head = orjson.dumps(
            {
                "fleet": self.name,
                "state": self.state.value,
                "speed": self.speed,
                "round": rnd,
                "position_s": off,
                "at": at.isoformat(),
            }
        )
        documents = b",".join(
            b'{"group":%b,"vms":%b,"document":%b}'
            % (orjson.dumps(t.group), orjson.dumps([vm.name for vm in t.vms]), served.body)
            for t, served in changed
        )
        return head[:-1] + b',"documents":[' + documents + b"]}"

    def watch_now(self) -> bytes:
        """What a new watcher gets first: where the fleet is, and every current document."""
        pos = self.position()
        current = [(t, self.served(t, self.status_version, pos)[0]) for t in self.timelines]
        return self.watch_message(current, self.wall_of(pos), pos)

    def set_faults(self, windows: Sequence[FaultWindow] | None, seed: int = 0) -> None:
        """Give every VM the playbook (each its own draws); None or empty: no faults."""
        for vm in self.vms.values():
            vm.set_faults(windows, seed)

    def draw_fault(self, vm: VmReplay) -> FaultWindow | None:
        """A VM's playbook fault for a request now (windows are in the fleet's trace time)."""
        return vm.draw_fault(self.split(self.position())[1])

    def message_now(self, vm: VmReplay) -> bytes:
        """The push message of a VM's current document (what a new subscriber gets first)."""
        served = self.current(vm, self.status_version)
        return push_message(served.body, self.wall_of(self.position()))


def _crc(body: bytes) -> str:
    return f"{zlib.crc32(body):08x}"
