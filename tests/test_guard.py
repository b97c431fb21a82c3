"""Who may drive the control API, page and streams: this server's hosts, same-origin JSON only."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from replay.clock import FakeClock
from replay.playback.registry import SessionRegistry
from replay.server.app import make_app

IMDS = "/metadata/scheduledevents?api-version=2020-07-01"
JSON = {"Content-Type": "application/json"}
CREATE = orjson.dumps({"trace": "live-migration", "speed": 60})


async def test_a_cross_site_text_plain_post_creates_no_session(client: Any) -> None:
    """What a web page can send without a preflight: text/plain, foreign Origin and Host."""
    resp = await client.post(
        "/replay/sessions",
        data=CREATE,
        headers={
            "Content-Type": "text/plain",
            "Origin": "http://evil.example",
            "Host": "evil.example",
        },
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["status"] == 403
    sessions = await (await client.get("/replay/sessions")).json()
    assert [s["trace"] for s in sessions] == ["(idle)"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Host": "evil.example"}, 403),  # a DNS-rebound name
        ({"Origin": "http://evil.example"}, 403),  # a foreign page on our host
        ({"Origin": "null"}, 403),
        ({"Content-Type": "text/plain"}, 415),  # a form post needs no preflight
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({}, 201),
        ({"Host": "localhost:8080", "Origin": "http://localhost:8080"}, 201),
        ({"Host": "127.0.0.1:8080", "Origin": "http://127.0.0.1:8080"}, 201),
        ({"Host": "[::1]:8080"}, 201),
    ],
)
async def test_control_bodies_need_json_and_requests_our_host_and_origin(
    client: Any, headers: dict[str, str], status: int
) -> None:
    resp = await client.post("/replay/sessions", data=CREATE, headers={**JSON, **headers})
    assert resp.status == status, await resp.text()


@pytest.mark.parametrize("path", ["/", "/replay/sessions", "/s/default/events"])
async def test_page_and_streams_refuse_a_foreign_host_too(client: Any, path: str) -> None:
    resp = await client.get(path, headers={"Host": "rebound.example"})
    assert resp.status == 403


async def test_imds_routes_answer_whatever_the_host(client: Any) -> None:
    """Clients send Host: 169.254.169.254 (or any name): IMDS answers them all."""
    for host in ("169.254.169.254", "metadata.example", "evil.example"):
        resp = await client.get(IMDS, headers={"Metadata": "true", "Host": host})
        assert resp.status == 200


async def test_allowed_host_names_are_accepted(
    aiohttp_client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    app = make_app(registry, clock=clock, allowed_hosts=["Replay.Internal"])
    client = await aiohttp_client(app)
    resp = await client.get("/replay/sessions", headers={"Host": "replay.internal:9000"})
    assert resp.status == 200
    resp = await client.get("/replay/sessions", headers={"Host": "other.internal"})
    assert resp.status == 403


async def test_replay_index_lists_the_routes_and_links_openapi_and_the_page(client: Any) -> None:
    resp = await client.get("/replay/")
    assert resp.status == 200
    index = await resp.json()
    assert index["openapi"] == "/replay/openapi.json"
    assert index["page"] == "/"
    spec = await (await client.get(index["openapi"])).json()
    listed = {(r["method"], r["path"]) for r in index["routes"]}
    for path, item in spec["paths"].items():
        for method in item:
            if method != "parameters":
                assert (method.upper(), path) in listed
    assert (await client.get(index["page"])).status == 200


async def test_control_calls_do_not_count_as_served_documents(client: Any) -> None:
    """Only IMDS responses are documents served; status, advance and listings are not."""
    await client.post(
        "/replay/sessions",
        data=orjson.dumps({"trace": "live-migration", "start": "virtual"}),
        headers=JSON,
    )
    assert (await client.get(IMDS, headers={"Metadata": "true"})).status == 200
    await client.post("/replay/sessions/default/advance", headers=JSON, data=b"{}")
    for _ in range(3):
        await client.get("/replay/sessions/default")
        await client.get("/replay/sessions")
    documents = await (await client.get("/replay/sessions/default/documents")).json()
    assert len(documents) == 1
    assert documents[0]["Events"] == []
    await client.get(IMDS, headers={"Metadata": "true"})
    documents = await (await client.get("/replay/sessions/default/documents")).json()
    assert len(documents) == 2 and documents[1]["Events"]


async def test_loading_a_trace_runs_off_the_event_loop(
    client: Any, registry: SessionRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a session's trace is read from Parquet, IMDS polls of other sessions go on."""
    import asyncio
    import threading

    reading, release = threading.Event(), threading.Event()
    real_trace = registry.trace

    def slow_trace(name: str) -> Any:
        reading.set()
        assert release.wait(timeout=10), "the test never released the read"
        return real_trace(name)

    monkeypatch.setattr(registry, "trace", slow_trace)
    create = asyncio.create_task(
        client.post("/replay/sessions", data=CREATE, headers={**JSON, "Host": "127.0.0.1"})
    )
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, reading.wait, 10), "the trace was never read"
    poll = await asyncio.wait_for(client.get(IMDS, headers={"Metadata": "true"}), timeout=5)
    assert poll.status == 200
    release.set()
    assert (await asyncio.wait_for(create, timeout=10)).status == 201
