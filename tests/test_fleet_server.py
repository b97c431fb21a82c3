"""A fleet on the replay server against FakeClock: each request is its VM, approvals are shared."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from replay.clock import FakeClock
from replay.core.fleet import plan_fleet, read_fleet
from replay.playback.anchor import Start
from replay.playback.fleet import FleetOptions
from replay.playback.fleet_host import FleetHost
from replay.playback.registry import SessionRegistry
from replay.server.app import make_app

URL = "/metadata/scheduledevents?api-version=2020-07-01"
INSTANCE = "/metadata/instance?api-version=2021-02-01"
H = {"Metadata": "true"}
FD0 = ["web-0", "web-1", "web-2"]
FD1 = ["web-3", "web-4", "web-5"]
SIX = FD0 + FD1
ADDRESS = {name: f"127.0.0.{10 + i}" for i, name in enumerate(SIX)}
# live-migration: Scheduled at 30 s (NotBefore 930 s), Started at 930 s, gone at 1230 s
FLEET = "".join(
    f'[[vm]]\nname = "{name}"\naddress = "{ADDRESS[name]}"\ngroup = "web"\n'
    f"fault_domain = {0 if name in FD0 else 1}\n"
    for name in SIX
)
WEB = '[[group]]\nname = "web"\ntrace = "live-migration"\nrollout = "fault-domain"\ngap_s = 120\n'
DB = (
    '[[group]]\nname = "db"\ntrace = "spot-eviction"\nrollout = "together"\n'
    '[[vm]]\nname = "db-0"\naddress = "127.0.0.30"\ngroup = "db"\n'
)
Fixture = Callable[..., Awaitable[Any]]


def host_for(
    tmp_path: Path, registry: SessionRegistry, clock: FakeClock, text: str, **options: Any
) -> FleetHost:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    host = FleetHost(clock)
    plan = plan_fleet(read_fleet(path), registry.trace)
    host.load(plan, FleetOptions(**{"speed": 60, "start": Start.now, **options}))
    return host


class Vms:
    """One HTTP client per VM, each bound to its VM's 127.0.0.x source address."""

    def __init__(self, server: Any, clients: dict[str, Any]) -> None:
        self.server = server
        self.clients = clients

    async def get(self, name: str, path: str = URL, status: int = 200) -> dict[str, Any]:
        resp = await self.clients[name].get(path, headers=H)
        assert resp.status == status, await resp.text()
        doc: dict[str, Any] = orjson.loads(await resp.read())
        return doc

    async def approve(self, name: str, *event_ids: str) -> int:
        body = orjson.dumps({"StartRequests": [{"EventId": e} for e in event_ids]})
        resp = await self.clients[name].post(URL, data=body, headers=H)
        status: int = resp.status
        return status

    async def all(self) -> dict[str, dict[str, Any]]:
        return {name: await self.get(name) for name in SIX}


@pytest.fixture
async def fleet_server(
    aiohttp_server: Fixture,
    aiohttp_client: Fixture,
    registry: SessionRegistry,
    clock: FakeClock,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> tuple[Vms, FleetHost]:
    options = getattr(request, "param", {})
    host = host_for(tmp_path, registry, clock, WEB + DB + FLEET, **options)
    return await vms_for(aiohttp_server, aiohttp_client, registry, clock, host), host


async def vms_for(
    aiohttp_server: Fixture,
    aiohttp_client: Fixture,
    registry: SessionRegistry,
    clock: FakeClock,
    host: FleetHost,
) -> Vms:
    """A fleet server on 127.0.0.1, and a client per VM from its own address (and a stranger)."""
    server = await aiohttp_server(make_app(registry, clock=clock, fleet_host=host))
    clients = {}
    for name, address in [*ADDRESS.items(), ("db-0", "127.0.0.30"), ("stranger", "127.0.0.99")]:
        connector = aiohttp.TCPConnector(local_addr=(address, 0))
        clients[name] = await aiohttp_client(server, connector=connector)
    return Vms(server, clients)


def seen(doc: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    return [(e["EventId"], e["EventStatus"], e["Resources"]) for e in doc["Events"]]


async def test_six_vms_see_each_fault_domain_in_turn_and_one_approval_starts_it_for_all(
    fleet_server: tuple[Vms, FleetHost], clock: FakeClock
) -> None:
    vms, _ = fleet_server
    incarnations: dict[str, list[int]] = {name: [] for name in SIX}

    async def poll_all() -> set[tuple[tuple[str, str, tuple[str, ...]], ...]]:
        docs = await vms.all()
        for name, doc in docs.items():
            incarnations[name].append(doc["DocumentIncarnation"])
        return {tuple((i, s, tuple(r)) for i, s, r in seen(d)) for d in docs.values()}

    assert await poll_all() == {()}
    clock.advance(31 / 60)
    (shown,) = await poll_all()  # all six see one document
    ((first_id, status, resources),) = shown
    assert (status, list(resources)) == ("Scheduled", FD0)
    assert await vms.approve("web-1", first_id) == 200  # web-1 is not the first of Resources
    assert await poll_all() == {((first_id, "Started", tuple(FD0)),)}
    assert await vms.approve("web-4", first_id) == 200  # a repeat, from the other fault domain
    clock.advance(300 / 60)  # the freeze is over
    assert await poll_all() == {()}
    clock.advance(121 / 60)  # gap_s later, fault domain 1's event
    (shown,) = await poll_all()
    ((second_id, status, resources),) = shown
    assert second_id != first_id
    assert (status, list(resources)) == ("Scheduled", FD1)
    for name, seq in incarnations.items():
        assert seq == sorted(seq) and len(set(seq)) == 5, (name, seq)


async def test_an_address_not_in_the_fleet_is_a_vm_in_no_group(
    fleet_server: tuple[Vms, FleetHost], clock: FakeClock
) -> None:
    vms, _ = fleet_server
    clock.advance(31 / 60)
    assert seen(await vms.get("web-0"))
    assert await vms.get("stranger") == {"DocumentIncarnation": 1, "Events": []}
    eid = (await vms.get("web-0"))["Events"][0]["EventId"]
    assert await vms.approve("stranger", eid) == 400


async def test_approving_an_eventid_the_vm_cannot_see_is_imds_400(
    fleet_server: tuple[Vms, FleetHost], clock: FakeClock
) -> None:
    vms, host = fleet_server
    clock.advance(31 / 60)
    web_event = (await vms.get("web-0"))["Events"][0]["EventId"]
    db_event = (await vms.get("db-0"))["Events"][0]["EventId"]
    resp = await vms.clients["db-0"].post(
        URL, data=orjson.dumps({"StartRequests": [{"EventId": web_event}]}), headers=H
    )
    assert resp.status == 400
    assert orjson.loads(await resp.read()) == {
        "error": f"Bad request. Unknown EventId: {web_event}"
    }
    assert await vms.approve("web-0", db_event) == 400
    assert await vms.approve("web-0", web_event, db_event) == 400  # then nothing is approved
    assert seen(await vms.get("web-2"))[0][1] == "Scheduled"
    assert host.fleet is not None and not host.fleet.approvals


async def test_each_vm_counts_its_own_documents_changes(
    fleet_server: tuple[Vms, FleetHost], clock: FakeClock
) -> None:
    vms, _ = fleet_server
    clock.advance(31 / 60)  # both groups show an event
    assert (await vms.get("db-0"))["DocumentIncarnation"] == 2
    clock.advance(30 / 60)  # spot-eviction starts at 60 s; web does not change
    assert (await vms.get("db-0"))["DocumentIncarnation"] == 3
    assert (await vms.get("web-0"))["DocumentIncarnation"] == 2
    clock.advance(61 / 60)  # spot-eviction is over; web still Scheduled
    assert (await vms.get("db-0"))["DocumentIncarnation"] == 4
    assert (await vms.get("web-5"))["DocumentIncarnation"] == 2


async def test_vm_paths_reach_a_vm_by_name_from_any_address(
    fleet_server: tuple[Vms, FleetHost], clock: FakeClock
) -> None:
    vms, _ = fleet_server
    clock.advance(31 / 60)
    by_path = await vms.get("stranger", "/vm/web-4" + URL)
    assert seen(by_path)[0][2] == FD0
    eid = by_path["Events"][0]["EventId"]
    resp = await vms.clients["stranger"].post(
        "/vm/web-4" + URL, data=orjson.dumps({"StartRequests": [{"EventId": eid}]}), headers=H
    )
    assert resp.status == 200
    assert seen(await vms.get("web-0"))[0][1] == "Started"
    resp = await vms.clients["stranger"].get("/vm/nobody" + URL, headers=H)
    assert resp.status == 404
    assert orjson.loads(await resp.read()) == {"error": "Not found"}


async def test_each_vm_has_its_own_instance_metadata(fleet_server: tuple[Vms, FleetHost]) -> None:
    vms, _ = fleet_server
    by_address = (await vms.get("web-4", INSTANCE))["compute"]
    by_path = (await vms.get("stranger", "/vm/web-4" + INSTANCE))["compute"]
    assert by_address == by_path
    assert by_address["name"] == "web-4"
    assert by_address["platformFaultDomain"] == "1"
    assert by_address["vmScaleSetName"] == "web"
    assert by_address["vmId"] != (await vms.get("web-3", INSTANCE))["compute"]["vmId"]


async def test_a_vms_instance_sub_paths_and_text_are_its_own(
    fleet_server: tuple[Vms, FleetHost],
) -> None:
    """A cron handler asks compute/name as text: each VM gets its own name, by either route."""
    vms, _ = fleet_server
    text = "/metadata/instance/compute/name?api-version=2021-12-13&format=text"
    for name in ("web-0", "web-4"):
        resp = await vms.clients[name].get(text, headers=H)
        assert resp.status == 200 and await resp.text() == name
        resp = await vms.clients["stranger"].get(f"/vm/{name}" + text, headers=H)
        assert await resp.text() == name
    fault_domain = "/metadata/instance/compute/platformFaultDomain?api-version=2021-12-13"
    resp = await vms.clients["web-4"].get(fault_domain + "&format=text", headers=H)
    assert await resp.text() == "1"


@pytest.mark.parametrize("fleet_server", [{"rate_limit": 2}], indirect=True)
async def test_the_rate_limit_counts_per_vm(fleet_server: tuple[Vms, FleetHost]) -> None:
    vms, host = fleet_server
    await vms.get("web-0")
    await vms.get("web-0")
    await vms.get("web-0", status=429)
    await vms.get("web-0", "/vm/web-1" + URL)  # another VM, from the same address
    assert host.fleet is not None and host.fleet.vms["web-0"].refused == 1


async def test_a_push_subscriber_of_every_vm_gets_another_vms_approval(
    fleet_server: tuple[Vms, FleetHost], clock: FakeClock
) -> None:
    vms, _ = fleet_server
    clock.advance(31 / 60)
    streams = {name: await vms.clients["stranger"].ws_connect(f"/vm/{name}/stream") for name in SIX}
    for ws in streams.values():
        first = orjson.loads((await ws.receive(timeout=1)).data)["document"]
        assert first["Events"][0]["EventStatus"] == "Scheduled"
    eid = first["Events"][0]["EventId"]
    assert await vms.approve("web-2", eid) == 200
    for name, ws in streams.items():
        pushed = orjson.loads((await ws.receive(timeout=1)).data)["document"]
        assert seen(pushed) == [(eid, "Started", FD0)], name
        await ws.close()


async def test_pause_seek_step_and_speed_move_the_whole_fleet(
    fleet_server: tuple[Vms, FleetHost], clock: FakeClock
) -> None:
    vms, _ = fleet_server
    control = vms.clients["stranger"]
    paused = await (await control.post("/replay/fleet/pause")).json()
    assert paused["state"] == "paused"
    clock.advance(100)
    assert {len(d["Events"]) for d in (await vms.all()).values()} == {0}
    stepped = await (await control.post("/replay/fleet/step")).json()
    assert stepped["position_s"] == 30
    assert {seen(d)[0][1] for d in (await vms.all()).values()} == {"Scheduled"}
    sought = await (await control.post("/replay/fleet/seek", json={"offset_s": 1400})).json()
    assert sought["position_s"] == 1400  # fault domain 1's event: Scheduled from 1350 s
    assert {tuple(seen(d)[0][2]) for d in (await vms.all()).values()} == {tuple(FD1)}
    await control.post("/replay/fleet/resume")
    faster = await (await control.post("/replay/fleet/speed", json={"speed": "120x"})).json()
    assert faster["speed"] == 120
    clock.advance((2250 - 1400) / 120 + 0.01)
    assert {seen(d)[0][1] for d in (await vms.all()).values()} == {"Started"}


async def test_the_fleet_status_shows_vms_by_fault_domain_and_approvals(
    fleet_server: tuple[Vms, FleetHost], clock: FakeClock
) -> None:
    vms, _ = fleet_server
    control = vms.clients["stranger"]
    clock.advance(31 / 60)
    status = await (await control.get("/replay/fleet")).json()
    web = next(g for g in status["groups"] if g["name"] == "web")
    assert web["fault_domains"] == [
        {"fault_domain": 0, "vms": FD0},
        {"fault_domain": 1, "vms": FD1},
    ]
    eid = web["document"]["Events"][0]["EventId"]
    approved = await control.post("/replay/fleet/vms/web-0/approve", json={"event_ids": [eid]})
    assert (await approved.json())["events"] == [
        {"event_id": eid, "status": "Started", "affects": True}
    ]
    status = await (await control.get("/replay/fleet")).json()
    web_4 = next(vm for vm in status["vms"] if vm["name"] == "web-4")
    assert (web_4["fault_domain"], web_4["address"]) == (1, ADDRESS["web-4"])
    assert web_4["events"] == [{"event_id": eid, "status": "Started", "affects": False}]
    assert [(a["vm"], a["event_id"]) for a in status["approvals"]] == [("web-0", eid)]
    unknown = await control.post("/replay/fleet/vms/db-0/approve", json={"event_ids": [eid]})
    assert unknown.status == 400
    assert "db-0 cannot see EventId" in (await unknown.json())["error"]["message"]


@pytest.mark.parametrize("fleet_server", [{"loop": True}], indirect=True)
async def test_a_looping_fleet_shows_fresh_eventids_and_growing_incarnations(
    fleet_server: tuple[Vms, FleetHost], clock: FakeClock
) -> None:
    vms, host = fleet_server
    assert host.fleet is not None
    clock.advance(31 / 60)
    first = await vms.get("web-3")
    clock.advance(host.fleet.duration_s / 60)
    again = await vms.get("web-3")
    assert seen(again)[0][1:] == seen(first)[0][1:]
    assert seen(again)[0][0] != seen(first)[0][0]
    assert again["DocumentIncarnation"] > first["DocumentIncarnation"]


async def test_without_its_fleet_a_fleet_server_serves_the_default_session(
    fleet_server: tuple[Vms, FleetHost],
) -> None:
    vms, _ = fleet_server
    deleted = await vms.clients["stranger"].delete("/replay/fleet")
    assert (await deleted.json())["deleted"].endswith("fleet.toml")
    assert await vms.get("web-0") == {"DocumentIncarnation": 1, "Events": []}
    missing = await vms.clients["stranger"].get("/replay/fleet")
    assert missing.status == 404
