"""The whole fleet's stream (/fleet/stream, /fleet/events): where the fleet is and what changed.

One subscriber follows every group: first every current document, then a message for each
change of any VM's document and each move of the anchor, and one when the fleet goes or comes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from replay.clock import FakeClock
from replay.playback.fleet_host import FleetHost
from replay.playback.registry import SessionRegistry
from replay.server.app import make_app
from tests.test_fleet_server import DB, FD0, FLEET, SIX, WEB, Vms, host_for, vms_for

Fixture = Callable[..., Awaitable[Any]]


@pytest.fixture
async def fleet(
    aiohttp_server: Fixture,
    aiohttp_client: Fixture,
    registry: SessionRegistry,
    clock: FakeClock,
    tmp_path: Path,
) -> tuple[Vms, FleetHost]:
    host = host_for(tmp_path, registry, clock, WEB + DB + FLEET)
    return await vms_for(aiohttp_server, aiohttp_client, registry, clock, host), host


async def next_message(ws: Any) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads((await ws.receive(timeout=1)).data)
    return message


def statuses(message: dict[str, Any]) -> dict[str, list[str]]:
    """Each document's group and the status of each of its events."""
    return {
        d["group"]: [e["EventStatus"] for e in d["document"]["Events"]]
        for d in message["documents"]
    }


async def test_a_watcher_gets_every_group_then_each_change_and_each_move(
    fleet: tuple[Vms, FleetHost], clock: FakeClock
) -> None:
    vms, _ = fleet
    control = vms.clients["stranger"]
    ws = await control.ws_connect("/fleet/stream")
    first = await next_message(ws)
    assert (first["state"], first["speed"], first["round"]) == ("running", 60, 0)
    assert first["fleet"].endswith("fleet.toml")
    assert [(d["group"], d["vms"]) for d in first["documents"]] == [("web", SIX), ("db", ["db-0"])]
    assert statuses(first) == {"web": [], "db": []}

    await clock.run_for(31 / 60, step=0.01)  # both groups' events appear at 30 s
    seen: dict[str, list[str]] = {}
    while seen != {"web": ["Scheduled"], "db": ["Scheduled"]}:
        seen |= statuses(await next_message(ws))

    assert (await control.post("/replay/fleet/pause")).status == 200
    paused = await next_message(ws)
    assert (paused["state"], paused["documents"]) == ("paused", [])  # the anchor moved
    assert paused["position_s"] == pytest.approx(31, abs=0.5)

    eid = (await vms.get("web-4"))["Events"][0]["EventId"]
    assert await vms.approve("web-4", eid) == 200
    approved = await next_message(ws)
    assert statuses(approved) == {"web": ["Started"]}  # only what changed
    assert approved["documents"][0]["document"]["Events"][0]["Resources"] == FD0
    await ws.close()


async def test_watchers_hear_the_fleet_go_and_the_next_one_come(
    fleet: tuple[Vms, FleetHost],
) -> None:
    vms, _ = fleet
    control = vms.clients["stranger"]
    ws = await control.ws_connect("/fleet/stream")
    await next_message(ws)
    assert (await control.delete("/replay/fleet")).status == 200
    gone = await next_message(ws)
    assert gone["fleet"] is None

    tables = {
        "group": [{"name": "db", "trace": "spot-eviction"}],
        "vm": [{"name": "db-9", "address": "127.0.0.39", "group": "db"}],
    }
    body = {"fleet": tables, "start": "first-request"}
    assert (await control.post("/replay/fleet", json=body)).status == 201
    came = await next_message(ws)
    assert (came["fleet"], came["state"]) == ("fleet", "waiting")
    assert [(d["group"], d["vms"]) for d in came["documents"]] == [("db", ["db-9"])]
    await ws.close()

    sse = await control.get("/fleet/events")
    line = (await sse.content.readline()).decode()
    while not line.startswith("data: "):
        line = (await sse.content.readline()).decode()
    assert orjson.loads(line.removeprefix("data: "))["documents"][0]["vms"] == ["db-9"]
    sse.close()


async def test_with_no_fleet_the_stream_says_so_and_waits_for_one(
    aiohttp_client: Fixture, registry: SessionRegistry, clock: FakeClock
) -> None:
    client = await aiohttp_client(make_app(registry, clock=clock))
    ws = await client.ws_connect("/fleet/stream")
    assert (await next_message(ws))["fleet"] is None
    await ws.close()


async def test_the_end_of_the_fleet_is_told_to_its_watchers(
    fleet: tuple[Vms, FleetHost], clock: FakeClock
) -> None:
    vms, host = fleet
    assert host.fleet is not None
    ws = await vms.clients["stranger"].ws_connect("/fleet/stream")
    await next_message(ws)
    await clock.run_for(host.fleet.duration_s / 60 + 1, step=0.5)
    last = await next_message(ws)
    while last["state"] != "finished":
        last = await next_message(ws)
    assert (last["position_s"], last["documents"]) == (host.fleet.duration_s, [])
    await ws.close()
