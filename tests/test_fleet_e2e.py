"""End to end: `imds-replay serve --fleet` on 127.0.0.1, six VMs polling from 127.0.0.x."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from replay.clock import SystemClock
from tests.serving import serving

URL = "/metadata/scheduledevents?api-version=2020-07-01"
FD0 = ["web-0", "web-1", "web-2"]
FD1 = ["web-3", "web-4", "web-5"]
ADDRESS = {name: f"127.0.0.{20 + i}" for i, name in enumerate(FD0 + FD1)}
SPEED = 120  # live-migration: Scheduled from 0.25 s, Started for 2.5 s, then a 1 s gap
WAIT_S = 20.0


class Vm:
    """One VM: a kept-alive connection from its own source address."""

    def __init__(self, base: str, name: str) -> None:
        url = urlsplit(base)
        self.name = name
        self.conn = http.client.HTTPConnection(
            url.hostname or "", url.port, timeout=5, source_address=(ADDRESS[name], 0)
        )
        self.incarnations: list[int] = []

    def poll(self) -> list[tuple[str, str, list[str]]]:
        self.conn.request("GET", URL, headers={"Metadata": "true"})
        resp = self.conn.getresponse()
        assert resp.status == 200
        doc: dict[str, Any] = json.loads(resp.read())
        self.incarnations.append(doc["DocumentIncarnation"])
        return [(e["EventId"], e["EventStatus"], e["Resources"]) for e in doc["Events"]]

    def approve(self, event_id: str) -> int:
        body = json.dumps({"StartRequests": [{"EventId": event_id}]})
        self.conn.request("POST", URL, body=body, headers={"Metadata": "true"})
        resp = self.conn.getresponse()
        resp.read()
        return resp.status


def fleet_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.toml"
    text = '[[group]]\nname = "web"\ntrace = "live-migration"\ngap_s = 120\n'
    for name, address in ADDRESS.items():
        fd = 0 if name in FD0 else 1
        text += f'[[vm]]\nname = "{name}"\naddress = "{address}"\ngroup = "web"\n'
        text += f"fault_domain = {fd}\n"
    path.write_text(text)
    return path


def test_six_vms_two_fault_domains_one_approval_started_for_all(
    traces_dir: Path, tmp_path: Path
) -> None:
    clock = SystemClock()
    fleet = fleet_file(tmp_path)
    with serving("--fleet", str(fleet), "--speed", str(SPEED), traces_dir=traces_dir) as base:
        vms = [Vm(base, name) for name in ADDRESS]
        deadline = clock.now() + WAIT_S

        def poll_until(done: Any) -> list[list[tuple[str, str, list[str]]]]:
            while clock.now() < deadline:
                docs = [vm.poll() for vm in vms]
                if done(docs):
                    return docs
            raise AssertionError(f"not seen within {WAIT_S} s: {docs}")

        docs = poll_until(lambda docs: all(docs))
        assert len({json.dumps(d) for d in docs}) == 1, docs  # all six see one document
        ((first_id, status, resources),) = docs[0]
        assert (status, resources) == ("Scheduled", FD0)

        assert vms[1].approve(first_id) == 200  # web-1 approves for its fault domain
        assert [vm.poll() for vm in vms] == [[(first_id, "Started", FD0)]] * 6

        docs = poll_until(lambda docs: all(d and d[0][0] != first_id for d in docs))
        assert len({json.dumps(d) for d in docs}) == 1, docs
        ((_, status, resources),) = docs[0]
        assert (status, resources) == ("Scheduled", FD1)
        for vm in vms:
            assert vm.incarnations == sorted(vm.incarnations), (vm.name, vm.incarnations)
            assert len(set(vm.incarnations)) == 5, (vm.name, vm.incarnations)  # 1, S, St, -, S
            vm.conn.close()
