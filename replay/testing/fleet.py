"""Drive a fleet on a running server: load it, move its time, and poll or approve as one VM.

fleet = FleetClient("http://127.0.0.1:8080")
fleet.start_fleet(Path("fleet.toml"), speed=60)
web0 = fleet.vm("web-0")
handler = MyHandler(imds_base=web0.url)     # its requests reach IMDS as web-0
"""

from __future__ import annotations

import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from replay.core.imds import LATEST_VERSION
from replay.errors import ReplayError
from replay.testing.client import ReplayClient

FleetSource = Path | str | Mapping[str, Any]
"""A fleet file's path, its TOML text, or its tables ({"group": [...], "vm": [...]})."""


def fleet_tables(fleet: FleetSource) -> Mapping[str, Any]:
    """The fleet's tables from a path, TOML text or the tables themselves."""
    if isinstance(fleet, Path):
        try:
            return tomllib.loads(fleet.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ReplayError(f"{fleet}: {exc}") from None
    if isinstance(fleet, str):
        try:
            return tomllib.loads(fleet)
        except tomllib.TOMLDecodeError as exc:
            raise ReplayError(f"fleet TOML: {exc}") from None
    return fleet


class FleetVm:
    """One VM of a fleet: its IMDS base URL, and IMDS requests sent as this VM."""

    def __init__(self, client: FleetClient, name: str) -> None:
        self.client = client
        self.name = name
        self.url = f"{client.base_url}/vm/{name}"
        """Use in place of http://169.254.169.254: every request there is this VM's."""

    def _imds(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers={"Metadata": "true"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.client.timeout_s) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ReplayError(f"cannot reach the replay server at {self.url}: {exc}") from None

    def poll(self, api_version: str = LATEST_VERSION) -> dict[str, Any]:
        """GET /metadata/scheduledevents as this VM (counted as served, like the real thing)."""
        status, body = self._imds("GET", f"/metadata/scheduledevents?api-version={api_version}")
        if status != 200:
            raise ReplayError(f"{self.name}: IMDS answered {status}: {body.decode()}")
        document: dict[str, Any] = orjson.loads(body)
        return document

    def approve(self, *event_ids: str, api_version: str = LATEST_VERSION) -> int:
        """POST StartRequests as this VM; IMDS's status (200, or 400 for an unknown EventId)."""
        body = orjson.dumps({"StartRequests": [{"EventId": e} for e in event_ids]})
        path = f"/metadata/scheduledevents?api-version={api_version}"
        return self._imds("POST", path, body)[0]

    def status(self) -> dict[str, Any]:
        """The VM's status: identity, incarnation, events (and whether they affect it)."""
        return self.client.vm_status(self.name)

    @property
    def documents(self) -> list[dict[str, Any]]:
        """The documents this VM was served, in order (each distinct state once)."""
        return self.client.vm_documents(self.name)


class FleetClient:
    """The fleet's control API (/replay/fleet) of a running server, and its VMs."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.control = ReplayClient(base_url, token=token, timeout_s=timeout_s)
        self.base_url = self.control.base_url
        self.timeout_s = timeout_s

    def _dict(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = self.control._call(method, path, body)
        return result

    def start(
        self,
        fleet: FleetSource,
        *,
        speed: float | str = 1,
        loop: bool = False,
        start: str = "now",
        approval_delay_s: float = 0.0,
        recorded_approvals: bool = False,
        rate_limit: int | None = None,
        faults: Sequence[Mapping[str, Any]] | None = None,
        fault_seed: int = 0,
        warm_up_s: float = 0.0,
    ) -> dict[str, Any]:
        """Load (or replace) the server's fleet; its groups name traces of the server's dataset.

        faults: a playbook (its windows) for every VM the fleet gives none, each VM drawing its
        own; warm_up_s: wall seconds from the start during which each VM's requests are held.
        """
        body: dict[str, Any] = {
            "fleet": dict(fleet_tables(fleet)),
            "speed": speed,
            "loop": loop,
            "start": start,
            "approval_delay_s": approval_delay_s,
            "recorded_approvals": recorded_approvals,
        }
        if rate_limit is not None:
            body["rate_limit"] = rate_limit
        if faults is not None:
            body["faults"] = [dict(window) for window in faults]
            body["fault_seed"] = fault_seed
        if warm_up_s:
            body["warm_up_s"] = warm_up_s
        return self._dict("POST", "/replay/fleet", body)

    def set_faults(
        self, playbook: Sequence[Mapping[str, Any]], *, seed: int = 0, vm: str | None = None
    ) -> dict[str, Any]:
        """Give one VM (or every VM) a fault playbook; the status of that VM (or the fleet)."""
        path = "/replay/fleet" if vm is None else f"/replay/fleet/vms/{vm}"
        body = {"playbook": [dict(window) for window in playbook], "seed": seed}
        return self._dict("PUT", f"{path}/faults", body)

    def clear_faults(self, vm: str | None = None) -> dict[str, Any]:
        """Remove one VM's (or every VM's) fault playbook."""
        path = "/replay/fleet" if vm is None else f"/replay/fleet/vms/{vm}"
        return self._dict("DELETE", f"{path}/faults")

    def vm(self, name: str) -> FleetVm:
        return FleetVm(self, name)

    def status(self) -> dict[str, Any]:
        """The fleet's anchor, groups (with their documents), VMs and approvals."""
        return self._dict("GET", "/replay/fleet")

    @property
    def approvals(self) -> list[dict[str, Any]]:
        """The approvals that started events: vm, group, event_id, round, offset_s."""
        result: list[dict[str, Any]] = self.status()["approvals"]
        return result

    def stop(self) -> None:
        self.control._call("DELETE", "/replay/fleet")

    def pause(self) -> dict[str, Any]:
        return self._dict("POST", "/replay/fleet/pause")

    def resume(self) -> dict[str, Any]:
        return self._dict("POST", "/replay/fleet/resume")

    def step(self) -> dict[str, Any]:
        """Jump every VM to the fleet's next transition."""
        return self._dict("POST", "/replay/fleet/step")

    def seek(self, offset_s: float) -> dict[str, Any]:
        return self._dict("POST", "/replay/fleet/seek", {"offset_s": offset_s})

    def advance(self, seconds: float | None = None) -> dict[str, Any]:
        """Move the fleet's trace time forward by seconds, or to its next transition."""
        body = {} if seconds is None else {"seconds": seconds}
        return self._dict("POST", "/replay/fleet/advance", body)

    def set_speed(self, speed: float | str) -> dict[str, Any]:
        return self._dict("POST", "/replay/fleet/speed", {"speed": speed})

    def vm_status(self, name: str) -> dict[str, Any]:
        return self._dict("GET", f"/replay/fleet/vms/{name}")

    def vm_documents(self, name: str) -> list[dict[str, Any]]:
        path = f"/replay/fleet/vms/{name}/documents"
        result: list[dict[str, Any]] = self.control._call("GET", path)
        return result

    def approve_as(self, name: str, event_ids: Sequence[str]) -> dict[str, Any]:
        """Approve as a VM through the control API (ControlError 400 when it cannot see one)."""
        body = {"event_ids": list(event_ids)}
        return self._dict("POST", f"/replay/fleet/vms/{name}/approve", body)
