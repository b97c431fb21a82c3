"""The members of a running fleet: its groups (shared schedules and approvals) and its VMs.

A group's VMs all see the group's one document, so a group renders each document once per
api-version and every VM serves those bytes; a VM keeps only what is its own: what it was
served, its listeners, its poll counts, and its poll-path shortcut.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from replay.core.fleet import VmIdentity
from replay.core.rollout import Rollout
from replay.core.schedule import Schedule
from replay.playback.rounds import ApprovalKey, RoundOptions, Rounds, ScheduleCache
from replay.playback.session import DOCUMENTS_KEPT, Served
from replay.playback.ticker import Pushed

Listener = Callable[[Pushed], None]

_EMPTY_BODY = orjson.dumps({"DocumentIncarnation": 1, "Events": []})
NO_GROUP = Served(_EMPTY_BODY, f'"1-{zlib.crc32(_EMPTY_BODY):08x}"', 1)
"""What a VM in no group (or an address the fleet does not know) is served: no events, ever."""


class RolloutRounds(Rounds):
    """A group's rounds: schedules come from its rollout (every fault domain's wave at once)."""

    def __init__(self, rollout: Rollout, options: RoundOptions) -> None:
        super().__init__(rollout.trace, options, ScheduleCache(limit=1))
        self.rollout = rollout

    def _build(self, approvals: Sequence[ApprovalKey], first: int | None) -> Schedule:
        return self.rollout.schedule(
            approvals,
            delay_s=self.options.approval_delay_s,
            first_incarnation=first,
            recorded=self.options.recorded_approvals,
        )


class GroupReplay:
    """One group of a fleet: its rollout, rounds (approvals), and the documents it renders."""

    def __init__(self, rollout: Rollout, options: RoundOptions) -> None:
        self.name = rollout.group
        self.rollout = rollout
        self.rounds = RolloutRounds(rollout, options)
        self.duration_s = rollout.duration_s
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


@dataclass
class VmReplay:
    """One VM of a fleet: who it is, its group, and what it was served."""

    identity: VmIdentity
    group: GroupReplay | None
    listeners: set[Listener]
    """Push subscribers of this VM (shared with the fleet's host: they outlive a fleet)."""

    def __post_init__(self) -> None:
        self.name = self.identity.name
        self.documents: deque[bytes] = deque(maxlen=DOCUMENTS_KEPT)
        """The documents this VM was served, each distinct state once, in order."""
        self.last_served: tuple[int, int] | None = None
        self.fast: tuple[float, str, Served] | None = None
        """(monotonic instant it stays current until, api-version, answer): the poll path's
        shortcut, dropped by whatever changes the group's documents."""
        self.polls = 0
        self.approvals = 0
        self.refused = 0
        """Requests refused by the per-VM rate limit."""
