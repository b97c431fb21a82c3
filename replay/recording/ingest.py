"""Capture files -> traces: label each parsed episode's scenario and write it to the store.

Ingesting is idempotent: an episode keeps its name as its capture grows, an unchanged trace
is left alone, and a file with a bad line writes nothing (unless skip_bad).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import queue
import re
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from replay.core.timeline import Approval, Snapshot, Trace, trace_problems
from replay.cpus import usable_cpus
from replay.errors import ReplayError
from replay.recording.episodes import BadLineError, Episode, ParsedCapture
from replay.recording.logs import LogOptions
from replay.recording.parse import parse_capture, parse_in_worker, start_worker
from replay.recording.sources import STDIN
from replay.store.dataset import write_trace
from replay.store.files import read_trace
from replay.store.layout import check_name, episode_files, trace_path

# -- episodes -> traces ---------------------------------------------------------------------


def scenario_of(trace: Trace) -> str:
    """The scenario of an episode, from its first event, by the first rule that matches."""
    event = trace.snapshots[1].events[0]
    kind, source, event_id = event["EventType"], event["EventSource"], event["EventId"]
    if not any(
        e["EventId"] == event_id and e["EventStatus"] == "Started"
        for snap in trace.snapshots
        for e in snap.events
    ):
        return "canceled-maintenance"
    if event["EventStatus"] == "Started" and kind == "Reboot":
        return "host-failure"
    if kind == "Freeze" and source == "Platform":
        if "live migration" in event["Description"].casefold():
            return "live-migration"
        return "host-maintenance"
    if kind in ("Reboot", "Redeploy") and source in ("User", "Platform"):
        return f"{source.lower()}-{kind.lower()}"
    if kind == "Preempt":
        return "spot-eviction"
    if kind == "Terminate":
        return "terminate"
    return f"other-{kind.lower()}"


def episode_key(parsed: ParsedCapture, episode: Episode) -> str:
    """A name suffix that stays the same as the capture grows: first EventId + short hash."""
    t, doc, _ = episode.docs[1]
    event_id = doc["Events"][0]["EventId"]
    digest = hashlib.sha256(
        b"\0".join([parsed.identity, event_id.encode(), t.astimezone(UTC).isoformat().encode()])
    )
    short_id = re.sub(r"[^a-z0-9]", "", event_id.lower())[:8] or "event"
    return f"{short_id}-{digest.hexdigest()[:10]}"


def _offset(t: datetime, start: datetime) -> float:
    return round((t - start).total_seconds(), 6)


def episode_trace(parsed: ParsedCapture, episode: Episode, scenario: str | None = None) -> Trace:
    """The trace of one episode: offsets from its start, its approvals, the capture's metadata."""
    start, end = episode.start_at, episode.end_at
    key = episode_key(parsed, episode)
    ids = {e["EventId"] for _, doc, _ in episode.docs for e in doc["Events"]}
    approvals = [
        (t, tuple(i for i in approved if i in ids))
        for t, approved in parsed.approvals
        if start <= t <= end
    ]
    trace = Trace(
        name=key,
        scenario="unlabelled",
        snapshots=tuple(Snapshot(_offset(t, start), doc) for t, doc, _ in episode.docs),
        approvals=tuple(Approval(_offset(t, start), a) for t, a in approvals if a),
        started_at=start.astimezone(UTC),
        origin="captured",
        source={
            "file": parsed.path.name,
            "format": parsed.format,
            "capture": parsed.header,
            "lines": episode.lines,
            "episode": key,
        },
    )
    label = scenario or scenario_of(trace)
    return replace(trace, name=f"{label}-{key}", scenario=label)


def capture_traces(
    parsed: ParsedCapture, *, scenario: str | None = None, skip_bad: bool = False
) -> list[Trace]:
    """Every episode's trace, validated; a broken episode raises (or is skipped with skip_bad)."""
    traces = []
    for episode in parsed.episodes:
        trace = episode_trace(parsed, episode, scenario)
        problem = next(trace_problems(trace), None)
        if problem is None:
            traces.append(trace)
            continue
        error = BadLineError(parsed.path, episode.lines, f"episode: {problem}")
        if not skip_bad:
            raise error
        parsed.skipped.append(error)
    return traces


# -- writing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What ingest did with one trace: added, updated or unchanged."""

    name: str
    scenario: str
    status: str
    path: Path
    file: Path


def store_trace(trace: Trace, traces_dir: Path, file: Path) -> Outcome:
    """Write a trace unless the dataset already holds it; replace an older version of it."""
    target = trace_path(traces_dir, trace.scenario, trace.name)
    episode = trace.source["episode"]
    existing = episode_files(traces_dir, episode)
    if existing == [target]:
        try:
            if read_trace(target) == trace:
                return Outcome(trace.name, trace.scenario, "unchanged", target, file)
        except ReplayError:
            pass  # a damaged copy is rewritten
    path = write_trace(trace, traces_dir)
    for old in existing:
        if old != path:
            old.unlink(missing_ok=True)  # the same episode under another scenario
    return Outcome(trace.name, trace.scenario, "updated" if existing else "added", path, file)


@dataclass
class FileReport:
    """One ingested file: what was written, what was skipped and why, and what it held."""

    path: Path
    outcomes: list[Outcome]
    warnings: list[str]
    skipped: list[BadLineError]
    shape: str = ""
    """The shape read (capture, plain, json, curl) and where time and document were."""
    counts: dict[str, int] = field(default_factory=dict)
    """lines, polls, failed polls, records without a document, episodes."""


def ingest_parsed(
    parsed: ParsedCapture, traces_dir: Path, *, scenario: str | None = None, skip_bad: bool = False
) -> FileReport:
    """Validate every episode of a parsed file, then write their traces."""
    traces = capture_traces(parsed, scenario=scenario, skip_bad=skip_bad)
    outcomes = [store_trace(trace, traces_dir, parsed.path) for trace in traces]
    shape = f"{parsed.format} ({parsed.detail})" if parsed.detail else parsed.format
    counts = {
        "lines": parsed.lines,
        "polls": parsed.polls,
        "failed_polls": parsed.failed_polls,
        "no_document": parsed.no_document,
        "episodes": len(parsed.episodes),
    }
    return FileReport(parsed.path, outcomes, parsed.warnings, parsed.skipped, shape, counts)


def ingest_file(
    path: Path,
    traces_dir: Path,
    *,
    scenario: str | None = None,
    skip_bad: bool = False,
    on_bytes: Callable[[int], None] | None = None,
    options: LogOptions | None = None,
) -> FileReport:
    """Parse and validate every episode of one capture file or log, then write their traces.

    Nothing from the file is written if any line is bad (unless skip_bad).
    """
    if scenario is not None:
        check_name(scenario, "scenario")
    parsed = parse_capture(path, skip_bad=skip_bad, on_bytes=on_bytes, options=options)
    return ingest_parsed(parsed, traces_dir, scenario=scenario, skip_bad=skip_bad)


# -- many files, parsed in parallel -----------------------------------------------------------


def parse_files(
    paths: Sequence[Path],
    *,
    skip_bad: bool = False,
    options: LogOptions | None = None,
    jobs: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> list[ParsedCapture | ReplayError]:
    """Parse files (up to jobs at once, in processes; default one per CPU), in input order.

    Each file's result is its ParsedCapture or the ReplayError that rejected it. Standard input
    (`-`) is read in this process. The results do not depend on jobs.
    """
    options = options or LogOptions()
    results: dict[int, ParsedCapture | ReplayError] = {}
    in_workers = [i for i, p in enumerate(paths) if str(p) != STDIN]
    jobs = min(jobs or usable_cpus(), len(in_workers))
    if jobs <= 1:
        in_workers = []
    for i, path in enumerate(paths):
        if i not in in_workers:
            results[i] = _parse_here(path, skip_bad, options, on_bytes)
    if in_workers:
        context = multiprocessing.get_context("spawn")
        progress: multiprocessing.Queue[int] = context.Queue()
        with ProcessPoolExecutor(jobs, context, start_worker, (progress,)) as pool:
            futures = {
                pool.submit(parse_in_worker, paths[i], skip_bad, options): i for i in in_workers
            }
            pending: set[Future[ParsedCapture]] = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                _drain(progress, on_bytes)
                for future in done:
                    try:
                        results[futures[future]] = future.result()
                    except ReplayError as exc:
                        results[futures[future]] = exc
        _drain(progress, on_bytes)
    return [results[i] for i in range(len(paths))]


def _parse_here(
    path: Path, skip_bad: bool, options: LogOptions, on_bytes: Callable[[int], None] | None
) -> ParsedCapture | ReplayError:
    try:
        return parse_capture(path, skip_bad=skip_bad, on_bytes=on_bytes, options=options)
    except ReplayError as exc:
        return exc


def _drain(progress: multiprocessing.Queue[int], on_bytes: Callable[[int], None] | None) -> None:
    while True:
        try:
            n = progress.get_nowait()
        except queue.Empty:
            return
        if on_bytes is not None:
            on_bytes(n)


def summarize(reports: list[FileReport]) -> dict[str, dict[str, int]]:
    """Traces added, updated and unchanged per scenario, scenarios sorted."""
    table: dict[str, dict[str, int]] = {}
    for outcome in (o for report in reports for o in report.outcomes):
        row = table.setdefault(outcome.scenario, {"added": 0, "updated": 0, "unchanged": 0})
        row[outcome.status] += 1
    return dict(sorted(table.items()))
