"""Failure modes on request: rate limit, warm-up, fault playbooks, and the token for exposure."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from typer.testing import CliRunner

from replay.cli import app as cli_app
from replay.clock import FakeClock
from replay.playback.anchor import Start
from replay.playback.registry import DEFAULT, SessionRegistry
from replay.playback.session import SessionOptions
from replay.server.app import make_app

URL = "/metadata/scheduledevents?api-version=2020-07-01"
H = {"Metadata": "true"}
JSON = {"Content-Type": "application/json"}


async def client_for(aiohttp_client: Any, registry: SessionRegistry, clock: FakeClock) -> Any:
    return await aiohttp_client(make_app(registry, clock=clock))


async def test_rate_limit_answers_a_burst_with_429_then_recovers(
    aiohttp_client: Any, traces_dir: Path, clock: FakeClock
) -> None:
    registry = SessionRegistry(traces_dir, clock, rate_limit=5)
    client = await client_for(aiohttp_client, registry, clock)
    statuses, bodies = [], []
    for _ in range(20):
        resp = await client.get(URL, headers=H)
        statuses.append(resp.status)
        bodies.append(orjson.loads(await resp.read()))
        clock.advance(0.01)
    assert statuses == [200] * 5 + [429] * 15
    assert bodies[-1] == {"error": "Too many requests"}
    clock.advance(1)
    assert (await client.get(URL, headers=H)).status == 200
    status = await (await client.get("/replay/sessions/default")).json()
    assert status["faults"]["injected"] == {"rate limit 429": 15}


async def test_playbook_500s_are_served_inside_their_trace_time_window_only(
    aiohttp_client: Any, traces_dir: Path, clock: FakeClock
) -> None:
    registry = SessionRegistry(traces_dir, clock)
    client = await client_for(aiohttp_client, registry, clock)
    await client.post("/replay/sessions", json={"trace": "live-migration", "speed": 60})
    playbook = [{"from_s": 120, "to_s": 180, "status": 500}]
    body = orjson.dumps(playbook)
    resp = await client.put("/replay/sessions/default/faults", data=body, headers=JSON)
    assert resp.status == 200
    seen = []
    for tenth in range(0, 40):  # trace seconds 0, 6, 12, ... 234 (every 0.1 s of wall time)
        resp = await client.get(URL, headers=H)
        seen.append((tenth * 6, resp.status))
        if resp.status == 500:
            assert orjson.loads(await resp.read()) == {"error": "Internal server error"}
        clock.advance(0.1)
    inside = {t for t, status in seen if status == 500}
    assert inside == {t for t, _ in seen if 120 <= t < 180}
    status = await (await client.get("/replay/sessions/default")).json()
    assert status["faults"] == {"windows": 1, "injected": {"status 500": len(inside)}}


async def test_delay_holds_the_answer_until_the_clock_has_moved(
    aiohttp_client: Any, traces_dir: Path, clock: FakeClock
) -> None:
    registry = SessionRegistry(traces_dir, clock)
    client = await client_for(aiohttp_client, registry, clock)
    await client.post("/replay/sessions", json={"trace": "user-reboot", "speed": 1})
    body = {"playbook": [{"from_s": 0, "to_s": 100, "delay_ms": 2000}], "seed": 3}
    await client.put("/replay/sessions/default/faults", json=body)
    pending = asyncio.ensure_future(client.get(URL, headers=H))
    for _ in range(20):
        await asyncio.wait([pending], timeout=0)  # let the request reach the server
        clock.advance(0)
    assert not pending.done()
    await clock.run_for(2.0, step=0.1)
    resp = await asyncio.wait_for(pending, 5)
    assert resp.status == 200


@pytest.mark.parametrize(
    ("effect", "error"),
    [
        ({"drop": True}, aiohttp.ServerDisconnectedError),
        ({"truncate": True}, aiohttp.ClientPayloadError),
    ],
)
async def test_drop_and_truncate_break_the_connection_like_a_real_failure(
    aiohttp_client: Any, traces_dir: Path, clock: FakeClock, effect: dict[str, bool], error: type
) -> None:
    registry = SessionRegistry(traces_dir, clock)
    client = await client_for(aiohttp_client, registry, clock)
    await client.post("/replay/sessions", json={"trace": "user-reboot", "speed": 1})
    await client.put("/replay/sessions/default/faults", json=[{"from_s": 0, "to_s": 100, **effect}])
    with pytest.raises((error, aiohttp.ClientConnectionError)):
        resp = await client.get(URL, headers=H)
        await resp.read()
    await client.delete("/replay/sessions/default/faults")
    assert (await client.get(URL, headers=H)).status == 200


async def test_warm_up_answers_slowly_then_normally(
    aiohttp_client: Any, traces_dir: Path, clock: FakeClock
) -> None:
    registry = SessionRegistry(traces_dir, clock, warm_up_s=30)
    registry.create(
        DEFAULT, registry.trace("user-reboot"), SessionOptions(start=Start.first_request)
    )
    client = await client_for(aiohttp_client, registry, clock)
    pending = asyncio.ensure_future(client.get(URL, headers=H))
    for _ in range(20):
        await asyncio.wait([pending], timeout=0)
    assert not pending.done()
    await clock.run_for(30, step=1)
    assert (await asyncio.wait_for(pending, 5)).status == 200
    assert (await client.get(URL, headers=H)).status == 200
    status = await (await client.get("/replay/sessions/default")).json()
    assert status["faults"]["injected"] == {"warm-up wait": 1}


async def test_token_guards_control_page_and_streams_but_not_imds(
    aiohttp_client: Any, traces_dir: Path, clock: FakeClock
) -> None:
    registry = SessionRegistry(traces_dir, clock, token="s3cret")
    client = await client_for(aiohttp_client, registry, clock)
    for path in ("/replay/sessions", "/", "/s/default/events", "/replay/traces"):
        resp = await client.get(path)
        assert resp.status == 401, path
    assert (await client.get(URL, headers=H)).status == 200
    ok = await client.get("/replay/sessions", headers={"Authorization": "Bearer s3cret"})
    assert ok.status == 200
    assert (await client.get("/?token=s3cret")).status == 200
    assert (await client.get("/replay/sessions?token=wrong")).status == 401


async def test_bad_playbook_gets_the_control_error_shape(
    aiohttp_client: Any, traces_dir: Path, clock: FakeClock
) -> None:
    client = await client_for(aiohttp_client, SessionRegistry(traces_dir, clock), clock)
    resp = await client.put(
        "/replay/sessions/default/faults", json=[{"from_s": 1, "to_s": 2, "status": 404}]
    )
    assert resp.status == 400
    assert (
        "window 0: 'status' must be one of 410, 429, 500, 503"
        in (await resp.json())["error"]["message"]
    )


def test_serve_beyond_loopback_needs_a_token(traces_dir: Path) -> None:
    result = CliRunner().invoke(
        cli_app, ["serve", "--host", "0.0.0.0", "--traces-dir", str(traces_dir)]
    )
    assert result.exit_code == 2
    assert "--token" in result.stderr


def test_serve_rejects_a_bad_playbook_file_naming_it(traces_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "faults.json"
    bad.write_text('[{"from_s": 10, "to_s": 5, "status": 500}]')
    result = CliRunner().invoke(
        cli_app, ["serve", "--faults", str(bad), "--traces-dir", str(traces_dir)]
    )
    assert result.exit_code == 2
    assert f"{bad}: window 0" in result.stderr
