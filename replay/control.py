"""The control API under /replay/: sessions, traces, pause/seek/step/speed, OpenAPI.

Every answer is JSON; every error has one shape: {"error": {"status": N, "message": "..."}}.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

import orjson
from aiohttp import web

from replay.errors import ReplayError, TraceNotFoundError
from replay.faults import FaultPlan, parse_playbook
from replay.registry import parse_speed
from replay.session import Session, SessionOptions, Start

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
routes = web.RouteTableDef()


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(value), content_type="application/json", charset="utf-8"
    )


def control_error(status: int, message: str) -> web.Response:
    """The control API's one error shape."""
    return json_response({"error": {"status": status, "message": message}}, status)


def check_token(request: web.Request) -> web.Response | None:
    """None when the request may use the control API, page and streams; else its 401."""
    from replay.server import REGISTRY

    token = request.app[REGISTRY].token
    if token is None:
        return None
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    given = given or request.query.get("token", "")
    if hmac.compare_digest(given.encode(), token.encode()):
        return None
    return control_error(
        401, "this server needs its token: 'Authorization: Bearer TOKEN' or '?token=TOKEN'"
    )


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def control(handler: Handler) -> Handler:
    """Turn user errors into the control error shape (400, or 404 for unknown things)."""

    @wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        denied = check_token(request)
        if denied is not None:
            return denied
        try:
            return await handler(request)
        except ControlError as exc:
            return control_error(exc.status, str(exc))
        except TraceNotFoundError as exc:
            return control_error(404, str(exc))
        except ReplayError as exc:
            return control_error(400, str(exc))
        except web.HTTPRequestEntityTooLarge:
            return control_error(413, "request body too large")

    return wrapper


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
    from replay.server import REGISTRY

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
@control
async def list_traces(request: web.Request) -> web.Response:
    from replay.server import REGISTRY
    from replay.store import scan

    good, _ = scan(request.app[REGISTRY].traces_dir, validate_all=False)
    return json_response([t.summary() for t in good])


@routes.get("/replay/sessions")
@control
async def list_sessions(request: web.Request) -> web.Response:
    from replay.server import REGISTRY

    return json_response([s.status() for s in request.app[REGISTRY].sessions.values()])


@routes.post("/replay/sessions")
@control
async def create_session(request: web.Request) -> web.Response:
    from replay.server import REGISTRY

    body = await body_of(request)
    name = _field(body, "name", str, "default")
    trace_name = _field(body, "trace", str, None)
    if trace_name is None:
        raise ControlError(400, "'trace' is required (GET /replay/traces lists them)")
    registry = request.app[REGISTRY]
    session = registry.create(name, registry.trace(trace_name), options_from(body))
    return json_response(session.status(), 201)


@routes.get("/replay/sessions/{session}")
@control
async def get_session(request: web.Request) -> web.Response:
    return json_response(session_of(request).status())


@routes.delete("/replay/sessions/{session}")
@control
async def delete_session(request: web.Request) -> web.Response:
    from replay.server import REGISTRY

    session = session_of(request)
    request.app[REGISTRY].delete(session.name)
    return json_response({"deleted": session.name})


@routes.post("/replay/sessions/{session}/pause")
@control
async def pause(request: web.Request) -> web.Response:
    session = session_of(request)
    session.pause()
    return json_response(session.status())


@routes.post("/replay/sessions/{session}/resume")
@control
async def resume(request: web.Request) -> web.Response:
    session = session_of(request)
    session.resume()
    return json_response(session.status())


@routes.post("/replay/sessions/{session}/seek")
@control
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
    return json_response(session.status())


@routes.post("/replay/sessions/{session}/step")
@control
async def step(request: web.Request) -> web.Response:
    session = session_of(request)
    session.step()
    return json_response(session.status())


@routes.post("/replay/sessions/{session}/advance")
@control
async def advance(request: web.Request) -> web.Response:
    session = session_of(request)
    body = await body_of(request)
    seconds = _field(body, "seconds", (int, float), None)
    session.advance(None if seconds is None else float(seconds))
    return json_response(session.status())


@routes.post("/replay/sessions/{session}/speed")
@control
async def set_speed(request: web.Request) -> web.Response:
    session = session_of(request)
    body = await body_of(request)
    if "speed" not in body:
        raise ControlError(400, "'speed' is required")
    speed = body["speed"]
    if isinstance(speed, bool) or not isinstance(speed, int | float | str):
        raise ControlError(400, f"'speed' has the wrong type: {speed!r}")
    session.set_speed(parse_speed(speed))
    return json_response(session.status())


@routes.get("/replay/sessions/{session}/documents")
@control
async def documents(request: web.Request) -> web.Response:
    session = session_of(request)
    return web.Response(
        body=b"[" + b",".join(session.documents) + b"]",
        content_type="application/json",
        charset="utf-8",
    )


@routes.put("/replay/sessions/{session}/faults")
@control
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
    return json_response(session.status())


@routes.delete("/replay/sessions/{session}/faults")
@control
async def clear_faults(request: web.Request) -> web.Response:
    session = session_of(request)
    session.faults = None
    return json_response(session.status())


@routes.get("/replay/openapi.json")
@control
async def openapi(request: web.Request) -> web.Response:
    from replay.openapi import SPEC

    return json_response(SPEC)


CONTROL_ROUTES = routes
