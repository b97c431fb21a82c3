"""A server's fleet slot: the fleet it plays, if any, push listeners by VM name, and the
watchers of the whole fleet.

Listeners outlive a fleet: loading another fleet (control API) hands a VM's subscribers to the
new fleet's VM of the same name, as a session's subscribers outlive a replaced session. The
fleet's watchers are told of each fleet loaded and of its removal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from replay.clock import Clock
from replay.core.faults import FaultWindow
from replay.core.fleet import FleetPlan
from replay.playback.anchor import State
from replay.playback.fleet import Fleet, FleetOptions
from replay.playback.fleet_members import Listener, VmReplay
from replay.playback.session import Served
from replay.playback.ticker import Pushed


@dataclass(slots=True)
class VmView:
    """One VM of the fleet as code written for a session sees it: a push source (what a new
    subscriber gets first) and an IMDS endpoint with failure modes (warm-up, a playbook)."""

    fleet: Fleet
    vm: VmReplay

    def message_now(self) -> bytes:
        return self.fleet.message_now(self.vm)

    @property
    def warm_until(self) -> float | None:
        return self.vm.warm_until

    @warm_until.setter
    def warm_until(self, value: float | None) -> None:
        self.vm.warm_until = value

    def touch(self) -> None:
        self.fleet.touch()

    def draw_fault(self) -> FaultWindow | None:
        return self.fleet.draw_fault(self.vm)

    def count_fault(self, kind: str, offset_s: float | None = None) -> None:
        self.vm.count_fault(kind, offset_s)

    def current(self, version: str) -> Served:
        return self.fleet.current(self.vm, version)


class FleetHost:
    """The fleet a server plays (None: no fleet), and who listens to which VM."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.fleet: Fleet | None = None
        self.listeners: dict[str, set[Listener]] = {}
        self.watchers: set[Listener] = set()
        """Listeners of the whole fleet, whichever it is (FleetWatch subscribes them)."""
        self.watch = FleetWatch(self)
        self.running = False
        """Whether the server's event loop runs (a loaded fleet's ticker starts at once)."""

    def load(self, plan: FleetPlan, options: FleetOptions) -> Fleet:
        """Play a fleet, replacing the one before (its listeners carry over by VM name)."""
        fleet = Fleet(plan, self.clock, options, self.listeners, self.watchers)
        if self.fleet is not None:
            self.fleet.stop()
        self.fleet = fleet
        if fleet.state is State.waiting:  # a started fleet told its watchers as it started
            fleet.tell(fleet.watch_now(), self.clock.wall())
        if self.running:
            fleet.start_ticker()
        return fleet

    def clear(self) -> bool:
        """Stop and drop the fleet (its watchers hear of it); False when there was none."""
        old, self.fleet = self.fleet, None
        if old is None:
            return False
        old.stop()
        if self.watchers:
            gone = self.watch.message_now()
            pushed = Pushed("fleet", gone, self.clock.wall(), 0.0, gone)
            for watcher in list(self.watchers):
                watcher(pushed)
        return True

    def start(self) -> None:
        """Once the server listens: a `now` fleet starts its clock, its ticker runs."""
        self.running = True
        if self.fleet is not None:
            self.fleet.rebase()
            self.fleet.start_ticker()

    def stop(self) -> None:
        self.running = False
        if self.fleet is not None:
            self.fleet.stop()

    def vm(self, name: str) -> VmReplay | None:
        return None if self.fleet is None else self.fleet.vms.get(name)

    # -- what a push fan-out asks of its source ---------------------------------------------
    def get(self, name: str) -> VmView | None:
        """A VM of the fleet as a push source, or None."""
        vm = self.vm(name)
        return None if vm is None or self.fleet is None else VmView(self.fleet, vm)

    def subscribe(self, name: str, listener: Listener) -> Callable[[], None]:
        """Receive every new document of a VM; returns the unsubscribe function."""
        listeners = self.listeners.setdefault(name, set())
        listeners.add(listener)
        if self.fleet is not None and name in self.fleet.vms:
            self.fleet.subscribers.add(listener)

        def unsubscribe() -> None:
            listeners.discard(listener)
            if self.fleet is not None:
                self.fleet.subscribers.discard(listener)

        return unsubscribe


class FleetWatch:
    """The whole fleet as one push source (the page's stream): each message says where the
    fleet is and which documents changed; a new subscriber first gets every current one."""

    def __init__(self, host: FleetHost) -> None:
        self.host = host

    def get(self, name: str) -> FleetWatch:
        return self

    def message_now(self) -> bytes:
        """Where the fleet is with all its documents, or {"fleet": null} when there is none."""
        fleet = self.host.fleet
        if fleet is None:
            return orjson.dumps({"fleet": None, "at": self.host.clock.wall().isoformat()})
        return fleet.watch_now()

    def subscribe(self, name: str, listener: Listener) -> Callable[[], None]:
        """Receive every message about the fleet (any fleet the host plays from now on)."""
        host = self.host
        host.watchers.add(listener)
        if host.fleet is not None:
            host.fleet.subscribers.add(listener)

        def unsubscribe() -> None:
            host.watchers.discard(listener)
            if host.fleet is not None:
                host.fleet.subscribers.discard(listener)

        return unsubscribe
