"""Synthetic traces: episodes whose phases are drawn from requested or measured statistics.

An event's phases, in trace seconds:
- notice: NotBefore minus the moment the event is first seen Scheduled;
- scheduled: first seen Scheduled to first seen Started (for a scenario whose events never
  start, such as canceled-maintenance: first seen Scheduled to gone);
- started: first seen Started to gone.

A phase given as MEAN:STD is drawn from a normal distribution truncated at zero (a negative draw
is discarded and drawn again, never clipped). A phase not given is the scenario's reference
value, or, with samples, is resampled jointly with the others from one captured event of the
scenario: that event's phases, shape and fields travel together, and a phase given replaces
the sampled one where the sampled event has it. A scenario outside the reference table needs
every phase given (its events say Freeze, Platform, DurationInSeconds -1) or samples.

Every time is rounded to whole seconds, so offsets and NotBefore (RFC 1123, whole seconds)
agree exactly; a phase that ends in a state change lasts at least 1 s, so a poller sees every
state. Trace i starts at SYNTH_STARTED_AT + 60 s * i; its first event appears at 30 s and the
next ones after exponential gaps (a Poisson process), overlapping as they fall; documents
change at each distinct moment of change (simultaneous changes share one document).

Each trace has its own random stream, seeded from (seed, scenario, index): the same options
give byte-identical files, and trace i does not depend on --count.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from replay.core.reference import LEAD_IN_S, REFERENCE_RESOURCES, event_id_for, reference_table
from replay.core.timeline import Lifecycle, Snapshot, Trace, format_rfc1123
from replay.errors import ReplayError
from replay.store.dataset import scan
from replay.store.files import read_file
from replay.store.layout import check_name

SYNTH_STARTED_AT = datetime(2025, 8, 1, tzinfo=UTC)
"""Wall time of offset 0 of synthetic trace 0; trace i starts TRACE_SPACING_S * i later."""
TRACE_SPACING_S = 60
PER_FILE = 5000
"""Traces per bundle file."""
DEFAULT_MEAN_GAP_S = 300.0
PHASES = ("notice", "scheduled", "started")

FULL = "scheduled-started"
CANCELED = "canceled"
UNSCHEDULED = "started-only"
SHAPE_PHASES: dict[str, tuple[str, ...]] = {
    FULL: ("notice", "scheduled", "started"),
    CANCELED: ("notice", "scheduled"),
    UNSCHEDULED: ("started",),
}
"""Which phases each shape of event has: Scheduled then Started; Scheduled then removed;
first seen Started (no notice)."""


@dataclass(frozen=True, slots=True)
class Normal:
    """A normal distribution of a phase, in seconds, truncated at zero."""

    mean_s: float
    std_s: float

    def draw(self, rng: random.Random) -> float:
        """One draw >= 0 (negative draws are discarded; mean_s >= 0 keeps this fast)."""
        while True:
            value = rng.gauss(self.mean_s, self.std_s)
            if value >= 0:
                return value


def parse_normal(text: str, what: str = "phase") -> Normal:
    """Parse `MEAN:STD` (seconds, both finite and >= 0)."""
    try:
        mean_text, std_text = text.split(":")
        mean_s, std_s = float(mean_text), float(std_text)
    except ValueError:
        raise ReplayError(f"{what} {text!r} must be MEAN:STD in seconds, e.g. 900:120") from None
    if not (math.isfinite(mean_s) and math.isfinite(std_s)) or mean_s < 0 or std_s < 0:
        raise ReplayError(f"{what} {text!r}: MEAN and STD must be finite and >= 0 seconds")
    return Normal(mean_s, std_s)


@dataclass(frozen=True, slots=True)
class EventFields:
    """What an event of the scenario says besides its id, status and NotBefore."""

    event_type: str
    event_source: str
    description: str
    duration_in_seconds: int


@dataclass(frozen=True, slots=True)
class Sample:
    """One captured event: its shape, phases (seconds, None where the shape has none), fields."""

    shape: str
    phases: Mapping[str, float]
    fields: EventFields


@dataclass(frozen=True)
class SynthOptions:
    """What to generate; phases left None come from the reference table or the samples."""

    scenario: str
    count: int
    seed: int = 0
    notice: Normal | None = None
    scheduled: Normal | None = None
    started: Normal | None = None
    events_per_episode: int = 1
    mean_gap_s: float = DEFAULT_MEAN_GAP_S
    name: str | None = None
    """Name prefix; traces are `<prefix>-s<seed>-<index>`, default prefix `synth-<scenario>`."""
    per_file: int = PER_FILE

    @property
    def prefix(self) -> str:
        return self.name or f"synth-{self.scenario}"

    def given(self) -> dict[str, Normal]:
        phases = {"notice": self.notice, "scheduled": self.scheduled, "started": self.started}
        return {k: v for k, v in phases.items() if v is not None}


@dataclass(frozen=True)
class Plan:
    """Options resolved against the reference table or the captured samples."""

    options: SynthOptions
    shape: str
    phases: Mapping[str, Normal]
    """Every phase of the shape: given, or the reference value as a zero-spread normal; with
    samples, only the phases given (the others come from each event's sample)."""
    fields: EventFields
    samples: tuple[Sample, ...] = ()
    source: Mapping[str, Any] = field(default_factory=dict)


def sample_of(lc: Lifecycle) -> Sample | None:
    """A captured event's shape, phases and fields; None when a phase cannot be measured."""
    ev = lc.event
    fields = EventFields(
        ev["EventType"], ev["EventSource"], ev["Description"], ev["DurationInSeconds"]
    )
    if lc.gone_s is None:
        return None
    if lc.scheduled_s is None:
        if lc.started_s is None:
            return None
        return Sample(UNSCHEDULED, {"started": lc.gone_s - lc.started_s}, fields)
    if lc.not_before_s is None:
        return None
    notice = lc.not_before_s - lc.scheduled_s
    if lc.started_s is None:
        return Sample(CANCELED, {"notice": notice, "scheduled": lc.gone_s - lc.scheduled_s}, fields)
    phases = {
        "notice": notice,
        "scheduled": lc.started_s - lc.scheduled_s,
        "started": lc.gone_s - lc.started_s,
    }
    return Sample(FULL, phases, fields)


def captured_samples(traces_dir: Path, scenario: str) -> tuple[list[Sample], list[str]]:
    """Samples from the captured traces of a scenario (sorted, so draws are reproducible),
    and the problems of files that could not be read."""
    good, _ = scan(traces_dir, validate_all=False)
    paths = sorted({i.path for i in good if i.scenario == scenario and i.origin == "captured"})
    found: list[tuple[str, str, Sample]] = []
    problems: list[str] = []
    for path in paths:
        try:
            traces = read_file(path)
        except ReplayError as exc:
            problems.append(str(exc))
            continue
        for trace in traces:
            if trace.origin != "captured" or trace.scenario != scenario:
                continue
            for lc in trace.lifecycles.values():
                sample = sample_of(lc)
                if sample is not None:
                    found.append((trace.name, lc.event_id, sample))
    return [s for _, _, s in sorted(found, key=lambda f: f[:2])], problems


def plan(options: SynthOptions, samples: Sequence[Sample] | None = None) -> Plan:
    """Check options and resolve every phase; samples (from captured traces) replace reference."""
    if options.count < 1:
        raise ReplayError(f"--count must be at least 1, got {options.count}")
    if options.events_per_episode < 1:
        raise ReplayError(
            f"--events-per-episode must be at least 1, got {options.events_per_episode}"
        )
    if not (math.isfinite(options.mean_gap_s) and options.mean_gap_s > 0):
        raise ReplayError(
            f"--mean-gap must be a positive number of seconds, got {options.mean_gap_s}"
        )
    if options.per_file < 1:
        raise ReplayError(f"per_file must be at least 1, got {options.per_file}")
    check_name(options.scenario, "scenario")
    check_name(trace_name(options, options.count - 1))
    check_name(bundle_name(options, 0))
    given = options.given()
    source: dict[str, Any] = {
        "generator": "imds-replay synth",
        "scenario": options.scenario,
        "seed": options.seed,
        "phases": {k: {"mean_s": v.mean_s, "std_s": v.std_s} for k, v in given.items()},
        "events_per_episode": options.events_per_episode,
        "mean_gap_s": options.mean_gap_s,
        "time_base": SYNTH_STARTED_AT.isoformat(),
    }
    if samples is not None:
        if not samples:
            raise ReplayError(
                f"no captured events of scenario {options.scenario!r} to resample in the "
                "dataset (ingest captures first, or drop --from-traces)"
            )
        source["from_traces"] = {"events": len(samples)}
        first = samples[0]
        return Plan(options, first.shape, given, first.fields, tuple(samples), source)
    row = reference_table().get(options.scenario)
    if row is None:
        missing = [f"--{p}" for p in PHASES if p not in given]
        if missing:
            known = ", ".join(reference_table())
            raise ReplayError(
                f"scenario {options.scenario!r} is not in the reference table ({known}): "
                f"give {', '.join(missing)} too, or use --from-traces"
            )
        fields = EventFields("Freeze", "Platform", f"synthetic {options.scenario} event", -1)
        return Plan(options, FULL, given, fields, (), source)
    if row.first_seen_status == "Started":
        shape, reference = UNSCHEDULED, {"started": row.started_s}
    elif row.removed_while_scheduled_after_s is not None:
        reference = {"notice": row.notice_s, "scheduled": row.removed_while_scheduled_after_s}
        shape = CANCELED
    else:
        shape = FULL
        reference = {"notice": row.notice_s, "scheduled": row.scheduled_s, "started": row.started_s}
    extra = [f"--{p}" for p in given if p not in SHAPE_PHASES[shape]]
    if extra:
        raise ReplayError(
            f"{options.scenario} events have no {' or '.join(p[2:] for p in extra)} phase "
            f"(phases: {', '.join(SHAPE_PHASES[shape])}); drop {', '.join(extra)}"
        )
    phases = {p: given.get(p) or Normal(float(reference[p] or 0.0), 0.0) for p in reference}
    source["reference_s"] = {p: reference[p] for p in reference if p not in given}
    fields = EventFields(row.event_type, row.event_source, row.description, row.duration_in_seconds)
    return Plan(options, shape, phases, fields, (), source)


def trace_name(options: SynthOptions, index: int) -> str:
    """The name of synthetic trace `index`."""
    return f"{options.prefix}-s{options.seed}-{index:06d}"


def bundle_name(options: SynthOptions, chunk: int) -> str:
    """The file stem of bundle `chunk` (re-running with the same seed rewrites it)."""
    return f"{options.prefix}-s{options.seed}-part{chunk:04d}"


@dataclass(frozen=True, slots=True)
class _Event:
    event_id: str
    appear_s: int
    started_s: int | None
    """When it turns Started (None: never)."""
    gone_s: int
    not_before_s: int | None
    fields: EventFields


def _draw_event(plan: Plan, rng: random.Random, event_id: str, appear_s: int) -> _Event:
    shape, fields, measured = plan.shape, plan.fields, {}
    if plan.samples:
        sample = plan.samples[rng.randrange(len(plan.samples))]
        shape, fields = sample.shape, sample.fields
        measured = {p: Normal(v, 0.0) for p, v in sample.phases.items()}
    drawn: dict[str, int] = {}
    for phase in SHAPE_PHASES[shape]:
        value = (plan.phases.get(phase) or measured[phase]).draw(rng)
        # Every state lasts at least a second so a poller sees it; notice may be 0.
        drawn[phase] = round(value) if phase == "notice" else max(1, round(value))
    if shape == UNSCHEDULED:
        return _Event(event_id, appear_s, appear_s, appear_s + drawn["started"], None, fields)
    not_before = appear_s + drawn["notice"]
    end_scheduled = appear_s + drawn["scheduled"]
    if shape == CANCELED:
        return _Event(event_id, appear_s, None, end_scheduled, not_before, fields)
    gone = end_scheduled + drawn["started"]
    return _Event(event_id, appear_s, end_scheduled, gone, not_before, fields)


def _document_events(ev: _Event, started_at: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The event as shown while Scheduled and once Started (documents share these objects)."""
    not_before = ""
    if ev.not_before_s is not None:
        not_before = format_rfc1123(started_at + timedelta(seconds=ev.not_before_s))
    scheduled = {
        "EventId": ev.event_id,
        "EventStatus": "Scheduled",
        "EventType": ev.fields.event_type,
        "ResourceType": "VirtualMachine",
        "Resources": list(REFERENCE_RESOURCES),
        "NotBefore": not_before,
        "Description": ev.fields.description,
        "EventSource": ev.fields.event_source,
        "DurationInSeconds": ev.fields.duration_in_seconds,
    }
    return scheduled, {**scheduled, "EventStatus": "Started", "NotBefore": ""}


def synth_trace(plan: Plan, index: int) -> Trace:
    """Synthetic trace `index` of the plan: the same plan and index always give the same trace."""
    o = plan.options
    rng = random.Random(f"synthetic/{o.seed}/{o.scenario}/{index}")
    started_at = SYNTH_STARTED_AT + timedelta(seconds=TRACE_SPACING_S * index)
    events: list[_Event] = []
    appear_s = int(LEAD_IN_S)
    for k in range(o.events_per_episode):
        if k:  # arrivals form a Poisson process: exponential gaps
            appear_s += round(rng.expovariate(1.0 / o.mean_gap_s))
        event_id = event_id_for(f"synthetic/{o.seed}/{o.scenario}/{index}/{k}")
        events.append(_draw_event(plan, rng, event_id, appear_s))
    # One document per distinct moment of change; simultaneous changes share a document.
    moments = sorted(
        {e.appear_s for e in events}
        | {e.gone_s for e in events}
        | {e.started_s for e in events if e.started_s is not None}
    )
    shown = [_document_events(e, started_at) for e in events]
    snapshots = [Snapshot(0.0, {"DocumentIncarnation": 1, "Events": []})]
    for at_s in moments:
        live = [
            started if e.started_s is not None and at_s >= e.started_s else scheduled
            for e, (scheduled, started) in zip(events, shown, strict=True)
            if e.appear_s <= at_s < e.gone_s
        ]
        document = {"DocumentIncarnation": len(snapshots) + 1, "Events": live}
        snapshots.append(Snapshot(float(at_s), document))
    return Trace(
        name=trace_name(o, index),
        scenario=o.scenario,
        snapshots=tuple(snapshots),
        started_at=started_at,
        origin="synthetic",
        source={**plan.source, "index": index},
    )


def synth_traces(plan: Plan, start: int = 0, stop: int | None = None) -> Iterator[Trace]:
    """Synthetic traces start..stop-1 (default: all of them)."""
    for index in range(start, plan.options.count if stop is None else stop):
        yield synth_trace(plan, index)
