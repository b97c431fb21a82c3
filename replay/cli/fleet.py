"""Fleets on the command line: `serve --fleet FILE` reads the fleet file and says what will
play; `ingest-fleet` builds a fleet trace from captures of several VMs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from replay.cli.common import (
    Format,
    FormatOpt,
    TracesDir,
    app,
    err,
    print_json,
    print_table,
    resolve_dir,
    user_errors,
)

if TYPE_CHECKING:  # the fleet and playback modules load only when `serve --fleet` runs
    from replay.clock import Clock
    from replay.core.fleet import FleetTrace
    from replay.core.timeline import Trace
    from replay.playback.fleet import FleetOptions
    from replay.playback.fleet_host import FleetHost


def fleet_host_for(
    path: Path, traces_dir: Path, clock: Clock, options: FleetOptions, *, not_for_fleets: list[str]
) -> FleetHost:
    """Load a fleet file for `serve`; print what it plays. not_for_fleets: options given that
    do not apply to a fleet (an error)."""
    from replay.core.fleet import CapturedGroup, plan_fleet, read_fleet
    from replay.errors import ReplayError
    from replay.playback.anchor import Start
    from replay.playback.fleet_host import FleetHost
    from replay.store.fleet import resolve_trace

    if not_for_fleets:
        raise ReplayError(
            f"{', '.join(not_for_fleets)} does not apply with --fleet: the fleet file names "
            "each group's trace and its VMs"
        )
    spec = read_fleet(path)
    loaded: dict[str, Trace | FleetTrace] = {}

    def resolve(name: str) -> Trace | FleetTrace:
        if name not in loaded:
            target = Path(name)
            is_path = name.endswith(".parquet") or "/" in name
            where = str(path.parent / target) if is_path and not target.is_absolute() else name
            loaded[name] = resolve_trace(traces_dir, where)
        return loaded[name]

    plan = plan_fleet(spec, resolve)
    host = FleetHost(clock)
    fleet = host.load(plan, options)
    factor = options.speed
    err.print(
        f"fleet {path}: {len(fleet.vms)} VMs in {len(fleet.groups)} "
        f"group{'s' * (len(fleet.groups) != 1)} at {factor:g}x: "
        f"{fleet.duration_s:g} s of trace take {fleet.duration_s / factor:.3g} s"
        + (", looping" if options.loop else "")
        + (
            "; the clock starts at the first request"
            if options.start is Start.first_request
            else ""
        ),
        highlight=False,
    )
    for group in plan.groups:
        if isinstance(group, CapturedGroup):
            line = f"{group.source.name}, captured ({len(group.timelines)} VMs' own timelines)"
        else:
            domains = ", ".join(
                f"fd {w.fault_domain}: {len(w.resources)}"
                if w.fault_domain is not None
                else f"{len(w.resources)} VMs"
                for w in group.waves
            )
            gap = f", {group.gap_s:g} s apart" if len(group.waves) > 1 else ""
            line = f"{group.source.name}, {group.rollout} ({domains}){gap}"
        err.print(f"  {group.group}: {line}", highlight=False)
    faulty = sum(1 for vm in fleet.vms.values() if vm.faults is not None)
    if faulty:
        err.print(f"  faults: {faulty} of {len(fleet.vms)} VMs play a playbook", highlight=False)
    if options.warm_up_s > 0:
        err.print(f"  warm-up: {options.warm_up_s:g} s for each VM", highlight=False)
    err.print(
        "each VM is the client address its requests come from, or /vm/NAME/metadata/...",
        highlight=False,
    )
    return host


@app.command("ingest-fleet")
@user_errors
def ingest_fleet(
    name: Annotated[
        str, typer.Argument(help="The fleet trace's name (a group's trace in a fleet file)")
    ],
    files: Annotated[
        list[Path], typer.Argument(help="One capture file per VM (capture output or plain logs)")
    ],
    traces_dir: TracesDir = None,
    scenario: Annotated[
        str | None,
        typer.Option(help="Label the fleet trace with this scenario", show_default=False),
    ] = None,
    format: FormatOpt = Format.table,
) -> None:
    """Build one fleet trace from captures of several VMs that saw the same EventIds.

    Each file is one VM (its capture's host, else the file's name). From each, the episode that
    shares an EventId with another VM's is kept, on one time axis with the others, with its own
    documents, incarnations and approvals. Name it as a group's trace in a fleet file.

    Example: imds-replay ingest-fleet web-maintenance vm-a.jsonl vm-b.jsonl vm-c.log
    """
    from replay.recording.fleet_traces import ingest_fleet as ingest

    fleet, path = ingest(files, resolve_dir(traces_dir), name, scenario=scenario)
    counts: dict[str, int] = {}
    for trace in fleet.timelines.values():
        for eid in trace.event_ids:
            counts[eid] = counts.get(eid, 0) + 1
    rows = [
        {
            "vm": vm,
            "trace": trace.name,
            "first_event_s": trace.snapshots[1].offset_s,
            "documents": len(trace.snapshots),
            "events": trace.event_count,
            "shared_events": sum(1 for e in trace.event_ids if counts[e] > 1),
            "approvals": len(trace.approvals),
        }
        for vm, trace in fleet.timelines.items()
    ]
    if format is Format.json:
        print_json({"name": fleet.name, "path": str(path), "vms": rows})
        return
    print_table(
        f"fleet trace {fleet.name} -> {path}", list(rows[0]), [list(r.values()) for r in rows]
    )
