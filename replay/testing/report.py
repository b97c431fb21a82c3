"""What a handler did under `imds-replay run`: its requests, each event's fate, expectations.

Built from the observations of the run's IMDS socket (replay.server.vm) and the session's
schedules (where each event appeared and ended in this replay, approvals applied). Typed, so a
user's test can `assert report.events[0].approved_notice_left_s > 60`.
"""

from __future__ import annotations

import re
import signal
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from replay.core.schedule import Schedule, build_schedule
from replay.errors import ReplayError
from replay.playback.rounds import round_event_id
from replay.playback.session import Session

if TYPE_CHECKING:  # the report is built from these; importing them would import aiohttp
    from replay.server.vm import Approving, Observation

EXPECTATIONS = ("approve", "no-errors", "recovered", "max-detection=S")
"""What --expect accepts."""
_MAX_DETECTION = re.compile(r"^max-detection=(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Expectation:
    """A condition the run must meet: approve, no-errors, recovered, max-detection=S."""

    name: str
    max_detection_s: float | None = None

    @classmethod
    def parse(cls, text: str) -> Expectation:
        """An expectation as written on the command line; ReplayError when unknown."""
        text = text.strip()
        if text in ("approve", "no-errors", "recovered"):
            return cls(text)
        match = _MAX_DETECTION.fullmatch(text)
        if match:
            return cls(text, float(match[1]))
        raise ReplayError(f"unknown expectation {text!r}; use one of: {', '.join(EXPECTATIONS)}")


@dataclass
class Requests:
    """The IMDS requests CMD made."""

    total: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    """Count per HTTP status ("0": connection dropped by a fault playbook)."""
    peak_per_second: int = 0
    """The most requests within any one second (IMDS allows about 5 before 429)."""
    api_versions: dict[str, int] = field(default_factory=dict)
    missing_metadata: int = 0
    """Requests without `Metadata: true` (IMDS answers them 400)."""
    forwarded_for: int = 0
    """Requests with X-Forwarded-For (IMDS answers them 400)."""


@dataclass
class EventOutcome:
    """One event of the trace (per loop round) and what CMD did about it."""

    event_id: str
    """As served (later loop rounds have fresh ids)."""
    event_type: str
    round: int
    detected_after_s: float | None
    """Trace seconds from the event appearing to the first answer CMD got that listed it."""
    approved_notice_left_s: float | None
    """Trace seconds left before the NotBefore CMD was shown, when it approved (negative:
    after it); None if it never approved."""
    approved_while: str | None
    """Scheduled or Started, when CMD approved; None if it never did."""
    recovered: bool
    """CMD fetched a document without the event after it ended."""
    appeared: bool = True
    """False when the run ended before the event appeared."""
    scheduled: bool = True
    """Whether it had a Scheduled phase (a host failure starts Started)."""
    for_this_vm: bool = True
    """Whether its Resources list this VM (a handler should approve only those)."""


@dataclass
class Outcome:
    """An expectation and whether the run met it."""

    name: str
    ok: bool
    why: str


@dataclass
class RunReport:
    """What `imds-replay run` says at the end (and writes with --report)."""

    exit_code: int | None
    """CMD's exit status; minus the signal number when a signal ended it; None if it never
    started."""
    ended_by: str
    """exit (CMD exited), grace (the replay ended), timeout, or interrupt (Ctrl-C)."""
    trace: str
    speed: float
    vm: str
    requests: Requests
    events: list[EventOutcome]
    expectations: list[Outcome]

    @property
    def ok(self) -> bool:
        """Whether every expectation was met."""
        return all(e.ok for e in self.expectations)

    @property
    def signal(self) -> str | None:
        """The name of the signal that ended CMD, if one did."""
        if self.exit_code is None or self.exit_code >= 0:
            return None
        return signal.Signals(-self.exit_code).name

    @property
    def run_status(self) -> int:
        """What `imds-replay run` exits with: 130 on Ctrl-C, 3 when an expectation is unmet,
        124 at --timeout, 0 when stopped after the replay, else CMD's (128 + N: signal N)."""
        if self.ended_by == "interrupt":
            return 130
        if not self.ok:
            return 3
        if self.ended_by in ("timeout", "grace"):
            return 124 if self.ended_by == "timeout" else 0
        code = self.exit_code or 0
        return 128 - code if code < 0 else code

    def to_json(self) -> dict[str, Any]:
        """The report as JSON values (what --report writes)."""
        return {"signal": self.signal, "ok": self.ok, **asdict(self)}


ROUNDS_KEPT = 256
"""Loop rounds a tally remembers events of (the newest): a run left looping for days keeps
the same size."""


class Tally:
    """What a report needs from CMD's requests, kept as they come: the observer of a run.

    Memory stays bounded however long a run loops: counts, the last second of request times,
    the first sighting and first approval of each event (of the newest ROUNDS_KEPT rounds), and
    the last document fetched (an ended event never comes back, so that one tells whether CMD
    saw it end).
    """

    def __init__(self) -> None:
        self.total = 0
        self.peak_per_second = 0
        self.missing_metadata = 0
        self.forwarded_for = 0
        self._statuses: Counter[int] = Counter()
        self._versions: Counter[str] = Counter()
        self._last_second: deque[float] = deque()
        self.first_shown: dict[tuple[int, str], float] = {}
        """(round, trace EventId) -> position (trace seconds) of the first answer listing it."""
        self.first_approval: dict[tuple[int, str], Approving] = {}
        self.last_document: tuple[float, frozenset[tuple[int, str]]] | None = None
        """(position, the events listed) of the latest Scheduled Events document fetched."""
        self.newest_round = 0

    @classmethod
    def of(cls, observations: Iterable[Observation]) -> Tally:
        tally = cls()
        for observation in observations:
            tally(observation)
        return tally

    @property
    def requests(self) -> Requests:
        """The requests so far, summed up."""
        return Requests(
            total=self.total,
            by_status={str(s): n for s, n in sorted(self._statuses.items())},
            peak_per_second=self.peak_per_second,
            api_versions=dict(sorted(self._versions.items())),
            missing_metadata=self.missing_metadata,
            forwarded_for=self.forwarded_for,
        )

    def __call__(self, o: Observation) -> None:
        self.total += 1
        self._statuses[o.status] += 1
        if o.api_version is not None:
            self._versions[o.api_version] += 1
        self.missing_metadata += not o.metadata
        self.forwarded_for += o.forwarded_for
        window = self._last_second
        window.append(o.at)
        while o.at - window[0] >= 1.0:
            window.popleft()
        self.peak_per_second = max(self.peak_per_second, len(window))
        if o.shown or o.approving:
            self._events(o)
        elif o.method == "GET" and o.status == 200 and o.path.endswith("/scheduledevents"):
            self.last_document = (o.position_s, frozenset())

    def _events(self, o: Observation) -> None:
        listed = frozenset((s.round, s.event_id) for s in o.shown)
        for key in listed:
            self.first_shown.setdefault(key, o.position_s)
        for a in o.approving:
            if a.status is not None:
                self.first_approval.setdefault((a.round, a.event_id), a)
        if o.shown:
            self.last_document = (o.position_s, listed)
        rounds = [key[0] for key in listed] + [a.round for a in o.approving]
        if max(rounds) > self.newest_round:
            self.newest_round = max(rounds)
            oldest = self.newest_round - ROUNDS_KEPT
            for book in (self.first_shown, self.first_approval):
                for key in [k for k in book if k[0] <= oldest]:
                    del book[key]


@dataclass(frozen=True)
class _Span:
    """Where an event is in one round's schedule (offsets in the round)."""

    appear_s: float
    gone_s: float | None
    scheduled: bool
    event: dict[str, Any]


def _spans(schedule: Schedule) -> dict[str, _Span]:
    spans: dict[str, _Span] = {}
    present: set[str] = set()
    for transition in schedule.transitions:
        now = {state.event_id for state in transition.events}
        for state in transition.events:
            eid = state.event_id
            old = spans.get(eid)
            if old is None:
                spans[eid] = _Span(transition.offset_s, None, False, dict(state.event))
                old = spans[eid]
            if state.status == "Scheduled" and not old.scheduled:
                spans[eid] = _Span(old.appear_s, old.gone_s, True, old.event)
        for eid in present - now:
            span = spans[eid]
            if span.gone_s is None:
                spans[eid] = _Span(span.appear_s, transition.offset_s, span.scheduled, span.event)
        present = now
    return spans


def _round_schedule(session: Session, rnd: int) -> Schedule:
    """A round's schedule with its approvals; rounds the session let go of, without them."""
    if rnd in session.rounds.held():
        return session.schedule(rnd)
    return build_schedule(session.trace, (), delay_s=session.options.approval_delay_s)


def event_outcomes(session: Session, tally: Tally) -> list[EventOutcome]:
    """One entry per event of the trace, per loop round the run reached (the newest
    ROUNDS_KEPT)."""
    duration = session.duration_s
    end = session.position()
    last_round = session.split(end)[0] if session.looping else 0
    vm = session.identity.name
    outcomes = []
    for rnd in range(max(last_round - ROUNDS_KEPT + 1, 0), last_round + 1):
        base = rnd * duration
        spans = _spans(_round_schedule(session, rnd))
        for original in session.trace.event_ids:
            span = spans.get(original)
            if span is None:
                continue
            appeared = end >= base + span.appear_s
            if rnd and not appeared:
                continue  # a later round not reached yet: nothing to say
            key = (rnd, original)
            shown = tally.first_shown.get(key)
            detected = None if shown is None else round(max(shown - base - span.appear_s, 0), 3)
            approval = tally.first_approval.get(key)
            ended = None if span.gone_s is None else base + span.gone_s
            last = tally.last_document
            recovered = (
                ended is not None and last is not None and last[0] >= ended and key not in last[1]
            )
            left = None if approval is None else approval.notice_left_s
            resources = session.options.resources or span.event.get("Resources", [])
            outcomes.append(
                EventOutcome(
                    event_id=round_event_id(session.trace.name, rnd, original) if rnd else original,
                    event_type=str(span.event["EventType"]),
                    round=rnd,
                    detected_after_s=detected,
                    approved_notice_left_s=None if left is None else round(left, 3),
                    approved_while=None if approval is None else approval.status,
                    recovered=recovered,
                    appeared=appeared,
                    scheduled=span.scheduled,
                    for_this_vm=vm in resources,
                )
            )
    return outcomes


def judge(
    expectations: Sequence[Expectation], requests: Requests, events: Sequence[EventOutcome]
) -> list[Outcome]:
    """Whether the run met each expectation, and why not."""
    return [_judge(e, requests, events) for e in expectations]


def _judge(expectation: Expectation, requests: Requests, events: Sequence[EventOutcome]) -> Outcome:
    name = expectation.name
    problems: list[str] = []
    if name == "approve":
        for e in events:
            if not (e.scheduled and e.for_this_vm):
                continue
            if not e.appeared:
                problems.append(f"{e.event_type} {e.event_id}: the run ended before it appeared")
            elif e.approved_while is None:
                problems.append(f"{e.event_type} {e.event_id} was never approved")
            elif e.approved_while != "Scheduled":
                problems.append(f"{e.event_type} {e.event_id} was approved only once Started")
            elif e.approved_notice_left_s is not None and e.approved_notice_left_s < 0:
                left = -e.approved_notice_left_s
                problems.append(f"{e.event_type} {e.event_id} was approved {left:g} s late")
        good = "every Scheduled event for this VM was approved before its NotBefore"
    elif name == "no-errors":
        errors = {s: n for s, n in requests.by_status.items() if s == "0" or int(s) >= 400}
        if errors:
            listed = ", ".join(f"{n} x {'dropped' if s == '0' else s}" for s, n in errors.items())
            problems.append(f"answered {listed}")
        good = "no request was answered with an error"
    elif name == "recovered":
        for e in events:
            if not e.appeared:
                problems.append(f"{e.event_type} {e.event_id}: the run ended before it appeared")
            elif not e.recovered:
                problems.append(
                    f"{e.event_type} {e.event_id}: CMD fetched no document without it after it "
                    "ended"
                )
        good = "CMD saw every event end"
    else:
        limit = expectation.max_detection_s or 0.0
        for e in events:
            if e.detected_after_s is None:
                problems.append(f"{e.event_type} {e.event_id} was never detected")
            elif e.detected_after_s > limit:
                late = e.detected_after_s
                problems.append(f"{e.event_type} {e.event_id} was detected after {late:g} s")
        good = f"every event was detected within {limit:g} trace seconds"
    return Outcome(name, not problems, "; ".join(problems) if problems else good)


def build_report(
    session: Session,
    tally: Tally,
    expectations: Sequence[Expectation],
    *,
    exit_code: int | None,
    ended_by: str,
) -> RunReport:
    """The report of a run that has ended."""
    requests = tally.requests
    events = event_outcomes(session, tally)
    return RunReport(
        exit_code=exit_code,
        ended_by=ended_by,
        trace=session.trace.name,
        speed=session.speed,
        vm=session.identity.name,
        requests=requests,
        events=events,
        expectations=judge(expectations, requests, events),
    )
