"""Fault playbooks and warm-up per fleet VM, over real sockets from 127.0.0.x, on a FakeClock.

Each VM plays its playbook on its own: its own seeded draws, counted in its own status; windows
are in the fleet's trace time. A VM's playbook comes from its [[vm]] entry, else its group's,
else the server's (serve --faults); the control API gives one VM (or all) another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from replay.clock import FakeClock
from replay.core.faults import parse_playbook
from replay.playback.fleet_host import FleetHost
from replay.playback.registry import SessionRegistry
from tests.test_fleet_server import DB, FLEET, SIX, URL, WEB, H, Vms, host_for, vms_for

Fixture = Callable[..., Awaitable[Any]]
COIN = [{"from_s": 0, "to_s": 1000, "status": 500, "probability": 0.5}]
POLLS = 16


@pytest.fixture
def start(
    aiohttp_server: Fixture,
    aiohttp_client: Fixture,
    registry: SessionRegistry,
    clock: FakeClock,
    tmp_path: Path,
) -> Callable[..., Awaitable[tuple[Vms, FleetHost]]]:
    """start(text, **fleet options): the fleet server and a client per VM."""

    async def started(text: str = WEB + DB + FLEET, **options: Any) -> tuple[Vms, FleetHost]:
        if "faults" in options:
            options["faults"] = parse_playbook(options["faults"])
        host = host_for(tmp_path, registry, clock, text, **options)
        return await vms_for(aiohttp_server, aiohttp_client, registry, clock, host), host

    return started


async def status(vms: Vms, name: str, path: str = URL) -> int:
    resp = await vms.clients[name].get(path, headers=H)
    await resp.read()
    code: int = resp.status
    return code


async def injected(vms: Vms, name: str) -> dict[str, int]:
    resp = await vms.clients["stranger"].get(f"/replay/fleet/vms/{name}")
    counts: dict[str, int] = (await resp.json())["faults"]["injected"]
    return counts


async def test_each_vm_draws_its_own_faults_whoever_else_asks_and_in_what_order(
    start: Callable[..., Awaitable[tuple[Vms, FleetHost]]],
) -> None:
    vms, host = await start(faults=COIN, fault_seed=7)
    seen: dict[str, list[int]] = {name: [] for name in SIX}
    for _ in range(POLLS):  # the VMs take turns
        for name in SIX:
            seen[name].append(await status(vms, name))
    for name, statuses in seen.items():
        assert set(statuses) == {200, 500}, (name, statuses)
        assert await injected(vms, name) == {"status 500": statuses.count(500)}
    assert len({tuple(s) for s in seen.values()}) > 1  # not one coin for the whole fleet

    assert host.fleet is not None  # the same playbook and seed again, asked in another order
    host.load(host.fleet.plan, host.fleet.options)
    for name in reversed(SIX):
        again = [await status(vms, name) for _ in range(POLLS)]
        assert again == seen[name], name


async def test_a_window_is_in_the_fleets_trace_time_for_every_vm(
    start: Callable[..., Awaitable[tuple[Vms, FleetHost]]], clock: FakeClock
) -> None:
    vms, _ = await start(faults=[{"from_s": 120, "to_s": 180, "status": 503}])
    clock.advance(60 / 60)
    assert [await status(vms, name) for name in SIX] == [200] * 6
    clock.advance(90 / 60)  # trace second 150
    assert [await status(vms, name) for name in SIX] == [503] * 6
    resp = await vms.clients["web-0"].get(URL, headers=H)
    assert orjson.loads(await resp.read()) == {"error": "Service unavailable"}
    clock.advance(50 / 60)
    assert [await status(vms, name) for name in SIX] == [200] * 6


async def test_a_vm_plays_its_own_playbook_else_its_groups_else_the_servers(
    start: Callable[..., Awaitable[tuple[Vms, FleetHost]]], tmp_path: Path
) -> None:
    (tmp_path / "retry.json").write_text('[{"from_s": 0, "to_s": 1000, "status": 500}]')
    web = WEB + 'faults = "retry.json"\n'  # relative to the fleet file
    own = "[{from_s = 0, to_s = 1000, status = 429}]"
    fleet = FLEET.replace('name = "web-4"', 'name = "web-4"\nfaults = []')
    fleet = fleet.replace('name = "web-5"', f'name = "web-5"\nfaults = {own}')
    vms, _ = await start(web + DB + fleet, faults=[{"from_s": 0, "to_s": 1000, "status": 503}])
    got = {name: await status(vms, name) for name in [*SIX, "db-0", "stranger"]}
    assert got == {
        "web-0": 500,
        "web-1": 500,
        "web-2": 500,
        "web-3": 500,
        "web-4": 200,  # an empty playbook of its own: no faults, whatever the group or server
        "web-5": 429,
        "db-0": 503,  # nothing from the file: the server's
        "stranger": 200,  # not a VM of the fleet
    }
    assert await status(vms, "stranger", "/vm/web-0" + URL) == 500  # the VM, by either route


async def test_warm_up_holds_each_vms_first_requests_then_answers(
    start: Callable[..., Awaitable[tuple[Vms, FleetHost]]], clock: FakeClock
) -> None:
    vms, _ = await start(warm_up_s=30)
    pending = [asyncio.ensure_future(vms.clients[n].get(URL, headers=H)) for n in ("web-0", "db-0")]
    for _ in range(20):
        await asyncio.wait(pending, timeout=0)  # let the requests reach the server
    assert not any(p.done() for p in pending)
    await clock.run_for(30, step=1)
    for done in pending:
        assert (await asyncio.wait_for(done, 5)).status == 200
    assert await status(vms, "web-0") == 200
    assert await status(vms, "web-1") == 200  # warm by now: not held
    assert await injected(vms, "web-0") == {"warm-up wait": 1}
    assert await injected(vms, "db-0") == {"warm-up wait": 1}
    assert await injected(vms, "web-1") == {}


async def test_a_delay_holds_one_vm_while_the_others_are_answered(
    start: Callable[..., Awaitable[tuple[Vms, FleetHost]]], clock: FakeClock
) -> None:
    vms, _ = await start()
    control = vms.clients["stranger"]
    delay = {"playbook": [{"from_s": 0, "to_s": 1e6, "delay_ms": 2000}]}
    answer = await control.put("/replay/fleet/vms/web-0/faults", json=delay)
    assert (await answer.json())["faults"] == {"windows": 1, "injected": {}}
    pending = asyncio.ensure_future(vms.clients["web-0"].get(URL, headers=H))
    for _ in range(20):
        await asyncio.wait([pending], timeout=0)
    assert await status(vms, "web-1") == 200
    assert not pending.done()
    await clock.run_for(2.0, step=0.1)
    assert (await asyncio.wait_for(pending, 5)).status == 200
    assert await injected(vms, "web-0") == {"delay 2000 ms": 1}


async def test_the_control_api_gives_one_vm_or_every_vm_a_playbook_and_takes_it_away(
    start: Callable[..., Awaitable[tuple[Vms, FleetHost]]],
) -> None:
    vms, _ = await start()
    control = vms.clients["stranger"]
    drop = [{"from_s": 0, "to_s": 1e6, "drop": True}]
    assert (await control.put("/replay/fleet/vms/web-2/faults", json=drop)).status == 200
    with pytest.raises(aiohttp.ClientConnectionError):
        await (await vms.clients["web-2"].get(URL, headers=H)).read()
    assert await status(vms, "web-1") == 200
    assert (await control.delete("/replay/fleet/vms/web-2/faults")).status == 200
    assert await status(vms, "web-2") == 200

    every = {"playbook": [{"from_s": 0, "to_s": 1e6, "status": 410}], "seed": 3}
    fleet = await (await control.put("/replay/fleet/faults", json=every)).json()
    assert {vm["faults"]["windows"] for vm in fleet["vms"]} == {1}
    assert [await status(vms, name) for name in SIX] == [410] * 6
    await control.delete("/replay/fleet/faults")
    assert [await status(vms, name) for name in SIX] == [200] * 6
    bad = await control.put("/replay/fleet/faults", json=[{"from_s": 0, "to_s": 1, "status": 404}])
    assert bad.status == 400
    assert "window 0: 'status' must be one of" in (await bad.json())["error"]["message"]


async def test_a_fleet_loaded_by_the_control_api_takes_playbooks_inline_only(
    start: Callable[..., Awaitable[tuple[Vms, FleetHost]]],
) -> None:
    vms, _ = await start()
    control = vms.clients["stranger"]
    tables = {
        "group": [{"name": "web", "trace": "user-reboot", "faults": COIN}],
        "vm": [{"name": "web-0", "address": "127.0.0.10", "group": "web"}],
    }
    body = {"fleet": tables, "start": "now", "warm_up_s": 5, "faults": [], "fault_seed": 1}
    loaded = await control.post("/replay/fleet", json=body)
    assert loaded.status == 201, await loaded.text()
    fleet = await loaded.json()
    assert fleet["warm_up_s"] == 5
    assert fleet["vms"][0]["faults"] == {"windows": 1, "injected": {}}
    tables["vm"][0]["faults"] = "../../etc/retry.json"
    refused = await control.post("/replay/fleet", json={"fleet": tables})
    assert refused.status == 400
    assert (await refused.json())["error"]["message"] == (
        "fleet: [[vm]] 1 ('web-0'), field 'faults': a playbook file is read only from a fleet "
        "file; give the windows"
    )
    wrong = await control.post("/replay/fleet", json={"fleet": tables, "warm_up_s": -1})
    assert wrong.status == 400


@pytest.mark.parametrize("rate_limit", [2])
async def test_a_rate_limited_request_is_counted_among_the_vms_faults(
    start: Callable[..., Awaitable[tuple[Vms, FleetHost]]], rate_limit: int
) -> None:
    vms, _ = await start(rate_limit=rate_limit)
    assert [await status(vms, "web-3") for _ in range(3)] == [200, 200, 429]
    assert await injected(vms, "web-3") == {"rate limit 429": 1}
