"""Push: WebSocket and Server-Sent Events streams of each session's documents."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from replay.clock import FakeClock, SystemClock
from replay.playback.anchor import Start
from replay.playback.registry import DEFAULT, SessionRegistry
from replay.playback.session import SessionOptions
from tests.serving import serving

URL = "/metadata/scheduledevents?api-version=2020-07-01"
LIVE_MIGRATION_WALL_S = 1230 / 60 + 0.1
"""Wall seconds in which live-migration at 60x serves all four of its documents."""
LAG_S = 0.5
"""How far behind a poller the real server's push may arrive on a loaded 2-core machine (the
shortest phase at 300x is 1 s: a push held back to the next change would fail)."""


def play(registry: SessionRegistry, trace: str) -> None:
    """Start the default session on a shipped trace at 60x, now."""
    registry.create(DEFAULT, registry.trace(trace), SessionOptions(speed=60, start=Start.now))


async def test_websocket_gets_the_current_document_then_every_new_one(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "live-migration")
    ws = await client.ws_connect("/s/default/stream")
    first = orjson.loads((await ws.receive()).data)
    assert first["document"]["DocumentIncarnation"] == 1
    assert set(first) == {"document", "at"}
    await clock.run_for(LIVE_MIGRATION_WALL_S, step=0.05)
    got = [orjson.loads((await ws.receive(timeout=1)).data) for _ in range(3)]
    assert [m["document"]["DocumentIncarnation"] for m in got] == [2, 3, 4]
    assert [len(m["document"]["Events"]) for m in got] == [1, 1, 0]
    # "at" is when the document became current, on the session's anchor
    ats = [m["at"] for m in got]
    assert ats == sorted(ats)
    await ws.close()


async def test_an_approval_is_pushed_at_once(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "user-reboot")
    clock.advance(1)
    ws = await client.ws_connect("/s/default/stream")
    current = orjson.loads((await ws.receive()).data)["document"]
    eid = current["Events"][0]["EventId"]
    body = orjson.dumps({"StartRequests": [{"EventId": eid}]})
    assert (await client.post(URL, data=body, headers={"Metadata": "true"})).status == 200
    pushed = orjson.loads((await ws.receive(timeout=1)).data)["document"]
    assert pushed["Events"][0]["EventStatus"] == "Started"
    await ws.close()


async def test_subscription_survives_a_session_replaced_by_name(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    ws = await client.ws_connect("/s/default/stream")
    idle = orjson.loads((await ws.receive()).data)["document"]
    assert idle["Events"] == []
    await client.post("/replay/sessions", json={"trace": "terminate", "speed": 60})
    clock.advance(1)
    await clock.run_for(0.1, step=0.05)
    while True:
        doc = orjson.loads((await ws.receive(timeout=1)).data)["document"]
        if doc["Events"]:
            break
    assert doc["Events"][0]["EventType"] == "Terminate"
    await ws.close()


async def test_server_sent_events_carry_the_same_messages(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "spot-eviction")
    resp = await client.get("/s/default/events")
    assert resp.headers["Content-Type"].startswith("text/event-stream")

    async def next_data() -> dict[str, Any]:
        while True:
            line = (await resp.content.readline()).decode()
            if line.startswith("data: "):
                value: dict[str, Any] = orjson.loads(line[6:])
                return value

    assert (await next_data())["document"]["Events"] == []
    await clock.run_for(0.6, step=0.05)
    assert (await asyncio.wait_for(next_data(), 1))["document"]["Events"][0][
        "EventType"
    ] == "Preempt"
    resp.close()


async def test_a_compressed_websocket_gets_every_document(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "live-migration")
    ws = await client.ws_connect("/s/default/stream", compress=15)
    assert ws.compress == 15  # permessage-deflate negotiated
    incarnations = [orjson.loads((await ws.receive()).data)["document"]["DocumentIncarnation"]]
    await clock.run_for(LIVE_MIGRATION_WALL_S, step=0.05)
    incarnations += [
        orjson.loads((await ws.receive(timeout=1)).data)["document"]["DocumentIncarnation"]
        for _ in range(3)
    ]
    assert incarnations == [1, 2, 3, 4]
    await ws.close()


async def test_server_sent_events_written_straight_to_the_socket_stay_in_order(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "live-migration")
    resp = await client.get("/s/default/events")
    await clock.run_for(LIVE_MIGRATION_WALL_S, step=0.05)
    seen: list[int] = []
    while len(seen) < 4:
        line = (await asyncio.wait_for(resp.content.readline(), 1)).decode()
        if line.startswith("event: "):
            assert line == "event: document\r\n"
        if line.startswith("data: "):
            seen.append(orjson.loads(line[6:])["document"]["DocumentIncarnation"])
    assert seen == [1, 2, 3, 4]
    resp.close()


async def test_unknown_session_stream_is_404(client: Any) -> None:
    for path in ("/s/nope/stream", "/s/nope/events"):
        resp = await client.get(path)
        assert resp.status == 404
        assert (await resp.json())["error"]["status"] == 404


async def test_a_websocket_subscriber_has_each_document_by_the_instant_a_poll_shows_it(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    """Virtual time stands still at each change while the poll and the push are compared: the
    subscriber must already have (or be getting) the document the poll shows, with no time
    passing for the push to catch up in."""
    speed = 300
    trace = registry.trace("live-migration")
    registry.create(DEFAULT, trace, SessionOptions(speed=speed, start=Start.now))
    start = clock.now()
    ws = await client.ws_connect("/s/default/stream")

    async def pushed() -> int:
        try:
            message = await ws.receive(timeout=5)  # real seconds: virtual time stands still
        except TimeoutError:
            raise AssertionError(f"nothing pushed by {clock.now() - start:.6f} s") from None
        incarnation: int = orjson.loads(message.data)["document"]["DocumentIncarnation"]
        return incarnation

    async def polled() -> int:
        resp = await client.get(URL, headers={"Metadata": "true"})
        incarnation: int = (await resp.json())["DocumentIncarnation"]
        return incarnation

    assert await pushed() == await polled() == 1
    for snapshot in trace.snapshots[1:]:
        at = start + snapshot.offset_s / speed
        clock.advance(at - 1e-6 - clock.now())  # a moment before the change
        before = await polled()
        clock.advance(at + 1e-9 - clock.now())  # the change (and not a moment later)
        now = await polled()
        assert now == before + 1
        assert await pushed() == now
    assert now == 4
    await ws.close()


@pytest.mark.slow
def test_websocket_subscriber_on_the_real_server_is_never_far_behind_a_poller(
    traces_dir: Path,
) -> None:
    """Against the real server: every document reaches the subscriber within LAG_S of a poll
    seeing it (the exact promise is checked on virtual time above; this checks the real
    clock, timerfd and socket path, with room for a loaded machine)."""
    clock = SystemClock()
    pushed: dict[int, float] = {}
    polled: dict[int, float] = {}
    with serving(
        "--trace", "live-migration", "--speed", "300", "--start", "now", traces_dir=traces_dir
    ) as base:
        ready = threading.Event()

        async def subscribe() -> None:
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(base + "/s/default/stream") as ws,
            ):
                ready.set()
                async for msg in ws:
                    doc = json.loads(msg.data)["document"]
                    pushed.setdefault(doc["DocumentIncarnation"], clock.now())
                    if doc["DocumentIncarnation"] == 4:
                        return

        thread = threading.Thread(target=asyncio.run, args=(subscribe(),))
        thread.start()
        assert ready.wait(10)
        request = urllib.request.Request(base + URL, headers={"Metadata": "true"})
        while 4 not in polled and clock.now() - min([*polled.values(), clock.now()]) < 10:
            with urllib.request.urlopen(request, timeout=5) as resp:
                incarnation = json.loads(resp.read())["DocumentIncarnation"]
            polled.setdefault(incarnation, clock.now())
        thread.join(timeout=10)
    assert set(polled) >= {2, 3, 4}
    for incarnation in (2, 3, 4):
        assert pushed[incarnation] - polled[incarnation] <= LAG_S, (incarnation, pushed, polled)
