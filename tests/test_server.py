"""The replay server against FakeClock: IMDS behaviour at any speed, with no sleeping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from replay.clock import FakeClock
from replay.core.timeline import parse_rfc1123
from replay.playback.anchor import Start
from replay.playback.registry import DEFAULT, SessionRegistry
from replay.playback.session import SessionOptions
from replay.playback.status import session_status

URL = "/metadata/scheduledevents?api-version=2020-07-01"
H = {"Metadata": "true"}
Client = TestClient  # type: ignore[type-arg]
MakeClient = Callable[..., Awaitable[Any]]


def play(registry: SessionRegistry, trace: str, **options: Any) -> None:
    registry.create(DEFAULT, registry.trace(trace), SessionOptions(**options))


async def get(client: Any, url: str = URL, **headers: str) -> dict[str, Any]:
    resp = await client.get(url, headers={**H, **headers})
    assert resp.status == 200, await resp.text()
    doc: dict[str, Any] = orjson.loads(await resp.read())
    return doc


async def statuses(client: Any) -> list[str]:
    return [e["EventStatus"] for e in (await get(client))["Events"]]


# -- protocol ----------------------------------------------------------------------------------


async def test_idle_server_serves_an_empty_document(client: Any) -> None:
    resp = await client.get(URL, headers=H)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert orjson.loads(await resp.read()) == {"DocumentIncarnation": 1, "Events": []}


@pytest.mark.parametrize("header", ["Metadata", "metadata", "METADATA"])
async def test_metadata_header_name_is_case_insensitive(client: Any, header: str) -> None:
    assert (await client.get(URL, headers={header: "true"})).status == 200


@pytest.mark.parametrize(
    ("url", "headers", "error", "versions"),
    [
        (URL, {}, "Required metadata header", False),
        (URL, {"Metadata": "false"}, "Required metadata header", False),
        ("/metadata/scheduledevents", H, "api-version was not specified", True),
        ("/metadata/scheduledevents?api-version=2021-01-01", H, "api-version is invalid", True),
        ("/metadata/scheduledevents?api-version=latest", H, "api-version is invalid", True),
        (URL, {**H, "X-Forwarded-For": "10.0.0.1"}, "X-Forwarded-For", False),
    ],
)
async def test_bad_requests_get_imds_400_bodies(
    client: Any, url: str, headers: dict[str, str], error: str, versions: bool
) -> None:
    resp = await client.get(url, headers=headers)
    assert resp.status == 400
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = orjson.loads(await resp.read())
    assert error in body["error"]
    assert ("newest-versions" in body) is versions
    if versions:
        assert "2020-07-01" in body["newest-versions"]


async def test_unknown_path_is_404_and_other_methods_405(client: Any) -> None:
    resp = await client.get("/metadata/nothing?api-version=2020-07-01", headers=H)
    assert resp.status == 404
    assert "error" in orjson.loads(await resp.read())
    for method in ("PUT", "DELETE", "PATCH"):
        resp = await client.request(method, URL, headers=H)
        assert resp.status == 405
        assert "error" in orjson.loads(await resp.read())


@pytest.mark.parametrize(
    ("version", "fields"),
    [
        (
            "2017-08-01",
            {"EventId", "EventStatus", "EventType", "ResourceType", "Resources", "NotBefore"},
        ),
        ("2019-04-01", {"Description"}),
        ("2019-08-01", {"Description", "EventSource"}),
        ("2020-07-01", {"Description", "EventSource", "DurationInSeconds"}),
    ],
)
async def test_each_api_version_shows_only_the_fields_it_knew(
    client: Any, registry: SessionRegistry, clock: FakeClock, version: str, fields: set[str]
) -> None:
    play(registry, "live-migration", speed=60, start=Start.now)
    clock.advance(1)
    doc = await get(client, f"/metadata/scheduledevents?api-version={version}")
    base = {"EventId", "EventStatus", "EventType", "ResourceType", "Resources", "NotBefore"}
    assert set(doc["Events"][0]) == base | fields


async def test_old_versions_do_not_see_event_types_they_did_not_know(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "terminate", speed=60, start=Start.now)
    clock.advance(1)
    assert (await get(client, "/metadata/scheduledevents?api-version=2017-11-01"))["Events"] == []
    assert (
        len((await get(client, "/metadata/scheduledevents?api-version=2019-01-01"))["Events"]) == 1
    )


# -- time ----------------------------------------------------------------------------------------


async def test_live_migration_at_60x_changes_on_the_scaled_schedule(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "live-migration", speed=60)
    assert await statuses(client) == []  # the first request starts the clock
    clock.advance(0.499)
    assert await statuses(client) == []
    clock.advance(0.002)  # 30 s of trace = 0.5 s
    doc = await get(client)
    assert [e["EventStatus"] for e in doc["Events"]] == ["Scheduled"]
    # 900 s of notice shows as 15 s, rounded down to the second
    not_before = parse_rfc1123(doc["Events"][0]["NotBefore"])
    expected = clock.wall() - timedelta(seconds=0.501) + timedelta(seconds=930 / 60)
    assert timedelta(0) <= expected - not_before < timedelta(seconds=1)
    clock.advance(15.5 - 0.501 - 0.001)
    assert await statuses(client) == ["Scheduled"]
    clock.advance(0.002)
    started = await get(client)
    assert started["Events"][0]["EventStatus"] == "Started"
    assert started["Events"][0]["NotBefore"] == ""
    clock.advance(300 / 60)
    assert await statuses(client) == []


async def test_polls_of_an_unchanged_state_are_byte_identical_with_etag_304(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "user-reboot", speed=60, start=Start.now)
    clock.advance(1)
    first = await client.get(URL, headers=H)
    body = await first.read()
    clock.advance(2)
    second = await client.get(URL, headers=H)
    assert await second.read() == body
    etag = second.headers["ETag"]
    assert (await client.get(URL, headers={**H, "If-None-Match": etag})).status == 304
    clock.advance(20)
    changed = await client.get(URL, headers={**H, "If-None-Match": etag})
    assert changed.status == 200
    assert (
        orjson.loads(await changed.read())["DocumentIncarnation"]
        > orjson.loads(body)["DocumentIncarnation"]
    )


async def test_resources_are_replaced_and_instance_name_is_the_first(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "user-reboot", speed=60, start=Start.now, resources=("web-1", "web-2"))
    clock.advance(1)
    assert (await get(client))["Events"][0]["Resources"] == ["web-1", "web-2"]
    instance = await get(client, "/metadata/instance?api-version=2021-02-01")
    assert instance["compute"]["name"] == "web-1"


async def test_loop_uses_fresh_event_ids_and_incarnation_never_goes_back(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "spot-eviction", speed=60, start=Start.now, loop=True)
    seen: list[tuple[int, str]] = []
    for _ in range(int(3 * 120 / 60 / 0.05)):  # three rounds, polled every 50 ms
        doc = await get(client)
        seen.append(
            (doc["DocumentIncarnation"], doc["Events"][0]["EventId"] if doc["Events"] else "")
        )
        clock.advance(0.05)
    incarnations = [i for i, _ in seen]
    assert incarnations == sorted(incarnations)
    ids = list(dict.fromkeys(e for _, e in seen if e))
    assert len(set(ids)) == 3
    # Fresh ids are derived from the trace and the round, not random: another server agrees.
    original = registry.trace("spot-eviction").event_ids[0]
    other = SessionRegistry(registry.traces_dir, FakeClock())
    other.create(DEFAULT, other.trace("spot-eviction"), SessionOptions(speed=60, loop=True))
    assert ids[0] == original
    assert [other.sessions[DEFAULT].rounds.event_id(r, original) for r in (1, 2)] == ids[1:]


# -- approvals -----------------------------------------------------------------------------------


async def approve(client: Any, *ids: str, url: str = URL) -> Any:
    body = orjson.dumps({"StartRequests": [{"EventId": i} for i in ids]})
    return await client.post(url, data=body, headers={**H, "Content-Type": "text/plain"})


async def test_approval_starts_the_event_at_once_and_shifts_the_rest(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "user-reboot", speed=60, start=Start.now)
    clock.advance(1)
    doc = await get(client)
    eid = doc["Events"][0]["EventId"]
    resp = await approve(client, eid)
    assert resp.status == 200
    after = await get(client)
    assert after["Events"][0]["EventStatus"] == "Started"
    assert after["DocumentIncarnation"] == doc["DocumentIncarnation"] + 1
    assert (await approve(client, eid)).status == 200  # again: still fine
    clock.advance(600 / 60 - 0.01)
    assert await statuses(client) == ["Started"]
    clock.advance(0.02)
    assert await statuses(client) == []
    status = (await (await client.get("/replay/sessions/default")).json())["approvals"]
    assert [a["event_id"] for a in status] == [eid]


async def test_approval_delay_shows_the_new_notbefore_then_starts(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "user-reboot", speed=60, start=Start.now, approval_delay_s=60)
    clock.advance(1)
    eid = (await get(client))["Events"][0]["EventId"]
    await approve(client, eid)
    waiting = (await get(client))["Events"][0]
    assert waiting["EventStatus"] == "Scheduled"
    assert parse_rfc1123(waiting["NotBefore"]) <= clock.wall() + timedelta(seconds=1)
    clock.advance(1.001)
    assert await statuses(client) == ["Started"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[]",
        b'{"StartRequests": {}}',
        b'{"StartRequests": [{"Id": "x"}]}',
        b'{"StartRequests": [{"EventId": 5}]}',
    ],
)
async def test_malformed_start_requests_get_400(client: Any, body: bytes) -> None:
    resp = await client.post(URL, data=body, headers=H)
    assert resp.status == 400
    assert "error" in orjson.loads(await resp.read())


async def test_unknown_event_id_gets_400_and_approves_nothing(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "user-reboot", speed=60, start=Start.now)
    clock.advance(1)
    eid = (await get(client))["Events"][0]["EventId"]
    resp = await approve(client, eid, "NOT-AN-EVENT")
    assert resp.status == 400
    assert "NOT-AN-EVENT" in orjson.loads(await resp.read())["error"]
    assert await statuses(client) == ["Scheduled"]


async def test_cancelled_event_approved_starts_and_vanishes_when_it_would_have(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "canceled-maintenance", speed=60, start=Start.now)
    clock.advance(1)
    eid = (await get(client))["Events"][0]["EventId"]
    await approve(client, eid)
    assert await statuses(client) == ["Started"]
    clock.advance(510 / 60)
    assert await statuses(client) == []


# -- sessions ------------------------------------------------------------------------------------


async def test_sessions_are_independent_and_reachable_by_path(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    resp = await client.post(
        "/replay/sessions", json={"name": "a", "trace": "user-reboot", "speed": "dev"}
    )
    assert resp.status == 201
    await client.post("/replay/sessions", json={"name": "b", "trace": "terminate", "speed": "200%"})
    clock.advance(1)
    a = await get(client, "/s/a/metadata/scheduledevents?api-version=2020-07-01")
    b = await get(client, "/s/b/metadata/scheduledevents?api-version=2020-07-01")
    assert a["Events"][0]["EventType"] == "Reboot"
    assert b["Events"] == []  # 200% speed: 30 s lead-in takes 15 s
    assert (await get(client))["Events"] == []  # default stays idle
    assert (
        await client.get("/s/nope/metadata/scheduledevents?api-version=2020-07-01", headers=H)
    ).status == 404


async def test_pause_resume_seek_step_and_speed(client: Any, clock: FakeClock) -> None:
    await client.post("/replay/sessions", json={"trace": "live-migration", "speed": 60})
    clock.advance(1)
    paused = await (await client.post("/replay/sessions/default/pause")).json()
    assert paused["state"] == "paused"
    clock.advance(100)
    assert (await (await client.get("/replay/sessions/default")).json())["position_s"] == paused[
        "position_s"
    ]
    stepped = await (await client.post("/replay/sessions/default/step")).json()
    assert stepped["position_s"] == 930.0
    assert stepped["document"]["Events"][0]["EventStatus"] == "Started"
    sought = await (
        await client.post("/replay/sessions/default/seek", json={"offset_s": 10})
    ).json()
    assert sought["document"]["Events"] == []
    resumed = await (await client.post("/replay/sessions/default/resume")).json()
    assert resumed["state"] == "running"
    faster = await (
        await client.post("/replay/sessions/default/speed", json={"speed": "120x"})
    ).json()
    assert faster["speed"] == 120
    clock.advance(20 / 120)
    assert await statuses(client) == ["Scheduled"]
    assert (await (await client.delete("/replay/sessions/default")).json()) == {
        "deleted": "default"
    }
    assert (await get(client))["Events"] == []


async def test_virtual_session_moves_only_when_advanced(client: Any, clock: FakeClock) -> None:
    await client.post("/replay/sessions", json={"trace": "user-reboot", "start": "virtual"})
    clock.advance(10_000)
    assert await statuses(client) == []
    await client.post("/replay/sessions/default/advance", json={})
    assert await statuses(client) == ["Scheduled"]
    await client.post("/replay/sessions/default/advance", json={"seconds": 899})
    assert await statuses(client) == ["Scheduled"]
    await client.post("/replay/sessions/default/advance", json={"seconds": 1})
    assert await statuses(client) == ["Started"]


CONTROL_ERRORS = [
    ("GET", "/replay/sessions/nope", None, 404),
    ("DELETE", "/replay/sessions/nope", None, 404),
    ("POST", "/replay/sessions/nope/pause", None, 404),
    ("POST", "/replay/sessions/nope/resume", None, 404),
    ("POST", "/replay/sessions/nope/step", None, 404),
    ("POST", "/replay/sessions/nope/advance", None, 404),
    ("GET", "/replay/sessions/nope/documents", None, 404),
    ("POST", "/replay/sessions", b"{not json", 400),
    ("POST", "/replay/sessions", b"[]", 400),
    ("POST", "/replay/sessions", b"{}", 400),
    ("POST", "/replay/sessions", b'{"trace": "live-migraton"}', 404),
    ("POST", "/replay/sessions", b'{"trace": "../../etc/passwd"}', 404),
    ("POST", "/replay/sessions", b'{"trace": "user-reboot", "speed": "fast"}', 400),
    ("POST", "/replay/sessions", b'{"trace": "user-reboot", "speed": -1}', 400),
    ("POST", "/replay/sessions", b'{"trace": "user-reboot", "loop": "yes"}', 400),
    ("POST", "/replay/sessions", b'{"trace": "user-reboot", "name": "a/b"}', 400),
    ("POST", "/replay/sessions", b'{"trace": "user-reboot", "start": "later"}', 400),
    ("POST", "/replay/sessions", b'{"trace": "user-reboot", "resources": [1]}', 400),
    ("POST", "/replay/sessions/default/seek", b"{}", 400),
    ("POST", "/replay/sessions/default/seek", b'{"offset_s": -5}', 400),
    ("POST", "/replay/sessions/default/speed", b"{}", 400),
    ("POST", "/replay/sessions/default/speed", b'{"speed": true}', 400),
    ("POST", "/replay/sessions/default/advance", b'{"seconds": -1}', 400),
    ("GET", "/replay/nothing", None, 404),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), CONTROL_ERRORS)
async def test_every_control_route_answers_errors_in_one_shape(
    client: Any, method: str, path: str, body: bytes | None, status: int
) -> None:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    resp = await client.request(method, path, data=body, headers=headers)
    assert resp.status == status
    error = (await resp.json())["error"]
    assert error["status"] == status
    assert isinstance(error["message"], str) and error["message"]


async def test_openapi_lists_every_control_route(client: Any) -> None:
    spec = await (await client.get("/replay/openapi.json")).json()
    app_paths = {
        r.resource.canonical
        for r in client.app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/replay/")
    }
    assert app_paths - {"/replay/openapi.json"} == set(spec["paths"])


async def test_ticker_pushes_each_transition_on_its_anchor(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "live-migration", speed=60, start=Start.now)
    pushed: list[Any] = []
    registry.sessions[DEFAULT].subscribers.add(pushed.append)
    await clock.run_for(1230 / 60 + 0.01, step=0.01)
    assert [orjson.loads(p.body)["DocumentIncarnation"] for p in pushed] == [2, 3, 4]
    assert all(0 <= p.lateness_s <= 0.01 for p in pushed)
    assert session_status(registry.sessions[DEFAULT])["state"] == "finished"


async def test_documents_lists_what_was_served(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "user-reboot", speed=60, start=Start.now)
    await get(client)
    clock.advance(1)
    await get(client)
    await get(client)
    served = await (await client.get("/replay/sessions/default/documents")).json()
    assert [d["DocumentIncarnation"] for d in served] == [1, 2]


async def test_replacing_a_served_session_keeps_incarnation_growing(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "user-reboot", speed=60, start=Start.now)
    clock.advance(1)
    before = (await get(client))["DocumentIncarnation"]
    play(registry, "terminate", speed=60, start=Start.now)
    assert (await get(client))["DocumentIncarnation"] > before


async def test_finished_replay_resumes_from_the_start_and_seek_replays(
    client: Any, registry: SessionRegistry, clock: FakeClock
) -> None:
    play(registry, "spot-eviction", speed=60, start=Start.now)
    await clock.run_for(3, step=0.1)
    assert session_status(registry.sessions[DEFAULT])["state"] == "finished"
    resumed = await (await client.post("/replay/sessions/default/resume")).json()
    assert (resumed["state"], resumed["position_s"]) == ("running", 0)
    await clock.run_for(3, step=0.1)
    sought = await (
        await client.post("/replay/sessions/default/seek", json={"offset_s": 40})
    ).json()
    assert sought["state"] == "running"
    assert sought["document"]["Events"][0]["EventStatus"] == "Scheduled"
