"""The members of a running fleet: timelines, groups (shared approvals) and VMs.

A *timeline* is what some VMs see: its rounds (schedules, approvals, served EventIds) and the
documents it rendered. A rolled-out group has one timeline for all its VMs (they all see the
group's one document, rendered once per api-version); a group replaying a fleet trace has one
per VM (each its own capture). An approval belongs to the group: it starts the event in every
timeline of the group that shows it. A VM keeps only what is its own: what it was served, its
listeners, its poll counts, and its poll-path shortcut.
"""

from __future__ import annotations

import zlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from replay.core.faults import FaultPlan, FaultWindow
from replay.core.fleet import CapturedGroup, GroupPlan, VmIdentity
from replay.core.rollout import Rollout
from replay.core.schedule import Schedule
from replay.playback.rounds import ApprovalKey, RoundOptions, Rounds, ScheduleCache
from replay.playback.session import DOCUMENTS_KEPT, Served
from replay.playback.ticker import Pushed, log_line

Listener = Callable[[Pushed], None]

_EMPTY_BODY = orjson.dumps({"DocumentIncarnation": 1, "Events": []})
NO_GROUP = Served(_EMPTY_BODY, f'"1-{zlib.crc32(_EMPTY_BODY):08x}"', 1)
"""What a VM in no group (or an address the fleet does not know) is served: no events, ever."""


class RolloutRounds(Rounds):
    """A rolled-out group's rounds: schedules come from its rollout (all waves at once)."""

    def __init__(self, rollout: Rollout, options: RoundOptions) -> None:
        super().__init__(rollout.trace, options, ScheduleCache(limit=1))
        self.rollout = rollout

    def _build(self, approvals: Sequence[ApprovalKey], first: int | None) -> Schedule:
        return self.rollout.schedule(
            approvals,
            delay_s=self.approval_delay_s,
            first_incarnation=first,
            recorded=self.recorded_approvals,
        )


class Timeline:
    """What some VMs of a group see: rounds, and the documents rendered from them."""

    def __init__(self, group: str, rounds: Rounds, duration_s: float) -> None:
        self.group = group
        self.rounds = rounds
        self.duration_s = duration_s
        self.vms: list[VmReplay] = []
        self.rendered: dict[tuple[int, int, str], Served] = {}
        """Rendered documents by (round, transition index, api-version), this round's only."""
        self.last_pushed: int | None = None
        """The incarnation last pushed (a new round's first document is the last one's)."""

    def schedule(self, rnd: int) -> Schedule:
        return self.rounds.schedule(rnd)

    def forget(self) -> None:
        """Drop rendered documents and every member's shortcut (re-anchoring, approvals)."""
        self.rendered.clear()
        for vm in self.vms:
            vm.fast = None


class GroupReplay:
    """One group of a fleet: its plan and timelines."""

    def __init__(self, plan: GroupPlan, options: RoundOptions, cache: ScheduleCache) -> None:
        self.name = plan.group
        self.plan = plan
        self.duration_s = plan.duration_s
        self.timelines: dict[str, Timeline] = {}
        """By VM name."""
        if isinstance(plan, CapturedGroup):
            for vm, trace in plan.timelines.items():
                self.timelines[vm] = Timeline(
                    self.name, Rounds(trace, options, cache), trace.duration_s
                )
        else:
            shared = Timeline(self.name, RolloutRounds(plan, options), plan.duration_s)
            self.timelines = {name: shared for wave in plan.waves for name in wave.resources}

    def distinct(self) -> list[Timeline]:
        """Each timeline once."""
        return list({id(t): t for t in self.timelines.values()}.values())


@dataclass
class VmReplay:
    """One VM of a fleet: who it is, its group and timeline, and what it was served."""

    identity: VmIdentity
    group: GroupReplay | None
    timeline: Timeline | None
    listeners: set[Listener]
    """Push subscribers of this VM (shared with the fleet's host: they outlive a fleet)."""

    def __post_init__(self) -> None:
        self.name = self.identity.name
        self.documents: deque[bytes] = deque(maxlen=DOCUMENTS_KEPT)
        """The documents this VM was served, each distinct state once, in order."""
        self.last_served: tuple[int, int] | None = None
        self.fast: tuple[float, str, Served] | None = None
        """(monotonic instant it stays current until, api-version, answer): the poll path's
        shortcut, dropped by whatever changes the timeline's documents."""
        self.polls = 0
        self.approvals = 0
        self.refused = 0
        """Requests refused by the per-VM rate limit."""
        self.faults: FaultPlan | None = None
        """This VM's fault playbook, with draws of its own."""
        self.warm_until: float | None = None
        """Monotonic instant until which this VM's IMDS requests wait (warm-up)."""
        self.fault_counts: Counter[str] = Counter()

    def set_faults(self, windows: Sequence[FaultWindow] | None, seed: int = 0) -> None:
        """Play a playbook (None or empty: none), drawing from a generator seeded by seed and
        this VM's name: reproducible, and independent of every other VM's."""
        own_seed = zlib.crc32(f"{seed}/{self.name}".encode())
        self.faults = FaultPlan(tuple(windows), seed=own_seed) if windows else None

    def draw_fault(self, offset_s: float) -> FaultWindow | None:
        """The playbook's fault for a request at a trace offset, counted and logged."""
        if self.faults is None:
            return None
        window = self.faults.draw(offset_s)
        if window is not None:
            self.count_fault(window.describe(), offset_s)
        return window

    def count_fault(self, kind: str, offset_s: float | None = None) -> None:
        """Count an injected failure in the VM's status and log it as a JSON line."""
        self.fault_counts[kind] += 1
        log_line(event="fault", vm=self.name, fault=kind, offset_s=offset_s)
