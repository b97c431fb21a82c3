"""The control API under /replay/: sessions, traces, pause/seek/step/speed, OpenAPI.

The verbs that move a session's anchor are replay.server.verbs' (shared with the fleet).

Every answer is JSON; every error has one shape, {"error": {"status": N, "message": "..."}},
made by the middlewares (replay.server.middlewares) from the exceptions handlers raise. Reading
Parquet files and scanning the dataset run in a thread, so loading a trace never stalls the
tickers of running sessions.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from replay.core.faults import FaultPlan
from replay.playback.anchor import Start
from replay.playback.session import Session, SessionOptions
from replay.playback.status import session_status
from replay.server.keys import REGISTRY
from replay.server.middlewares import ControlError, json_response
from replay.server.openapi import SPEC
from replay.server.verbs import (
    body_of,
    documents_response,
    field,
    playbook_of,
    speed_of,
    verb_routes,
)
from replay.store.dataset import scan

routes = web.RouteTableDef()


def session_of(request: web.Request) -> Session:

    name = request.match_info["session"]
    session = request.app[REGISTRY].get(name)
    if session is None:
        raise ControlError(404, f"no session {name!r} (GET /replay/sessions lists them)")
    return session


def options_from(body: dict[str, Any]) -> SessionOptions:
    """Session options from a control request body."""
    resources = field(body, "resources", list, None)
    if resources is not None and (not resources or not all(isinstance(r, str) for r in resources)):
        raise ControlError(400, "'resources' must be a non-empty list of strings")
    start = field(body, "start", str, "now")
    try:
        start_mode = Start(start)
    except ValueError:
        raise ControlError(
            400, f"'start' must be one of {', '.join(s.value for s in Start)}"
        ) from None
    delay = field(body, "approval_delay_s", (int, float), 0.0)
    if delay < 0:
        raise ControlError(400, "'approval_delay_s' must be >= 0")
    return SessionOptions(
        speed=speed_of(body, 1),
        loop=field(body, "loop", bool, False),
        resources=tuple(resources) if resources else None,
        start=start_mode,
        approval_delay_s=float(delay),
        recorded_approvals=field(body, "recorded_approvals", bool, False),
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
    name = field(body, "name", str, "default")
    trace_name = field(body, "trace", str, None)
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


@routes.get("/replay/sessions/{session}/documents")
async def documents(request: web.Request) -> web.Response:
    return documents_response(session_of(request).documents)


@routes.put("/replay/sessions/{session}/faults")
async def load_faults(request: web.Request) -> web.Response:
    """Load a fault playbook into a running session: a list of windows, or {playbook, seed}."""
    session = session_of(request)
    windows, seed = await playbook_of(request)
    session.faults = FaultPlan(windows, seed=seed)
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


ROUTES = [*routes, *verb_routes("/replay/sessions/{session}", session_of, session_status)]
