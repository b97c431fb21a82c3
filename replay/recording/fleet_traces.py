"""Fleet traces: captures of several VMs that saw the same EventIds, as one trace per VM.

Each capture file is one VM (named by its capture header's host, else the file's stem). From
each, the one episode that shares an EventId with another VM's is kept; the episodes are put on
one time axis (offset 0 at the earliest episode's start, each VM's first, empty document
stretched back to it), keeping every VM's own documents, incarnations and approvals. They are
written as one bundle, `<name>.parquet`, holding a trace `<name>.<vm>` per VM whose source says
{"fleet": name, "vm": vm}. A fleet file replays it by naming it as a group's trace; reading it
back is replay.store.fleet's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from replay.core.fleet import VM_NAME_RE, FleetTrace
from replay.core.timeline import Approval, Snapshot, Trace, validate
from replay.errors import ReplayError
from replay.recording.episodes import ParsedCapture
from replay.recording.ingest import capture_traces
from replay.recording.parse import parse_capture
from replay.store.dataset import write_bundle
from replay.store.layout import check_name


def vm_of(parsed: ParsedCapture) -> str:
    """The VM a capture file is: its header's host, else the file's name without suffix."""
    host = parsed.header.get("host")
    name = host if isinstance(host, str) and host else parsed.path.stem
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip("-._") or "vm"
    return name[:64] if VM_NAME_RE.fullmatch(name[:64]) else f"vm-{name}"[:64]


def _shared_episode(path: Path, traces: Sequence[Trace], shared: set[str]) -> Trace:
    """The one episode of a file that shares an EventId with another VM's."""
    linked = [t for t in traces if shared & set(t.event_ids)]
    if len(linked) == 1:
        return linked[0]
    if not linked:
        raise ReplayError(f"{path}: no episode shares an EventId with the other captures")
    raise ReplayError(
        f"{path}: {len(linked)} episodes share EventIds with the other captures; a fleet trace "
        "takes one episode per VM (ingest each stretch of time separately)"
    )


def _aligned(trace: Trace, start: datetime, name: str, vm: str, scenario: str) -> Trace:
    """A VM's episode on the fleet's axis: its first, empty document from offset 0 on."""
    assert trace.started_at is not None
    delta = (trace.started_at - start).total_seconds()
    first, *rest = trace.snapshots
    return validate(
        Trace(
            name=f"{name}.{vm}",
            scenario=scenario,
            snapshots=(
                Snapshot(0.0, first.document),
                *(Snapshot(round(s.offset_s + delta, 6), s.document) for s in rest),
            ),
            approvals=tuple(
                Approval(round(a.offset_s + delta, 6), a.event_ids) for a in trace.approvals
            ),
            started_at=start,
            origin="captured",
            source={**trace.source, "fleet": name, "vm": vm},
        )
    )


def fleet_of_captures(
    parsed: Sequence[ParsedCapture], name: str, *, scenario: str | None = None
) -> FleetTrace:
    """One fleet trace from parsed captures of several VMs that saw the same EventIds."""
    check_name(name, "fleet trace name")
    if len(parsed) < 2:
        raise ReplayError("a fleet trace needs captures of at least two VMs")
    vms: dict[str, Path] = {}
    episodes: list[list[Trace]] = []
    for capture in parsed:
        vm = vm_of(capture)
        if vm in vms:
            raise ReplayError(f"{capture.path} and {vms[vm]} are both VM {vm!r}; one file per VM")
        vms[vm] = capture.path
        episodes.append(capture_traces(capture, scenario=scenario))
    seen_by: dict[str, set[str]] = {}
    for vm, traces in zip(vms, episodes, strict=True):
        for trace in traces:
            for eid in trace.event_ids:
                seen_by.setdefault(eid, set()).add(vm)
    shared = {eid for eid, who in seen_by.items() if len(who) > 1}
    chosen = [
        _shared_episode(path, traces, shared)
        for path, traces in zip(vms.values(), episodes, strict=True)
    ]
    start = min(t.started_at for t in chosen if t.started_at is not None)
    label = scenario or chosen[0].scenario
    timelines = {
        vm: _aligned(trace, start, name, vm, label) for vm, trace in zip(vms, chosen, strict=True)
    }
    return FleetTrace(name, timelines)


def ingest_fleet(
    paths: Sequence[Path], traces_dir: Path, name: str, *, scenario: str | None = None
) -> tuple[FleetTrace, Path]:
    """Parse capture files of several VMs and write their fleet trace; returns it and its file."""
    fleet = fleet_of_captures([parse_capture(p) for p in paths], name, scenario=scenario)
    return fleet, write_bundle(list(fleet.timelines.values()), traces_dir, name)
