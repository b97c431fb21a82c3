"""The control API under /replay/: sessions, traces, pause/seek/step/speed, OpenAPI.

Every answer is JSON; every error has one shape, {"error": {"status": N, "message": "..."}},
made by the middlewares (replay.server.middlewares) from the exceptions handlers raise. Reading
Parquet files and scanning the dataset run in a thread, so loading a trace never stalls the
tickers of running sessions.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from replay.core.faults import FaultPlan, parse_playbook
from replay.core.speed import parse_speed
from replay.playback.anchor import Start
from replay.playback.session import Session, SessionOptions
from replay.playback.status import session_status
from replay.server.keys import REGISTRY
from replay.server.middlewares import ControlError, json_response
from replay.server.openapi import SPEC
from replay.store.dataset import scan

routes = web.RouteTableDef()


async def body_of(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ControlError(400, f"body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ControlError(400, "body must be a JSON object")
    return value


def session_of(request: web.Request) -> Session:

    name = request.match_info["session"]
    session = request.app[REGISTRY].get(name)
    if session is None:
        raise ControlError(404, f"no session {name!r} (GET /replay/sessions lists them)")
    return session


def _field(body: dict[str, Any], key: str, kinds: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(key, default)
    if value is not default and (
        not isinstance(value, kinds) or isinstance(value, bool) != (kinds is bool)
    ):
        raise ControlError(400, f"{key!r} has the wrong type: {value!r}")
    return value


def options_from(body: dict[str, Any]) -> SessionOptions:
    """Session options from a control request body."""
    resources = _field(body, "resources", list, None)
    if resources is not None and (not resources or not all(isinstance(r, str) for r in resources)):
        raise ControlError(400, "'resources' must be a non-empty list of strings")
    start = _field(body, "start", str, "now")
    try:
        start_mode = Start(start)
    except ValueError:
        raise ControlError(
            400, f"'start' must be one of {', '.join(s.value for s in Start)}"
        ) from None
    speed = body.get("speed", 1)
    if isinstance(speed, bool) or not isinstance(speed, int | float | str):
        raise ControlError(400, f"'speed' has the wrong type: {speed!r}")
    delay = _field(body, "approval_delay_s", (int, float), 0.0)
    if delay < 0:
        raise ControlError(400, "'approval_delay_s' must be >= 0")
    return SessionOptions(
        speed=parse_speed(speed),
        loop=_field(body, "loop", bool, False),
        resources=tuple(resources) if resources else None,
        start=start_mode,
        approval_delay_s=float(delay),
        recorded_approvals=_field(body, "recorded_approvals", bool, False),
    )


@routes.get("/replay/traces")
async def list_traces(request: web.Request) -> web.Response:

    good, _ = await asyncio.to_thread(scan, request.app[REGISTRY].traces_dir, validate_all=False)
    return json_response([t.summary() for t in good])


@routes.get("/replay/sessions")
async def list_sessions(request: web.Request) -> web.Response:

    return json_response([session_status(s) for s in request.app[REGISTRY].sessions.values()])


@routes.post("/replay/sessions")
async def create_session(request: web.Request) -> web.Response:

    body = await body_of(request)
    name = _field(body, "name", str, "default")
    trace_name = _field(body, "trace", str, None)
    if trace_name is None:
        raise ControlError(400, "'trace' is required (GET /replay/traces lists them)")
    registry = request.app[REGISTRY]
    trace = await asyncio.to_thread(registry.trace, trace_name)  # may read Parquet
    session = registry.create(name, trace, options_from(body))
    return json_response(session_status(session), 201)


@routes.get("/replay/sessions/{session}")
async def get_session(request: web.Request) -> web.Response:
    return json_response(session_status(session_of(request)))


@routes.delete("/replay/sessions/{session}")
async def delete_session(request: web.Request) -> web.Response:

    session = session_of(request)
    request.app[REGISTRY].delete(session.name)
    return json_response({"deleted": session.name})


@routes.post("/replay/sessions/{session}/pause")
async def pause(request: web.Request) -> web.Response:
    session = session_of(request)
    session.pause()
    return json_response(session_status(session))


@routes.post("/replay/sessions/{session}/resume")
async def resume(request: web.Request) -> web.Response:
    session = session_of(request)
    session.resume()
    return json_response(session_status(session))


@routes.post("/replay/sessions/{session}/seek")
async def seek(request: web.Request) -> web.Response:
    session = session_of(request)
    body = await body_of(request)
    if body.get("next") is True:
        session.step()
    else:
        offset = _field(body, "offset_s", (int, float), None)
        if offset is None:
            raise ControlError(400, "give 'offset_s' (trace seconds) or 'next': true")
        session.seek(float(offset))
    return json_response(session_status(session))


@routes.post("/replay/sessions/{session}/step")
async def step(request: web.Request) -> web.Response:
    session = session_of(request)
    session.step()
    return json_response(session_status(session))


@routes.post("/replay/sessions/{session}/advance")
async def advance(request: web.Request) -> web.Response:
    session = session_of(request)
    body = await body_of(request)
    seconds = _field(body, "seconds", (int, float), None)
    session.advance(None if seconds is None else float(seconds))
    return json_response(session_status(session))


@routes.post("/replay/sessions/{session}/speed")
async def set_speed(request: web.Request) -> web.Response:
    session = session_of(request)
    body = await body_of(request)
    if "speed" not in body:
        raise ControlError(400, "'speed' is required")
    speed = body["speed"]
    if isinstance(speed, bool) or not isinstance(speed, int | float | str):
        raise ControlError(400, f"'speed' has the wrong type: {speed!r}")
    session.set_speed(parse_speed(speed))
    return json_response(session_status(session))


@routes.get("/replay/sessions/{session}/documents")
async def documents(request: web.Request) -> web.Response:
    session = session_of(request)
    return web.Response(
        body=b"[" + b",".join(session.documents) + b"]",
        content_type="application/json",
        charset="utf-8",
    )


@routes.put("/replay/sessions/{session}/faults")
async def load_faults(request: web.Request) -> web.Response:
    """Load a fault playbook into a running session: a list of windows, or {playbook, seed}."""
    session = session_of(request)
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ControlError(400, f"body is not JSON: {exc}") from None
    seed = 0
    if isinstance(body, dict):
        seed = _field(body, "seed", int, 0)
        body = body.get("playbook")
    session.faults = FaultPlan(parse_playbook(body, "playbook"), seed=seed)
    return json_response(session_status(session))


@routes.delete("/replay/sessions/{session}/faults")
async def clear_faults(request: web.Request) -> web.Response:
    session = session_of(request)
    session.faults = None
    return json_response(session_status(session))


@routes.get("/replay/")
async def index(request: web.Request) -> web.Response:
    """GET /replay/: what the control API offers, with links to its description and the page."""
    paths = SPEC["paths"]
    return json_response(
        {
            "name": "imds-replay control API",
            "openapi": "/replay/openapi.json",
            "page": "/",
            "routes": [
                {"method": method.upper(), "path": path, "summary": op["summary"]}
                for path, item in paths.items()
                for method, op in item.items()
                if method != "parameters"
            ],
        }
    )


@routes.get("/replay/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(SPEC)


ROUTES = list(routes)
