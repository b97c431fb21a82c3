"""Fleet traces: captures of three VMs that saw one shared event, ingested and replayed per VM."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from replay.cli import app as cli_app
from replay.clock import FakeClock
from replay.core.fleet import plan_fleet, read_fleet
from replay.core.timeline import format_rfc1123
from replay.errors import ReplayError
from replay.playback.anchor import Start
from replay.playback.fleet import FleetOptions
from replay.playback.fleet_host import FleetHost
from replay.playback.registry import SessionRegistry
from replay.recording.fleet_traces import ingest_fleet
from replay.server.app import make_app
from replay.store.fleet import load_fleet_trace, resolve_trace

T0 = datetime(2025, 9, 2, 8, 0, tzinfo=UTC)
URL = "/metadata/scheduledevents?api-version=2020-07-01"
SHARED = "5E1F0C3A-1B2C-4D5E-8F90-A1B2C3D4E5F6"
PRIVATE = "0AA0B1C2-D3E4-4F56-8789-9A0B1C2D3E4F"
VMS = ("vm-a", "vm-b", "vm-c")


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def freeze(
    eid: str, status: str, resources: list[str], not_before_s: float = 300
) -> dict[str, Any]:
    nb = format_rfc1123(T0 + timedelta(seconds=not_before_s)) if status == "Scheduled" else ""
    return {
        "EventId": eid,
        "EventStatus": status,
        "EventType": "Freeze",
        "ResourceType": "VirtualMachine",
        "Resources": resources,
        "NotBefore": nb,
        "Description": "Host server is undergoing maintenance.",
        "EventSource": "Platform",
        "DurationInSeconds": 9,
    }


def capture(path: Path, host: str, lines: list[tuple[float, str, Any]]) -> Path:
    header = {"capture": {"format": 1, "url": "u", "interval_s": 1.0, "host": host}}
    rows = [{"t": at(t), kind: value} for t, kind, value in lines]
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in [header, *rows]))
    return path


def three_captures(tmp_path: Path) -> list[Path]:
    """vm-a, vm-b, vm-c saw SHARED (vm-a approved it); each polled on its own clock, counted
    its own incarnations; vm-c also saw an earlier event of its own."""
    everyone = list(VMS)
    a = capture(
        tmp_path / "a.jsonl",
        "vm-a",
        [
            (0.0, "document", {"DocumentIncarnation": 1, "Events": []}),
            (
                30.2,
                "document",
                {"DocumentIncarnation": 2, "Events": [freeze(SHARED, "Scheduled", everyone)]},
            ),
            (290.0, "approved", [SHARED]),
            (
                300.9,
                "document",
                {"DocumentIncarnation": 3, "Events": [freeze(SHARED, "Started", everyone)]},
            ),
            (320.1, "document", {"DocumentIncarnation": 4, "Events": []}),
            (400.0, "document", {"DocumentIncarnation": 4, "Events": []}),
        ],
    )
    b = capture(
        tmp_path / "b.jsonl",
        "vm-b",
        [
            (12.0, "document", {"DocumentIncarnation": 7, "Events": []}),
            (
                30.7,
                "document",
                {"DocumentIncarnation": 8, "Events": [freeze(SHARED, "Scheduled", everyone)]},
            ),
            (
                301.4,
                "document",
                {"DocumentIncarnation": 9, "Events": [freeze(SHARED, "Started", everyone)]},
            ),
            (320.6, "document", {"DocumentIncarnation": 10, "Events": []}),
            (400.0, "document", {"DocumentIncarnation": 10, "Events": []}),
        ],
    )
    c = capture(
        tmp_path / "c.jsonl",
        "vm-c",
        [
            (0.0, "document", {"DocumentIncarnation": 2, "Events": []}),
            (
                1.0,
                "document",
                {"DocumentIncarnation": 3, "Events": [freeze(PRIVATE, "Scheduled", ["vm-c"], 9)]},
            ),
            (
                9.5,
                "document",
                {"DocumentIncarnation": 4, "Events": [freeze(PRIVATE, "Started", ["vm-c"])]},
            ),
            (19.0, "document", {"DocumentIncarnation": 5, "Events": []}),
            (
                31.0,
                "document",
                {"DocumentIncarnation": 6, "Events": [freeze(SHARED, "Scheduled", everyone)]},
            ),
            (
                300.5,
                "document",
                {"DocumentIncarnation": 7, "Events": [freeze(SHARED, "Started", everyone)]},
            ),
            (321.0, "document", {"DocumentIncarnation": 8, "Events": []}),
            (400.0, "document", {"DocumentIncarnation": 8, "Events": []}),
        ],
    )
    return [a, b, c]


def test_three_captures_become_one_fleet_trace_a_timeline_per_vm(
    tmp_path: Path, traces_dir: Path
) -> None:
    fleet, path = ingest_fleet(three_captures(tmp_path), traces_dir, "web-maint")
    assert path.name == "web-maint.parquet"
    assert list(fleet.timelines) == list(VMS)
    a, b, c = (fleet.timelines[vm] for vm in VMS)
    # one axis: offset 0 is the earliest episode's start (vm-a's, at T0); vm-b began polling
    # at 12 s and vm-c's shared episode at 19 s: their first, empty documents reach back to 0
    assert a.started_at == b.started_at == c.started_at == T0
    assert [(s.offset_s, s.incarnation) for s in a.snapshots] == [
        (0.0, 1),
        (30.2, 2),
        (300.9, 3),
        (320.1, 4),
    ]
    assert [(s.offset_s, s.incarnation) for s in b.snapshots] == [
        (0.0, 7),
        (30.7, 8),
        (301.4, 9),
        (320.6, 10),
    ]
    assert [s.incarnation for s in c.snapshots] == [5, 6, 7, 8]  # the shared episode only
    assert [ap.event_ids for ap in a.approvals] == [(SHARED,)]  # the approval kept
    assert {t.event_ids for t in (a, b, c)} == {(SHARED,)}
    assert load_fleet_trace(traces_dir, "web-maint") == fleet
    assert resolve_trace(traces_dir, "web-maint") == fleet


def test_a_capture_without_the_shared_event_is_named(tmp_path: Path, traces_dir: Path) -> None:
    a, b, _ = three_captures(tmp_path)
    lonely = capture(
        tmp_path / "d.jsonl",
        "vm-d",
        [
            (0.0, "document", {"DocumentIncarnation": 1, "Events": []}),
            (
                5.0,
                "document",
                {"DocumentIncarnation": 2, "Events": [freeze(PRIVATE, "Scheduled", ["vm-d"])]},
            ),
            (9.0, "document", {"DocumentIncarnation": 3, "Events": []}),
        ],
    )
    with pytest.raises(ReplayError, match=r"d\.jsonl: no episode shares an EventId"):
        ingest_fleet([a, b, lonely], traces_dir, "x")


Fixture = Callable[..., Awaitable[Any]]


async def test_a_fleet_file_replays_each_vm_its_own_documents_and_shares_approvals(
    tmp_path: Path,
    traces_dir: Path,
    registry: SessionRegistry,
    clock: FakeClock,
    aiohttp_client: Fixture,
) -> None:
    fleet_trace, _ = ingest_fleet(three_captures(tmp_path), traces_dir, "web-maint")
    path = tmp_path / "fleet.toml"
    path.write_text(
        '[[group]]\nname = "web"\ntrace = "web-maint"\n'
        + "".join(
            f'[[vm]]\nname = "{vm}"\naddress = "127.0.0.{50 + i}"\ngroup = "web"\n'
            for i, vm in enumerate(VMS)
        )
    )
    plan = plan_fleet(read_fleet(path), lambda name: resolve_trace(traces_dir, name))
    host = FleetHost(clock)
    host.load(plan, FleetOptions(speed=1, start=Start.virtual))
    client = await aiohttp_client(make_app(registry, clock=clock, fleet_host=host))

    async def poll(vm: str) -> dict[str, Any]:
        resp = await client.get(f"/vm/{vm}{URL}", headers={"Metadata": "true"})
        assert resp.status == 200
        document: dict[str, Any] = orjson.loads(await resp.read())
        return document

    # Every change of any VM: each VM is served exactly what it captured then.
    changes = sorted({s.offset_s for t in fleet_trace.timelines.values() for s in t.snapshots})
    for offset in changes:
        await client.post("/replay/fleet/seek", json={"offset_s": offset})
        for vm, trace in fleet_trace.timelines.items():
            assert await poll(vm) == trace.document_at(offset), (vm, offset)

    # An approval from vm-b starts the shared event in all three timelines at once.
    await client.post("/replay/fleet/seek", json={"offset_s": 100})
    before = {vm: (await poll(vm))["DocumentIncarnation"] for vm in VMS}
    body = orjson.dumps({"StartRequests": [{"EventId": SHARED}]})
    resp = await client.post(f"/vm/vm-b{URL}", data=body, headers={"Metadata": "true"})
    assert resp.status == 200
    for vm in VMS:
        after = await poll(vm)
        assert [e["EventStatus"] for e in after["Events"]] == ["Started"], vm
        assert after["DocumentIncarnation"] == before[vm] + 1, vm  # each counts its own


async def test_the_control_api_loads_a_fleet_naming_a_fleet_trace(
    tmp_path: Path,
    traces_dir: Path,
    registry: SessionRegistry,
    clock: FakeClock,
    aiohttp_client: Fixture,
) -> None:
    ingest_fleet(three_captures(tmp_path), traces_dir, "web-maint")
    client = await aiohttp_client(make_app(registry, clock=clock))
    vms = [{"name": vm, "address": f"10.0.0.{i + 1}", "group": "web"} for i, vm in enumerate(VMS)]
    fleet = {"group": [{"name": "web", "trace": "web-maint"}], "vm": vms}
    resp = await client.post("/replay/fleet", json={"fleet": fleet, "start": "virtual"})
    assert resp.status == 201, await resp.text()
    (group,) = (await resp.json())["groups"]
    assert (group["trace"], group["rollout"]) == ("web-maint", "captured")
    stranger = [{"name": "vm-z", "address": "10.0.0.9", "group": "web"}]
    bad = await client.post("/replay/fleet", json={"fleet": {**fleet, "vm": stranger}})
    assert bad.status == 400
    message = (await bad.json())["error"]["message"]
    assert message.startswith("fleet: [[vm]] 1 ('vm-z'), field 'name': not a VM of fleet trace")


def test_ingest_fleet_command_lists_the_vms_and_writes_the_bundle(
    tmp_path: Path, traces_dir: Path
) -> None:
    files = [str(p) for p in three_captures(tmp_path)]
    args = [
        "ingest-fleet",
        "web-maint",
        *files,
        "--traces-dir",
        str(traces_dir),
        "--format",
        "json",
    ]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    shown = orjson.loads(result.output)
    assert [(v["vm"], v["shared_events"], v["approvals"]) for v in shown["vms"]] == [
        ("vm-a", 1, 1),
        ("vm-b", 1, 0),
        ("vm-c", 1, 0),
    ]
    again = CliRunner().invoke(
        cli_app, ["ingest-fleet", "x", files[0], "--traces-dir", str(traces_dir)]
    )
    assert again.exit_code == 2
    assert "a fleet trace needs captures of at least two VMs" in again.output
