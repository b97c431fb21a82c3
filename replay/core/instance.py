"""Instance metadata: who the replayed VM is, as `/metadata/instance` answers it (pure core).

Handlers ask IMDS their own name to see whether an event's `Resources` lists them. The
document here is coherent with the replay: `compute.name` is the name the events use, `vmId`
is stable for a session, and a scale-set instance name (`<set>_<index>`) gets its set and a
fault domain from its index. `InstanceIdentity` is everything that differs from one VM to the
next, so a fleet can give each VM its own. Standard library and orjson only.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from replay.core.timeline import Trace

DEFAULT_VM = "vm-0"
"""The VM name when neither the options nor the trace name one."""
SCALE_SET_FAULT_DOMAINS = 5
"""A scale set spreads its instances over five fault (and update) domains by default."""
_NAMESPACE = uuid.UUID("5d0a1c8e-0b8e-4c57-9d1c-3f4a2b7e6a10")
"""Fixed: the same seed gives the same vmId on every machine and every run."""
_SCALE_SET_INSTANCE = re.compile(r"^(?P<set>.+)_(?P<index>\d{1,9})$")
TEXT_TYPE = "text/plain; charset=utf-8"
FORMATS = ("json", "text")


@dataclass(frozen=True, slots=True)
class InstanceIdentity:
    """What tells one VM from another in its instance document."""

    name: str
    vm_id: str
    scale_set: str = ""
    """The scale set's name; empty for a standalone VM (as IMDS answers)."""
    instance_index: int | None = None
    """The VM's index in its scale set."""
    fault_domain: int = 0
    update_domain: int = 0
    zone: str = ""
    private_ip: str = "10.0.0.4"
    mac_address: str = "000D3A000004"
    location: str = "westeurope"
    vm_size: str = "Standard_D2s_v5"
    resource_group: str = "imds-replay"
    subscription_id: str = "00000000-0000-4000-8000-00000000cafe"


def vm_name(resources: Sequence[str] | None, trace: Trace) -> str:
    """The VM's name: the session's first resource, else the trace's first, else vm-0."""
    if resources:
        return resources[0]
    for snap in trace.snapshots:
        for event in snap.events:
            if event["Resources"]:
                name: str = event["Resources"][0]
                return name
    return DEFAULT_VM


def identity_for(name: str, *, seed: str) -> InstanceIdentity:
    """A plausible identity for a VM name; `seed` (e.g. trace/session) makes its vmId."""
    vm_id = str(uuid.uuid5(_NAMESPACE, f"{seed}/{name}"))
    # A private address and MAC that differ between VMs but stay the same for one.
    host = uuid.UUID(vm_id).int % 250 + 4
    mac = f"000D3A{uuid.UUID(vm_id).int % 0xFFFFFF:06X}"
    match = _SCALE_SET_INSTANCE.fullmatch(name)
    if match is None:
        return InstanceIdentity(name, vm_id, private_ip=f"10.0.0.{host}", mac_address=mac)
    index = int(match["index"])
    domain = index % SCALE_SET_FAULT_DOMAINS
    return InstanceIdentity(
        name,
        vm_id,
        scale_set=match["set"],
        instance_index=index,
        fault_domain=domain,
        update_domain=domain,
        private_ip=f"10.0.{index // 250 % 250}.{index % 250 + 4}",
        mac_address=mac,
    )


def instance_document(identity: InstanceIdentity) -> dict[str, Any]:
    """The whole /metadata/instance document of a VM (values are strings, as IMDS sends)."""
    i = identity
    prefix = f"/subscriptions/{i.subscription_id}/resourceGroups/{i.resource_group}/providers"
    if i.scale_set:
        resource_id = (
            f"{prefix}/Microsoft.Compute/virtualMachineScaleSets/{i.scale_set}"
            f"/virtualMachines/{i.instance_index}"
        )
    else:
        resource_id = f"{prefix}/Microsoft.Compute/virtualMachines/{i.name}"
    return {
        "compute": {
            "azEnvironment": "AzurePublicCloud",
            "isHostCompatibilityLayerVm": "false",
            "licenseType": "",
            "location": i.location,
            "name": i.name,
            "offer": "ubuntu-24_04-lts",
            "osProfile": {
                "adminUsername": "azureuser",
                "computerName": i.name,
                "disablePasswordAuthentication": "true",
            },
            "osType": "Linux",
            "placementGroupId": "",
            "plan": {"name": "", "product": "", "publisher": ""},
            "platformFaultDomain": str(i.fault_domain),
            "platformUpdateDomain": str(i.update_domain),
            "priority": "",
            "provider": "Microsoft.Compute",
            "publicKeys": [],
            "publisher": "canonical",
            "resourceGroupName": i.resource_group,
            "resourceId": resource_id,
            "securityProfile": {"secureBootEnabled": "false", "virtualTpmEnabled": "false"},
            "sku": "server",
            "subscriptionId": i.subscription_id,
            "tags": "",
            "tagsList": [],
            "userData": "",
            "version": "latest",
            "vmId": i.vm_id,
            "vmScaleSetName": i.scale_set,
            "vmSize": i.vm_size,
            "zone": i.zone,
        },
        "network": {
            "interface": [
                {
                    "ipv4": {
                        "ipAddress": [{"privateIpAddress": i.private_ip, "publicIpAddress": ""}],
                        "subnet": [{"address": "10.0.0.0", "prefix": "24"}],
                    },
                    "ipv6": {"ipAddress": []},
                    "macAddress": i.mac_address,
                }
            ]
        },
    }


_MISSING = object()


def _select(document: Any, path: str) -> Any:
    """The part of a document below a path (`compute/name`, `network/interface/0`), or
    _MISSING. Array elements are chosen by index; empty segments are skipped."""
    node = document
    for segment in path.split("/"):
        if not segment:
            continue
        if isinstance(node, Mapping):
            node = node.get(segment, _MISSING)
        elif isinstance(node, list) and segment.isascii() and segment.isdigit():
            index = int(segment)
            node = node[index] if index < len(node) else _MISSING
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def as_text(node: Any) -> str:
    """format=text: a leaf's bare value; below a folder, its keys one per line (folders end
    in `/`, array elements are their indices)."""
    if isinstance(node, Mapping):
        return "\n".join(k + "/" if _is_folder(v) else k for k, v in node.items())
    if isinstance(node, list):
        return "\n".join(f"{n}/" if _is_folder(v) else str(n) for n, v in enumerate(node))
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _is_folder(node: Any) -> bool:
    return isinstance(node, Mapping | list)


def answer(identity: InstanceIdentity, path: str, fmt: str) -> tuple[bytes, str] | None:
    """(body, content type) for GET /metadata/instance/<path>?format=<fmt>; None: not found.

    `fmt` must be one of FORMATS (the server answers others with 400).
    """
    node = _select(instance_document(identity), path)
    if node is _MISSING:
        return None
    if fmt == "text":
        return as_text(node).encode(), TEXT_TYPE
    return orjson.dumps(node), "application/json; charset=utf-8"


def versions_body(versions: Sequence[str]) -> bytes:
    """GET /metadata/versions: {"apiVersions": [...]} oldest first."""
    return orjson.dumps({"apiVersions": sorted(versions)})
