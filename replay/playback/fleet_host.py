"""A server's fleet slot: the fleet it plays, if any, and push listeners by VM name.

Listeners outlive a fleet: loading another fleet (control API) hands a VM's subscribers to the
new fleet's VM of the same name, as a session's subscribers outlive a replaced session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from replay.clock import Clock
from replay.core.faults import FaultWindow
from replay.core.fleet import FleetPlan
from replay.playback.fleet import Fleet, FleetOptions
from replay.playback.fleet_members import Listener, VmReplay
from replay.playback.session import Served


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
        self.running = False
        """Whether the server's event loop runs (a loaded fleet's ticker starts at once)."""

    def load(self, plan: FleetPlan, options: FleetOptions) -> Fleet:
        """Play a fleet, replacing the one before (its listeners carry over by VM name)."""
        fleet = Fleet(plan, self.clock, options, self.listeners)
        self.clear()
        self.fleet = fleet
        if self.running:
            fleet.start_ticker()
        return fleet

    def clear(self) -> bool:
        """Stop and drop the fleet; False when there was none."""
        old, self.fleet = self.fleet, None
        if old is None:
            return False
        old.stop()
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
