"""The fleet file: groups of VMs that share a trace's events, and the VMs with their addresses.

A fleet file is TOML (or the same tables as JSON, from the control API):

    [[group]]
    name = "web"
    trace = "live-migration"     # a trace name or path
    rollout = "fault-domain"     # or "together"
    gap_s = 120                  # trace seconds from one fault domain's events ending to the next's

    [[vm]]
    name = "web-0"               # its name in Resources
    address = "10.0.0.4"         # the address its IMDS requests come from
    group = "web"
    fault_domain = 0
    faults = "retry.json"        # optional, also per group: a fault playbook (file or windows)

Parsing is pure; every error names the file, the entry and the field. Which traces exist is the
caller's business: `plan_fleet` takes a resolver and names the group whose trace is missing.
A playbook named by path is read by `read_fleet` (relative to the file); a fleet given as data
(the control API) has its windows inline.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from replay.core.faults import FaultWindow, PlaybookError, load_playbook, parse_playbook
from replay.core.reference import event_id_for
from replay.core.rollout import ROLLOUTS, Rollout, plan_rollout
from replay.core.timeline import Trace
from replay.errors import ReplayError

VM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""Azure VM names: 1-64 letters, digits, '.', '_' or '-' (safe in /vm/{name}/ paths too)."""
GROUP_KEYS = {"name": str, "trace": str, "rollout": str, "gap_s": float, "faults": list}
VM_KEYS = {"name": str, "address": str, "group": str, "fault_domain": int, "faults": list}
MAX_FAULT_DOMAIN = 1000
MAX_GAP_S = 1e7


Playbook = tuple[FaultWindow, ...]
PlaybookLoader = Callable[[str], Playbook]
"""Reads a playbook file named in a fleet file (a path relative to it)."""


class FleetFileError(ReplayError):
    """A fleet file that cannot be used; the message names the file, the entry and the field."""


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A [[group]] entry: VMs that see each other's events (an availability set, a placement
    group of a scale set)."""

    name: str
    trace: str
    rollout: str = "fault-domain"
    gap_s: float = 0.0
    """Trace seconds from one fault domain's events being gone to the next one's appearing."""
    faults: Playbook | None = None
    """The fault playbook of its VMs that have none of their own."""


@dataclass(frozen=True, slots=True)
class VmSpec:
    """A [[vm]] entry."""

    name: str
    address: str
    """Normalised IP address (as request.remote shows it)."""
    group: str
    fault_domain: int = 0
    faults: Playbook | None = None
    """Its own fault playbook (an empty one: none, whatever its group or the server has)."""


@dataclass(frozen=True, slots=True)
class VmIdentity:
    """Who a VM is, for its own instance metadata: compute.name, platformFaultDomain, vmId,
    vmScaleSetName. The instance-metadata renderer takes these fields (compute_fields)."""

    name: str
    address: str
    group: str
    fault_domain: int
    vm_id: str
    """Stable per VM: derived from the group and the VM's name, the same every run."""

    def compute_fields(self) -> dict[str, str]:
        """The `compute` fields of /metadata/instance that are this VM's own (IMDS's strings)."""
        return {
            "name": self.name,
            "platformFaultDomain": str(self.fault_domain),
            "vmId": self.vm_id.lower(),
            "vmScaleSetName": self.group,
        }


@dataclass(frozen=True)
class FleetSpec:
    """A parsed fleet file, in file order."""

    source: str
    groups: tuple[GroupSpec, ...]
    vms: tuple[VmSpec, ...]

    def members(self, group: str) -> tuple[VmSpec, ...]:
        return tuple(vm for vm in self.vms if vm.group == group)


@dataclass(frozen=True)
class FleetTrace:
    """Captures of several VMs that saw the same events: a timeline per VM, on one time axis
    (every timeline has the same started_at), the shared events linked by their EventIds."""

    name: str
    timelines: Mapping[str, Trace]
    """Each VM's trace, by the VM's name."""


@dataclass(frozen=True)
class CapturedGroup:
    """A group replaying a fleet trace: each VM its own captured timeline; an approval of an
    EventId starts it in every timeline that shows it."""

    group: str
    source: FleetTrace
    timelines: Mapping[str, Trace]
    """This group's VMs' timelines, each named after the fleet trace (so a loop round's fresh
    EventIds agree across VMs)."""
    rollout = "captured"

    @property
    def duration_s(self) -> float:
        return max(t.duration_s for t in self.timelines.values())

    @property
    def started_at(self) -> datetime | None:
        return next(iter(self.timelines.values())).started_at


GroupPlan = Rollout | CapturedGroup


@dataclass(frozen=True)
class FleetPlan:
    """A fleet ready to play: each group's rollout (or captured timelines), each VM's identity."""

    source: str
    groups: tuple[GroupPlan, ...]
    identities: tuple[VmIdentity, ...]
    faults: Mapping[str, Playbook] = field(default_factory=dict)
    """Each VM's fault playbook from the file (its own, else its group's), by VM name; a VM
    not here plays the server's (serve --faults), if any."""


def _entry(source: str, table: str, index: int, raw: Mapping[str, Any]) -> str:
    name = raw.get("name")
    named = f" ({name!r})" if isinstance(name, str) and name else ""
    return f"{source}: [[{table}]] {index + 1}{named}"


def _name(where: str, raw: Mapping[str, Any]) -> str:
    """An entry's `name`: what Resources and the control API call it."""
    name: str = _field(where, raw, "name", str)
    if not VM_NAME_RE.fullmatch(name):
        raise FleetFileError(
            f"{where}, field 'name': {name!r} must be 1-64 letters, digits, '.', '_' or '-'"
        )
    return name


def _field(where: str, raw: Mapping[str, Any], key: str, kind: type, default: Any = None) -> Any:
    """A field of an entry, checked against its type; default None means required."""
    if key not in raw:
        if default is None:
            raise FleetFileError(f"{where}, field {key!r}: missing")
        return default
    value = raw[key]
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise FleetFileError(f"{where}, field {key!r}: must be a finite number, got {value}")
        value = float(value) if ok else value
    else:
        ok = isinstance(value, kind) and not isinstance(value, bool)
    if not ok:
        want = {str: "a string", int: "an integer", float: "a number"}[kind]
        raise FleetFileError(f"{where}, field {key!r}: must be {want}, got {value!r}")
    return value


def _check_keys(where: str, table: str, raw: Mapping[str, Any], known: Mapping[str, type]) -> None:
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise FleetFileError(
            f"{where}, field {unknown[0]!r}: unknown (a {table} has {', '.join(known)})"
        )


def _tables(data: Mapping[str, Any], source: str, key: str) -> list[Mapping[str, Any]]:
    tables = data.get(key, [])
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise FleetFileError(f"{source}: {key!r} must be an array of tables ([[{key}]])")
    return tables


def parse_fleet(
    data: Any, source: str = "fleet", playbooks: PlaybookLoader | None = None
) -> FleetSpec:
    """Validate a fleet (parsed TOML or JSON); errors name the source, the entry and the field.

    playbooks reads a `faults` that names a file; without it, only inline windows are taken.
    """
    if not isinstance(data, Mapping):
        raise FleetFileError(f"{source}: a fleet is a table with [[group]] and [[vm]] entries")
    unknown = sorted(set(data) - {"group", "vm"})
    if unknown:
        raise FleetFileError(f"{source}: unknown table {unknown[0]!r} (a fleet has group, vm)")
    groups: dict[str, GroupSpec] = {}
    for i, raw in enumerate(_tables(data, source, "group")):
        where = _entry(source, "group", i, raw)
        _check_keys(where, "group", raw, GROUP_KEYS)
        name = _name(where, raw)
        if name in groups:
            raise FleetFileError(f"{where}, field 'name': group {name!r} is already defined")
        trace = _field(where, raw, "trace", str)
        if not trace:
            raise FleetFileError(f"{where}, field 'trace': must name a trace")
        rollout = _field(where, raw, "rollout", str, "fault-domain")
        if rollout not in ROLLOUTS:
            raise FleetFileError(
                f"{where}, field 'rollout': {rollout!r} is not one of {', '.join(ROLLOUTS)}"
            )
        gap_s = _field(where, raw, "gap_s", float, 0.0)
        if not 0 <= gap_s <= MAX_GAP_S:
            raise FleetFileError(f"{where}, field 'gap_s': must be 0 to {MAX_GAP_S:g} seconds")
        faults = _faults(where, raw, playbooks)
        groups[name] = GroupSpec(name, trace, rollout, gap_s, faults)
    if not groups:
        raise FleetFileError(f"{source}: no [[group]] entries; a fleet needs at least one")
    vms: list[VmSpec] = []
    names: dict[str, int] = {}
    addresses: dict[str, int] = {}
    for i, raw in enumerate(_tables(data, source, "vm")):
        where = _entry(source, "vm", i, raw)
        _check_keys(where, "vm", raw, VM_KEYS)
        name = _name(where, raw)
        if name in names:
            raise FleetFileError(
                f"{where}, field 'name': duplicate; [[vm]] {names[name] + 1} is also {name!r}"
            )
        text = _field(where, raw, "address", str)
        try:
            address = str(ipaddress.ip_address(text))
        except ValueError:
            problem = f"{where}, field 'address': {text!r} is not an IP address"
            raise FleetFileError(problem) from None
        if address in addresses:
            raise FleetFileError(
                f"{where}, field 'address': duplicate; [[vm]] {addresses[address] + 1} "
                f"also has {address}"
            )
        group = _field(where, raw, "group", str)
        if group not in groups:
            raise FleetFileError(
                f"{where}, field 'group': unknown group {group!r} (groups: {', '.join(groups)})"
            )
        fault_domain = _field(where, raw, "fault_domain", int, 0)
        if not 0 <= fault_domain <= MAX_FAULT_DOMAIN:
            raise FleetFileError(
                f"{where}, field 'fault_domain': must be 0 to {MAX_FAULT_DOMAIN}, "
                f"got {fault_domain}"
            )
        names[name], addresses[address] = i, i
        vms.append(VmSpec(name, address, group, fault_domain, _faults(where, raw, playbooks)))
    for i, spec in enumerate(groups.values()):
        if not any(vm.group == spec.name for vm in vms):
            where = f"{source}: [[group]] {i + 1} ({spec.name!r})"
            raise FleetFileError(f"{where}, field 'name': no [[vm]] is in this group")
    return FleetSpec(source, tuple(groups.values()), tuple(vms))


def _faults(
    where: str, raw: Mapping[str, Any], playbooks: PlaybookLoader | None
) -> Playbook | None:
    """An entry's `faults`: windows inline, or a playbook file read by playbooks."""
    if "faults" not in raw:
        return None
    value, where = raw["faults"], f"{where}, field 'faults'"
    try:
        if isinstance(value, list):
            return parse_playbook(value, where)
        if not isinstance(value, str) or not value:
            raise FleetFileError(f"{where}: must be a playbook file or a list of windows")
        if playbooks is None:
            raise FleetFileError(
                f"{where}: a playbook file is read only from a fleet file; give the windows"
            )
        return playbooks(value)
    except PlaybookError as exc:
        problem = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
        raise FleetFileError(problem) from None


def read_fleet(path: Path) -> FleetSpec:
    """Read and validate a fleet file (TOML); errors name the file. Playbook files it names
    are read relative to it."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise FleetFileError(f"{path}: cannot read the fleet file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetFileError(f"{path}: not TOML: {exc}") from None
    read: dict[str, Playbook] = {}

    def playbooks(name: str) -> Playbook:
        if name not in read:
            read[name] = load_playbook(path.parent / name)
        return read[name]

    return parse_fleet(data, str(path), playbooks)


def identity_of(vm: VmSpec) -> VmIdentity:
    """A VM's identity; its vmId is stable per group and name."""
    vm_id = event_id_for(f"vm/{vm.group}/{vm.name}")
    return VmIdentity(vm.name, vm.address, vm.group, vm.fault_domain, vm_id)


def plan_fleet(spec: FleetSpec, resolve: Callable[[str], Trace | FleetTrace]) -> FleetPlan:
    """Each group's rollout over the trace `resolve` gives for its name (or path); a group
    naming a fleet trace replays each VM's own timeline instead (rollout and gap_s unused).

    resolve raises ReplayError for a trace that does not exist; the error then names the group.
    """
    groups: list[GroupPlan] = []
    for i, group in enumerate(spec.groups):
        where = f"{spec.source}: [[group]] {i + 1} ({group.name!r}), field 'trace'"
        try:
            resolved = resolve(group.trace)
        except ReplayError as exc:
            raise FleetFileError(f"{where}: {exc}") from None
        if isinstance(resolved, FleetTrace):
            groups.append(_captured(spec, group, resolved))
            continue
        members = [(vm.name, vm.fault_domain) for vm in spec.members(group.name)]
        try:
            groups.append(plan_rollout(group.name, resolved, members, group.rollout, group.gap_s))
        except ReplayError as exc:
            raise FleetFileError(f"{where}: {exc}") from None
    identities = tuple(identity_of(vm) for vm in spec.vms)
    return FleetPlan(spec.source, tuple(groups), identities, playbooks_of(spec))


def playbooks_of(spec: FleetSpec) -> dict[str, Playbook]:
    """Each VM's playbook from the fleet file: its own, else its group's (absent: neither)."""
    group_faults = {g.name: g.faults for g in spec.groups}
    found = {
        vm.name: vm.faults if vm.faults is not None else group_faults[vm.group] for vm in spec.vms
    }
    return {name: playbook for name, playbook in found.items() if playbook is not None}


def _captured(spec: FleetSpec, group: GroupSpec, fleet: FleetTrace) -> CapturedGroup:
    timelines = {}
    for i, vm in enumerate(spec.vms):
        if vm.group != group.name:
            continue
        if vm.name not in fleet.timelines:
            raise FleetFileError(
                f"{spec.source}: [[vm]] {i + 1} ({vm.name!r}), field 'name': not a VM of fleet "
                f"trace {fleet.name!r} (its VMs: {', '.join(fleet.timelines)})"
            )
        timelines[vm.name] = replace(fleet.timelines[vm.name], name=fleet.name)
    return CapturedGroup(group.name, fleet, timelines)
