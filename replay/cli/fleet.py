"""`serve --fleet FILE`: read the fleet file, resolve its traces, say what will play."""

from __future__ import annotations

from pathlib import Path

from replay.cli.common import err
from replay.clock import Clock
from replay.core.fleet import CapturedGroup
from replay.core.timeline import Trace
from replay.playback.anchor import Start
from replay.playback.fleet import FleetOptions
from replay.playback.fleet_host import FleetHost


def fleet_host_for(
    path: Path, traces_dir: Path, clock: Clock, options: FleetOptions, *, not_for_fleets: list[str]
) -> FleetHost:
    """Load a fleet file for `serve`; print what it plays. not_for_fleets: options given that
    do not apply to a fleet (an error)."""
    from replay.core.fleet import plan_fleet, read_fleet
    from replay.errors import ReplayError
    from replay.store.dataset import load_trace

    if not_for_fleets:
        raise ReplayError(
            f"{', '.join(not_for_fleets)} does not apply with --fleet: the fleet file names "
            "each group's trace and its VMs"
        )
    spec = read_fleet(path)
    loaded: dict[str, Trace] = {}

    def resolve(name: str) -> Trace:
        if name not in loaded:
            target = Path(name)
            is_path = name.endswith(".parquet") or "/" in name
            where = str(path.parent / target) if is_path and not target.is_absolute() else name
            loaded[name] = load_trace(traces_dir, where)
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
    err.print(
        "each VM is the client address its requests come from, or /vm/NAME/metadata/...",
        highlight=False,
    )
    return host
