"""Round bookkeeping: each loop round's schedule, its approvals, and the EventIds it served.

A looping session plays its trace again and again; every round gets fresh EventIds and
continues the DocumentIncarnation count. A replay only moves forward through its rounds, so
a server looping for days keeps two rounds of schedules and approvals, not all.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from replay.core.reference import event_id_for
from replay.core.schedule import Schedule, build_schedule
from replay.core.timeline import Trace

SHARED_SCHEDULES_MAX = 1024
SERVED_IDS_KEPT = 256
"""EventIds a session remembers having served (the newest): approving an older one is
approving an unknown EventId. A looping trace serves fresh ones every round."""

ApprovalKey = tuple[float, str, int]
"""(offset_s in the round, original EventId, batch): one approved event of one POST."""


@functools.lru_cache(maxsize=16_384)
def round_event_id(trace_name: str, rnd: int, original: str) -> str:
    """The fresh EventId of an event in a later loop round (the same for every session)."""
    return event_id_for(f"{trace_name}/round-{rnd}/{original}")


class ScheduleCache:
    """Built schedules by (trace, approvals, delay, first incarnation), shared by sessions.

    A schedule is a pure, immutable function of those, so sessions playing the same trace share
    it instead of each building and keeping its own every round. An entry holds its trace, so
    the id in its key stays unique. The server's registry owns one; the app clears it on exit.
    """

    def __init__(self, limit: int = SHARED_SCHEDULES_MAX) -> None:
        self.limit = limit
        self._entries: dict[
            tuple[int, tuple[ApprovalKey, ...], float, int | None], tuple[Trace, Schedule]
        ] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self, trace: Trace, approvals: Sequence[ApprovalKey], delay_s: float, first: int | None
    ) -> Schedule:
        key = (id(trace), tuple(approvals), delay_s, first)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is trace:
            return hit[1]
        built = build_schedule(trace, approvals, delay_s=delay_s, first_incarnation=first)
        if len(self._entries) >= self.limit:
            del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[key] = (trace, built)
        return built

    def clear(self) -> None:
        self._entries.clear()


@dataclass
class RoundOptions:
    """What a session's options say about schedules."""

    approval_delay_s: float = 0.0
    recorded_approvals: bool = False
    first_incarnation: int | None = None


class Rounds:
    """The schedules, approvals and served EventIds of a session's rounds."""

    def __init__(self, trace: Trace, options: RoundOptions, cache: ScheduleCache) -> None:
        self.trace = trace
        # The options' values, not the object: a session's RoundOptions is made for it alone.
        self.approval_delay_s = options.approval_delay_s
        self.recorded_approvals = options.recorded_approvals
        self.first_incarnation = options.first_incarnation
        self.cache = cache
        self._approvals: dict[int, list[ApprovalKey]] = {}
        self.batches = len(trace.approvals)
        """POSTs so far: recorded approvals are batches 0..n-1, a client's come after."""
        self._schedules: dict[int, Schedule] = {}
        self._settled: tuple[int, int] | None = None
        """(round, its last incarnation) of the newest round whose schedule was let go: what
        later rounds count from once that round's approvals are forgotten."""
        self.served_ids: dict[str, tuple[int, str]] = {}
        """Served EventId -> (round, the trace's EventId), the newest SERVED_IDS_KEPT."""

    def schedule(self, rnd: int) -> Schedule:
        """The transitions of one round, with this round's approvals applied."""
        cached = self._schedules.get(rnd)
        if cached is not None:
            return cached
        first = self.first_incarnation
        if rnd > 0:
            first = self.last_incarnation(rnd - 1)
        built = self._build(self._approvals.get(rnd, ()), first)
        old = [r for r in self._schedules if r < rnd - 1]
        if old:
            self._settle(max(old))
        self._schedules[rnd] = built
        return built

    def held(self) -> list[int]:
        """The rounds whose schedules are kept (for tests of letting go)."""
        return sorted(self._schedules)

    def approvals_held(self) -> list[int]:
        return sorted(self._approvals)

    def _settle(self, rnd: int) -> None:
        """Let go of the schedules and approvals of round rnd and those before it."""
        self._settled = (rnd, self._schedules[rnd].transitions[-1].incarnation)
        for r in [r for r in self._schedules if r <= rnd]:
            del self._schedules[r]
        for r in [r for r in self._approvals if r <= rnd]:
            del self._approvals[r]

    def _build(self, approvals: Sequence[ApprovalKey], first: int | None) -> Schedule:
        """A round's schedule from its own approvals (and the recorded ones, if played)."""
        own = bool(approvals)
        approvals = list(approvals)
        if self.recorded_approvals:
            recorded = enumerate(self.trace.approvals)
            approvals += [(a.offset_s, e, batch) for batch, a in recorded for e in a.event_ids]
        delay = self.approval_delay_s
        if own:  # a round with a client's approvals is this session's alone: not shared
            return build_schedule(self.trace, approvals, delay_s=delay, first_incarnation=first)
        return self.cache.get(self.trace, approvals, delay, first)

    def last_incarnation(self, rnd: int) -> int:
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
        if any(base < r <= rnd for r in self._approvals):
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
        served = original if rnd == 0 else round_event_id(self.trace.name, rnd, original)
        ids = self.served_ids
        if served not in ids:
            ids[served] = (rnd, original)
            if len(ids) > SERVED_IDS_KEPT:
                del ids[next(iter(ids))]  # the first served of them
        return served

    def approve(self, rnd: int, offset_s: float, original: str) -> bool:
        """Record an approval of a Scheduled event in round rnd; False when it changes nothing."""
        state = self.schedule(rnd).state_of(original, offset_s)
        if state is None or state.status != "Scheduled":
            return False  # already Started or not shown: approving again changes nothing
        self._approvals.setdefault(rnd, []).append((offset_s, original, self.batches))
        self._schedules.pop(rnd, None)
        return True

    def end_batch(self, changed_round: int | None) -> None:
        """One POST is done; when it changed round r, rounds after r are built anew."""
        self.batches += 1
        if changed_round is not None:
            for later in [r for r in self._schedules if r > changed_round]:
                del self._schedules[later]
